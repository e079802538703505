"""Grad-CAM++ (Chattopadhay et al. 2018): ``gradcam++``, in closed form on the captured feature maps."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from .._common import Target, upsample
from ._cam import feature_gradients
from ._registry import importance_map, register_importance_method


def gradcam_pp(model: nn.Module, x: torch.Tensor, target: Target = "pred", y: torch.Tensor | None = None,
               **options: Any) -> torch.Tensor:
    """Grad-CAM++ (Chattopadhyay et al. 2018) of the ``target`` class, (N,H,W) >= 0.

    Examples:
        >>> import torch
        >>> _ = torch.manual_seed(0)
        >>> from torch import nn
        >>> model = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),  # any nn.Module
        ...                       nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),  # taking images
        ...                       nn.Flatten(), nn.Linear(16 * 7 * 7, 10)).eval()  # in [0,1]; untrained here
        >>> images = torch.rand(12, 1, 28, 28)            # (N,C,H,W) in [0,1]
        >>> labels = model(images).argmax(1)              # (N,) labels: here the model's own predictions
        >>> from advspatial.maps import gradcam_pp
        >>> roi_map = gradcam_pp(model, images, target="true", y=labels)
        >>> roi_map.shape, bool((roi_map >= 0).all())
        (torch.Size([12, 28, 28]), True)
    """
    return importance_map("gradcam++", model, x, target=target, y=y, **options)


@register_importance_method("gradcam++", function=gradcam_pp)
def gradcam_pp_map(
    model: nn.Module, x: torch.Tensor, classes: torch.Tensor, layer: str | nn.Module | None = None
) -> torch.Tensor:
    """Grad-CAM++ (Chattopadhay et al. 2018), closed form for an exponential score.

    With g = dz_c/dA: alpha_kij = g^2 / (2 g^2 + sum_ab A_kab g^3) (0 where the
    denominator is 0), w_k = sum_ij alpha_kij ReLU(g_kij), map = ReLU(sum_k w_k A_k).
    """
    feats, g = feature_gradients(model, x, classes, layer)
    g2, g3 = g.pow(2), g.pow(3)
    denom = 2 * g2 + feats.sum(dim=(2, 3), keepdim=True) * g3
    alpha = torch.where(denom != 0, g2 / torch.where(denom != 0, denom, torch.ones_like(denom)), torch.zeros_like(g))
    weights = (alpha * g.clamp_min(0)).sum(dim=(2, 3), keepdim=True)
    cam = (weights * feats).sum(dim=1, keepdim=True).clamp_min(0)
    return upsample(cam, tuple(x.shape[2:]))
