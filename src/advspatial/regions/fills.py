"""Fills: what a neutralized region is replaced with (METHODS.md §2).

``fill(x, region, kind)`` returns ``x`` with the pixels of ``region`` (an
(N,H,W) bool tensor, all channels of a pixel together) replaced; pixels outside
the region are returned unchanged, bit for bit. Kinds:

- ``zero``: 0 (the default for Fashion-MNIST/MNIST, whose background is 0);
- ``mean``: the per-channel dataset mean ``dataset_mean`` (required);
- ``blur``: a Gaussian blur of the whole image (separable, ``sigma`` in pixels,
  kernel radius ``int(truncate*sigma + 0.5)``, SciPy's ``reflect`` boundary:
  ``d c b a | a b c d``, exactly ``scipy.ndimage.gaussian_filter``'s default);
- ``inpaint``: diffusion inpainting, the discrete Laplace equation inside the
  region with the known pixels as boundary values (Jacobi iterations: each
  region pixel becomes the average of its 4-neighbours inside the image). It
  starts from the mean of the known pixels, so the result does not depend on the
  values that were inside the region at all.
- ``road``: noisy linear imputation (Rong et al., 2022, "A Consistent and
  Efficient Evaluation Strategy for Attribution Methods", ROAD): each region
  pixel is the weighted mean of its 8 neighbours inside the image (weight 1/6
  for the 4 edge neighbours, 1/12 for the 4 corners), solved exactly as one
  block-diagonal sparse linear system for the batch (all channels at once),
  plus Gaussian noise of standard deviation ``noise`` (Quantus' default 0.01)
  drawn per image from ``runtime.sample_generator(seed, sample_ids[i])`` over
  the whole (C,H,W) grid, so an image gets the same fill alone or in any batch
  (the solve too, bit for bit), and the noise at a pixel does not depend on
  the region. An image whose region covers every
  pixel has nothing to impute from: it gets 0 plus the noise.

All fills are batched and differentiable with respect to ``x`` (the region is a
constant): ``zero``/``mean`` pass no gradient from inside the region, ``blur``,
``inpaint`` and ``road`` pass gradient from the region to the pixels its fill is
made of (``road``: through the same sparse system, transposed).
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import scipy.sparse
import scipy.sparse.linalg
import torch
import torch.nn.functional as F

from ..errors import ConfigError, ShapeError, check_range
from ..registry import Registry
from ..runtime import per_sample_noise, sample_ids_or_range

#: A fill bound to its parameters: ``(x, region) -> filled x``.
FillFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class FillParams:
    """Parameters of every fill kind; each kind reads only its own."""

    dataset_mean: tuple[float, ...] | None = None
    sigma: float = 1.0
    truncate: float = 4.0
    iterations: int = 300
    tol: float | None = 1e-5
    noise: float = 0.01
    seed: int = 0
    sample_ids: tuple[int, ...] | None = None


_ContentFn = Callable[[torch.Tensor, torch.Tensor, FillParams], torch.Tensor]
#: every fill kind by name
FILLS: Registry[_ContentFn] = Registry("fill")


def register_fill(name: str) -> Callable[[_ContentFn], _ContentFn]:
    """Register ``content(x, region, params) -> (N,C,H,W)`` values used inside the region (a taken name is an error)."""
    return FILLS.decorator(name)


def list_fills() -> list[str]:
    """Names of the registered fill kinds."""
    return FILLS.names()


# -- the public entry points ---------------------------------------------------

def fill(
    x: torch.Tensor,
    region: torch.Tensor,
    kind: str = "zero",
    *,
    dataset_mean: Sequence[float] | torch.Tensor | None = None,
    sigma: float = 1.0,
    truncate: float = 4.0,
    iterations: int = 300,
    tol: float | None = 1e-5,
    noise: float = 0.01,
    seed: int = 0,
    sample_ids: Sequence[int] | torch.Tensor | None = None,
) -> torch.Tensor:
    """``x`` with the (N,H,W) bool ``region`` replaced by the fill ``kind``.

    ``dataset_mean`` is needed by ``mean``; ``sigma``/``truncate`` by ``blur``;
    ``iterations`` (maximum Jacobi sweeps) and ``tol`` (stop an image once no
    pixel changes by ``tol`` or more in a sweep; ``None`` runs all sweeps) by
    ``inpaint``; ``noise`` (standard deviation), ``seed`` and ``sample_ids``
    (the images' global ids, default ``0..N-1``; pass them so a batch equals its
    images alone) by ``road``.
    """
    params = _make_params(kind, dataset_mean, sigma, truncate, iterations, tol, noise, seed)
    region = check_region(region, x)
    if kind == "road":
        ids = sample_ids_or_range(x.shape[0], None if sample_ids is None else torch.as_tensor(sample_ids))
        params = dataclasses.replace(params, sample_ids=tuple(ids.tolist()))
    if not bool(region.any()):
        return x
    content = FILLS.get(kind)(x, region, params)
    return torch.where(region[:, None], content, x)


def make_fill(kind: str = "zero", **params: object) -> FillFn:
    """Bind a fill kind to its parameters, validating both now: ``make_fill("blur", sigma=2)(x, region)``.

    The images' global ids are passed per call: ``make_fill("road")(x, region, sample_ids=ids)``.
    """
    allowed = set(FillParams.__dataclass_fields__) - {"sample_ids"}  # per batch: passed at call time
    unknown = set(params) - allowed
    if unknown:
        raise ConfigError(f"fill has no parameter(s) {sorted(unknown)}; valid: {sorted(allowed)}")
    _make_params(kind, **params)  # type: ignore[arg-type]
    bound = functools.partial(fill, kind=kind, **params)
    return bound  # type: ignore[return-value]


def put_back(x: torch.Tensor, region: torch.Tensor, source: torch.Tensor) -> torch.Tensor:
    """``x`` with the pixels of ``region`` taken from ``source`` (the diagnostic "perfect fill")."""
    region = check_region(region, x)
    if source.shape != x.shape:
        raise ShapeError(f"source images {tuple(source.shape)} do not match images {tuple(x.shape)}")
    return torch.where(region[:, None], source.to(x), x)


def check_region(region: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Validate an (N,H,W) bool region for images x (N,C,H,W); return it on x's device."""
    if not isinstance(x, torch.Tensor) or x.ndim != 4:
        raise ShapeError(f"images must be a (N,C,H,W) tensor, got {getattr(x, 'shape', type(x))}")
    region = torch.as_tensor(region, device=x.device)
    expected = (x.shape[0], *x.shape[2:])
    if tuple(region.shape) != expected:
        raise ShapeError(f"region must have shape {expected} (N,H,W) for images {tuple(x.shape)}, got {tuple(region.shape)}")
    if region.dtype != torch.bool:
        raise ShapeError(f"region must be a bool tensor, got dtype {region.dtype}")
    return region


