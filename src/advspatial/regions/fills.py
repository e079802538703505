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
from typing import Any
import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..errors import ConfigError, ShapeError, check_range
from ..host_syncs import host_list
from ..registry import Registry
from ..runtime import sample_ids_or_range
from .checks import check_region
from .imputation import noisy_linear_imputation

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
#: the fills computed on the device alone: on an empty region ``torch.where`` gives x's values (and gradient) with
#: no read back to the host, where the other fills (host solvers, iterative sweeps) skip their work instead
DEVICE_FILLS = ("zero", "mean", "blur")


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
        params = dataclasses.replace(params, sample_ids=tuple(host_list(ids)))
    # an empty region: skip the host fills' work (ROAD reads the region to the host for its solver anyway and
    # returns the images unchanged there: asking here first would be a second read)
    if kind not in (*DEVICE_FILLS, "road") and not bool(region.any()):
        return x
    content = FILLS.get(kind)(x, region, params)
    return torch.where(region[:, None], content, x)


def make_fill(kind: str = "zero", **params: Any) -> FillFn:
    """Bind a fill kind to its parameters, validating both now: ``make_fill("blur", sigma=2)(x, region)``.

    The images' global ids are passed per call: ``make_fill("road")(x, region, sample_ids=ids)``.
    """
    allowed = set(FillParams.__dataclass_fields__) - {"sample_ids"}  # per batch: passed at call time
    unknown = set(params) - allowed
    if unknown:
        raise ConfigError(f"fill has no parameter(s) {sorted(unknown)}; valid: {sorted(allowed)}")
    _make_params(kind, **params)
    bound = functools.partial(fill, kind=kind, **params)
    return bound


def put_back(x: torch.Tensor, region: torch.Tensor, source: torch.Tensor) -> torch.Tensor:
    """``x`` with the pixels of ``region`` taken from ``source`` (the diagnostic "perfect fill")."""
    region = check_region(region, x)
    if source.shape != x.shape:
        raise ShapeError(f"source images {tuple(source.shape)} do not match images {tuple(x.shape)}")
    return torch.where(region[:, None], source.to(x), x)


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

def gaussian_kernel1d(sigma: float, truncate: float = 4.0, *, radius: int | None = None,
                      dtype: torch.dtype = torch.float32, device: torch.device | str = "cpu") -> torch.Tensor:
    """Normalized 1-D Gaussian of ``radius`` (default ``int(truncate*sigma + 0.5)``, SciPy's choice), computed in
    float64 and returned in ``dtype``."""
    radius = int(truncate * sigma + 0.5) if radius is None else radius
    t = torch.arange(-radius, radius + 1, dtype=torch.float64)
    kernel = torch.exp(-0.5 * (t / sigma) ** 2)
    return (kernel / kernel.sum()).to(dtype=dtype, device=device)


def reflect_index(n: int, radius: int, device: torch.device) -> torch.Tensor:
    """Indices of a length-n axis extended by ``radius`` on each side, SciPy ``reflect`` (any radius)."""
    i = torch.arange(-radius, n + radius, device=device) % (2 * n)
    return torch.where(i >= n, 2 * n - 1 - i, i)


def gaussian_blur(x: torch.Tensor, sigma: float, truncate: float = 4.0) -> torch.Tensor:
    """Separable Gaussian blur of each channel of x (N,C,H,W); differentiable."""
    n, c, h, w = x.shape
    kernel = gaussian_kernel1d(sigma, truncate, dtype=x.dtype, device=x.device)
    radius = (kernel.numel() - 1) // 2
    flat = x.reshape(n * c, 1, h, w)
    flat = flat.index_select(3, reflect_index(w, radius, x.device))
    flat = F.conv2d(flat, kernel.view(1, 1, 1, -1))
    flat = flat.index_select(2, reflect_index(h, radius, x.device))
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




