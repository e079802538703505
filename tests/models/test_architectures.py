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


@pytest.mark.parametrize("name", ["smallcnn", "lenet5", "gapnet"])
@pytest.mark.parametrize("train", [False, True])
def test_pooling_before_the_relu_changes_no_logit_gradient_or_state_dict_key(name: str, train: bool) -> None:
    """The networks whose ReLUs run after their 2x2 poolings give, to the bit, the logits and input gradient of
    the ReLU before the pooling (a hook on every ReLU forces that order), in eval and training mode."""
    torch.manual_seed(0)
    model = build_model(name, in_channels=1, input_size=28)
    model.train(train)
    if name != "lenet5":
        with torch.no_grad():
            for module in model.modules():
                if isinstance(module, torch.nn.BatchNorm2d):
                    module.running_mean.uniform_(-1, 1)
                    module.running_var.uniform_(0.2, 3)
    keys = list(model.state_dict())
    x = (torch.rand(4, 1, 28, 28) * 8).round() / 8  # ties in the pooling windows

    def logits_and_gradient() -> tuple[torch.Tensor, torch.Tensor]:
        torch.manual_seed(1)  # the same dropout mask in training mode
        xx = x.clone().requires_grad_(True)
        logits = model(xx)
        (gradient,) = torch.autograd.grad(logits[:, 0].sum(), xx)
        return logits.detach(), gradient

    def run(hooked: bool) -> tuple[tuple[torch.Tensor, torch.Tensor], list[int]]:
        """The logits and gradient, and the number of values each ReLU ran on (recorded without a hook)."""
        sizes: list[int] = []
        original = torch.nn.ReLU.forward
        handles = [m.register_forward_hook(lambda *_a: None) for m in model.modules()
                   if hooked and isinstance(m, torch.nn.ReLU)]
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(torch.nn.ReLU, "forward", lambda self, h: sizes.append(h.numel()) or original(self, h))
            result = logits_and_gradient()
        for handle in handles:
            handle.remove()
        return result, sizes

    pooled_first, pooled_sizes = run(hooked=False)
    relu_first, full_sizes = run(hooked=True)
    pooled_relus = 1 if name == "gapnet" else 2
    assert sum(a * 4 == b for a, b in zip(pooled_sizes, full_sizes, strict=True)) == pooled_relus  # each on a quarter
    assert sum(a == b for a, b in zip(pooled_sizes, full_sizes, strict=True)) == len(full_sizes) - pooled_relus
    assert torch.equal(pooled_first[0], relu_first[0]) and torch.equal(pooled_first[1], relu_first[1])
    assert pooled_first[1].abs().sum() > 0
    assert list(model.state_dict()) == keys


def test_a_hook_on_a_pooled_block_sees_its_full_size_relu_output() -> None:
    """A recorder on SmallCNN's ``block1.0`` (conv, BatchNorm, ReLU) sees that block's own output, as before."""
    model = build_model("smallcnn", in_channels=1, input_size=28).eval()
    seen = []
    handle = model.block1[0].register_forward_hook(lambda _m, _i, out: seen.append(out))
    with torch.no_grad():
        model(torch.rand(2, 1, 28, 28))
    handle.remove()
    assert seen[0].shape == (2, 16, 28, 28) and bool((seen[0] >= 0).all())