def _make_params(
    kind: str,
    dataset_mean: Sequence[float] | torch.Tensor | None = None,
    sigma: float = 1.0,
    truncate: float = 4.0,
    iterations: int = 300,
    tol: float | None = 1e-5,
    noise: float = 0.01,
    seed: int = 0,
) -> FillParams:
    FILLS.get(kind)  # an unknown kind: the one-line error listing the valid ones
    check_range("sigma", sigma, 0.0, None, low_inclusive=False)
    check_range("truncate", truncate, 0.0, None)
    if int(iterations) != iterations or iterations < 0:
        raise ConfigError(f"iterations={iterations!r} is out of range; valid: an integer >= 0")
    if tol is not None:
        check_range("tol", tol, 0.0, None)
    check_range("noise", noise, 0.0, None)
    if int(seed) != seed:
        raise ConfigError(f"seed={seed!r} is out of range; valid: an integer")
    mean: tuple[float, ...] | None = None
    if dataset_mean is not None:
        mean = tuple(float(v) for v in torch.as_tensor(dataset_mean).flatten().tolist())
    if kind == "mean" and mean is None:
        raise ConfigError("fill 'mean' needs dataset_mean (one value per channel)")
    return FillParams(mean, float(sigma), float(truncate), int(iterations), tol, float(noise), int(seed))


# -- the fills -------------------------------------------------------------------

@register_fill("zero")
def _zero(x: torch.Tensor, region: torch.Tensor, params: FillParams) -> torch.Tensor:
    return torch.zeros((), dtype=x.dtype, device=x.device).expand_as(x)


