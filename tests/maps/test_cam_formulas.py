"""The CAM formulas of ``maps/importance/_cam.py`` give the ``gradcam`` and ``hirescam`` maps to the bit.

A caller that already holds the CAM layer's maps and their gradient (the deployable defence's one forward pass)
applies these formulas instead of running the methods: the numbers must be the methods' own, not merely close.
"""

from __future__ import annotations

import pytest
import torch
from helpers import GapNet, TinyGAP
from torch import nn

from advspatial.maps._common import upsample
from advspatial.maps.importance import gradcam_formula, hirescam_formula, importance_map
from advspatial.maps.importance._cam import feature_gradients
from advspatial.models import build_model


def _models() -> list[tuple[nn.Module, torch.Tensor]]:
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(1)
    return [(build_model("smallcnn").eval(), torch.rand(5, 1, 28, 28, generator=gen)),
            (TinyGAP().eval(), torch.rand(5, 1, 12, 12, generator=gen)),
            (GapNet().eval(), torch.rand(5, 3, 14, 14, generator=gen))]


@pytest.mark.parametrize(("method", "formula"), [("gradcam", gradcam_formula), ("hirescam", hirescam_formula)])
def test_the_formula_on_the_captured_gradient_is_the_method_to_the_bit(method, formula) -> None:
    for model, x in _models():
        classes = model(x).argmax(1)
        feats, grads = feature_gradients(model, x, classes, None)
        ours = upsample(formula(feats, grads), tuple(x.shape[2:]))
        assert ours.abs().sum() > 0, type(model).__name__
        assert torch.equal(ours, importance_map(method, model, x, target=classes)), (type(model).__name__, method)
