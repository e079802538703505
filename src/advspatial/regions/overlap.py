"""How much RoI and RoA overlap: the four-part segregation and the per-image and pairwise statistics."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ..errors import ShapeError
from .checks import check_maps, check_mask, check_same_shape

STATISTICS = ("iou", "dice", "energy_in_roi", "pointing_game", "spearman", "pearson")


PART_NAMES = ("neither", "roi_only", "roa_only", "both")


@dataclass
class Partition:
    """The four disjoint parts of the pixel grid, each (N,H,W) bool."""

    both: torch.Tensor
    roi_only: torch.Tensor
    roa_only: torch.Tensor
    neither: torch.Tensor

    def codes(self) -> torch.Tensor:
        """(N,H,W) int64 label per pixel: 0 neither, 1 roi_only, 2 roa_only, 3 both (see PART_NAMES)."""
        return self.roi_only.long() + 2 * self.roa_only.long() + 3 * self.both.long()

    def fractions(self) -> dict[str, torch.Tensor]:
        """(N,) share of the pixels in each part."""
        return {name: getattr(self, name).flatten(1).float().mean(1) for name in PART_NAMES}


def segregate(roi: torch.Tensor, roa: torch.Tensor) -> Partition:
    """Split the grid into both = RoI∩RoA, roi_only, roa_only, neither."""
    check_mask(roi, "roi")
    check_mask(roa, "roa")
    check_same_shape(roi.shape, roa=roa)
    return Partition(roi & roa, roi & ~roa, roa & ~roi, ~(roi | roa))


def _nan_div(num: torch.Tensor, den: torch.Tensor) -> torch.Tensor:
    return torch.where(den != 0, num / torch.where(den != 0, den, torch.ones_like(den)), torch.full_like(num, math.nan))


def iou(roi: torch.Tensor, roa: torch.Tensor) -> torch.Tensor:
    """(N,) |RoI∩RoA| / |RoI∪RoA| (NaN when both are empty)."""
    inter = (roi & roa).flatten(1).sum(1).double()
    union = (roi | roa).flatten(1).sum(1).double()
    return _nan_div(inter, union).float()


def dice(roi: torch.Tensor, roa: torch.Tensor) -> torch.Tensor:
    """(N,) 2|RoI∩RoA| / (|RoI| + |RoA|) (NaN when both are empty)."""
    inter = (roi & roa).flatten(1).sum(1).double()
    total = roi.flatten(1).sum(1).double() + roa.flatten(1).sum(1).double()
    return _nan_div(2 * inter, total).float()


def energy_in_roi(attack: torch.Tensor, roi: torch.Tensor) -> torch.Tensor:
    """(N,) share of the attack map's mass inside RoI (NaN for an all-zero attack map)."""
    a = attack.flatten(1).double()
    return _nan_div((a * roi.flatten(1)).sum(1), a.sum(1)).float()


def pointing_game(attack: torch.Tensor, roi: torch.Tensor) -> torch.Tensor:
    """(N,) is the attack map's maximum inside RoI?

    Ties: when several pixels share the maximum, the value is the fraction of
    them inside RoI (the chance that a uniformly random argmax hits); so it is
    0 or 1 without ties. NaN for an all-zero attack map (no peak).
    """
    a = attack.flatten(1)
    peak = a.amax(1, keepdim=True)
    top = a == peak
    hit = (top & roi.flatten(1)).sum(1).double()
    frac = hit / top.sum(1).double()
    return torch.where(peak.squeeze(1) > 0, frac, torch.full_like(frac, math.nan)).float()


