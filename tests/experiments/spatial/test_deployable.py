"""Both deployable maps from one forward pass: the same numbers as the two map functions, fewer passes."""

from __future__ import annotations

import pytest
import torch
from helpers import TinyGAP
from torch import nn

from advspatial.errors import ConfigError
from advspatial.maps.attack import gradient_map
from advspatial.experiments.spatial.deployable import SHARED_FORWARD_METHODS, importance_and_gradient
from advspatial.maps.importance import importance_map
from advspatial.models import build_model
from advspatial.passes import PassLedger


def _models() -> list[tuple[nn.Module, tuple[int, ...]]]:
    torch.manual_seed(0)
    return [(build_model("smallcnn").eval(), (1, 28, 28)), (build_model("lenet5").eval(), (1, 28, 28)),
            (TinyGAP().eval(), (1, 12, 12))]


def _separate(method: str, model: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return importance_map(method, model, x, target="pred", batch_size=len(x)), gradient_map(model, x).map


@pytest.mark.parametrize("method", [*SHARED_FORWARD_METHODS, "saliency"])
def test_equal_to_the_two_map_functions_to_the_bit(method):
    for model, shape in _models():
        x = torch.rand(9, *shape, generator=torch.Generator().manual_seed(1))
        importance, gradient = importance_and_gradient(method, model, x)
        expected_importance, expected_gradient = _separate(method, model, x)
        assert importance.abs().sum() > 0 and gradient.abs().sum() > 0
        assert torch.equal(importance, expected_importance), (type(model).__name__, method)
        assert torch.equal(gradient, expected_gradient), (type(model).__name__, method)


def test_one_forward_pass_instead_of_four():
    model, shape = _models()[0]
    x = torch.rand(6, *shape)
    counts = []
    for compute in (lambda: importance_and_gradient("hirescam", model, x), lambda: _separate("hirescam", model, x)):
        ledger = PassLedger()
        ledger.watch(model)
        compute()
        ledger.unwatch()
        counts.append((ledger.total().forward, ledger.total().backward))
    assert counts == [(6, 12), (24, 12)]


def test_empty_batch_and_state_left_as_found():
    model, shape = _models()[0]
    model.train()
    importance, gradient = importance_and_gradient("hirescam", model, torch.rand(0, *shape))
    assert importance.shape == gradient.shape == (0, 28, 28)
    importance_and_gradient("hirescam", model, torch.rand(2, *shape))
    assert model.training and all(p.requires_grad for p in model.parameters())
    assert all(not m._forward_hooks for m in model.modules())


def test_images_outside_the_unit_interval_are_refused_as_by_the_map_functions():
    model, shape = _models()[0]
    with pytest.raises(ConfigError, match=r"\[0, 1\]"):
        importance_and_gradient("hirescam", model, torch.rand(2, *shape) * 3)
