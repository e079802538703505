"""Where the locality test of one-pixel (k-pixel) attacks puts the attack's colours (METHODS.md §6).

The test itself (:func:`advspatial.analysis.locality.locality_analysis`) asks
whether the moved colours still fool the model; this module owns the
placements it tries:

- the *rings*: every shift at Chebyshev distance exactly r
  (:func:`ring_offsets`, :func:`ring_variants`);
- the *uniform* control (secondary view): ``n_random`` shifts drawn uniformly
  among all non-zero shifts that keep every pixel inside (:func:`random_variants`);
- the *context-matched* control (primary): for every ring variant,
  ``matched_draws`` random placements in the same context stratum -- local edge
  strength (Sobel gradient magnitude of the channel mean) crossed with local
  intensity (3x3 mean of the channel mean), cut at per-image quantiles over all
  placements of the image -- and farther than the largest radius from the
  attack (:func:`matched_variants`).

All k pixels move by the same shift, so the pattern keeps its shape; the
context of a k-pixel placement is the mean over its k pixels. Random draws of
image i come from generators keyed by (seed, stream, sample id of image i)
(:func:`advspatial.analysis.propagation.stream_generator`): they do not depend
on the batch, the other images or their order.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..runtime import sample_ids_or_range
from .propagation import stream_generator

#: random streams of the two locality controls (with the run's seed and each image's sample id)
UNIFORM_STREAM = 0x10C1
MATCHED_STREAM = 0x10C2

#: default context strata: edge-strength bins x intensity bins (per-image quantiles)
EDGE_STRATA = 3
INTENSITY_STRATA = 2


def ring_offsets(r: int) -> torch.Tensor:
    """(8r, 2) int64 offsets (drow, dcol) at Chebyshev distance exactly ``r`` (row-major order)."""
    span = torch.arange(-r, r + 1)
    grid = torch.stack(torch.meshgrid(span, span, indexing="ij"), dim=-1).reshape(-1, 2)
    return grid[grid.abs().amax(dim=1) == r]


def ring_variants(pixels: torch.Tensor, radius: int, h: int, w: int) -> tuple[torch.Tensor, torch.Tensor]:
    """For every image, the moved pixel sets at ``radius`` that stay inside: (image index (M,), positions (M,k,2))."""
    offsets = ring_offsets(radius) if radius > 0 else torch.zeros(1, 2, dtype=torch.long)
    moved = pixels[:, None, :, :] + offsets[None, :, None, :]  # (N, V, k, 2)
    inside = ((moved >= 0) & (moved < torch.tensor([h, w]))).all(dim=-1).all(dim=-1)  # (N, V)
    image, variant = inside.nonzero(as_tuple=True)
    return image, moved[image, variant]


def offset_range(pixels: torch.Tensor, h: int, w: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(N,2) most negative offset and (N,2) size of the range of offsets keeping every pixel inside."""
    low = -pixels.amin(dim=1)
    high = torch.tensor([h - 1, w - 1]) - pixels.amax(dim=1)
    return low, high - low + 1


def random_variants(
    pixels: torch.Tensor, n_random: int, h: int, w: int, seed: int, sample_ids: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``n_random`` uniform non-zero offsets per image keeping all pixels inside: (image idx, positions, has_any).

    Image i's draws come from its own generator keyed by (seed, uniform stream, sample id).
    """
    n = pixels.shape[0]
    ids = sample_ids_or_range(n, sample_ids)
    low, size = offset_range(pixels, h, w)
    count = size[:, 0] * size[:, 1] - 1  # valid non-zero offsets
    zero_index = (0 - low[:, 0]) * size[:, 1] + (0 - low[:, 1])
    u = torch.stack([torch.rand(n_random, generator=stream_generator(seed, UNIFORM_STREAM, int(sid)),
                                dtype=torch.float64) for sid in ids.tolist()]) if n else torch.zeros(0, n_random)
    index = (u * count[:, None].clamp(min=1)).long()
    index = index + (index >= zero_index[:, None]).long()  # skip the zero offset
    offsets = torch.stack((low[:, None, 0] + index // size[:, None, 1], low[:, None, 1] + index % size[:, None, 1]), -1)
    has_any = count > 0
    image = torch.arange(n)[:, None].expand(n, n_random)[has_any]
    moved = (pixels[:, None, :, :] + offsets[:, :, None, :])[has_any]  # (M', n_random, k, 2) -> flatten
    return image.reshape(-1), moved.reshape(-1, pixels.shape[1], 2), has_any


# -- context: edge strength and intensity, strata, the matched control ---------------------------

def context_maps(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(N,H,W) local edge strength and local intensity of clean images.

    Edge strength: Sobel gradient magnitude of the channel mean (replicate
    padding). Intensity: 3x3 mean of the channel mean (replicate padding).
    """
    g = x.detach().cpu().double().mean(dim=1, keepdim=True)
    padded = F.pad(g, (1, 1, 1, 1), mode="replicate")
    sobel = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]], dtype=torch.float64)
    gx = F.conv2d(padded, sobel[None, None])
    gy = F.conv2d(padded, sobel.T.contiguous()[None, None])
    edge = (gx**2 + gy**2).sqrt()[:, 0]
    intensity = F.avg_pool2d(padded, 3, stride=1)[:, 0]
    return edge, intensity


