"""Input x gradient: ``inputxgrad``, the input times the input gradient of the class score (Captum)."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from .._common import Target, reduce_channels_abs
from ._attribution import checked_input, run_frozen
from ._registry import importance_map, register_importance_method


def input_x_gradient(model: nn.Module, x: torch.Tensor, target: Target = "pred", y: torch.Tensor | None = None,
                     **options: Any) -> torch.Tensor:
    """Input x gradient: |x * d z_target / dx| summed over channels, (N,H,W) >= 0.

    Examples:
        >>> import torch
        >>> _ = torch.manual_seed(0)
        >>> from torch import nn
        >>> model = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),  # any nn.Module
        ...                       nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),  # taking images
        ...                       nn.Flatten(), nn.Linear(16 * 7 * 7, 10)).eval()  # in [0,1]; untrained here
        >>> images = torch.rand(12, 1, 28, 28)            # (N,C,H,W) in [0,1]
        >>> from advspatial.maps import input_x_gradient
        >>> roi_map = input_x_gradient(model, images)
        >>> roi_map.shape, bool((roi_map >= 0).all())
        (torch.Size([12, 28, 28]), True)
    """
    return importance_map("inputxgrad", model, x, target=target, y=y, **options)


@register_importance_method("inputxgrad", function=input_x_gradient)
def input_x_gradient_map(model: nn.Module, x: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
    """Input x gradient: sum over channels of |x * dz_c/dx|."""
    from captum.attr import InputXGradient  # on first use: captum imports pyplot

    inp = checked_input(model, x, classes)
    return reduce_channels_abs(run_frozen(model, lambda: InputXGradient(model).attribute(inp, target=classes)))
