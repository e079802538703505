"""The two maps a deployable defence computes from its input alone, from one forward pass.

The neutralization defence (:mod:`advspatial.defence.neutralize`) needs, at every call, the importance map of the
predicted class (its RoI) and the input-gradient map of the cross-entropy at the predicted class (its RoA). Computed
one after the other they cost four forward passes and two backward passes: each map predicts the class with a
forward pass of its own, then builds a graph. Both come from the same graph: one forward pass with the CAM layer
captured, the class predicted from its logits, then one backward pass to the CAM layer (the class score) and one to
the input (the cross-entropy). An adaptive attack calls the defence at every step of every restart, so this is most
of the passes a defence evaluation spends beside the attack's own.

The maps are the ones :func:`~advspatial.maps.importance.importance_map` (``target="pred"``) and
:func:`~advspatial.maps.attack.gradient_map` give, to the bit (the tests compare them with ``torch.equal``): the same
operations on the same numbers, the CAM formulas being the methods' own
(:func:`~advspatial.maps.importance.gradcam_formula`, :func:`~advspatial.maps.importance.hirescam_formula`).
Methods other than the CAMs below, and every method on a vision transformer (its CAMs read token layers), are
computed by those two functions.
"""

from __future__ import annotations

import torch
from torch import nn

from ...maps._common import check_images, upsample
from ...maps.attack import gradient_map
from ...maps.importance import FeatureCapture, gradcam_formula, hirescam_formula, importance_map
from ...models.hooks import forward_hooks, frozen_eval, resolve_layer
from ...models.tokens import is_transformer

#: the importance methods whose map shares the gradient map's forward pass (the others are computed apart)
SHARED_FORWARD_METHODS = ("hirescam", "gradcam")


def importance_and_gradient(method: str, model: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(importance map of the predicted class by ``method``, gradient map), each (N,H,W), in one forward pass when
    ``method`` is one of :data:`SHARED_FORWARD_METHODS` (else by the two map functions)."""
    check_images(x)  # images in [0, 1], as both map functions check
    if method not in SHARED_FORWARD_METHODS or x.shape[0] == 0 or is_transformer(model, x):
        importance = importance_map(method, model, x, target="pred", batch_size=len(x) or 1)
        return importance, gradient_map(model, x).map
    with frozen_eval(model):
        name, layer = resolve_layer(model, x, None)
        point = x.detach().clone().requires_grad_(True)
        capture = FeatureCapture()
        with forward_hooks({name: layer}, capture.factory), torch.enable_grad():
            logits = model(point)
            feats = capture.feature_map(name)
            pred = logits.argmax(1)
            (feat_grads,) = torch.autograd.grad(logits.gather(1, pred[:, None]).squeeze(1).sum(), feats,
                                                retain_graph=True)
            loss = nn.functional.cross_entropy(logits, pred, reduction="sum")
            (input_grads,) = torch.autograd.grad(loss, point)
    formula = gradcam_formula if method == "gradcam" else hirescam_formula
    cam = formula(feats.detach(), feat_grads.detach())
    return upsample(cam, tuple(x.shape[2:])), input_grads.abs().sum(1)
