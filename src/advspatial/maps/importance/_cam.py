"""What the CAM methods share: the forward hook that captures the CAM layer's feature maps, and one graph that
holds those maps and the class scores (Grad-CAM++ and HiResCAM differentiate the scores by the maps)."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from ...errors import ModelError
from ...models.hooks import forward_hooks
from .._common import check_classes


class FeatureCapture:
    """Forward hook storing the output of one layer (the last call wins): the CAM layer's feature maps."""

    def __init__(self) -> None:
        self.output: torch.Tensor | None = None

    def factory(self, _name: str) -> Callable[..., None]:
        def hook(_module: nn.Module, _inputs: object, output: object) -> None:
            if not isinstance(output, torch.Tensor):
                raise ModelError("the chosen layer does not output a single tensor; pick another layer")
            self.output = output

        return hook

    def feature_map(self, name: str) -> torch.Tensor:
        """The captured (N,K,h,w) output of layer ``name``; a one-line error when it is not such a map."""
        feats = self.output
        if feats is None or feats.ndim != 4:
            shape = None if feats is None else tuple(feats.shape)
            raise ModelError(f"layer {name!r} must output a (N,K,h,w) feature map, got {shape}")
        return feats


def features_and_scores(
    model: nn.Module, x: torch.Tensor, layer: nn.Module, name: str, classes: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Feature maps A (N,K,h,w) of ``layer`` and the class scores z_c (N,), in one graph."""
    capture = FeatureCapture()
    with forward_hooks({name: layer}, capture.factory), torch.enable_grad():
        logits = model(x.detach().clone().requires_grad_(True))
    check_classes(classes, logits)
    return capture.feature_map(name), logits.gather(1, classes[:, None]).squeeze(1)
