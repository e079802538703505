"""Grad-CAM on a vision transformer's patch tokens: ``token-gradcam`` (the token layer: see
:mod:`advspatial.maps.importance._tokens`)."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from .._common import Target, upsample
from ._registry import importance_map, register_importance_method
from ._tokens import token_gradients


def token_gradcam(model: nn.Module, x: torch.Tensor, target: Target = "pred", y: torch.Tensor | None = None,
                  **options: Any) -> torch.Tensor:
    """Grad-CAM on a vision transformer's patch tokens (class and register tokens dropped), (N,H,W) >= 0.

    Examples:
        >>> import torch
        >>> _ = torch.manual_seed(0)
        >>> images = torch.rand(12, 1, 28, 28)            # (N,C,H,W) in [0,1]
        >>> from advspatial.models.vit import vit_tiny
        >>> from advspatial.maps import token_gradcam
        >>> vit = vit_tiny(in_channels=1, input_size=28).eval()   # patch 4: a 7 x 7 token grid
        >>> roi_map = token_gradcam(vit, images)
        >>> roi_map.shape, bool((roi_map >= 0).all())
        (torch.Size([12, 28, 28]), True)
    """
    return importance_map("token-gradcam", model, x, target=target, y=y, **options)


@register_importance_method("token-gradcam", function=token_gradcam)
def token_gradcam_map(model: nn.Module, x: torch.Tensor, classes: torch.Tensor, layer: str | None = None
                      ) -> torch.Tensor:
    """Grad-CAM on a vision transformer's patch tokens (class/register tokens dropped, tokens on the patch grid).

    ``ReLU(sum_k w_k A_k)`` with ``w_k`` the mean over patches of ``dz_c/dA_k``; ``layer``: a token layer's name
    (default: the layout's ``cam_layer``, see :mod:`advspatial.maps.importance._tokens`).
    """
    feats, grads = token_gradients(model, x, classes, layer, "token-gradcam")
    cam = (grads.mean(dim=(2, 3), keepdim=True) * feats).sum(dim=1, keepdim=True).clamp_min(0)
    return upsample(cam, tuple(x.shape[2:]))