@register_fill("mean")
def _mean(x: torch.Tensor, region: torch.Tensor, params: FillParams) -> torch.Tensor:
    assert params.dataset_mean is not None
    if len(params.dataset_mean) != x.shape[1]:
        raise ShapeError(f"dataset_mean has {len(params.dataset_mean)} values; images have {x.shape[1]} channels")
    mean = torch.tensor(params.dataset_mean, dtype=x.dtype, device=x.device)
    return mean.view(1, -1, 1, 1).expand_as(x)


@register_fill("blur")
def _blur(x: torch.Tensor, region: torch.Tensor, params: FillParams) -> torch.Tensor:
    return gaussian_blur(x, params.sigma, params.truncate)


@register_fill("inpaint")
def _inpaint(x: torch.Tensor, region: torch.Tensor, params: FillParams) -> torch.Tensor:
    return diffusion_inpaint(x, region, params.iterations, params.tol)


@register_fill("road")
def _road(x: torch.Tensor, region: torch.Tensor, params: FillParams) -> torch.Tensor:
    assert params.sample_ids is not None
    return noisy_linear_imputation(x, region, params.noise, params.seed, torch.tensor(params.sample_ids))


# -- Gaussian blur -----------------------------------------------------------------

def gaussian_kernel1d(sigma: float, truncate: float = 4.0, *, dtype: torch.dtype = torch.float32,
                      device: torch.device | str = "cpu") -> torch.Tensor:
    """Normalized 1-D Gaussian of radius ``int(truncate*sigma + 0.5)`` (SciPy's choice)."""
    radius = int(truncate * sigma + 0.5)
    t = torch.arange(-radius, radius + 1, dtype=torch.float64)
    kernel = torch.exp(-0.5 * (t / sigma) ** 2)
    return (kernel / kernel.sum()).to(dtype=dtype, device=device)


def _reflect_index(n: int, radius: int, device: torch.device) -> torch.Tensor:
    """Indices of a length-n axis extended by ``radius`` on each side, SciPy ``reflect`` (any radius)."""
    i = torch.arange(-radius, n + radius, device=device) % (2 * n)
    return torch.where(i >= n, 2 * n - 1 - i, i)


def gaussian_blur(x: torch.Tensor, sigma: float, truncate: float = 4.0) -> torch.Tensor:
    """Separable Gaussian blur of each channel of x (N,C,H,W); differentiable."""
    n, c, h, w = x.shape
    kernel = gaussian_kernel1d(sigma, truncate, dtype=x.dtype, device=x.device)
    radius = (kernel.numel() - 1) // 2
    flat = x.reshape(n * c, 1, h, w)
    flat = flat.index_select(3, _reflect_index(w, radius, x.device))
    flat = F.conv2d(flat, kernel.view(1, 1, 1, -1))
    flat = flat.index_select(2, _reflect_index(h, radius, x.device))
    flat = F.conv2d(flat, kernel.view(1, 1, -1, 1))
    return flat.reshape(n, c, h, w)


# -- diffusion inpainting ----------------------------------------------------------

def _neighbour_sum(u: torch.Tensor) -> torch.Tensor:
    """Sum of the 4-neighbours of each pixel that lie inside the image."""
    p = F.pad(u, (1, 1, 1, 1))
    return p[..., :-2, 1:-1] + p[..., 2:, 1:-1] + p[..., 1:-1, :-2] + p[..., 1:-1, 2:]


