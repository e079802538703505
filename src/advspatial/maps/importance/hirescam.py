"""HiResCAM (Draelos & Carin 2020): ``hirescam``, gradient times activation at each position of the CAM layer."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ...models.tokens import token_layout
from .._common import Target, upsample
from ._cam import feature_gradients, hirescam_formula
from ._registry import importance_map, register_importance_method
from .token_hirescam import token_hirescam_map


def hirescam(model: nn.Module, x: torch.Tensor, target: Target = "pred", y: torch.Tensor | None = None,
             **options: Any) -> torch.Tensor:
    """HiResCAM (Draelos & Carin 2020): gradient times activation per position, (N,H,W) >= 0.

    Examples:
        >>> import torch
        >>> _ = torch.manual_seed(0)
        >>> from torch import nn
        >>> model = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),  # any nn.Module
        ...                       nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),  # taking images
        ...                       nn.Flatten(), nn.Linear(16 * 7 * 7, 10)).eval()  # in [0,1]; untrained here
        >>> images = torch.rand(12, 1, 28, 28)            # (N,C,H,W) in [0,1]
        >>> from advspatial.maps import hirescam
        >>> roi_map = hirescam(model, images)
        >>> roi_map.shape, bool((roi_map >= 0).all())
        (torch.Size([12, 28, 28]), True)
    """
    return importance_map("hirescam", model, x, target=target, y=y, **options)


@register_importance_method("hirescam", function=hirescam)
def hirescam_map(
    model: nn.Module, x: torch.Tensor, classes: torch.Tensor, layer: str | nn.Module | None = None
) -> torch.Tensor:
    """HiResCAM (Draelos & Carin 2020): ReLU(sum_k dz_c/dA_k * A_k), bilinearly upsampled.

    The element-wise product keeps each position's own gradient (Grad-CAM
    averages it over positions first), so the map is faithful on flatten/FC
    heads; on a GAP + linear head it equals CAM / (h*w). Layer chosen as for Grad-CAM; on a vision transformer
    without ``layer``: HiResCAM on its patch tokens (``token-hirescam``).
    """
    if layer is None and token_layout(model, x) is not None:
        return token_hirescam_map(model, x, classes)
    feats, grads = feature_gradients(model, x, classes, layer)
    return upsample(hirescam_formula(feats, grads), tuple(x.shape[2:]))
