"""Regions of Importance / Attack: binarize maps, split the grid, measure overlap.

Maps are (N,H,W) float tensors (importance map I, attack map A); regions are
(N,H,W) bool (RoI from I, RoA from A). The flow (METHODS.md section 1)::

    roi = binarize(I).mask; roa = binarize(A).mask          # top 20% by default
    parts = segregate(roi, roa)                              # both/roi_only/roa_only/neither
    stats = overlap_statistics(I, A, roi, roa)               # per image, (N,) each
    tests = inference.compare_to_nulls(I, A, roi, roa, labels)  # against the hierarchy of nulls

Every statistic is "larger = more co-located". :func:`pairwise_statistics` gives
each statistic for every (RoI image j, RoA image i) pairing, the input of the
one statistics engine (:mod:`advspatial.regions.inference`): exact nulls,
two-sided permutation p, corrections and verdicts (:mod:`.claims`); the
faithfulness gate of an RoI is :mod:`.faithfulness`. Undefined values (IoU of
two empty regions, energy of an all-zero attack map, a correlation with a
constant map) are NaN and left out of means.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from ..attacks.base import per_sample_noise
from ..errors import ConfigError, ShapeError, check_range, unknown_name

BINARIZE_METHODS = ("top_fraction", "threshold", "otsu")
STATISTICS = ("iou", "dice", "energy_in_roi", "pointing_game", "spearman", "pearson")


# -- input checks ------------------------------------------------------------------

def _check_maps(maps: torch.Tensor, name: str = "maps") -> None:
    if not isinstance(maps, torch.Tensor) or maps.ndim != 3:
        raise ShapeError(f"{name} must be an (N,H,W) tensor, got {getattr(maps, 'shape', type(maps))}")
    if not maps.is_floating_point():
        raise ShapeError(f"{name} must be floating point, got dtype {maps.dtype}")
    if maps.numel() and not bool(torch.isfinite(maps).all()):
        raise ConfigError(f"{name} contain NaN or infinite values")


def _check_same(shape: torch.Size, **tensors: torch.Tensor) -> None:
    for name, t in tensors.items():
        if not isinstance(t, torch.Tensor) or t.shape != shape:
            raise ShapeError(f"{name} must have shape {tuple(shape)}, got {tuple(getattr(t, 'shape', ()))}")


def _check_mask(mask: torch.Tensor, name: str) -> None:
    if not isinstance(mask, torch.Tensor) or mask.ndim != 3 or mask.dtype != torch.bool:
        raise ShapeError(f"{name} must be an (N,H,W) bool tensor, got {getattr(mask, 'shape', type(mask))} "
                         f"{getattr(mask, 'dtype', '')}")


# -- binarize ----------------------------------------------------------------------

@dataclass
class Binarized:
    """A binarized map.

    Attributes:
        mask: (N,H,W) bool region.
        threshold: (N,) the cut value (top_fraction: value of the last pixel
            kept, NaN when no pixel is positive; threshold/otsu: the threshold,
            pixels strictly above it are kept).
        tied_at_cut: (N,) int64; top_fraction: the number of pixels sharing the
            cut value when only some of them could be kept (a seeded random
            choice was made among them), else 0. Always 0 for other methods.
    """

    mask: torch.Tensor
    threshold: torch.Tensor
    tied_at_cut: torch.Tensor


def binarize(
    maps: torch.Tensor,
    method: str = "top_fraction",
    fraction: float = 0.2,
    threshold: float | None = None,
    dilation: int = 0,
    seed: int = 0,
    sample_ids: torch.Tensor | None = None,
) -> Binarized:
    """Turn (N,H,W) maps into regions.

    Methods: ``top_fraction`` (default; the ``fraction`` of pixels with the
    largest values, see :func:`top_fraction_mask`), ``threshold`` (pixels with
    value > ``threshold``), ``otsu`` (pixels above each image's Otsu
    threshold). ``dilation`` > 0 grows the region by that many pixels (square
    structuring element, i.e. Chebyshev distance).
    """
    _check_maps(maps)
    check_range("dilation", dilation, 0)
    n = maps.shape[0]
    if method == "top_fraction":
        out = top_fraction_mask(maps, fraction, seed, sample_ids)
    elif method == "threshold":
        if threshold is None:
            raise ConfigError("method='threshold' needs threshold=<float>")
        cut = torch.full((n,), float(threshold), dtype=maps.dtype, device=maps.device)
        out = Binarized(maps > cut.view(n, 1, 1), cut, _zeros(n, maps.device))
    elif method == "otsu":
        cut = otsu_threshold(maps)
        out = Binarized(maps > cut.view(n, 1, 1), cut, _zeros(n, maps.device))
    else:
        raise unknown_name("binarize method", method, BINARIZE_METHODS)
    if dilation:
        out.mask = dilate(out.mask, dilation)
    return out


def _zeros(n: int, device: torch.device) -> torch.Tensor:
    return torch.zeros(n, dtype=torch.int64, device=device)


def top_fraction_mask(
    maps: torch.Tensor, fraction: float = 0.2, seed: int = 0, sample_ids: torch.Tensor | None = None
) -> Binarized:
    """Keep the k = round(fraction * H * W) pixels with the largest values, per image.

    Only strictly positive pixels are eligible (an image with fewer than k
    positive pixels keeps all of them). Pixels are never chosen by position:
    all pixels above the cut value are kept, and if the pixels *at* the cut
    value are more than the remaining slots, the slots go to a random subset
    drawn from a generator seeded with (``seed``, ``sample_ids[i]``) -- the
    same image gets the same region in any batch.
    """
    _check_maps(maps)
    check_range("fraction", fraction, 0.0, 1.0, low_inclusive=False)
    n, h, w = maps.shape
    flat = maps.reshape(n, h * w)
    k = max(1, int(math.floor(fraction * h * w + 0.5)))
    key = torch.where(flat > 0, flat, torch.full_like(flat, -math.inf))
    cut = key.topk(k, dim=1).values[:, -1] if n else flat.new_zeros(0)
    above = key > cut[:, None]
    at = (key == cut[:, None]) & (flat > 0)
    need = k - above.sum(1)
    n_at = at.sum(1)
    must_choose = n_at > need
    chosen = at.clone()
    if bool(must_choose.any()):
        rows = must_choose.nonzero().squeeze(1)
        ids = torch.arange(n) if sample_ids is None else torch.as_tensor(sample_ids).cpu()
        if ids.shape != (n,):
            raise ShapeError(f"sample_ids must have shape ({n},), got {tuple(ids.shape)}")
        noise = per_sample_noise((len(rows), h * w), seed, ids[rows.cpu()], device=maps.device)
        noise = torch.where(at[rows], noise, torch.full_like(noise, math.inf))
        rank = torch.empty_like(noise, dtype=torch.int64)
        rank.scatter_(1, noise.argsort(dim=1), torch.arange(h * w, device=maps.device).expand(len(rows), -1))
        chosen[rows] = at[rows] & (rank < need[rows, None])
    mask = (above | chosen) & (flat > 0)
    cut = torch.where(torch.isfinite(cut), cut, _min_positive(flat))  # < k positive: the smallest kept
    cut = torch.where(torch.isfinite(cut), cut, torch.full_like(cut, math.nan))  # none positive
    tied = torch.where(must_choose, n_at, torch.zeros_like(n_at))
    return Binarized(mask.reshape(n, h, w), cut, tied)


def _min_positive(flat: torch.Tensor) -> torch.Tensor:
    """Smallest strictly positive value per row (inf where none)."""
    return torch.where(flat > 0, flat, torch.full_like(flat, math.inf)).amin(1)


def otsu_threshold(maps: torch.Tensor, nbins: int = 256) -> torch.Tensor:
    """Per-image Otsu threshold (N,), batched: maximize the between-class variance.

    The values of each image are put in ``nbins`` equal bins between its min
    and max; the threshold is the centre of the bin that ends the lower class
    (the convention of ``skimage.filters.threshold_otsu``, so ``maps > t`` is
    the upper class). A constant image gets its value as threshold.
    """
    _check_maps(maps)
    check_range("nbins", nbins, 2)
    n = maps.shape[0]
    v = maps.reshape(n, -1).double()
    lo, hi = v.amin(1, keepdim=True), v.amax(1, keepdim=True)
    width = (hi - lo) / nbins
    safe = torch.where(width > 0, width, torch.ones_like(width))
    idx = ((v - lo) / safe).floor().long().clamp(0, nbins - 1)
    hist = torch.zeros(n, nbins, dtype=torch.float64, device=v.device).scatter_add_(1, idx, torch.ones_like(v))
    centers = lo + (torch.arange(nbins, device=v.device, dtype=torch.float64) + 0.5) * width
    w0 = hist.cumsum(1)[:, :-1]
    s0 = (hist * centers).cumsum(1)[:, :-1]
    w1 = hist.sum(1, keepdim=True) - w0
    s1 = (hist * centers).sum(1, keepdim=True) - s0
    mean0 = s0 / w0.clamp_min(1e-300)
    mean1 = s1 / w1.clamp_min(1e-300)
    between = w0 * w1 * (mean0 - mean1) ** 2
    best = between.argmax(1)
    t = centers.gather(1, best[:, None]).squeeze(1)
    t = torch.where(width.squeeze(1) > 0, t, lo.squeeze(1))
    return t.to(maps.dtype)


def dilate(mask: torch.Tensor, pixels: int) -> torch.Tensor:
    """Grow (N,H,W) bool regions by ``pixels`` in every direction (square element of side 2k+1)."""
    _check_mask(mask, "mask")
    check_range("pixels", pixels, 0)
    if pixels == 0 or mask.numel() == 0:
        return mask.clone()
    size = 2 * int(pixels) + 1
    grown = nn.functional.max_pool2d(mask[:, None].float(), size, stride=1, padding=int(pixels))
    return grown[:, 0] > 0


# -- random control regions -------------------------------------------------------------

#: stream of the random control regions (the neutralization defence's controls, the faithfulness gate)
RANDOM_REGION_STREAM = 0xC0DE


def stream_seed(seed: int, stream: int, counter: int = 0) -> int:
    """One seed per (experiment seed, random stream, counter): independent streams of per-sample noise."""
    return (int(seed) * 1_000_033 + stream * 7919 + int(counter) * 104_729) % (2**61 - 1)


def sample_ids_or_range(n: int, sample_ids: torch.Tensor | None) -> torch.Tensor:
    ids = torch.arange(n) if sample_ids is None else torch.as_tensor(sample_ids).cpu().long()
    if ids.shape != (n,):
        raise ShapeError(f"sample_ids must have shape ({n},), got {tuple(ids.shape)}")
    return ids


def inverse_permutation(order: torch.Tensor) -> torch.Tensor:
    """Inverse of a per-row permutation: ``ranks[i, order[i, r]] = r``."""
    ranks = torch.empty_like(order)
    positions = torch.arange(order.shape[1], device=order.device).expand_as(order)
    return ranks.scatter_(1, order, positions)


def random_region_like(
    region: torch.Tensor,
    seed: int = 0,
    *,
    within: torch.Tensor | None = None,
    strata: torch.Tensor | None = None,
    draw: int = 0,
    sample_ids: torch.Tensor | None = None,
) -> torch.Tensor:
    """The control region: per image, as many pixels as ``region`` has, at uniformly random positions.

    With ``within`` (N,H,W) bool the positions are drawn inside it only (e.g.
    outside the RoI for the neutralization defence, whose region never touches
    the RoI; inside RoA for the oracle's control); it must hold at least as
    many pixels as ``region`` in every image. With ``strata`` (N,H,W) int the
    draw is stratified: in each stratum s it takes as many pixels as ``region``
    has in s, among the eligible pixels of s (e.g. foreground/background, so
    the control has the region's composition). Image i's draw number ``draw``
    depends only on ``(seed, draw, sample_ids[i])``: never on the batch.
    """
    if not isinstance(region, torch.Tensor) or region.ndim != 3 or region.dtype != torch.bool:
        raise ShapeError(f"region must be an (N,H,W) bool tensor, got {getattr(region, 'shape', type(region))}")
    n, h, w = region.shape
    eligible = torch.ones_like(region) if within is None else torch.as_tensor(within, device=region.device)
    if eligible.shape != region.shape or eligible.dtype != torch.bool:
        raise ShapeError(f"within must be an (N,H,W) bool tensor of shape {tuple(region.shape)}")
    labels = torch.zeros(region.shape, dtype=torch.long, device=region.device) if strata is None \
        else torch.as_tensor(strata, device=region.device).long()
    if labels.shape != region.shape:
        raise ShapeError(f"strata must be an (N,H,W) int tensor of shape {tuple(region.shape)}")
    keys = per_sample_noise((n, h * w), stream_seed(seed, RANDOM_REGION_STREAM, draw),
                            sample_ids_or_range(n, sample_ids), device=region.device)
    chosen = torch.zeros((n, h * w), dtype=torch.bool, device=region.device)
    flat_region, flat_labels, flat_eligible = region.flatten(1), labels.flatten(1), eligible.flatten(1)
    for stratum in torch.unique(flat_labels).tolist():
        pool = flat_eligible & (flat_labels == stratum)
        counts = (flat_region & (flat_labels == stratum)).sum(dim=1, keepdim=True)
        short = (counts.squeeze(1) > pool.sum(dim=1)).nonzero().flatten().tolist()
        if short:
            raise ConfigError(f"within has fewer pixels than region (stratum {stratum}) in image(s) {short[:10]}; "
                              "valid: within holds at least as many pixels as region in every image and stratum")
        ranked = torch.where(pool, keys, torch.full_like(keys, -2.0))
        ranks = inverse_permutation(ranked.argsort(dim=1, descending=True, stable=True))
        chosen |= (ranks < counts) & pool
    return chosen.view(n, h, w)


def foreground_strata(images: torch.Tensor, level: float = 0.05) -> torch.Tensor:
    """(N,H,W) int: 1 where any channel exceeds ``level`` (object), 0 elsewhere (background).

    The strata of a composition-matched control on images with a dark
    background (MNIST-like). On natural images almost every pixel is
    "foreground" and the stratification does nothing; match on the fill's
    change there (:func:`change_strata`).
    """
    if not isinstance(images, torch.Tensor) or images.ndim != 4:
        raise ShapeError(f"images must be an (N,C,H,W) tensor, got {getattr(images, 'shape', type(images))}")
    return (images.amax(1) > level).long()


def change_strata(images: torch.Tensor, filled: torch.Tensor, levels: int = 4) -> torch.Tensor:
    """(N,H,W) int: per image, the quantile bin (of ``levels``) of each pixel's squared change ``|filled - images|^2``.

    A control stratified on these bins takes its pixels where the fill changes
    the image about as much as it does inside the region, so the control's L2
    change matches the region's (up to the bin width).
    """
    check_range("levels", levels, 1)
    if images.shape != filled.shape or images.ndim != 4:
        raise ShapeError(f"images {tuple(images.shape)} and filled {tuple(filled.shape)} must be equal (N,C,H,W)")
    change = (filled - images).pow(2).sum(1).flatten(1)
    ranks = inverse_permutation(change.argsort(dim=1, stable=True))
    bins = (ranks * levels) // max(change.shape[1], 1)
    return bins.view(images.shape[0], *images.shape[2:])


#: stream of the shifted control regions (the faithfulness gate's default control)
SHIFTED_REGION_STREAM = 0x5EED


def shifted_region_like(region: torch.Tensor, seed: int = 0, *, sample_ids: torch.Tensor | None = None) -> torch.Tensor:
    """The shape-matched control: each image's ``region`` moved by a random cyclic shift (torch.roll semantics).

    Same pixel count and the same shape (blobs stay blobs, up to the wrap at the
    border), at a location uniform over the image: a contiguous RoI is compared
    with a contiguous region elsewhere rather than with scattered pixels, whose
    deletion creates many more edges (on natural images that alone makes it more
    damaging). Image i's shift depends only on ``(seed, sample_ids[i])``.
    """
    if not isinstance(region, torch.Tensor) or region.ndim != 3 or region.dtype != torch.bool:
        raise ShapeError(f"region must be an (N,H,W) bool tensor, got {getattr(region, 'shape', type(region))}")
    n, h, w = region.shape
    u = per_sample_noise((n, 2), stream_seed(seed, SHIFTED_REGION_STREAM), sample_ids_or_range(n, sample_ids),
                         device=region.device)
    dy = (u[:, 0] * h).long().clamp(max=h - 1)
    dx = (u[:, 1] * w).long().clamp(max=w - 1)
    rows = (torch.arange(h, device=region.device)[None, :] - dy[:, None]) % h  # (N,H): source row of each row
    cols = (torch.arange(w, device=region.device)[None, :] - dx[:, None]) % w
    return region[torch.arange(n, device=region.device)[:, None, None], rows[:, :, None], cols[:, None, :]]


# -- segregation -------------------------------------------------------------------

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
    _check_mask(roi, "roi")
    _check_mask(roa, "roa")
    _check_same(roi.shape, roa=roa)
    return Partition(roi & roa, roi & ~roa, roa & ~roi, ~(roi | roa))


# -- per-image statistics -------------------------------------------------------------

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
    importance: torch.Tensor, attack: torch.Tensor, roi: torch.Tensor, roa: torch.Tensor
) -> dict[str, torch.Tensor]:
    """Per-image overlap statistics, each (N,) float, keys = :data:`STATISTICS`.

    ``iou``/``dice`` compare the regions, ``energy_in_roi``/``pointing_game``
    the attack map with RoI, ``spearman``/``pearson`` the two continuous maps.
    """
    _check_maps(importance, "importance")
    _check_maps(attack, "attack")
    _check_mask(roi, "roi")
    _check_mask(roa, "roa")
    _check_same(importance.shape, attack=attack, roi=roi, roa=roa)
    return _statistics(importance, attack, roi, roa, average_ranks(importance.flatten(1)),
                       average_ranks(attack.flatten(1)))


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
    r = roi.flatten(1).double()
    q = roa.flatten(1).double()
    a = attack.flatten(1).double()
    inter = r @ q.T
    size_r, size_q = r.sum(1, keepdim=True), q.sum(1)[None, :]
    peak = a.amax(1)
    top = (a == peak[:, None]).double()
    hits = r @ top.T
    pointing = hits / top.sum(1)[None, :]
    return {
        "iou": _nan_div(inter, size_r + size_q - inter).float(),
        "dice": _nan_div(2 * inter, size_r + size_q).float(),
        "energy_in_roi": _nan_div(r @ a.T, a.sum(1)[None, :].expand_as(inter)).float(),
        "pointing_game": torch.where(peak[None, :] > 0, pointing, torch.full_like(pointing, math.nan)).float(),
        "spearman": _pearson_matrix(imp_rank, att_rank),
        "pearson": _pearson_matrix(importance.flatten(1), attack.flatten(1)),
    }


def _pearson_matrix(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """(N,N) Pearson correlation of row j of ``a`` with row i of ``b`` (NaN if either is constant)."""
    x = a.double() - a.double().mean(1, keepdim=True)
    y = b.double() - b.double().mean(1, keepdim=True)
    den = x.norm(dim=1)[:, None] * y.norm(dim=1)[None, :]
    return _nan_div(x @ y.T, den).clamp(-1, 1).float()


# -- per-class mean maps ------------------------------------------------------------

class MapAccumulator:
    """Streaming per-class and dataset-mean maps: ``update(maps, labels)`` per batch, then ``means()``."""

    def __init__(self, num_classes: int, shape: tuple[int, int]) -> None:
        check_range("num_classes", num_classes, 1)
        self.sums = torch.zeros(num_classes, *shape, dtype=torch.float64)
        self.counts = torch.zeros(num_classes, dtype=torch.int64)

    def update(self, maps: torch.Tensor, labels: torch.Tensor) -> None:
        _check_maps(maps)
        labels = torch.as_tensor(labels).cpu().long()
        if labels.shape != (maps.shape[0],) or tuple(maps.shape[1:]) != tuple(self.sums.shape[1:]):
            raise ShapeError(f"need maps (N,{self.sums.shape[1]},{self.sums.shape[2]}) and labels (N,), got "
                             f"{tuple(maps.shape)} and {tuple(labels.shape)}")
        k = self.sums.shape[0]
        if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= k):
            raise ConfigError(f"labels must lie in [0, {k - 1}]")
        self.sums.index_add_(0, labels, maps.detach().cpu().double())
        self.counts += torch.bincount(labels, minlength=k)

    def means(self) -> torch.Tensor:
        """(K,H,W) mean map per class (NaN for classes never seen)."""
        c = self.counts.double().view(-1, 1, 1)
        return torch.where(c > 0, self.sums / c.clamp_min(1), torch.full_like(self.sums, math.nan)).float()

    def dataset_mean(self) -> torch.Tensor:
        """(H,W) mean map over all images."""
        total = int(self.counts.sum())
        if total == 0:
            return torch.full(self.sums.shape[1:], math.nan)
        return (self.sums.sum(0) / total).float()


def class_mean_maps(maps: torch.Tensor, labels: torch.Tensor, num_classes: int) -> tuple[torch.Tensor, torch.Tensor]:
    """((K,H,W) per-class mean maps (NaN for empty classes), (K,) counts)."""
    _check_maps(maps)
    acc = MapAccumulator(num_classes, tuple(maps.shape[1:]))
    acc.update(maps, labels)
    return acc.means(), acc.counts.clone()
