"""Tests for the built-in architectures and the registry."""

from __future__ import annotations

import pytest
import torch

from advspatial.errors import ConfigError
from advspatial.models import build_model, list_models


@pytest.mark.parametrize(
    ("name", "channels", "size"),
    [("smallcnn", 1, 28), ("lenet5", 1, 28), ("gapnet", 1, 28), ("gapnet", 3, 32), ("resnet18-cifar", 3, 32)],
)
def test_forward_shape_and_cam_layer(name: str, channels: int, size: int) -> None:
    model = build_model(name, in_channels=channels, num_classes=7, input_size=size).eval()
    with torch.no_grad():
        out = model(torch.rand(2, channels, size, size))
    assert out.shape == (2, 7)
    modules = dict(model.named_modules())
    assert model.cam_layer in modules, f"{name}.cam_layer must name a module"
    # the CAM layer yields a spatial feature map
    captured = {}
    handle = modules[model.cam_layer].register_forward_hook(lambda m, i, o: captured.setdefault("o", o))
    with torch.no_grad():
        model(torch.rand(1, channels, size, size))
    handle.remove()
    assert captured["o"].ndim == 4 and captured["o"].shape[-1] > 1


def test_registry_lists_required_models() -> None:
    assert {"smallcnn", "lenet5", "gapnet", "resnet18-cifar"} <= set(list_models())


def test_unknown_model_names_valid_ones() -> None:
    with pytest.raises(ConfigError, match="smallcnn"):
        build_model("nope")


def test_resnet_has_separate_relu_modules() -> None:
    """Each ReLU is its own module (propagation maps name each call)."""
    model = build_model("resnet18-cifar", in_channels=3, input_size=32)
    relus = [m for m in model.modules() if isinstance(m, torch.nn.ReLU)]
    assert len(relus) == len({id(m) for m in relus}) == 17
