"""models/folding.py: an eval-mode BatchNorm folded into its convolution gives the two modules' output, and the
fold is used only where nothing can tell it from them (eval mode, no hooks, no parameter gradient, no fx trace),
made again when a tensor of the pair changes; the built-in networks and EfficientNet-Lite run folded."""

from __future__ import annotations

import contextlib
import importlib.util
from collections.abc import Iterator

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from advspatial.models import build_model
from advspatial.models.cifar_resnet import cifar_resnet
from advspatial.models.folding import conv_bn, foldable
from advspatial.models.patch import tracing as patch_tracing


def pair(cin: int, cout: int, stride: int = 1, bias: bool = True, affine: bool = True,
         seed: int = 0) -> tuple[nn.Conv2d, nn.BatchNorm2d]:
    """A conv and an eval-mode BatchNorm with statistics far from the identity."""
    torch.manual_seed(seed)
    conv = nn.Conv2d(cin, cout, 3, stride, 1, bias=bias)
    bn = nn.BatchNorm2d(cout, affine=affine)
    with torch.no_grad():
        bn.running_mean.uniform_(-1, 1)
        bn.running_var.uniform_(0.2, 3)
        if affine:
            bn.weight.uniform_(-2, 2)
            bn.bias.uniform_(-1, 1)
    return conv.eval(), bn.eval()


@contextlib.contextmanager
def batchnorm_never_called() -> Iterator[None]:
    """Fail if any BatchNorm module runs in the block (the fold was not used)."""
    def refuse(self, x):  # type: ignore[no-untyped-def]
        raise AssertionError("the BatchNorm module ran: the pair was not folded")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(nn.BatchNorm2d, "forward", refuse)
        yield


@settings(max_examples=25, deadline=None)
@given(cin=st.integers(1, 4), cout=st.integers(1, 6), stride=st.sampled_from([1, 2]), bias=st.booleans(),
       affine=st.booleans(), channels_last=st.booleans(), seed=st.integers(0, 10_000))
def test_the_folded_convolution_equals_the_batchnorm_after_the_convolution(
        cin: int, cout: int, stride: int, bias: bool, affine: bool, channels_last: bool, seed: int) -> None:
    conv, bn = pair(cin, cout, stride, bias, affine, seed)
    x = torch.randn(3, cin, 9, 9, generator=torch.Generator().manual_seed(seed))
    if channels_last:
        conv = conv.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        expected = bn(conv(x))
        with batchnorm_never_called():
            folded = conv_bn(conv, bn, x)
    assert folded.shape == expected.shape
    assert torch.allclose(folded, expected, rtol=1e-5, atol=1e-5 * float(expected.abs().max()))


def test_the_input_gradient_through_the_fold_equals_the_two_modules() -> None:
    conv, bn = pair(2, 5)
    for p in [*conv.parameters(), *bn.parameters()]:
        p.requires_grad_(False)
    x = torch.randn(2, 2, 8, 8, requires_grad=True)
    weights = torch.randn(2, 5, 8, 8)
    expected, = torch.autograd.grad((bn(conv(x)) * weights).sum(), x)
    with batchnorm_never_called():
        folded, = torch.autograd.grad((conv_bn(conv, bn, x) * weights).sum(), x)
    assert torch.allclose(folded, expected, atol=1e-5)


def test_a_hook_on_either_module_a_global_hook_or_training_mode_runs_the_two_modules() -> None:
    """What a hook or a training step sees is the two modules, as before: the same output to the bit."""
    conv, bn = pair(2, 3)
    x = torch.randn(2, 2, 6, 6)
    seen: list[str] = []
    for module, name in ((conv, "conv"), (bn, "bn")):
        handle = module.register_forward_hook(lambda *_a, name=name: seen.append(name))
        with torch.no_grad():
            assert not foldable(conv, bn, x)
            assert torch.equal(conv_bn(conv, bn, x), bn(conv(x)))
        handle.remove()
    assert seen.count("conv") == 2 and seen.count("bn") == 2
    handle = nn.modules.module.register_module_forward_hook(lambda *_a: None)
    try:
        with torch.no_grad():
            assert not foldable(conv, bn, x)
    finally:
        handle.remove()
    with torch.no_grad():
        assert foldable(conv, bn, x)
    bn.train()
    before = bn.running_mean.clone()
    conv_bn(conv, bn, x)
    assert not torch.equal(bn.running_mean, before)  # a training step updates the statistics


