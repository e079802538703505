"""Locality of one-pixel (k-pixel) attacks: does the same colour work one, two, three pixels away?

METHODS.md §6. For each successful attack (image i, pixel positions p, colours c)
the *ring* variants at radius r put the same colours at ``p + o`` for every
offset o at Chebyshev distance exactly r (``max(|o_row|, |o_col|) == r``, 8r
offsets), on the clean image (the original pixels are left clean). The
*control* puts them at ``p + o`` for offsets drawn uniformly at random. Each
variant fools the model (untargeted: prediction != y; targeted: prediction ==
target) or not; rates come with Wilson 95% confidence intervals.

Choices (documented):

- k-pixel attacks (pixels (N,k,2), colours (N,k,C)) move all k pixels by the
  same offset, so the pattern keeps its shape. A variant is kept only when all
  k moved pixels lie inside the image (near borders there are fewer than 8r).
- The random control draws, per image, ``n_random`` offsets uniformly (with
  replacement, so the outcomes are independent Bernoulli trials as the Wilson
  interval assumes) among all non-zero offsets that keep every pixel inside the
  image; for k = 1 that is a uniformly random position other than the original.
  The draws come from one generator seeded with ``seed``, drawn for all images
  at once, so they do not depend on ``batch_size``.
- A row with radius 0 re-checks the original attack (it should be 1.0 when the
  pixels given are successful attacks).
- Where two of the given k pixels share a position, which colour wins is undefined.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import torch
from torch import nn

from ..attacks.base import frozen_eval
from ..errors import ConfigError, ShapeError, check_range
from ..runtime import batch_slices, make_generator, model_device

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
class LocalityRow:
    """Success of moved pixels: ``kind`` is "original" (radius 0), "ring" (radius r) or "random"."""

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
    """

    rows: list[LocalityRow]
    radii: tuple[int, ...]
    ring_counts: torch.Tensor
    ring_successes: torch.Tensor
    random_counts: torch.Tensor
    random_successes: torch.Tensor
    original_success: torch.Tensor

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


def _random_variants(
    pixels: torch.Tensor, n_random: int, h: int, w: int, seed: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``n_random`` uniform non-zero offsets per image keeping all pixels inside: (image idx, positions, has_any)."""
    n = pixels.shape[0]
    low = -pixels.amin(dim=1)  # (N, 2): most negative offset per axis
    high = torch.tensor([h - 1, w - 1]) - pixels.amax(dim=1)
    size = high - low + 1  # (N, 2)
    count = size[:, 0] * size[:, 1] - 1  # valid non-zero offsets
    zero_index = (0 - low[:, 0]) * size[:, 1] + (0 - low[:, 1])
    gen = make_generator(seed)
    u = torch.rand(n, n_random, generator=gen, dtype=torch.float64)
    index = (u * count[:, None].clamp(min=1)).long()
    index = index + (index >= zero_index[:, None]).long()  # skip the zero offset
    offsets = torch.stack((low[:, None, 0] + index // size[:, None, 1], low[:, None, 1] + index % size[:, None, 1]), -1)
    has_any = count > 0
    image = torch.arange(n)[:, None].expand(n, n_random)[has_any]
    moved = (pixels[:, None, :, :] + offsets[:, :, None, :])[has_any]  # (M', n_random, k, 2) -> flatten
    return image.reshape(-1), moved.reshape(-1, pixels.shape[1], 2), has_any


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


def _row(kind: str, radius: int | None, n: int, successes: int) -> LocalityRow:
    low, high = wilson_interval(successes, n)
    return LocalityRow(kind, radius, n, successes, successes / n if n else float("nan"), low, high)


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
) -> LocalityResult:
    """Success rate of the attack's colours moved to Chebyshev radius r, against random positions.

    Args:
        model: classifier on [0,1] images (run frozen in eval mode).
        x: (N,C,H,W) *clean* images; y: (N,) labels.
        pixels: (N,2) or (N,k,2) int (row, col) of each successful attack's pixels.
        colours: (N,C) or (N,k,C) their colours in [0,1].
        radii: positive Chebyshev radii.
        n_random: control variants per image (uniform random offsets; 0 disables the control).
        target: (N,) target classes for a targeted attack, else None (untargeted).
        seed: seed of the random control.
        batch_size: variants per forward pass.
    """
    pixels, colours, y, target = _validate(x, y, pixels, colours, target)
    radii = tuple(int(r) for r in radii)
    for r in radii:
        check_range("radius", r, 1)
    check_range("n_random", n_random, 0)
    n, _, h, w = x.shape
    x = x.detach().cpu()
    groups: list[tuple[torch.Tensor, torch.Tensor]] = [_ring_variants(pixels, r, h, w) for r in (0, *radii)]
    rand_image, rand_pos, has_any = _random_variants(pixels, n_random, h, w, seed)
    groups.append((rand_image, rand_pos))
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
    rows = [_row("original", 0, int(counts[0].sum()), int(wins[0].sum()))]
    rows += [_row("ring", r, int(counts[i + 1].sum()), int(wins[i + 1].sum())) for i, r in enumerate(radii)]
    if n_random > 0:
        rows.append(_row("random", None, int(counts[-1].sum()), int(wins[-1].sum())))
    return LocalityResult(
        rows=rows,
        radii=radii,
        ring_counts=counts[1:-1].T.contiguous(),
        ring_successes=wins[1:-1].T.contiguous(),
        random_counts=counts[-1],
        random_successes=wins[-1],
        original_success=wins[0].bool(),
    )