def diffusion_inpaint(
    x: torch.Tensor, region: torch.Tensor, iterations: int = 300, tol: float | None = 1e-5
) -> torch.Tensor:
    """Fill ``region`` by Jacobi sweeps of ``u <- mean of 4-neighbours`` (Laplace equation).

    Known pixels are fixed (Dirichlet); at the image border only the neighbours
    inside the image are averaged (Neumann). The region starts at the per-image,
    per-channel mean of the known pixels (0 if none are known). With ``tol``, an
    image stops changing after the first sweep whose largest change is below
    ``tol``, so each image gets the same result alone or in a batch.
    Returns the full image (known pixels unchanged).
    """
    hole = region[:, None]
    known = (~hole).to(x.dtype)
    count = known.sum(dim=(2, 3), keepdim=True)
    start = (x * known).sum(dim=(2, 3), keepdim=True) / count.clamp_min(1)
    u = torch.where(hole, start, x)
    neighbours = _neighbour_sum(torch.ones_like(x[:1, :1])).clamp_min(1)
    active = torch.ones(x.shape[0], 1, 1, 1, dtype=torch.bool, device=x.device)
    for _ in range(iterations):
        new = torch.where(hole & active, _neighbour_sum(u) / neighbours, u)
        if tol is not None:
            change = (new - u).detach().abs().flatten(1).amax(dim=1)
            active = active & (change >= tol).view(-1, 1, 1, 1)
        u = new
        if tol is not None and not bool(active.any()):
            break
    return u


# -- noisy linear imputation (ROAD) --------------------------------------------------

#: ROAD's neighbour weights (row offset, column offset, weight): 1/6 edge neighbours, 1/12 corners (sum 1)
ROAD_NEIGHBOURS: tuple[tuple[int, int, float], ...] = (
    (-1, 0, 1 / 6), (1, 0, 1 / 6), (0, -1, 1 / 6), (0, 1, 1 / 6),
    (-1, -1, 1 / 12), (-1, 1, 1 / 12), (1, -1, 1 / 12), (1, 1, 1 / 12),
)


@functools.lru_cache(maxsize=32)
def _dissection_rank(h: int, w: int, leaf: int = 16) -> np.ndarray:
    """Rank of each pixel of an h x w grid in a nested-dissection elimination order (read-only array).

    A rectangle is cut by its middle row (or column, if it is wider than
    tall): the two halves come first, each ordered the same way, and the cut
    line last. A one-pixel line separates the halves because ROAD's neighbours
    are at most one pixel away, so eliminating the halves creates no fill-in
    across the cut; rectangles of at most ``leaf`` pixels are taken row by row.
    On a large region this keeps the sparse LU several times smaller and
    faster than a row-by-row order.
    """
    order: list[np.ndarray] = []

    def visit(r0: int, r1: int, c0: int, c1: int) -> None:
        if r1 <= r0 or c1 <= c0:
            return
        if (r1 - r0) * (c1 - c0) <= leaf:
            order.append((np.arange(r0, r1)[:, None] * w + np.arange(c0, c1)).reshape(-1))
        elif r1 - r0 >= c1 - c0:
            m = (r0 + r1) // 2
            visit(r0, m, c0, c1)
            visit(m + 1, r1, c0, c1)
            order.append(m * w + np.arange(c0, c1))
        else:
            m = (c0 + c1) // 2
            visit(r0, r1, c0, m)
            visit(r0, r1, m + 1, c1)
            order.append(np.arange(r0, r1) * w + m)

    visit(0, h, 0, w)
    rank = np.empty(h * w, dtype=np.int64)
    rank[np.concatenate(order)] = np.arange(h * w)
    rank.flags.writeable = False
    return rank


def _elimination_order(pixels: np.ndarray, h: int, w: int) -> np.ndarray:
    """The flat batch indices ``pixels`` sorted by image, then by :func:`_dissection_rank` within the image."""
    image, pixel = np.divmod(pixels, h * w)
    return pixels[np.lexsort((_dissection_rank(h, w)[pixel], image))]


