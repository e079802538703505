"""models.hooks is the one home of frozen_eval, forward hooks and the layer lookup."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from advspatial.errors import ConfigError
from advspatial.models import hooks


def test_one_home_named_from_the_old_places():
    from advspatial.models.hooks import declared_cam_layer, find_feature_layer, resolve_layer
    from advspatial.maps._common import forward_hooks, module_by_name

    assert forward_hooks is hooks.forward_hooks
    assert module_by_name is hooks.module_by_name and resolve_layer is hooks.resolve_layer
    assert declared_cam_layer is hooks.declared_cam_layer and find_feature_layer is hooks.find_feature_layer


def test_hooks_are_removed_and_the_state_restored_on_an_exception():
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.Flatten(), nn.Linear(2 * 4 * 4, 3)).train()
    seen: list[str] = []
    with pytest.raises(RuntimeError, match="boom"):
        with hooks.frozen_eval(model), hooks.forward_hooks(dict(model.named_children()),
                                                            lambda name: lambda *_: seen.append(name)):
            assert not model.training and not any(p.requires_grad for p in model.parameters())
            model(torch.rand(1, 1, 6, 6))
            raise RuntimeError("boom")
    assert seen == ["0", "1", "2", "3"]
    assert model.training and all(p.requires_grad for p in model.parameters())
    assert all(not m._forward_hooks for m in model.modules())
    assert hooks.resolve_layer(model, torch.rand(1, 1, 6, 6)) == ("1", model[1])
    with pytest.raises(ConfigError, match="model has no layer 'nope'; valid: 0, 1, 2, 3"):
        hooks.module_by_name(model, "nope")
