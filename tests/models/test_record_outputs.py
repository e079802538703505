"""Tests of the layer recorder of advspatial.models.hooks: layer listing, selection, repeated calls, hook release."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from advspatial.errors import ConfigError, ModelError
from advspatial.models.hooks import list_layers, record_outputs, select_layers
from advspatial.models import Normalized, build_model


class SharedReLU(nn.Module):
    """conv -> relu -> conv -> relu, with one ReLU module used twice (as torchvision's ResNet blocks do)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 2, 3, padding=1)
        self.conv2 = nn.Conv2d(2, 2, 3, padding=1)
        self.relu = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.conv2(self.relu(self.conv1(x))))


def _no_hooks_left(model: nn.Module) -> bool:
    return all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())


def test_default_layers_are_conv_activation_and_blocks(tiny_cnn):
    model = tiny_cnn()
    # features (block), two convs, two ReLUs; pools and the Linear are not default layers
    assert list_layers(model) == ["features", "features.0", "features.1", "features.3", "features.4"]


def test_list_layers_with_example_gives_forward_order(tiny_cnn):
    model = tiny_cnn()
    order = list_layers(model, torch.rand(1, 1, 28, 28))
    assert order == ["features.0", "features.1", "features.3", "features.4", "features"]


def test_listing_with_example_does_not_touch_batchnorm():
    model = build_model("smallcnn").train()
    before = model.block1[0][1].running_mean.clone()
    names = list_layers(model, torch.rand(2, 1, 28, 28))
    assert names[0] == "block1.0.0" and names[-1] == "classifier"
    assert model.training and torch.equal(model.block1[0][1].running_mean, before)


def test_recorded_outputs_equal_direct_computation(tiny_cnn):
    model = tiny_cnn()
    x = torch.rand(3, 1, 28, 28)
    with record_outputs(model, ["features.0", "features.1"]) as rec:
        logits = model(x)
    out = rec.outputs
    assert list(out) == ["features.0", "features.1"]
    conv = model.features[0](x)
    torch.testing.assert_close(out["features.0"], conv)
    torch.testing.assert_close(out["features.1"], conv.relu())
    torch.testing.assert_close(logits, model(x))


def test_patterns_and_exact_names_of_any_module(tiny_cnn):
    model = tiny_cnn()
    assert select_layers(model, "features.?") == [f"features.{i}" for i in range(6)]
    assert select_layers(model, ["fc", "features.2"]) == ["features.2", "fc"]


def test_unknown_layer_lists_valid_names(tiny_cnn):
    with pytest.raises(ConfigError, match=r"'nope'.*valid: features, features\.0"):
        select_layers(tiny_cnn(), ["features.0", "nope"])


def test_shared_module_gets_one_entry_per_call():
    torch.manual_seed(0)
    model = SharedReLU()
    x = torch.rand(2, 1, 6, 6)
    with record_outputs(model) as rec:
        model(x)
    out = rec.outputs
    assert list(out) == ["conv1", "relu#0", "conv2", "relu#1"]
    first = model.conv1(x).relu()
    torch.testing.assert_close(out["relu#0"], first)
    torch.testing.assert_close(out["relu#1"], model.conv2(first).relu())


def test_each_forward_starts_a_fresh_record(tiny_cnn):
    model = tiny_cnn()
    a, b = torch.rand(1, 1, 28, 28), torch.rand(1, 1, 28, 28)
    with record_outputs(model, "features.0") as rec:
        model(a)
        model(b)
    assert list(rec.outputs) == ["features.0"]  # not features.0#0 / #1
    torch.testing.assert_close(rec.outputs["features.0"], model.features[0](b))


def test_outputs_are_protected_from_later_inplace_ops():
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(inplace=True))
    x = torch.randn(1, 1, 5, 5)
    with record_outputs(model, "0") as rec, torch.no_grad():
        model(x)
    torch.testing.assert_close(rec.outputs["0"], model[0](x))
    assert (rec.outputs["0"] < 0).any()  # the in-place ReLU did not clip the record


def test_hooks_released_on_exit_and_on_exception(tiny_cnn):
    model = tiny_cnn()
    with record_outputs(model) as rec:
        model(torch.rand(1, 1, 28, 28))
        assert any(m._forward_hooks for m in model.modules())
    assert rec.outputs and _no_hooks_left(model)
    with pytest.raises(RuntimeError):
        with record_outputs(model):
            model(torch.rand(1, 3, 28, 28))  # wrong channel count
    assert _no_hooks_left(model)


def test_gradients_flow_when_not_detached(tiny_cnn):
    model = tiny_cnn()
    with record_outputs(model, "features.4", detach=False) as rec:
        model(torch.rand(1, 1, 28, 28))
    feat = rec.outputs["features.4"]
    feat.sum().backward()
    assert model.features[3].weight.grad is not None


def test_resnet_blocks_are_listed():
    model = build_model("resnet18-cifar", in_channels=3, input_size=32)
    names = list_layers(model)
    assert {"stem", "layer1", "layer1.0", "layer1.0.conv1", "layer1.0.relu2", "layer4.1"} <= set(names)
    assert "layer1.0.bn1" not in names and "fc" not in names


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_torchscript_is_refused_clearly(tiny_cnn):
    scripted = torch.jit.script(tiny_cnn())
    with pytest.raises(ModelError, match="TorchScript"):
        with record_outputs(scripted):
            pass
    # a Python wrapper around a TorchScript model has no hookable layer of its own
    wrapped = Normalized(scripted, (0.5,), (0.5,))
    with pytest.raises(ModelError, match="no conv"):
        with record_outputs(wrapped):
            pass