def placement_context(edge: torch.Tensor, intensity: torch.Tensor, pixels: torch.Tensor) -> torch.Tensor:
    """(M,2) mean (edge, intensity) over the k pixels of M placements (M,k,2) of one image ((H,W) maps)."""
    r, c = pixels[..., 0], pixels[..., 1]
    return torch.stack((edge[r, c].mean(dim=-1), intensity[r, c].mean(dim=-1)), dim=-1)


def quantile_strata(values: torch.Tensor, bins: int) -> torch.Tensor:
    """(M,) bin 0..bins-1 of each value among the values' own quantiles: the number of cuts strictly below it.

    Ties share a bin, and a value equal to a cut goes to the lower bin, so a flat
    background (many equal values at the minimum) is bin 0 and never shares a bin
    with larger values.
    """
    if bins <= 1 or values.numel() == 0:
        return torch.zeros(values.shape, dtype=torch.long)
    cuts = torch.quantile(values, torch.arange(1, bins, dtype=torch.float64) / bins)
    return torch.searchsorted(cuts, values.contiguous(), right=False)


def image_placements(
    edge: torch.Tensor, intensity: torch.Tensor, pixels: torch.Tensor, edge_strata: int = EDGE_STRATA,
    intensity_strata: int = INTENSITY_STRATA,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Every placement of one image's k-pixel pattern (k,2): (offsets (M,2), context stratum (M,)).

    The offsets are all shifts (row-major) that keep every pixel inside;
    stratum = edge bin * ``intensity_strata`` + intensity bin, both bins cut at
    the quantiles of the placements' mean context over this image.
    """
    h, w = edge.shape
    low, size = offset_range(pixels[None], h, w)
    rows = torch.arange(int(size[0, 0])) + low[0, 0]
    cols = torch.arange(int(size[0, 1])) + low[0, 1]
    offsets = torch.stack(torch.meshgrid(rows, cols, indexing="ij"), dim=-1).reshape(-1, 2)
    ctx = placement_context(edge, intensity, pixels[None] + offsets[:, None, :])
    strata = quantile_strata(ctx[:, 0], edge_strata) * intensity_strata + quantile_strata(ctx[:, 1], intensity_strata)
    return offsets, strata


@dataclass
class MatchedVariants:
    """The context-matched control of the ring variants of every radius.

    ``image``, ``positions`` (M,k,2), ``radius_index`` (M,): one entry per drawn placement;
    ``stratum`` (M,) its stratum and ``source_stratum`` (M,) the stratum of the ring variant it matches
    (always equal); ``offset`` (M,2) its shift from the attack's pixels.
    """

    image: torch.Tensor
    positions: torch.Tensor
    radius_index: torch.Tensor
    stratum: torch.Tensor
    source_stratum: torch.Tensor
    offset: torch.Tensor


def matched_variants(
    x: torch.Tensor, pixels: torch.Tensor, radii: Sequence[int], draws: int, seed: int = 0,
    sample_ids: torch.Tensor | None = None, edge_strata: int = EDGE_STRATA, intensity_strata: int = INTENSITY_STRATA,
) -> MatchedVariants:
    """For every ring variant (each radius, each offset inside the image), ``draws`` random placements of the
    same context stratum, farther than ``max(radii)`` from the attack (Chebyshev), drawn uniformly with
    replacement from image i's generator keyed by (seed, matched stream, sample id)."""
    pixels = torch.as_tensor(pixels).cpu().long()
    if pixels.ndim == 2:
        pixels = pixels[:, None, :]
    n, _, h, w = x.shape
    ids = sample_ids_or_range(n, sample_ids)
    edge, intensity = context_maps(x)
    exclude = max(radii) if radii else 0
    parts: list[tuple[torch.Tensor, ...]] = []
    for i in range(n):
        offsets, strata = image_placements(edge[i], intensity[i], pixels[i], edge_strata, intensity_strata)
        key = {(int(a), int(b)): j for j, (a, b) in enumerate(offsets.tolist())}
        far = offsets.abs().amax(dim=1) > exclude
        order = torch.argsort(strata[far], stable=True)
        pool, pool_strata = offsets[far][order], strata[far][order]
        n_strata = edge_strata * intensity_strata
        counts = torch.bincount(pool_strata, minlength=n_strata)
        starts = torch.cumsum(counts, 0) - counts
        gen = stream_generator(seed, MATCHED_STREAM, int(ids[i]))
        for ri, r in enumerate(radii):
            ring = [key[(int(a), int(b))] for a, b in ring_offsets(r).tolist() if (int(a), int(b)) in key]
            if not ring or draws == 0:
                continue
            source = strata[torch.tensor(ring)]  # (V,)
            u = torch.rand(len(ring), draws, generator=gen, dtype=torch.float64)
            available = counts[source] > 0
            pick = starts[source][:, None] + (u * counts[source][:, None]).long().clamp(
                max=(counts[source][:, None] - 1).clamp(min=0))
            pick, src = pick[available].reshape(-1), source[available].repeat_interleave(draws)
            off = pool[pick]
            parts.append((torch.full((off.shape[0],), i), pixels[i][None] + off[:, None, :],
                          torch.full((off.shape[0],), ri), pool_strata[pick], src, off))
    if not parts:
        k = pixels.shape[1]
        empty = torch.zeros(0, dtype=torch.long)
        return MatchedVariants(empty, torch.zeros(0, k, 2, dtype=torch.long), empty, empty, empty,
                               torch.zeros(0, 2, dtype=torch.long))
    return MatchedVariants(*(torch.cat([p[j] for p in parts]) for j in range(6)))

