"""The uniform-placement null: every statistic for every cyclic shift of an image's RoI against its own RoA.

Part of the statistics engine (:mod:`advspatial.statistics.inference`). "Uniform" means
"the RoI could have been anywhere": the image's actual RoI (and its importance map,
which moves with it) is placed at a uniformly random cyclic shift of the grid
against the unmoved attack map and RoA. Shifting keeps each region's shape, size
and clumping, so the null is true in mean for independent stationary maps (the
old analytic expectations treated the RoI as scattered pixels, which is wrong for
IoU, and paired them with a Wilcoxon p about another estimand).

:func:`placement_table` gives the statistic at *every* shift (circular
cross-correlations by FFT, O(N P log P)), so the per-image null expectation is
exact (the mean over all P shifts) and a Monte Carlo test only gathers entries:
:func:`placement_shifts` draws one shift per image per resample, keyed by
``(seed, sample id)`` so that an image's draws do not depend on its batch or
position.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from ..errors import ShapeError, check_range

#: stream of the placement draws (kept apart from the other streams keyed by seed and sample id)
PLACEMENT_STREAM = 0x504C4143


def _correlate(fixed: torch.Tensor, moved: torch.Tensor) -> torch.Tensor:
    """(N,P): entry s = sum_p moved(p - s) * fixed(p) for every cyclic shift s (row-major over (H, W))."""
    h, w = fixed.shape[-2:]
    spectrum = torch.fft.rfft2(fixed) * torch.conj(torch.fft.rfft2(moved))
    return torch.fft.irfft2(spectrum, s=(h, w)).flatten(1)


def _nan_div(num: torch.Tensor, den: torch.Tensor) -> torch.Tensor:
    safe = torch.where(den != 0, den, torch.ones_like(den))
    return torch.where(den != 0, num / safe, torch.full_like(num, math.nan))


def _centred_unit(maps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Maps minus their mean, and their norms (a row of zeros for a constant map)."""
    x = maps.double() - maps.double().mean((1, 2), keepdim=True)
    return x, x.flatten(1).norm(dim=1)


def placement_table(
    importance: torch.Tensor, attack: torch.Tensor, roi: torch.Tensor, roa: torch.Tensor,
    imp_rank: torch.Tensor, att_rank: torch.Tensor,
) -> dict[str, torch.Tensor]:
    """Every statistic of :data:`~advspatial.regions.overlap.STATISTICS` at every cyclic shift of the RoI side.

    Returns ``{statistic: (N, P) float64}``; column 0 (no shift) is the observed
    value (:func:`~advspatial.regions.overlap.overlap_statistics`, same NaN rules), column
    ``dy * W + dx`` the value with the RoI and importance map rolled by (dy, dx).
    ``imp_rank``/``att_rank`` (N, P) are the maps' average ranks (Spearman).
    """
    n, h, w = roi.shape
    r, q = roi.double(), roa.double()
    a = attack.double()
    inter = torch.round(_correlate(q, r))  # integer counts; the FFT leaves ~1e-12 of rounding
    size_r = r.flatten(1).sum(1, keepdim=True)
    size_q = q.flatten(1).sum(1, keepdim=True)
    peak = a.flatten(1).amax(1, keepdim=True)
    top = (a == peak[:, :, None]).double()
    pointing = _correlate(top, r) / top.flatten(1).sum(1, keepdim=True)
    x, nx = _centred_unit(importance)
    y, ny = _centred_unit(attack)
    xr, nxr = _centred_unit(imp_rank.reshape(n, h, w))
    yr, nyr = _centred_unit(att_rank.reshape(n, h, w))
    return {
        "iou": _nan_div(inter, size_r + size_q - inter),
        "dice": _nan_div(2 * inter, (size_r + size_q).expand_as(inter)),
        "energy_in_roi": energy_placement_table(attack, roi),
        "pointing_game": torch.where(peak > 0, pointing, torch.full_like(pointing, math.nan)),
        "spearman": _nan_div(_correlate(yr, xr), (nxr * nyr)[:, None].expand(n, h * w)).clamp(-1, 1),
        "pearson": _nan_div(_correlate(y, x), (nx * ny)[:, None].expand(n, h * w)).clamp(-1, 1),
    }


def energy_placement_table(attack: torch.Tensor, roi: torch.Tensor) -> torch.Tensor:
    """(N, P) float64 energy in RoI at every cyclic shift of the RoI (the ``energy_in_roi`` column of
    :func:`placement_table`, which needs neither the importance map nor the RoA: a model-free RoI's table)."""
    n, h, w = roi.shape
    a = attack.double()
    mass = a.flatten(1).sum(1, keepdim=True)
    return _nan_div(_correlate(a, roi.double()), mass.expand(n, h * w))


#: shift draws kept for reuse: a run places the RoIs of the same images once per statistic and attack map, so the
#: last few draws are kept (the same numbers as drawing them again); the largest kept (int64 entries: 64 MB)
SHIFT_SETS = 4
SHIFT_ENTRIES = 8_000_000
_kept_shifts: dict[tuple[bytes, int, int, int], np.ndarray] = {}


def placement_shifts(sample_ids: Any, count: int, pixels: int, seed: int = 0) -> np.ndarray:
    """(count, N) int64 uniform shift indices in [0, pixels): column i drawn from ``(stream, seed, sample_ids[i])``.

    The array is the transposed view of an (N, count) one: an image's draws lie together, as the tests read them.

    Shift 0 (the observed placement) is allowed: under the null the observed
    placement is one uniform draw among the P, which is what makes the Monte
    Carlo p valid at any ``count``.
    """
    check_range("count", count, 0)
    check_range("pixels", pixels, 1)
    ids = torch.as_tensor(sample_ids).reshape(-1).long().numpy()
    key = (ids.tobytes(), int(count), int(pixels), int(seed))
    if key in _kept_shifts:
        return _kept_shifts[key]
    by_image = np.empty((len(ids), int(count)), dtype=np.int64)  # an image's draws in one row: written in order
    for k, sid in enumerate(ids.tolist()):
        rng = np.random.default_rng([PLACEMENT_STREAM, int(seed) & 0xFFFFFFFF, int(sid) & 0xFFFFFFFFFFFF])
        by_image[k] = rng.integers(0, int(pixels), size=int(count))
    by_image.flags.writeable = False  # shared between callers (a view made after this is read-only too)
    out = by_image.T  # (count, N), a view whose rows of images are what the tests index
    if out.size <= SHIFT_ENTRIES:
        while len(_kept_shifts) >= SHIFT_SETS:
            _kept_shifts.pop(next(iter(_kept_shifts)))
        _kept_shifts[key] = out
    return out


def check_sample_ids(sample_ids: Any | None, n: int) -> torch.Tensor:
    """(N,) int64 sample ids (``arange(n)`` when None), checked for length."""
    if sample_ids is None:
        return torch.arange(n)
    ids = torch.as_tensor(sample_ids).reshape(-1)
    if ids.numel() != n or ids.dtype.is_floating_point:
        raise ShapeError(f"sample_ids must be ({n},) integers, got {tuple(ids.shape)} {ids.dtype}")
    return ids.long()