@dataclass
class _ImputationSystem:
    """The whole batch's system ``A u = -B x``: u the region pixels, B their couplings to known pixels.

    The batch's N images are flattened into one vector of N*H*W pixels, and
    their systems are stacked into one block-diagonal matrix (neighbours only
    ever couple pixels of the same image), so one sparse LU factorization and
    one solve serve every image and channel: far faster than one small system
    per image, with the same equations. ``A`` (K x K, K region pixels) holds
    ``-(sum of in-image neighbour weights)`` on the diagonal and the weight of
    each region neighbour off it; ``B`` (K x N*H*W) the weight of each known
    neighbour. An image whose region covers all its pixels has no known
    neighbour (its block would be singular): its pixels are left out of the
    system and listed in ``blank``, to be filled with 0. The variables are
    numbered image by image in a fixed nested-dissection order of the pixel
    grid (:func:`_dissection_rank`), so each image's block is factorized with
    the same arithmetic alone or in any batch (bit for bit the same fill).
    """

    unknown: np.ndarray            # (K,) flat batch indices of the pixels solved for, in elimination order
    blank: np.ndarray              # flat batch indices of the pixels of fully covered images (filled with 0)
    lu: scipy.sparse.linalg.SuperLU | None   # None: nothing to solve (K = 0)
    couplings: scipy.sparse.csr_matrix      # (K, N*H*W)

    @classmethod
    def build(cls, region: np.ndarray) -> "_ImputationSystem":
        """The system of an (N,H,W) bool region (vectorised over the batch)."""
        n, h, w = region.shape
        covered = region.reshape(n, h * w).all(axis=1)
        blank = np.flatnonzero(np.repeat(covered, h * w))
        solved = (region & ~covered[:, None, None]).reshape(-1)
        unknown = _elimination_order(np.flatnonzero(solved), h, w)
        k = unknown.size
        var = np.full(n * h * w, -1, dtype=np.int64)
        var[unknown] = np.arange(k)
        diag, a_parts, b_parts = cls._neighbour_weights(unknown, solved, (h, w))
        a_parts.append((np.arange(k), unknown, diag))  # columns are pixel indices until var[]
        a_i, a_j, a_v = (np.concatenate(p) for p in zip(*a_parts))
        b_i, b_j, b_v = (np.concatenate(p) for p in zip(*b_parts))
        a = scipy.sparse.csc_matrix((a_v, (a_i, var[a_j])), shape=(k, k))
        b = scipy.sparse.csr_matrix((b_v, (b_i, b_j)), shape=(k, n * h * w))
        # the variables are already in a good elimination order; SciPy's own (COLAMD) would reorder
        # each image differently depending on its batch-mates, changing its round-off
        lu = scipy.sparse.linalg.splu(a, permc_spec="NATURAL") if k else None
        return cls(unknown, blank, lu, b)

    @staticmethod
    def _neighbour_weights(
        unknown: np.ndarray, solved: np.ndarray, shape: tuple[int, int]
    ) -> tuple[np.ndarray, list[tuple[np.ndarray, ...]], list[tuple[np.ndarray, ...]]]:
        """The diagonal and the (row, pixel, weight) triplets of A and B for the flat batch pixels ``unknown``.

        Loops over the 8 ROAD neighbours (not over images): a neighbour counts
        when it lies inside the same image; it goes to A when it is solved for
        too (its column is still a pixel index here), to B otherwise. The
        diagonal subtracts the weights in ROAD_NEIGHBOURS order, as a
        single-image system would.
        """
        h, w = shape
        image, pixel = np.divmod(unknown, h * w)
        rows, cols = np.divmod(pixel, w)
        diag = np.zeros(unknown.size)
        a_parts: list[tuple[np.ndarray, ...]] = []
        b_parts: list[tuple[np.ndarray, ...]] = []
        for dr, dc, weight in ROAD_NEIGHBOURS:
            r, c = rows + dr, cols + dc
            inside = (r >= 0) & (r < h) & (c >= 0) & (c < w)
            diag[inside] -= weight
            i = np.flatnonzero(inside)
            j = (image[inside] * h + r[inside]) * w + c[inside]
            hole = solved[j]
            a_parts.append((i[hole], j[hole], np.full(int(hole.sum()), weight)))
            b_parts.append((i[~hole], j[~hole], np.full(int((~hole).sum()), weight)))
        return diag, a_parts, b_parts

    def solve(self, images: np.ndarray) -> np.ndarray:
        """(K, C) imputed values of the region pixels for the (N*H*W, C) float64 batch."""
        if self.lu is None:
            return np.zeros((0, images.shape[1]))
        return self.lu.solve(-(self.couplings @ images))

    def gradient(self, grad_unknown: np.ndarray) -> np.ndarray:
        """(N*H*W, C) gradient of the batch from the (K, C) gradient of :meth:`solve`'s output."""
        if self.lu is None:
            return np.zeros((self.couplings.shape[1], grad_unknown.shape[1]))
        return -(self.couplings.T @ self.lu.solve(grad_unknown, trans="T"))


