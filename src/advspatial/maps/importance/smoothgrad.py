"""SmoothGrad (Smilkov et al. 2017): ``smoothgrad``, the gradient averaged over noisy copies, noise keyed by the
image's sample id (Captum's NoiseTunnel draws one stream for the whole batch)."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ...errors import check_range
from ...models.hooks import frozen_eval
from ...passes import one_round
from ...runtime import per_sample_noise, sample_ids_or_range, scaled_batch, stream_seed
from .._common import Target, reduce_channels_abs
from ._attribution import checked_input
from ._registry import importance_map, register_importance_method

#: stream of SmoothGrad's noise (independent of the attacks' and controls' draws under the same seed)
SMOOTHGRAD_STREAM = 0x5A00
#: images x noisy copies per forward pass of SmoothGrad at 28x28; scaled by the pixel count for larger images
SMOOTHGRAD_BATCH = 1024


def smoothgrad_noise(shape: tuple[int, ...], samples: int, seed: int, sample_ids: torch.Tensor,
                     device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """(N, samples, C, H, W) standard normal noise; image i's from the generator of ``sample_ids[i]``.

    Drawn per image by :func:`advspatial.runtime.per_sample_noise` in the stream
    ``stream_seed(seed, SMOOTHGRAD_STREAM)``: a function of (seed, the image's id) only.
    """
    n = shape[0]
    return per_sample_noise((n, int(samples), *shape[1:]), stream_seed(seed, SMOOTHGRAD_STREAM), sample_ids,
                            "normal", device, dtype)


def smoothgrad(model: nn.Module, x: torch.Tensor, target: Target = "pred", y: torch.Tensor | None = None,
               **options: Any) -> torch.Tensor:
    """SmoothGrad (Smilkov et al. 2017): |mean gradient over noisy copies| summed over channels, (N,H,W) >= 0.

    Each image's noise is keyed by its entry of ``sample_ids=`` (global ids; default its position), so its map
    does not depend on the batch.

    Examples:
        >>> import torch
        >>> _ = torch.manual_seed(0)
        >>> from torch import nn
        >>> model = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),  # any nn.Module
        ...                       nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),  # taking images
        ...                       nn.Flatten(), nn.Linear(16 * 7 * 7, 10)).eval()  # in [0,1]; untrained here
        >>> images = torch.rand(12, 1, 28, 28)            # (N,C,H,W) in [0,1]
        >>> from advspatial.maps import smoothgrad
        >>> roi_map = smoothgrad(model, images)
        >>> roi_map.shape, bool((roi_map >= 0).all())
        (torch.Size([12, 28, 28]), True)
    """
    return importance_map("smoothgrad", model, x, target=target, y=y, **options)


@register_importance_method("smoothgrad", function=smoothgrad)
def smoothgrad_map(
    model: nn.Module, x: torch.Tensor, classes: torch.Tensor, samples: int = 16, sigma: float = 0.15,
    seed: int = 0, sample_ids: torch.Tensor | None = None,
) -> torch.Tensor:
    """SmoothGrad (Smilkov et al.): |mean over noisy copies of dz_c/dx|, summed over channels.

    Noise N(0, sigma^2) on [0,1] images (``sigma`` is a fraction of the range);
    the signed gradients of ``samples`` noisy copies are averaged, then the
    absolute value is taken. Image i's noise comes from a generator seeded by
    ``(seed, sample_ids[i])`` (:func:`smoothgrad_noise`; default ids: positions),
    so its map does not depend on the batch it is in, and global random state is
    untouched. With the same noise this is Captum's ``NoiseTunnel(Saliency)``
    ``smoothgrad`` (checked in the tests).
    """
    check_range("samples", samples, 1)
    check_range("sigma", sigma, 0.0)
    inp = checked_input(model, x, classes)
    n = inp.shape[0]
    noise = smoothgrad_noise(tuple(inp.shape), samples, seed, sample_ids_or_range(n, sample_ids),
                             inp.device, inp.dtype)
    per_pass = max(1, scaled_batch(SMOOTHGRAD_BATCH, inp.shape[2], inp.shape[3]) // max(n, 1))
    total = torch.zeros_like(inp)
    with frozen_eval(model), torch.enable_grad(), one_round():  # the chunks of noisy copies are one round
        for start in range(0, int(samples), per_pass):
            chunk = noise[:, start:start + per_pass]  # (N, k, C, H, W)
            k = chunk.shape[1]
            noisy = (inp.detach()[:, None] + float(sigma) * chunk).reshape(n * k, *inp.shape[1:])
            noisy.requires_grad_(True)
            scores = model(noisy).gather(1, classes.repeat_interleave(k)[:, None]).sum()
            (grad,) = torch.autograd.grad(scores, noisy)
            total += grad.view(n, k, *inp.shape[1:]).sum(1)
    return reduce_channels_abs(total / int(samples))
