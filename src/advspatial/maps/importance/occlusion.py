"""Occlusion (Zeiler & Fergus 2014): ``occlusion``, the class score's drop when a window of the image is hidden
(Captum), with a window that grows with the image."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ...errors import check_range
from ...runtime import scaled_batch
from ...stacked_runs import device_rows
from .._common import Target
from ._attribution import checked_input, run_frozen
from ._registry import importance_map, register_importance_method

#: images x occluded windows per forward pass of the occlusion map at 28x28 (Captum's
#: ``perturbations_per_eval``); scaled by the pixel count for larger images (32 at 224x224)
OCCLUSION_BATCH = 2048


def occlusion_geometry(side: int, window: int | None, stride: int | None) -> tuple[int, int]:
    """(window, stride): given values, else side // 7 (at least 4) and half of it.

    28 and 32 pixels give the classic 4 and 2; 224 gives 32 and 16, so an
    ImageNet image costs 13 x 13 windows instead of 111 x 111.
    """
    window = window if window is not None else max(4, side // 7)
    return window, stride if stride is not None else max(1, window // 2)


def occlusion(model: nn.Module, x: torch.Tensor, target: Target = "pred", y: torch.Tensor | None = None,
              **options: Any) -> torch.Tensor:
    """Occlusion (Zeiler & Fergus 2014): mean drop of the ``target`` logit over the windows hiding a pixel,
    (N,H,W) >= 0.

    Examples:
        >>> import torch
        >>> _ = torch.manual_seed(0)
        >>> from torch import nn
        >>> model = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),  # any nn.Module
        ...                       nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),  # taking images
        ...                       nn.Flatten(), nn.Linear(16 * 7 * 7, 10)).eval()  # in [0,1]; untrained here
        >>> images = torch.rand(12, 1, 28, 28)            # (N,C,H,W) in [0,1]
        >>> from advspatial.maps import occlusion
        >>> roi_map = occlusion(model, images)
        >>> roi_map.shape, bool((roi_map >= 0).all())
        (torch.Size([12, 28, 28]), True)
    """
    return importance_map("occlusion", model, x, target=target, y=y, **options)


@register_importance_method("occlusion", function=occlusion)
def occlusion_map(
    model: nn.Module, x: torch.Tensor, classes: torch.Tensor, window: int | None = None, stride: int | None = None,
    baseline: float | torch.Tensor = 0.0,
) -> torch.Tensor:
    """Occlusion (Zeiler & Fergus): score drop when a ``window`` square (all channels) is set to ``baseline``
    (a value, or images of ``x``'s shape whose pixels replace the window's: a blurred copy occludes by blurring).

    Each pixel gets the mean drop over the windows covering it (Captum); the
    map is ReLU of the channel mean, so only pixels whose hiding lowers z_c count.
    ``window``/``stride`` default to :func:`occlusion_geometry` of the shorter side.
    """
    from captum.attr import Occlusion  # on first use: captum imports pyplot

    window, stride = occlusion_geometry(min(x.shape[2:]), window, stride)
    check_range("window", window, 1, min(x.shape[2:]))
    check_range("stride", stride, 1)
    inp = checked_input(model, x, classes)
    c = inp.shape[1]
    # occluded copies per call: a CPU's batch, or as many as a device's stacked call holds
    per_eval = max(1, device_rows(scaled_batch(OCCLUSION_BATCH, inp.shape[2], inp.shape[3]), inp)
                   // max(inp.shape[0], 1))
    attr = run_frozen(model, lambda: Occlusion(model).attribute(
        inp, sliding_window_shapes=(c, window, window), strides=(c, stride, stride),
        baselines=baseline if isinstance(baseline, torch.Tensor) else float(baseline), target=classes,
        perturbations_per_eval=per_eval,
    ))
    return attr.mean(dim=1).clamp_min(0.0)
