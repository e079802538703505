"""HiResCAM on a vision transformer's patch tokens: ``token-hirescam`` (the token layer: see
:mod:`advspatial.maps.importance._tokens`)."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from .._common import Target, upsample
from ._cam import hirescam_formula
from ._registry import importance_map, register_importance_method
from ._tokens import token_gradients


def token_hirescam(model: nn.Module, x: torch.Tensor, target: Target = "pred", y: torch.Tensor | None = None,
                   **options: Any) -> torch.Tensor:
    """HiResCAM on a vision transformer's patch tokens: gradient times token per patch, (N,H,W) >= 0.

    Examples:
        >>> import torch
        >>> _ = torch.manual_seed(0)
        >>> images = torch.rand(12, 1, 28, 28)            # (N,C,H,W) in [0,1]
        >>> from advspatial.models.vit import vit_tiny
        >>> from advspatial.maps import token_hirescam
        >>> vit = vit_tiny(in_channels=1, input_size=28).eval()   # patch 4: a 7 x 7 token grid
        >>> roi_map = token_hirescam(vit, images)
        >>> roi_map.shape, bool((roi_map >= 0).all())
        (torch.Size([12, 28, 28]), True)
    """
    return importance_map("token-hirescam", model, x, target=target, y=y, **options)


@register_importance_method("token-hirescam", function=token_hirescam)
def token_hirescam_map(model: nn.Module, x: torch.Tensor, classes: torch.Tensor, layer: str | None = None
                       ) -> torch.Tensor:
    """HiResCAM on a vision transformer's patch tokens: ReLU(sum_k dz_c/dA_k * A_k) per patch, on the patch grid.

    Each patch keeps its own gradient (Grad-CAM averages it over the patches first); ``layer`` as for
    ``token-gradcam``.
    """
    feats, grads = token_gradients(model, x, classes, layer, "token-hirescam")
    return upsample(hirescam_formula(feats, grads), tuple(x.shape[2:]))
