"""Class activation map (Zhou et al. 2016): ``cam``, for a GAP + linear head (the head is verified)."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ...errors import ModelError
from .._common import Target, check_classes, upsample
from ..heads import head_inputs, receives_global_average
from ._registry import importance_map, register_importance_method


def cam(model: nn.Module, x: torch.Tensor, target: Target = "pred", y: torch.Tensor | None = None,
        **options: Any) -> torch.Tensor:
    """Class activation map (Zhou et al. 2016) of a GAP + linear head, (N,H,W) >= 0.

    Examples:
        >>> import torch
        >>> _ = torch.manual_seed(0)
        >>> images = torch.rand(12, 1, 28, 28)            # (N,C,H,W) in [0,1]
        >>> from advspatial.maps import cam
        >>> layers = [torch.nn.Conv2d(1, 8, 3, padding=1), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1)]
        >>> net = torch.nn.Sequential(*layers, torch.nn.Flatten(), torch.nn.Linear(8, 10)).eval()  # GAP + linear
        >>> cam(net, images).shape
        torch.Size([12, 28, 28])
    """
    return importance_map("cam", model, x, target=target, y=y, **options)


@register_importance_method("cam", function=cam)
def cam_map(
    model: nn.Module,
    x: torch.Tensor,
    classes: torch.Tensor,
    layer: str | nn.Module | None = None,
    linear: str | nn.Module | None = None,
) -> torch.Tensor:
    """Class activation map (Zhou et al. 2016) for GAP + linear heads: ReLU(sum_k W_ck A_k).

    ``layer`` gives the features before global average pooling (default as for
    Grad-CAM), ``linear`` the final ``nn.Linear`` (default: the last one run).
    The head is verified: the linear layer's input must equal the spatial mean
    of the features, otherwise :class:`~advspatial.errors.ModelError`.
    """
    name, head_name, head, logits, feats, head_in = head_inputs(model, x, layer, linear)
    check_classes(classes, logits)
    if feats is None:
        raise ModelError(f"CAM: layer {name!r} must output a (N,K,h,w) feature map")
    if not receives_global_average(feats, head_in):
        raise ModelError(
            f"CAM needs {head_name!r} to receive the global average of {name!r}; it does not. "
            "Use gradcam or hirescam, or pass layer=/linear= naming a GAP + linear head"
        )
    weights = head.weight[classes]  # (N, K)
    class_map = torch.einsum("nk,nkhw->nhw", weights, feats).unsqueeze(1).clamp_min(0)
    return upsample(class_map.detach(), tuple(x.shape[2:]))
