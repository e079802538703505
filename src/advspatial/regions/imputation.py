"""Noisy linear imputation (ROAD, Rong et al. 2022): a region's pixels filled from their neighbours.

Each removed pixel is the weighted mean of its eight neighbours (:data:`ROAD_NEIGHBOURS`), known or
removed, so the fill is the solution of one sparse linear system per image, solved here for a whole
batch at once (block-diagonal LU in a nested-dissection order, chunked to bound memory) and
differentiable in the known pixels. Bit for bit the same whatever the batch. On a GPU the same systems are
solved on the device instead (:mod:`.imputation_iterative`). :mod:`.fills` registers it as the ``road`` fill.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
import scipy.sparse
import scipy.sparse.linalg
import torch

from ..errors import check_range, unknown_name
from ..host_syncs import host_numpy, on_device_path
from ..runtime import per_sample_noise, sample_ids_or_range
from .checks import check_region
from .imputation_iterative import IterativeImputation
from .road_stencil import ROAD_NEIGHBOURS




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
    def build(cls, region: np.ndarray) -> _ImputationSystem:
        """The system of an (N,H,W) bool region (vectorised over the batch)."""
        n, h, w = region.shape
        covered = np.asarray(region.reshape(n, h * w).all(axis=1))
        blank = np.flatnonzero(np.repeat(covered, h * w))
        solved = (region & ~covered[:, None, None]).reshape(-1)
        unknown = _elimination_order(np.flatnonzero(solved), h, w)
        k = unknown.size
        var = np.full(n * h * w, -1, dtype=np.int64)
        var[unknown] = np.arange(k)
        diag, a_parts, b_parts = cls._neighbour_weights(unknown, solved, (h, w))
        a_parts.append((np.arange(k), unknown, diag))  # columns are pixel indices until var[]
        a_i, a_j, a_v = (np.concatenate(p) for p in zip(*a_parts, strict=True))
        b_i, b_j, b_v = (np.concatenate(p) for p in zip(*b_parts, strict=True))
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


def _read_images_and_region(x: torch.Tensor, region: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """The (N,C,H,W) images as float64 and the (N,H,W) bool region, read to the host in one transfer: the region
    rides as one more channel of the images (0 or 1, exact in any float dtype), so a device waits once, not twice."""
    both = host_numpy(torch.cat([x.detach(), region[:, None].to(x.dtype)], dim=1), torch.float64)
    return both[:, :-1], both[:, -1] > 0.5


def _pixels_by_channel(images: np.ndarray) -> np.ndarray:
    """(N,C,H,W) host images as an (N*H*W, C) contiguous float64 array (one row per pixel)."""
    n, c, h, w = images.shape
    return np.ascontiguousarray(images.transpose(0, 2, 3, 1).reshape(n * h * w, c), dtype=np.float64)


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
    def forward(ctx, x: torch.Tensor, region: torch.Tensor) -> torch.Tensor:
        pixels, masks = _read_images_and_region(x, region)
        parts, systems = [], []
        for chunk in _image_chunks(masks):
            system = _ImputationSystem.build(masks[chunk])
            images = _pixels_by_channel(pixels[chunk])
            out = images.copy()
            out[system.unknown] = system.solve(images)
            out[system.blank] = 0.0
            parts.append(_as_images(out, x[chunk]))
            systems.append((chunk, system))
        ctx.systems, ctx.masks = systems, masks
        return torch.cat(parts)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        grads = host_numpy(grad, torch.float64)  # one read for every chunk
        parts = []
        for chunk, system in ctx.systems:
            g = _pixels_by_channel(grads[chunk])
            out = system.gradient(np.ascontiguousarray(g[system.unknown]))
            known = ~ctx.masks[chunk].reshape(-1)
            out[known] += g[known]  # known pixels are passed through unchanged
            parts.append(_as_images(out, grad[chunk]))
        return torch.cat(parts), None


#: how :func:`linear_imputation` solves: ``auto`` (``exact`` on a CPU, ``iterative`` on another device), ``exact``
#: (SciPy's sparse LU on the host), ``iterative`` (conjugate gradients on the images' device,
#: :mod:`.imputation_iterative`)
SOLVERS = ("auto", "exact", "iterative")


def linear_imputation(x: torch.Tensor, region: torch.Tensor, solver: str = "auto") -> torch.Tensor:
    """``x`` with each (N,H,W) ``region`` pixel the weighted mean of its 8 in-image neighbours (noise-free ROAD).

    Differentiable with respect to ``x``; known pixels are returned unchanged; a region covering the whole image is
    filled with 0. ``solver`` (:data:`SOLVERS`): on a CPU solved exactly (SciPy's sparse LU in float64, one
    block-diagonal system for the whole batch and all channels); on a GPU by conjugate gradients on the device, to
    within about 1e-9 of the exact fill, so that the device does not wait on the host
    (:mod:`.imputation_iterative`); on a device's path forced on the CPU
    (:data:`~advspatial.host_syncs.DEVICE_PATH_ON_CPU`) as on a GPU, so that its ledger counts a GPU's reads.

    >>> region = torch.zeros(1, 3, 3, dtype=torch.bool); region[0, 1, 1] = True
    >>> linear_imputation(torch.ones(1, 1, 3, 3), region)[0, 0, 1, 1].item()
    1.0
    """
    region = check_region(region, x)
    if solver not in SOLVERS:
        raise unknown_name("solver", solver, SOLVERS)
    if solver == "iterative" or (solver == "auto" and on_device_path(x)):
        return IterativeImputation.apply(x, region, _LinearImputation.apply)
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