def pearson(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """(N,) Pearson correlation of the pixels of two (N,H,W) maps (NaN if one is constant)."""
    x = a.flatten(1).double()
    y = b.flatten(1).double()
    x = x - x.mean(1, keepdim=True)
    y = y - y.mean(1, keepdim=True)
    den = x.norm(dim=1) * y.norm(dim=1)
    return _nan_div((x * y).sum(1), den).clamp(-1, 1).float()


def average_ranks(values: torch.Tensor) -> torch.Tensor:
    """Ranks 1..P along the last axis of (N,P) values, tied values sharing their average rank."""
    n, p = values.shape
    sorted_vals, order = values.sort(dim=1)
    new_group = torch.ones_like(sorted_vals, dtype=torch.bool)
    new_group[:, 1:] = sorted_vals[:, 1:] != sorted_vals[:, :-1]
    group = new_group.long().cumsum(1) - 1
    pos = torch.arange(p, device=values.device, dtype=torch.float64).expand(n, p)
    first = torch.zeros(n, p, dtype=torch.float64, device=values.device).scatter_reduce(
        1, group, pos, reduce="amin", include_self=False)
    last = torch.zeros(n, p, dtype=torch.float64, device=values.device).scatter_reduce(
        1, group, pos, reduce="amax", include_self=False)
    avg = (first.gather(1, group) + last.gather(1, group)) / 2 + 1
    return torch.empty_like(avg).scatter_(1, order, avg)


def spearman(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """(N,) Spearman rank correlation (average ranks for ties) of two (N,H,W) maps."""
    return pearson(average_ranks(a.flatten(1)), average_ranks(b.flatten(1)))


def overlap_statistics(
    importance: torch.Tensor, attack: torch.Tensor, roi: torch.Tensor, roa: torch.Tensor, *,
    importance_rank: torch.Tensor | None = None,
) -> dict[str, torch.Tensor]:
    """Per-image overlap statistics, each (N,) float, keys = :data:`STATISTICS`.

    ``iou``/``dice`` compare the regions, ``energy_in_roi``/``pointing_game``
    the attack map with RoI, ``spearman``/``pearson`` the two continuous maps.
    ``importance_rank``: ``average_ranks(importance.flatten(1))`` when the caller already has it (the same
    importance maps against several attack maps sort once).
    """
    check_maps(importance, "importance")
    check_maps(attack, "attack")
    check_mask(roi, "roi")
    check_mask(roa, "roa")
    check_same_shape(importance.shape, attack=attack, roi=roi, roa=roa)
    if importance_rank is None:
        importance_rank = average_ranks(importance.flatten(1))
    elif importance_rank.shape != importance.flatten(1).shape:
        raise ShapeError(f"importance_rank must have shape {tuple(importance.flatten(1).shape)}, "
                         f"got {tuple(importance_rank.shape)}")
    return _statistics(importance, attack, roi, roa, importance_rank, average_ranks(attack.flatten(1)))


def _statistics(
    imp: torch.Tensor, att: torch.Tensor, roi: torch.Tensor, roa: torch.Tensor,
    imp_rank: torch.Tensor, att_rank: torch.Tensor,
) -> dict[str, torch.Tensor]:
    return {
        "iou": iou(roi, roa),
        "dice": dice(roi, roa),
        "energy_in_roi": energy_in_roi(att, roi),
        "pointing_game": pointing_game(att, roi),
        "spearman": pearson(imp_rank, att_rank),
        "pearson": pearson(imp, att),
    }


def energy_in_roi_pairs(roi: torch.Tensor, attack: torch.Tensor) -> torch.Tensor:
    """(N,N) share of attack map i's mass inside RoI j, entry [j, i] (NaN for an all-zero attack map)."""
    r = roi.flatten(1).double()
    a = attack.flatten(1).double()
    return _nan_div(r @ a.T, a.sum(1)[None, :].expand(r.shape[0], -1)).float()


def pairwise_statistics(
    importance: torch.Tensor, attack: torch.Tensor, roi: torch.Tensor, roa: torch.Tensor,
    imp_rank: torch.Tensor, att_rank: torch.Tensor,
) -> dict[str, torch.Tensor]:
    """Every statistic for every (RoI image j, RoA image i) pair: (N,N) matrices, entry [j, i].

    Same definitions and NaN rules as :func:`overlap_statistics` (whose values are
    the diagonal), but computed with matrix products: O(N^2 P) once instead of
    O(B N P) per permutation, so a permutation test only gathers entries. Memory is O(N^2)
    per statistic: experiments bound N (``permutation_images``).
    """
    r, q = roi.flatten(1), roa.flatten(1)
    a = attack.flatten(1).double()
    inter = overlap_counts(r, q)
    size_r, size_q = r.sum(1, keepdim=True).double(), q.sum(1)[None, :].double()
    peak = a.amax(1)
    top = a == peak[:, None]
    hits = overlap_counts(r, top)
    pointing = hits / top.sum(1)[None, :].double()
    return {
        "iou": _nan_div(inter, size_r + size_q - inter).float(),
        "dice": _nan_div(2 * inter, size_r + size_q).float(),
        "energy_in_roi": energy_in_roi_pairs(roi, attack),
        "pointing_game": torch.where(peak[None, :] > 0, pointing, torch.full_like(pointing, math.nan)).float(),
        "spearman": _pearson_matrix(imp_rank, att_rank),
        "pearson": _pearson_matrix(importance.flatten(1), attack.flatten(1)),
    }


#: a float32 sum of 0/1 products is exact below this many terms: every partial sum is an integer below 2^24
EXACT_FLOAT32_COUNTS = 2**24


def overlap_counts(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """(N,M) float64: entry [j, i] the number of pixels set in both row j of ``a`` (N,P) and row i of ``b`` (M,P),
    both boolean.

    Counted by a float32 matrix product where that is exact (on the CPU at the default matmul precision, fewer than
    2^24 pixels): half a float64 product's time and the same numbers. Elsewhere (a GPU may round float32 products
    to TF32's 10-bit mantissa) in float64.
    """
    exact = (a.device.type == "cpu" and a.shape[1] < EXACT_FLOAT32_COUNTS
             and torch.get_float32_matmul_precision() == "highest")
    dtype = torch.float32 if exact else torch.float64
    return (a.to(dtype) @ b.to(dtype).T).double()


def _pearson_matrix(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """(N,N) Pearson correlation of row j of ``a`` with row i of ``b`` (NaN if either is constant)."""
    x = a.double() - a.double().mean(1, keepdim=True)
    y = b.double() - b.double().mean(1, keepdim=True)
    den = x.norm(dim=1)[:, None] * y.norm(dim=1)[None, :]
    return _nan_div(x @ y.T, den).clamp(-1, 1).float()
