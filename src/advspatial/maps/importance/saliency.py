"""Saliency (Simonyan et al. 2014): ``saliency``, the absolute input gradient of the class score (Captum)."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from .._common import Target, reduce_channels_abs
from ._attribution import checked_input, run_frozen
from ._registry import importance_map, register_importance_method


def saliency(model: nn.Module, x: torch.Tensor, target: Target = "pred", y: torch.Tensor | None = None,
             **options: Any) -> torch.Tensor:
    """Saliency (Simonyan et al. 2014): |d z_target / dx| summed over channels, (N,H,W) >= 0.

    Examples:
        >>> import torch
        >>> _ = torch.manual_seed(0)
        >>> from torch import nn
        >>> model = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),  # any nn.Module
        ...                       nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),  # taking images
        ...                       nn.Flatten(), nn.Linear(16 * 7 * 7, 10)).eval()  # in [0,1]; untrained here
        >>> images = torch.rand(12, 1, 28, 28)            # (N,C,H,W) in [0,1]
        >>> labels = model(images).argmax(1)              # (N,) labels: here the model's own predictions
        >>> from advspatial.maps import saliency
        >>> roi_map = saliency(model, images, target="true", y=labels)
        >>> roi_map.shape, bool((roi_map >= 0).all())
        (torch.Size([12, 28, 28]), True)
    """
    return importance_map("saliency", model, x, target=target, y=y, **options)


@register_importance_method("saliency", function=saliency)
def saliency_map(model: nn.Module, x: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
    """Saliency (Simonyan et al.): sum over channels of |dz_c/dx|."""
    from captum.attr import Saliency  # on first use: captum imports pyplot

    inp = checked_input(model, x, classes)
    attr = run_frozen(model, lambda: Saliency(model).attribute(inp, target=classes, abs=True))
    return reduce_channels_abs(attr)
