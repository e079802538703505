"""Structural similarity (SSIM) in torch: batched, differentiable, skimage-compatible.

The defaults give the standard SSIM of Wang et al. (2004) as scikit-image
computes it with ``gaussian_weights=True, sigma=1.5, use_sample_covariance=False``:

* local statistics are weighted by a normalized Gaussian of standard deviation
  ``sigma`` truncated at radius ``int(3.5 * sigma + 0.5)`` (an 11-tap window for
  ``sigma=1.5``), applied as two separable 1-D convolutions per channel;
* variances and the covariance are *population* ones (weights sum to 1);
* ``C1 = (k1 * data_range)**2`` and ``C2 = (k2 * data_range)**2``.

Borders. The map is returned at full resolution: to filter near the border the
image is extended by half-sample symmetric reflection (``d c b a | a b c d``,
SciPy's ``mode='reflect'``, which is what scikit-image uses), so the full map
equals skimage's ``full=True`` map everywhere. The per-image score
:func:`ssim` averages only the *valid* part of the map, i.e. it drops a strip
of ``(win_size - 1) // 2`` pixels on every side, where the window would have
reached past the image, exactly like skimage. Colour images: the map is
computed per channel and averaged over channels (skimage's ``channel_axis``);
``per_channel=True`` keeps the channels apart.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..errors import ShapeError, check_range
from ..regions.fills import gaussian_kernel1d, reflect_index

__all__ = ["default_win_size", "ssim", "ssim_map"]

TRUNCATE = 3.5  # Gaussian truncation (in standard deviations) used by skimage for SSIM


def default_win_size(sigma: float = 1.5, gaussian: bool = True) -> int:
    """The window side skimage uses: ``2 * int(3.5 * sigma + 0.5) + 1`` for Gaussian weights, else 7."""
    return 2 * int(TRUNCATE * sigma + 0.5) + 1 if gaussian else 7


def _filter(images: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """Separable filtering of (N,C,H,W) with the 1-D ``kernel`` on both axes, reflect borders, same size."""
    n, c, h, w = images.shape
    pad = (kernel.numel() - 1) // 2
    padded = images.index_select(2, reflect_index(h, pad, images.device))
    padded = padded.index_select(3, reflect_index(w, pad, images.device))
    k = kernel.to(images.dtype)
    out = F.conv2d(padded, k.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)
    return F.conv2d(out, k.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)


def _check_pair(x: torch.Tensor, y: torch.Tensor) -> None:
    if not isinstance(x, torch.Tensor) or not isinstance(y, torch.Tensor):
        raise ShapeError("ssim expects two torch tensors of shape (N,C,H,W)")
    if x.ndim != 4 or x.shape != y.shape:
        raise ShapeError(
            f"ssim expects two (N,C,H,W) tensors of equal shape, got {tuple(x.shape)} and {tuple(y.shape)}")


def _window_size(sigma: float, win_size: int | None, gaussian: bool) -> int:
    """``win_size``, or skimage's default for ``sigma`` when it is None (the one owner of that choice)."""
    return default_win_size(sigma, gaussian) if win_size is None else int(win_size)


def _window(sigma: float, win_size: int | None, gaussian: bool, like: torch.Tensor) -> torch.Tensor:
    """The 1-D window weights (sum 1) of odd length ``win_size``."""
    if gaussian:
        check_range("sigma", sigma, 0.0, None, low_inclusive=False)
    size = _window_size(sigma, win_size, gaussian)
    if size < 1 or size % 2 == 0:
        raise ShapeError(f"win_size={win_size!r} is invalid; valid: an odd integer >= 1")
    if gaussian:
        return gaussian_kernel1d(sigma, radius=(size - 1) // 2, dtype=like.dtype, device=like.device)
    return torch.full((size,), 1.0 / size, dtype=like.dtype, device=like.device)


def ssim_map(x: torch.Tensor, y: torch.Tensor, data_range: float = 1.0, sigma: float = 1.5, win_size: int | None = None,
             k1: float = 0.01, k2: float = 0.03, gaussian: bool = True, per_channel: bool = False) -> torch.Tensor:
    """Local SSIM of ``x`` and ``y`` (N,C,H,W) at full resolution.

    Returns (N,H,W), the mean over channels of the per-channel maps, or
    (N,C,H,W) with ``per_channel=True``. Differentiable in both arguments.

    ``win_size`` (odd) defaults to skimage's choice: ``2*int(3.5*sigma+0.5)+1``
    with Gaussian weights (the Gaussian is then truncated at radius
    ``(win_size-1)//2``), 7 for the uniform window (``gaussian=False``).
    Border pixels use reflected neighbours (see the module docstring).
    """
    _check_pair(x, y)
    check_range("data_range", data_range, 0.0, None, low_inclusive=False)
    check_range("k1", k1, 0.0, None)
    check_range("k2", k2, 0.0, None)
    kernel = _window(sigma, win_size, gaussian, x)
    n, c = x.shape[:2]
    # One grouped filtering pass over the five local moments of every channel.
    stacked = torch.cat([x, y, x * x, y * y, x * y], dim=1)
    mu_x, mu_y, m_xx, m_yy, m_xy = _filter(stacked, kernel).split(c, dim=1)
    var_x = m_xx - mu_x * mu_x
    var_y = m_yy - mu_y * mu_y
    cov = m_xy - mu_x * mu_y
    c1 = (k1 * data_range) ** 2
    c2 = (k2 * data_range) ** 2
    local = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / ((mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2))
    return local if per_channel else local.mean(dim=1)


def ssim(x: torch.Tensor, y: torch.Tensor, data_range: float = 1.0, sigma: float = 1.5, win_size: int | None = None,
         k1: float = 0.01, k2: float = 0.03, gaussian: bool = True, per_channel: bool = False) -> torch.Tensor:
    """Per-image SSIM (N,) — or (N,C) with ``per_channel=True`` — the mean of the valid local map.

    The valid part excludes ``(win_size-1)//2`` pixels at each border, as in
    skimage; images must therefore be at least ``win_size`` pixels on each side.
    """
    _check_pair(x, y)
    size = _window_size(sigma, win_size, gaussian)
    if min(x.shape[2:]) < size:
        raise ShapeError(
            f"images of size {tuple(x.shape[2:])} are smaller than the SSIM window {size}; "
            "valid: height and width >= win_size (pass a smaller odd win_size or sigma)")
    local = ssim_map(x, y, data_range, sigma, size, k1, k2, gaussian, per_channel=True)
    pad = (size - 1) // 2
    valid = local[..., pad : local.shape[-2] - pad, pad : local.shape[-1] - pad]
    per_chan = valid.mean(dim=(-2, -1))
    return per_chan if per_channel else per_chan.mean(dim=1)