def test_a_parameter_gradient_asked_for_runs_the_two_modules_and_reaches_every_parameter() -> None:
    conv, bn = pair(2, 3)
    x = torch.randn(2, 2, 6, 6)
    assert not foldable(conv, bn, x)  # parameters require gradients and grad mode is on
    conv_bn(conv, bn, x).square().sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in [*conv.parameters(), *bn.parameters()])
    with torch.no_grad():
        assert foldable(conv, bn, x)


def test_a_changed_tensor_of_the_pair_makes_the_fold_again() -> None:
    """An in-place change (an optimizer's step, load_state_dict, a re-initialization) and a new dtype each give
    the folded output of the pair as it is now, not as it was cached."""
    conv, bn = pair(2, 3)
    x = torch.randn(2, 2, 6, 6)
    with torch.no_grad(), batchnorm_never_called():
        first = conv_bn(conv, bn, x)
    with torch.no_grad():
        bn.running_var.mul_(4)
        conv.weight.add_(0.5)
        expected = bn(conv(x))
        with batchnorm_never_called():
            again = conv_bn(conv, bn, x)
        assert not torch.allclose(again, first, atol=1e-3)
        assert torch.allclose(again, expected, atol=1e-5)
        bn.load_state_dict({k: v * 0.5 if v.is_floating_point() else v for k, v in bn.state_dict().items()})
        assert torch.allclose(conv_bn(conv, bn, x), bn(conv(x)), atol=1e-5)
        conv.double(), bn.double()
        assert conv_bn(conv, bn, x.double()).dtype == torch.float64
        assert torch.allclose(conv_bn(conv, bn, x.double()), bn(conv(x.double())), atol=1e-12)


def test_an_fx_trace_keeps_the_convolution_and_the_batchnorm_apart() -> None:
    """The incremental patch evaluation reads a BatchNorm after a convolution in the traced graph."""
    for model in (build_model("smallcnn").eval(), cifar_resnet(20).eval()):
        modules = dict(model.named_modules())
        traced = patch_tracing.traced(model)  # the tracer of the incremental patch evaluation
        called = [str(node.target) for node in traced.graph.nodes if node.op == "call_module"]
        norms = [name for name in called if isinstance(modules[name], nn.BatchNorm2d)]
        assert len(norms) == sum(isinstance(m, nn.BatchNorm2d) for m in model.modules()) > 0
        assert not any(node.op == "get_attr" for node in traced.graph.nodes)  # no folded constants


LITE_PACKAGE = importlib.util.find_spec("efficientnet_lite_pytorch") is not None


@pytest.mark.parametrize("name", ["smallcnn", "gapnet", "resnet18-cifar", "cifar-resnet20", pytest.param(
    "efficientnet-lite0", marks=pytest.mark.skipif(not LITE_PACKAGE, reason="efficientnet_lite_pytorch absent"))])
