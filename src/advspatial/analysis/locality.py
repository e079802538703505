"""Locality of one-pixel (k-pixel) attacks: does the same colour work one, two, three pixels away?

METHODS.md §6. For each successful attack (image i, pixel positions p, colours c)
the *ring* variants at radius r put the same colours at ``p + o`` for every
offset o at Chebyshev distance exactly r (``max(|o_row|, |o_col|) == r``, 8r
offsets), on the clean image (the original pixels are left clean). Two controls
put them at random offsets instead: the *context-matched* control (primary:
random placements in the same local edge-strength x intensity stratum, farther
than the largest radius) and the *uniform* control (secondary view). Where the
placements come from is :mod:`advspatial.analysis.locality_placements`. A
successful pixel often sits on an object edge; a uniform placement mostly lands
on flat background, so "neighbours share the vulnerability" against a uniform
control may only mean "edge pixels are vulnerable". The matched control answers
"nearer than a random pixel *of the same kind*".

Each variant fools the model (untargeted: prediction != y; targeted: prediction
== target) or not. The variants of one image are not independent trials (the
image decides most of the outcome), so every rate comes with a *cluster
bootstrap* 95% interval over images (:func:`cluster_bootstrap_rate`), not a
binomial interval over pooled variants; comparisons use per-image rates.

Choices (documented):

- k-pixel attacks (pixels (N,k,2), colours (N,k,C)) move all k pixels by the
  same offset, so the pattern keeps its shape. A variant is kept only when all
  k moved pixels lie inside the image (near borders there are fewer than 8r).
- Random draws of image i are keyed by (seed, stream, sample id of image i):
  they do not depend on the batch, the other images or their order.
- A ring variant whose stratum has no eligible placement gets no matched draw
  (counted in ``matched_counts``).
- A row with radius 0 re-checks the original attack (it should be 1.0 when the
  pixels given are successful attacks).
- Where two of the given k pixels share a position, which colour wins is undefined.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
import torch
from torch import nn

from ..errors import ConfigError, ShapeError, check_range
from ..models.hooks import frozen_eval
from ..runtime import batch_slices, model_device, sample_ids_or_range
from ..statistics.estimates import BOOTSTRAP_RESAMPLES
from .locality_placements import (
    EDGE_STRATA, INTENSITY_STRATA, context_maps, matched_variants, random_variants, ring_offsets, ring_variants,
)

#: the test's own names, and the placements' names this module has always exported
__all__ = [
    "EDGE_STRATA", "INTENSITY_STRATA", "ClusteredRate", "LocalityResult", "LocalityRow", "cluster_bootstrap_rate",
    "context_maps", "locality_analysis", "matched_variants", "ring_offsets",
]


@dataclass(frozen=True)
class ClusteredRate:
    """A pooled rate (sum of successes / sum of trials) with a cluster-bootstrap CI over images."""

    rate: float
    low: float
    high: float
    successes: int
    trials: int
    images: int

    def as_dict(self) -> dict:
        return asdict(self)


def cluster_bootstrap_rate(
    successes, trials, seed: int = 0, level: float = 0.95, resamples: int = BOOTSTRAP_RESAMPLES,
) -> ClusteredRate:
    """Pooled rate of per-image counts with a percentile *cluster* bootstrap CI (images resampled whole).

    ``successes`` and ``trials`` are per image (clusters); images with no trial
    are left out. Each resample draws as many images as there are, with
    replacement, and recomputes sum(successes) / sum(trials); the interval is
    the (1-level)/2 and (1+level)/2 quantiles of those rates. Unlike a binomial
    (Wilson) interval over the pooled trials it does not assume the trials of
    one image are independent, so it widens when images differ in how easily
    they are fooled. One image gives a zero-width interval; none gives NaN.
    """
    check_range("level", level, 0.0, 1.0, low_inclusive=False, high_inclusive=False)
    check_range("resamples", resamples, 1)
    s = np.asarray(torch.as_tensor(successes).double().reshape(-1).cpu(), dtype=float)
    n = np.asarray(torch.as_tensor(trials).double().reshape(-1).cpu(), dtype=float)
    if s.shape != n.shape:
        raise ShapeError(f"successes and trials must have one value per image each, got {s.shape} and {n.shape}")
    if np.any(n < 0) or np.any(s < 0) or np.any(s > n):
        raise ConfigError("need 0 <= successes <= trials for every image")
    keep = n > 0
    s, n = s[keep], n[keep]
    if s.size == 0:
        return ClusteredRate(math.nan, math.nan, math.nan, 0, 0, 0)
    rate = float(s.sum() / n.sum())
    if s.size == 1:
        return ClusteredRate(rate, rate, rate, int(s.sum()), int(n.sum()), 1)
    rng = np.random.default_rng(int(seed))
    idx = rng.integers(0, s.size, size=(int(resamples), s.size))
    rates = s[idx].sum(axis=1) / n[idx].sum(axis=1)
    tail = (1 - level) / 2
    low, high = np.quantile(rates, [tail, 1 - tail])
    return ClusteredRate(rate, float(low), float(high), int(s.sum()), int(n.sum()), int(s.size))


@dataclass(frozen=True)
class LocalityRow:
    """Success of moved pixels: ``kind`` is "original" (radius 0), "ring" (radius r), "matched" (the
    context-matched control of radius r) or "random" (uniform). The CI is the cluster bootstrap over images."""

    kind: str
    radius: int | None
    n_variants: int
    successes: int
    rate: float
    ci_low: float
    ci_high: float


@dataclass
class LocalityResult:
    """Rows (original, one per radius, random control) and per-image counts.

    Attributes:
        rows: the table.
        radii: the radii, in the order of the columns below.
        ring_counts, ring_successes: (N, len(radii)) variants inside the image and how many fooled the model.
        random_counts, random_successes: (N,) control variants of each image (``n_random``, or 0 where
            no other placement fits) and how many fooled the model.
        original_success: (N,) bool, whether the original placement fools the model.
        matched_counts, matched_successes: (N, len(radii)) context-matched control variants of each
            radius (``matched_draws`` per ring variant whose stratum has an eligible placement) and wins.
        context: per-image mean context of the placements of each group, the balance check of the
            matching: ``{"edge"|"intensity": {"ring_r"|"matched_r"|"random": (N,) tensor}}`` (NaN
            where an image has no placement of that group).
    """

    rows: list[LocalityRow]
    radii: tuple[int, ...]
    ring_counts: torch.Tensor
    ring_successes: torch.Tensor
    random_counts: torch.Tensor
    random_successes: torch.Tensor
    original_success: torch.Tensor
    matched_counts: torch.Tensor | None = None
    matched_successes: torch.Tensor | None = None
    context: dict | None = None

    def as_dicts(self) -> list[dict]:
        """The rows as plain dicts (for CSV / JSON)."""
        return [asdict(row) for row in self.rows]


def _validate(
    x: torch.Tensor, y: torch.Tensor, pixels: torch.Tensor, colours: torch.Tensor, target: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None]:
    if not isinstance(x, torch.Tensor) or x.ndim != 4:
        raise ShapeError(f"images must be a (N,C,H,W) tensor, got {getattr(x, 'shape', type(x))}")
    n, c, h, w = x.shape
    pixels = torch.as_tensor(pixels).cpu().long()
    colours = torch.as_tensor(colours, dtype=x.dtype).cpu()
    if pixels.ndim == 2:
        pixels = pixels[:, None, :]
    if colours.ndim == 2:
        colours = colours[:, None, :]
    if pixels.ndim != 3 or pixels.shape[0] != n or pixels.shape[2] != 2:
        raise ShapeError(f"pixels must be (N,2) or (N,k,2) (row, col) with N={n}, got {tuple(pixels.shape)}")
    if colours.shape != (n, pixels.shape[1], c):
        raise ShapeError(f"colours must be (N,C) or (N,k,C) = {(n, pixels.shape[1], c)}, got {tuple(colours.shape)}")
    inside = (pixels >= 0).all() and (pixels[..., 0] < h).all() and (pixels[..., 1] < w).all()
    if not inside:
        raise ConfigError(f"pixel positions must lie inside the {h}x{w} image")
    if colours.numel() and (float(colours.min()) < 0 or float(colours.max()) > 1):
        raise ConfigError("colours must lie in [0, 1]")
    y = torch.as_tensor(y).cpu().long()
    if y.shape != (n,):
        raise ShapeError(f"labels must have shape ({n},), got {tuple(y.shape)}")
    if target is not None:
        target = torch.as_tensor(target).cpu().long()
        if target.shape != (n,):
            raise ShapeError(f"target must have shape ({n},), got {tuple(target.shape)}")
    return pixels, colours, y, target


def _fools(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None,
    colours: torch.Tensor, image: torch.Tensor, positions: torch.Tensor, batch_size: int,
) -> torch.Tensor:
    """(M,) bool: does image[m] with colours[image[m]] written at positions[m] fool the model?"""
    device = model_device(model)
    out = torch.zeros(image.shape[0], dtype=torch.bool)
    k = positions.shape[1]
    for chunk in batch_slices(image.shape[0], batch_size):
        idx, pos = image[chunk], positions[chunk]
        batch = x[idx].clone()
        rows = torch.arange(idx.shape[0]).repeat_interleave(k)
        batch[rows, :, pos[..., 0].reshape(-1), pos[..., 1].reshape(-1)] = colours[idx].reshape(-1, x.shape[1])
        pred = model(batch.to(device)).argmax(dim=1).cpu()
        out[chunk] = pred == target[idx] if target is not None else pred != y[idx]
    return out


def _row(kind: str, radius: int | None, counts: torch.Tensor, wins: torch.Tensor, seed: int) -> LocalityRow:
    """A row from per-image counts: the pooled rate and its cluster-bootstrap CI over images."""
    est = cluster_bootstrap_rate(wins, counts, seed=seed)
    n, successes = int(counts.sum()), int(wins.sum())
    return LocalityRow(kind, radius, n, successes, successes / n if n else float("nan"), est.low, est.high)


def _group_means(values: torch.Tensor, group: torch.Tensor, image: torch.Tensor, n_groups: int, n: int) -> torch.Tensor:
    """(n_groups, n) mean of ``values`` per (group, image); NaN where a pair has none."""
    flat = group * n + image
    total = torch.bincount(flat, weights=values, minlength=n_groups * n).reshape(n_groups, n)
    count = torch.bincount(flat, minlength=n_groups * n).reshape(n_groups, n)
    return torch.where(count > 0, total / count.clamp(min=1), torch.full_like(total, float("nan")))


def locality_analysis(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    pixels: torch.Tensor,
    colours: torch.Tensor,
    radii: Sequence[int] = (1, 2, 3),
    n_random: int = 100,
    target: torch.Tensor | None = None,
    seed: int = 0,
    batch_size: int = 256,
    matched_draws: int = 4,
    sample_ids: torch.Tensor | None = None,
    edge_strata: int = EDGE_STRATA,
    intensity_strata: int = INTENSITY_STRATA,
) -> LocalityResult:
    """Success rate of the attack's colours moved to Chebyshev radius r, against random placements.

    Args:
        model: classifier on [0,1] images (run frozen in eval mode).
        x: (N,C,H,W) *clean* images; y: (N,) labels.
        pixels: (N,2) or (N,k,2) int (row, col) of each successful attack's pixels.
        colours: (N,C) or (N,k,C) their colours in [0,1].
        radii: positive Chebyshev radii.
        n_random: uniform control variants per image (0 disables that control).
        target: (N,) target classes for a targeted attack, else None (untargeted).
        seed: seed of the random controls (and of the bootstrap).
        batch_size: variants per forward pass.
        matched_draws: context-matched control placements per ring variant (0 disables it).
        sample_ids: (N,) global sample ids keying each image's random draws (default 0..N-1).
        edge_strata, intensity_strata: quantile bins of the context strata.
    """
    pixels, colours, y, target = _validate(x, y, pixels, colours, target)
    radii = tuple(int(r) for r in radii)
    for r in radii:
        check_range("radius", r, 1)
    check_range("n_random", n_random, 0)
    check_range("matched_draws", matched_draws, 0)
    check_range("edge_strata", edge_strata, 1)
    check_range("intensity_strata", intensity_strata, 1)
    n, _, h, w = x.shape
    ids = sample_ids_or_range(n, sample_ids)
    x = x.detach().cpu()
    groups: list[tuple[torch.Tensor, torch.Tensor]] = [ring_variants(pixels, r, h, w) for r in (0, *radii)]
    rand_image, rand_pos, _ = random_variants(pixels, n_random, h, w, seed, ids)
    groups.append((rand_image, rand_pos))
    matched = matched_variants(x, pixels, radii, matched_draws, seed, ids, edge_strata, intensity_strata)
    for ri in range(len(radii)):
        keep = matched.radius_index == ri
        groups.append((matched.image[keep], matched.positions[keep]))
    image = torch.cat([g[0] for g in groups])
    positions = torch.cat([g[1] for g in groups])
    group = torch.cat([torch.full((g[0].shape[0],), i) for i, g in enumerate(groups)])
    with frozen_eval(model), torch.no_grad():
        fooled = _fools(model, x, y, target, colours, image, positions, batch_size)
    # per (group, image) counts, one bincount each
    n_groups = len(groups)
    flat = group * n + image
    counts = torch.bincount(flat, minlength=n_groups * n).reshape(n_groups, n)
    wins = torch.bincount(flat, weights=fooled.double(), minlength=n_groups * n).reshape(n_groups, n).long()
    nr = len(radii)
    rand_g = nr + 1
    rows = [_row("original", 0, counts[0], wins[0], seed)]
    rows += [_row("ring", r, counts[i + 1], wins[i + 1], seed) for i, r in enumerate(radii)]
    if matched_draws > 0:
        rows += [_row("matched", r, counts[rand_g + 1 + i], wins[rand_g + 1 + i], seed) for i, r in enumerate(radii)]
    if n_random > 0:
        rows.append(_row("random", None, counts[rand_g], wins[rand_g], seed))
    edge, intensity = context_maps(x)
    context: dict[str, dict[str, torch.Tensor]] = {}
    names = ["original", *(f"ring_{r}" for r in radii), "random", *(f"matched_{r}" for r in radii)]
    for which, cmap in (("edge", edge), ("intensity", intensity)):
        values = cmap[image[:, None], positions[..., 0], positions[..., 1]].mean(dim=1) if image.numel() \
            else torch.zeros(0, dtype=torch.float64)
        means = _group_means(values, group, image, n_groups, n)
        context[which] = {name: means[g] for g, name in enumerate(names) if name != "original"}
    return LocalityResult(
        rows=rows,
        radii=radii,
        ring_counts=counts[1:rand_g].T.contiguous(),
        ring_successes=wins[1:rand_g].T.contiguous(),
        random_counts=counts[rand_g],
        random_successes=wins[rand_g],
        original_success=wins[0].bool(),
        matched_counts=counts[rand_g + 1:].T.contiguous(),
        matched_successes=wins[rand_g + 1:].T.contiguous(),
        context=context,
    )