def _pixels_by_channel(t: torch.Tensor) -> np.ndarray:
    """An (N,C,H,W) tensor as an (N*H*W, C) contiguous float64 NumPy array (one row per pixel)."""
    n, c, h, w = t.shape
    pixels = t.detach().to("cpu", torch.float64).permute(0, 2, 3, 1).reshape(n * h * w, c)
    return np.ascontiguousarray(pixels.numpy())


def _as_images(pixels: np.ndarray, like: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`_pixels_by_channel`, on ``like``'s device and dtype."""
    n, c, h, w = like.shape
    return torch.from_numpy(pixels).reshape(n, h, w, c).permute(0, 3, 1, 2).to(like.device, like.dtype)


#: region pixels factorized together at most (one block-diagonal LU per chunk of images): bounds the memory of
#: the factors on large images with large regions (about 3 GB for 64 ImageNet images at 90% coverage at once)
_IMPUTATION_CHUNK = 200_000


def _image_chunks(region: np.ndarray) -> list[slice]:
    """Consecutive slices of the (N,H,W) batch, each holding at most :data:`_IMPUTATION_CHUNK` region pixels
    (at least one image each). An image's fill does not depend on its batch-mates, so chunking changes nothing."""
    counts = region.reshape(region.shape[0], -1).sum(axis=1)
    chunks, start, total = [], 0, 0
    for i, count in enumerate(counts.tolist()):
        if i > start and total + count > _IMPUTATION_CHUNK:
            chunks.append(slice(start, i))
            start, total = i, 0
        total += count
    chunks.append(slice(start, region.shape[0]))
    return chunks


class _LinearImputation(torch.autograd.Function):
    """The exact (noise-free) imputation of each image's region; backward solves the transposed systems."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, region: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        masks = region.cpu().numpy()
        parts, systems = [], []
        for chunk in _image_chunks(masks):
            system = _ImputationSystem.build(masks[chunk])
            images = _pixels_by_channel(x[chunk])
            out = images.copy()
            out[system.unknown] = system.solve(images)
            out[system.blank] = 0.0
            parts.append(_as_images(out, x[chunk]))
            systems.append((chunk, system))
        ctx.systems = systems
        ctx.save_for_backward(region)
        return torch.cat(parts)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):  # type: ignore[override]
        (region,) = ctx.saved_tensors
        parts = []
        for chunk, system in ctx.systems:
            g = _pixels_by_channel(grad[chunk])
            out = system.gradient(np.ascontiguousarray(g[system.unknown]))
            known = ~region[chunk].cpu().numpy().reshape(-1)
            out[known] += g[known]  # known pixels are passed through unchanged
            parts.append(_as_images(out, grad[chunk]))
        return torch.cat(parts), None


def linear_imputation(x: torch.Tensor, region: torch.Tensor) -> torch.Tensor:
    """``x`` with each (N,H,W) ``region`` pixel the weighted mean of its 8 in-image neighbours (noise-free ROAD).

    Solved exactly (SciPy's sparse LU in float64 on the CPU, one block-diagonal
    system for the whole batch and all channels); differentiable with respect
    to ``x``. Known pixels are returned unchanged. A region covering the whole
    image is filled with 0.
    """
    region = check_region(region, x)
    return _LinearImputation.apply(x, region)


def noisy_linear_imputation(
    x: torch.Tensor, region: torch.Tensor, noise: float = 0.01, seed: int = 0,
    sample_ids: torch.Tensor | None = None,
) -> torch.Tensor:
    """ROAD's fill: :func:`linear_imputation` plus N(0, ``noise``^2) on the region's pixels.

    The noise of image i is drawn over its whole (C,H,W) grid from
    ``runtime.sample_generator(seed, sample_ids[i])`` (ids default ``0..N-1``), so
    it depends on neither the batch nor the region; pixels outside the region
    are returned unchanged.
    """
    region = check_region(region, x)
    check_range("noise", noise, 0.0, None)
    filled = linear_imputation(x, region)
    if noise == 0:
        return filled
    ids = sample_ids_or_range(x.shape[0], sample_ids)
    eps = per_sample_noise(x.shape, seed, ids, "normal", x.device, x.dtype)
    return torch.where(region[:, None], filled + noise * eps, x)
