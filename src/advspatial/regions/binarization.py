"""Maps to regions: the top fraction (ties broken by sample id), a threshold or Otsu, and dilation."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from ..errors import ConfigError, ShapeError, check_range, unknown_name
from ..runtime import per_sample_noise
from .checks import check_map_shape, check_maps, check_mask

BINARIZE_METHODS = ("top_fraction", "threshold", "otsu")


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
    check_map_shape(maps)  # the values: top_fraction_mask reads them with its ties, the other methods here
    check_range("dilation", dilation, 0)
    n = maps.shape[0]
    if method != "top_fraction":
        check_maps(maps)
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
    check_map_shape(maps)
    plan = TopFraction(maps, fraction)
    finite, *must_choose = torch.cat([torch.isfinite(maps).all().view(1), plan.must_choose]).tolist()  # one read
    if maps.numel() and not finite:
        raise ConfigError("maps contain NaN or infinite values")
    return plan.finish(must_choose, seed, sample_ids)


class TopFraction:
    """:func:`top_fraction_mask` in two parts: what the device computes alone (here), and :meth:`finish`, which
    needs on the host which images must break ties at the cut (``must_choose``, read back by the caller: one read
    can serve several maps and their checks)."""

    def __init__(self, maps: torch.Tensor, fraction: float) -> None:
        check_range("fraction", fraction, 0.0, 1.0, low_inclusive=False)
        n, h, w = maps.shape
        self.shape, self.device = (n, h, w), maps.device
        self.flat = flat = maps.reshape(n, h * w)
        self.k = k = max(1, int(math.floor(fraction * h * w + 0.5)))
        key = torch.where(flat > 0, flat, torch.full_like(flat, -math.inf))
        self.cut = cut = key.topk(k, dim=1).values[:, -1] if n else flat.new_zeros(0)
        self.above = key > cut[:, None]
        self.at = (key == cut[:, None]) & (flat > 0)
        self.need = k - self.above.sum(1)
        self.n_at = self.at.sum(1)
        #: (N,) bool: more pixels at the cut value than slots left (a seeded random choice among them)
        self.must_choose = self.n_at > self.need

    def finish(self, must_choose: list[bool] | None, seed: int, sample_ids: torch.Tensor | None) -> Binarized:
        """The regions, given ``self.must_choose`` read back to the host (as a list), or None: every image breaks
        its ties, with no read (a device's path). The same regions: an image without more pixels at the cut than
        slots keeps all of them either way (their random ranks are all below its slots)."""
        n, h, w = self.shape
        chosen = self.at.clone()
        rows_host = list(range(n)) if must_choose is None else [i for i, flag in enumerate(must_choose) if flag]
        if rows_host:
            ids = torch.arange(n) if sample_ids is None else torch.as_tensor(sample_ids)
            ids = ids if ids.device.type == "cpu" else ids.cpu()
            if ids.shape != (n,):
                raise ShapeError(f"sample_ids must have shape ({n},), got {tuple(ids.shape)}")
            rows = torch.tensor(rows_host, dtype=torch.long, device=self.device)
            noise = per_sample_noise((len(rows_host), h * w), seed, ids[rows_host], device=self.device)
            noise = torch.where(self.at[rows], noise, torch.full_like(noise, math.inf))
            rank = torch.empty_like(noise, dtype=torch.int64)
            rank.scatter_(1, noise.argsort(dim=1),
                          torch.arange(h * w, device=self.device).expand(len(rows_host), -1))
            chosen[rows] = self.at[rows] & (rank < self.need[rows, None])
        flat = self.flat
        mask = (self.above | chosen) & (flat > 0)
        cut = torch.where(torch.isfinite(self.cut), self.cut, _min_positive(flat))  # < k positive: the smallest kept
        cut = torch.where(torch.isfinite(cut), cut, torch.full_like(cut, math.nan))  # none positive
        tied = torch.where(self.must_choose, self.n_at, torch.zeros_like(self.n_at))
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
    check_maps(maps)
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
    check_mask(mask, "mask")
    check_range("pixels", pixels, 0)
    if pixels == 0 or mask.numel() == 0:
        return mask.clone()
    size = 2 * int(pixels) + 1
    grown = nn.functional.max_pool2d(mask[:, None].float(), size, stride=1, padding=int(pixels))
    return grown[:, 0] > 0


def pool_to_scale(maps: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """(N,h,w) adaptive average pooling of (N,H,W) maps, e.g. an RoA brought to the CAM's resolution."""
    if not isinstance(maps, torch.Tensor) or maps.ndim != 3:
        raise ShapeError(f"maps must be an (N,H,W) tensor, got {getattr(maps, 'shape', type(maps))}")
    h, w = (int(s) for s in size)
    if h < 1 or w < 1 or h > maps.shape[1] or w > maps.shape[2]:
        raise ConfigError(f"size must lie in [1, {maps.shape[1]}] x [1, {maps.shape[2]}], got {tuple(size)}")
    values = maps if maps.is_floating_point() else maps.float()
    return torch.nn.functional.adaptive_avg_pool2d(values[:, None], (h, w))[:, 0]