def test_the_built_in_networks_give_their_unfolded_logits_and_keep_their_state_dicts(name: str) -> None:
    """The fold changes how a built-in network runs in eval mode, not what it computes or what it stores: its logits
    equal those with every pair run as two modules (a hook on each BatchNorm and each EfficientNet block forces
    that: the package's own block forward), its keys are unchanged."""
    torch.manual_seed(0)
    if name == "cifar-resnet20":
        model, x = cifar_resnet(20), torch.rand(3, 3, 32, 32)
    elif name == "efficientnet-lite0":
        from advspatial.models.zoo import _LiteBuilder

        model, x = _LiteBuilder(0)(), torch.rand(2, 3, 224, 224)
    else:
        channels, size = (3, 32) if name == "resnet18-cifar" else (1, 28)
        model, x = build_model(name, in_channels=channels, input_size=size), torch.rand(3, channels, size, size)
    model.train()
    with torch.no_grad():
        for _ in range(3):
            model(torch.rand_like(x) * 2)  # running statistics away from (0, 1)
    model.eval()
    keys = set(model.state_dict())
    folds_every_pair = name != "resnet18-cifar"  # its projection shortcuts are a plain Sequential(conv, bn)
    with torch.no_grad():
        with batchnorm_never_called() if folds_every_pair else contextlib.nullcontext():
            folded = model(x)
        handles = [m.register_forward_hook(lambda *_a: None) for m in model.modules()
                   if isinstance(m, nn.BatchNorm2d) or type(m).__name__ == "MBConvBlock"]
        unfolded = model(x)
        for handle in handles:
            handle.remove()
    assert torch.allclose(folded, unfolded, rtol=1e-5, atol=1e-5 * float(unfolded.abs().max()))
    assert set(model.state_dict()) == keys


class SamePaddedConv(nn.Conv2d):
    """A convolution that pads its input in its own forward (as TensorFlow-style "same" convolutions do)."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__(cin, cout, 3, 2, bias=False)
        self.static_padding = nn.ZeroPad2d((0, 1, 0, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(self.static_padding(x))


def test_a_convolution_with_its_own_forward_folds_only_with_its_padding_named() -> None:
    """Without ``pad`` the fold could not know what the convolution's own forward does: it runs the two modules."""
    torch.manual_seed(3)
    conv, bn = SamePaddedConv(2, 4).eval(), pair(2, 4)[1]
    x = torch.randn(2, 2, 9, 9)
    with torch.no_grad():
        expected = bn(conv(x))
        assert torch.equal(conv_bn(conv, bn, x), expected)  # unfolded: the BatchNorm module ran
        with batchnorm_never_called():
            folded = conv_bn(conv, bn, x, pad=conv.static_padding)
    assert folded.shape == expected.shape == (2, 4, 4, 4)
    assert torch.allclose(folded, expected, atol=1e-5)


def test_a_fold_made_under_inference_mode_serves_a_later_pass_with_gradients() -> None:
    """The cached fold is a normal tensor even when first made inside ``torch.inference_mode`` (an accuracy check),
    so an attack's pass after it can differentiate through it."""
    model = build_model("smallcnn").eval()
    for p in model.parameters():
        p.requires_grad_(False)
    with torch.inference_mode():
        first = model(torch.rand(2, 1, 28, 28))
    x = torch.rand(2, 1, 28, 28, requires_grad=True)
    gradient, = torch.autograd.grad(model(x).sum(), x)
    assert first.shape == (2, 10) and gradient.shape == x.shape and torch.isfinite(gradient).all()


def test_a_network_built_under_inference_mode_runs_its_two_modules() -> None:
    """Its tensors carry no version to key a cached fold on: the pair runs as two modules, as before."""
    with torch.inference_mode():
        conv, bn = pair(2, 3)
        x = torch.randn(2, 2, 6, 6)
        assert not foldable(conv, bn, x)
        assert torch.equal(conv_bn(conv, bn, x), bn(conv(x)))


@pytest.mark.skipif(not LITE_PACKAGE, reason="efficientnet_lite_pytorch absent")
def test_a_lite_network_whose_convolutions_pad_by_the_input_runs_them_unfolded() -> None:
    """The package's dynamic "same" convolutions pad by each input's size in their own forward: nothing to name as
    their padding, so those pairs run as two modules and the logits equal the package's own."""
    from efficientnet_lite_pytorch import EfficientNet

    from advspatial.models.zoo import EfficientNetLite

    torch.manual_seed(0)
    net = EfficientNet.from_name("efficientnet-lite0", image_size=None).eval()
    model = EfficientNetLite(net).eval()
    x = torch.rand(2, 3, 96, 96)
    with torch.no_grad():
        assert torch.allclose(model(x), net(x), atol=1e-6)
