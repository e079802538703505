"""The pseudo-method ``auto``: the explainer chosen by the model's structure (:mod:`advspatial.maps.heads`)."""

from __future__ import annotations

import torch
from torch import nn

from ..heads import default_importance_method
from ._registry import method_function, register_importance_method


@register_importance_method("auto")
def auto_map(
    model: nn.Module, x: torch.Tensor, classes: torch.Tensor, layer: str | nn.Module | None = None
) -> torch.Tensor:
    """Default explainer by structure: gradcam on a GAP + linear head, else hirescam; on a ViT, chefer.

    Resolved by :func:`~advspatial.maps.heads.default_importance_method` (once per
    :func:`~advspatial.maps.importance.importance_map` call).
    """
    method, _ = default_importance_method(model, x, layer=layer)
    return method_function(method)(model, x, classes, **({} if layer is None else {"layer": layer}))
