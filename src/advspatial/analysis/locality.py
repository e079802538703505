"""Locality of one-pixel (k-pixel) attacks: does the same colour work one, two, three pixels away?

METHODS.md §6. For each successful attack (image i, pixel positions p, colours c)
the *ring* variants at radius r put the same colours at ``p + o`` for every
offset o at Chebyshev distance exactly r (``max(|o_row|, |o_col|) == r``, 8r
offsets), on the clean image (the original pixels are left clean). Two controls
put them at random offsets instead:

- the *context-matched* control (primary): for every ring variant,
  ``matched_draws`` random placements in the same *context stratum* as that
  variant -- strata of local edge strength (Sobel gradient magnitude of the
  channel mean) crossed with local intensity (3x3 mean of the channel mean),
  cut at per-image quantiles over all placements of the image -- and farther
  than the largest radius from the attack (so the control never measures
  locality itself). A successful pixel often sits on an object edge; a uniform
  placement mostly lands on flat background, so "neighbours share the
  vulnerability" against a uniform control may only mean "edge pixels are
  vulnerable". The matched control answers "nearer than a random pixel *of the
  same kind*".
- the *uniform* control (secondary view): ``n_random`` offsets drawn uniformly
  among all non-zero offsets that keep every pixel inside the image.

Each variant fools the model (untargeted: prediction != y; targeted: prediction
== target) or not. The variants of one image are not independent trials (the
image decides most of the outcome), so every rate comes with a *cluster
bootstrap* 95% interval over images (:func:`cluster_bootstrap_rate`), not a
binomial interval over pooled variants; comparisons use per-image rates.

Choices (documented):

- k-pixel attacks (pixels (N,k,2), colours (N,k,C)) move all k pixels by the
  same offset, so the pattern keeps its shape. A variant is kept only when all
  k moved pixels lie inside the image (near borders there are fewer than 8r).
  The context of a k-pixel placement is the mean over its k pixels.
- Random draws of image i come from generators keyed by (seed, stream, sample
  id of image i) (:func:`advspatial.analysis.propagation.sample_generator`):
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
import torch.nn.functional as F
from torch import nn

from ..attacks.base import frozen_eval
from ..errors import ConfigError, ShapeError, check_range
from ..regions.controls import sample_ids_or_range
from ..regions.inference import BOOTSTRAP_RESAMPLES
from ..runtime import batch_slices, model_device
from .propagation import sample_generator

#: random streams of the two locality controls (with the run's seed and each image's sample id)
UNIFORM_STREAM = 0x10C1
MATCHED_STREAM = 0x10C2

#: default context strata: edge-strength bins x intensity bins (per-image quantiles)
EDGE_STRATA = 3
INTENSITY_STRATA = 2

Z95 = 1.959963984540054  # two-sided 95% normal quantile


def wilson_interval(successes: int, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion; (0, 1) when n == 0."""
    if n == 0:
        return 0.0, 1.0
    if not 0 <= successes <= n:
        raise ConfigError(f"successes={successes} is out of range; valid: [0, {n}]")
    p = successes / n
    z2 = z * z
    centre = (p + z2 / (2 * n)) / (1 + z2 / n)
    half = z / (1 + z2 / n) * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n))
    low = 0.0 if successes == 0 else max(0.0, centre - half)  # exact ends, no rounding residue
    high = 1.0 if successes == n else min(1.0, centre + half)
    return low, high


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


def ring_offsets(r: int) -> torch.Tensor:
    """(8r, 2) int64 offsets (drow, dcol) at Chebyshev distance exactly ``r`` (row-major order)."""
    span = torch.arange(-r, r + 1)
    grid = torch.stack(torch.meshgrid(span, span, indexing="ij"), dim=-1).reshape(-1, 2)
    return grid[grid.abs().amax(dim=1) == r]


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


def _ring_variants(pixels: torch.Tensor, radius: int, h: int, w: int) -> tuple[torch.Tensor, torch.Tensor]:
    """For every image, the moved pixel sets at ``radius`` that stay inside: (image index (M,), positions (M,k,2))."""
    offsets = ring_offsets(radius) if radius > 0 else torch.zeros(1, 2, dtype=torch.long)
    moved = pixels[:, None, :, :] + offsets[None, :, None, :]  # (N, V, k, 2)
    inside = ((moved >= 0) & (moved < torch.tensor([h, w]))).all(dim=-1).all(dim=-1)  # (N, V)
    image, variant = inside.nonzero(as_tuple=True)
    return image, moved[image, variant]


def _offset_range(pixels: torch.Tensor, h: int, w: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(N,2) most negative offset and (N,2) size of the range of offsets keeping every pixel inside."""
    low = -pixels.amin(dim=1)
    high = torch.tensor([h - 1, w - 1]) - pixels.amax(dim=1)
    return low, high - low + 1


def _random_variants(
    pixels: torch.Tensor, n_random: int, h: int, w: int, seed: int, sample_ids: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``n_random`` uniform non-zero offsets per image keeping all pixels inside: (image idx, positions, has_any).

    Image i's draws come from its own generator keyed by (seed, uniform stream, sample id).
    """
    n = pixels.shape[0]
    ids = sample_ids_or_range(n, sample_ids)
    low, size = _offset_range(pixels, h, w)
    count = size[:, 0] * size[:, 1] - 1  # valid non-zero offsets
    zero_index = (0 - low[:, 0]) * size[:, 1] + (0 - low[:, 1])
    u = torch.stack([torch.rand(n_random, generator=sample_generator(seed, UNIFORM_STREAM, int(sid)),
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
    low, size = _offset_range(pixels[None], h, w)
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
        gen = sample_generator(seed, MATCHED_STREAM, int(ids[i]))
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
    groups: list[tuple[torch.Tensor, torch.Tensor]] = [_ring_variants(pixels, r, h, w) for r in (0, *radii)]
    rand_image, rand_pos, _ = _random_variants(pixels, n_random, h, w, seed, ids)
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
