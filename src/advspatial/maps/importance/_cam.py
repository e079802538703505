"""What the CAM methods share: the forward hook that captures the CAM layer's feature maps, the class scores'
gradient with respect to those maps (Grad-CAM++ and HiResCAM weight the maps by it), and the Grad-CAM and HiResCAM
formulas on a layer's maps and gradient.

The formulas are written once, here: :func:`hirescam_formula` is the ``hirescam`` and ``token-hirescam`` maps' own,
and :func:`gradcam_formula` repeats the operations of Captum's ``LayerGradCam`` (which ``gradcam`` runs), so that a
caller that holds the maps and their gradient already (a defence computing both of its maps from one forward pass)
gets the methods' numbers to the bit (the tests compare them with ``torch.equal``).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from ...errors import ModelError
from ...models.hooks import forward_hooks, frozen_eval, resolve_layer
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


def feature_gradients(model: nn.Module, x: torch.Tensor, classes: torch.Tensor, layer: str | nn.Module | None
                      ) -> tuple[torch.Tensor, torch.Tensor]:
    """The CAM layer's feature maps A (N,K,h,w) and the gradients dz_c/dA of the class scores, both detached
    (the layer chosen by :func:`~advspatial.models.hooks.resolve_layer`; the model frozen in eval mode)."""
    with frozen_eval(model):
        name, module = resolve_layer(model, x, layer)
        capture = FeatureCapture()
        with forward_hooks({name: module}, capture.factory), torch.enable_grad():
            logits = model(x.detach().clone().requires_grad_(True))
        check_classes(classes, logits)
        feats = capture.feature_map(name)
        (grads,) = torch.autograd.grad(logits.gather(1, classes[:, None]).squeeze(1).sum(), feats)
    return feats.detach(), grads.detach()


def gradcam_formula(feats: torch.Tensor, grads: torch.Tensor) -> torch.Tensor:
    """Grad-CAM's (N,1,h,w) map ``ReLU(sum_k mean_ij(dz_c/dA_k) A_k)`` of the maps A (N,K,h,w) and their gradient,
    in the operations of Captum's ``LayerGradCam`` with ``relu_attributions=True`` (the same numbers as ``gradcam``
    before its upsampling)."""
    weights = torch.mean(grads, dim=(2, 3), keepdim=True)
    return nn.functional.relu(torch.sum(weights * feats, dim=1, keepdim=True))


def hirescam_formula(feats: torch.Tensor, grads: torch.Tensor) -> torch.Tensor:
    """HiResCAM's (N,1,h,w) map ``ReLU(sum_k dz_c/dA_k * A_k)`` of the maps A (N,K,h,w) and their gradient: each
    position keeps its own gradient (Grad-CAM averages it over the positions first)."""
    return (grads * feats).sum(dim=1, keepdim=True).clamp_min(0)
