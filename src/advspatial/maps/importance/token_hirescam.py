"""HiResCAM on a vision transformer's patch tokens: ``token-hirescam`` (the token layer: see
:mod:`advspatial.maps.importance._tokens`)."""

from __future__ import annotations

import torch
from torch import nn

from .._common import upsample
from ._registry import register_importance_method
from ._tokens import token_gradients


@register_importance_method("token-hirescam", shortcut="token_hirescam", doc='''\
HiResCAM on a vision transformer's patch tokens: gradient times token per patch, (N,H,W) >= 0.

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
''')
def token_hirescam_map(model: nn.Module, x: torch.Tensor, classes: torch.Tensor, layer: str | None = None
                       ) -> torch.Tensor:
    """HiResCAM on a vision transformer's patch tokens: ReLU(sum_k dz_c/dA_k * A_k) per patch, on the patch grid.

    Each patch keeps its own gradient (Grad-CAM averages it over the patches first); ``layer`` as for
    ``token-gradcam``.
    """
    feats, grads = token_gradients(model, x, classes, layer, "token-hirescam")
    cam = (grads * feats).sum(dim=1, keepdim=True).clamp_min(0)
    return upsample(cam, tuple(x.shape[2:]))
