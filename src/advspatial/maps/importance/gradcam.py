"""Grad-CAM (Selvaraju et al. 2017): ``gradcam``, by Captum's ``LayerGradCam``."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ...errors import ModelError
from ...models.hooks import frozen_eval, resolve_layer
from ...models.tokens import token_layout
from .._common import Target, check_classes
from ._registry import importance_map, register_importance_method
from .token_gradcam import token_gradcam_map


def gradcam(model: nn.Module, x: torch.Tensor, target: Target = "pred", y: torch.Tensor | None = None,
            **options: Any) -> torch.Tensor:
    """Grad-CAM (Selvaraju et al. 2017) of the ``target`` class, (N,H,W) >= 0 at input resolution.

    Examples:
        >>> import torch
        >>> _ = torch.manual_seed(0)
        >>> from torch import nn
        >>> model = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),  # any nn.Module
        ...                       nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),  # taking images
        ...                       nn.Flatten(), nn.Linear(16 * 7 * 7, 10)).eval()  # in [0,1]; untrained here
        >>> images = torch.rand(12, 1, 28, 28)            # (N,C,H,W) in [0,1]
        >>> from advspatial.maps import gradcam
        >>> roi_map = gradcam(model, images)                # the predicted class (target="pred")
        >>> roi_map.shape, bool((roi_map >= 0).all())
        (torch.Size([12, 28, 28]), True)
    """
    return importance_map("gradcam", model, x, target=target, y=y, **options)


@register_importance_method("gradcam", function=gradcam)
def gradcam_map(
    model: nn.Module, x: torch.Tensor, classes: torch.Tensor, layer: str | nn.Module | None = None
) -> torch.Tensor:
    """Grad-CAM (Selvaraju et al.): ReLU(sum_k mean_ij(dz_c/dA_k) A_k), bilinearly upsampled.

    Uses Captum's ``LayerGradCam`` with ``relu_attributions=True`` on the layer
    chosen by :func:`~advspatial.models.hooks.resolve_layer`. On a vision transformer without ``layer``: Grad-CAM
    on its patch tokens (``token-gradcam``, :mod:`advspatial.maps.importance.token_gradcam`).
    """
    from captum.attr import LayerAttribution, LayerGradCam  # on first use: captum imports pyplot

    if layer is None and token_layout(model, x) is not None:
        return token_gradcam_map(model, x, classes)
    with frozen_eval(model):
        name, module = resolve_layer(model, x, layer)
        with torch.no_grad():
            check_classes(classes, model(x[:1]))
        with torch.enable_grad():
            attr = LayerGradCam(model, module).attribute(
                x.detach().clone().requires_grad_(True), target=classes, relu_attributions=True
            )
        if attr.ndim != 4:
            raise ModelError(f"layer {name!r} must output a (N,K,h,w) feature map for Grad-CAM")
        up = LayerAttribution.interpolate(attr.detach(), tuple(x.shape[2:]), "bilinear")
    return up[:, 0].clamp_min(0.0)
