"""Integrated gradients (Sundararajan et al. 2017): ``ig``, from a constant baseline image (Captum)."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ...errors import check_range
from .._common import Target, reduce_channels_abs
from ._attribution import checked_input, run_frozen
from ._registry import importance_map, register_importance_method


def integrated_gradients(model: nn.Module, x: torch.Tensor, target: Target = "pred", y: torch.Tensor | None = None,
                         **options: Any) -> torch.Tensor:
    """Integrated gradients (Sundararajan et al. 2017) from a constant baseline image (0 = black), (N,H,W) >= 0.

    Examples:
        >>> import torch
        >>> _ = torch.manual_seed(0)
        >>> from torch import nn
        >>> model = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),  # any nn.Module
        ...                       nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),  # taking images
        ...                       nn.Flatten(), nn.Linear(16 * 7 * 7, 10)).eval()  # in [0,1]; untrained here
        >>> images = torch.rand(12, 1, 28, 28)            # (N,C,H,W) in [0,1]
        >>> from advspatial.maps import integrated_gradients
        >>> roi_map = integrated_gradients(model, images)
        >>> roi_map.shape, bool((roi_map >= 0).all())
        (torch.Size([12, 28, 28]), True)
    """
    return importance_map("ig", model, x, target=target, y=y, **options)


@register_importance_method("ig", function=integrated_gradients)
def integrated_gradients_map(
    model: nn.Module, x: torch.Tensor, classes: torch.Tensor, steps: int = 32, baseline: float = 0.0,
    internal_batch_size: int = 256,
) -> torch.Tensor:
    """Integrated gradients (Sundararajan et al.) from a constant ``baseline`` image (0 = black).

    Captum's Gauss-Legendre rule with ``steps`` points; sum over channels of |IG|.
    """
    from captum.attr import IntegratedGradients  # on first use: captum imports pyplot

    check_range("steps", steps, 1)
    inp = checked_input(model, x, classes)
    ig = IntegratedGradients(model)
    attr = run_frozen(model, lambda: ig.attribute(
        inp, baselines=float(baseline), target=classes, n_steps=int(steps),
        internal_batch_size=max(int(internal_batch_size), inp.shape[0]),
    ))
    return reduce_channels_abs(attr)
