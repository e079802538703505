"""Tests for PatchForward: incremental logits equal the model's own on patched images."""

from __future__ import annotations

import pytest
import torch
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from torch import nn

from advspatial.errors import ShapeError
from advspatial.models import Normalized, build_model
from advspatial.models.patch.forward import PatchForward, try_patch_forward
from advspatial.models.patch.stem import UnsupportedModel, max_pool_window, window_stage_of
from advspatial.models.patch.updates import LinearFold
from advspatial.models.patch.graph import GraphPatchForward


def patched(clean: torch.Tensor, image: torch.Tensor, top: torch.Tensor, left: torch.Tensor,
            patch: torch.Tensor) -> torch.Tensor:
    """The patched images built the slow way: copy, then overwrite each rectangle."""
    out = clean[image].clone()
    ph, pw = patch.shape[2:]
    for i in range(len(image)):
        out[i, :, top[i]:top[i] + ph, left[i]:left[i] + pw] = patch[i]
    return out


def random_patches(clean: torch.Tensor, n: int, size: tuple[int, int], seed: int):
    """``n`` random (image, top, left, patch) with the four image corners always included."""
    g = torch.Generator().manual_seed(seed)
    height, width = clean.shape[2:]
    top = torch.randint(0, height - size[0] + 1, (n,), generator=g)
    left = torch.randint(0, width - size[1] + 1, (n,), generator=g)
    top[:4] = torch.tensor([0, 0, height - size[0], height - size[0]])
    left[:4] = torch.tensor([0, width - size[1], 0, width - size[1]])
    image = torch.randint(0, len(clean), (n,), generator=g)
    patch = torch.rand(n, clean.shape[1], *size, generator=g)
    return image, top, left, patch


def together_and_alone(forward, clean: torch.Tensor, n: int, seed: int):  # type: ignore[no-untyped-def]
    """(rows of ``n`` random 1x1 patches computed together, the same rows one call each, the patches)."""
    image, top, left, patch = random_patches(clean, n, (1, 1), seed=seed)
    with torch.no_grad():
        together = forward(image, top, left, patch)
        alone = [forward(image[i:i + 1], top[i:i + 1], left[i:i + 1], patch[i:i + 1]) for i in range(n)]
    return together, torch.cat(alone), (image, top, left, patch)


def assert_matches_model(model: nn.Module, clean: torch.Tensor, size: tuple[int, int] = (1, 1),
                         n: int = 40, seed: int = 0, cls: type = PatchForward) -> PatchForward:
    """``cls(model, clean, size)`` (PatchForward or GraphPatchForward) equals the model on ``n`` random patches."""
    forward = cls(model, clean, size)
    image, top, left, patch = random_patches(clean, n, size, seed)
    with torch.no_grad():
        expected = model(patched(clean, image, top, left, patch))
        got = forward(image, top, left, patch)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
    return forward


def with_random_batchnorm_stats(model: nn.Module, seed: int = 0) -> nn.Module:
    """Eval-mode model whose BatchNorm layers have non-trivial running statistics."""
    g = torch.Generator().manual_seed(seed)
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.copy_(torch.randn(module.num_features, generator=g) * 0.3)
            module.running_var.copy_(torch.rand(module.num_features, generator=g) + 0.5)
    return model.eval()


# -- exactness on the built-in architectures ------------------------------------------

@pytest.mark.parametrize("arch", ["smallcnn", "lenet5", "gapnet"])
def test_builtin_architectures_match_full_forward(arch: str) -> None:
    torch.manual_seed(0)
    model = with_random_batchnorm_stats(build_model(arch))
    forward = assert_matches_model(model, torch.rand(3, 1, 28, 28))
    assert any(stage.axes is not None for stage in forward.stages)


def test_resnet_stem_then_residual_tail_matches_full_forward() -> None:
    torch.manual_seed(0)
    model = with_random_batchnorm_stats(build_model("resnet18-cifar", in_channels=3, input_size=32))
    forward = assert_matches_model(model, torch.rand(2, 3, 32, 32), size=(2, 3), n=8)
    # the stem is conv-BN-ReLU: the first residual block needs its input twice
    assert [type(s.apply_full).__name__ for s in forward.stages] == ["Conv2d", "BatchNorm2d", "ReLU"]


def test_normalized_wrapper_is_part_of_the_stem(tiny_cnn) -> None:
    model = Normalized(tiny_cnn(in_channels=3), (0.5, 0.4, 0.3), (0.2, 0.25, 0.3)).eval()
    forward = assert_matches_model(model, torch.rand(3, 3, 28, 28), size=(1, 1))
    assert forward.stages[0].axes is None and forward.stages[1].axes is None  # (x - mean), then / std


@pytest.mark.parametrize("fold", [True, False])
def test_flatten_linear_tail_with_and_without_the_fold(tiny_cnn, monkeypatch, fold: bool) -> None:
    """The Linear after the stem is folded into a per-position update, or (when too big) run in full."""
    if not fold:
        monkeypatch.setattr(LinearFold, "MAX_POSITIONS", 0)
    forward = assert_matches_model(tiny_cnn(in_channels=2), torch.rand(3, 2, 28, 28), size=(2, 1), n=60)
    assert (forward.fold is not None) == fold


def test_clean_logits_are_the_models(tiny_cnn) -> None:
    model, clean = tiny_cnn(), torch.rand(4, 1, 28, 28)
    with torch.no_grad():
        torch.testing.assert_close(PatchForward(model, clean).clean_logits, model(clean), atol=0, rtol=0)


# -- exactness on random architectures (hypothesis) -----------------------------------

@st.composite
def chain_models(draw: st.DrawFn) -> tuple[nn.Module, int, int]:
    """A random conv/pool/pointwise chain + flatten + linear, its input channels and size."""
    channels, size = draw(st.integers(1, 3)), draw(st.integers(8, 14))
    layers: list[nn.Module] = []
    cin, side = channels, size
    for _ in range(draw(st.integers(1, 3))):
        kernel, stride, dilation = draw(st.integers(1, 4)), draw(st.integers(1, 2)), draw(st.integers(1, 2))
        padding = draw(st.integers(0, kernel // 2 * dilation))
        cout = draw(st.integers(1, 6))
        layers.append(nn.Conv2d(cin, cout, kernel, stride, padding, dilation, bias=draw(st.booleans())))
        side = (side + 2 * padding - dilation * (kernel - 1) - 1) // stride + 1
        assume(side >= 1)
        if draw(st.booleans()):
            layers.append(nn.BatchNorm2d(cout))
        layers.append(draw(st.sampled_from([nn.ReLU(), nn.LeakyReLU(0.1), nn.Tanh(), nn.GELU(), nn.Identity()])))
        pool = draw(st.sampled_from(["none", "max", "avg"]))
        if pool != "none":
            k = draw(st.integers(2, 3))
            s = draw(st.integers(1, k))
            p = draw(st.integers(0, k // 2))
            layers.append(nn.MaxPool2d(k, s, p) if pool == "max" else nn.AvgPool2d(k, s, p))
            side = (side + 2 * p - k) // s + 1
            assume(side >= 1)
        cin = cout
    layers += [nn.Flatten(), nn.Linear(cin * side * side, 4)]
    return with_random_batchnorm_stats(nn.Sequential(*layers), draw(st.integers(0, 9))), channels, size


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.filter_too_much])
@given(model_spec=chain_models(), patch_rows=st.integers(1, 3), patch_cols=st.integers(1, 3),
       seed=st.integers(0, 2**16))
def test_random_chains_match_full_forward(model_spec, patch_rows: int, patch_cols: int, seed: int) -> None:
    model, channels, size = model_spec
    torch.manual_seed(seed)
    assert_matches_model(model, torch.rand(2, channels, size, size), (patch_rows, patch_cols), n=12, seed=seed)


@settings(max_examples=40, deadline=None)
@given(rows=st.integers(2, 9), cols=st.integers(2, 9), channels_last=st.booleans(),
       geometry=st.sampled_from([((2, 2), (2, 2), (1, 1)), ((3, 3), (2, 2), (1, 1)), ((2, 2), (1, 1), (1, 1)),
                                 ((2, 3), (2, 1), (1, 2))]),
       seed=st.integers(0, 2**16))
def test_max_pool_window_equals_max_pool2d_bit_for_bit(rows: int, cols: int, channels_last: bool, geometry,
                                                      seed: int) -> None:
    """The two-maxima 2x2 path (and the fallback) give F.max_pool2d's values exactly, NaN and -inf included."""
    kernel, stride, dilation = geometry
    assume(rows >= (kernel[0] - 1) * dilation[0] + 1 and cols >= (kernel[1] - 1) * dilation[1] + 1)
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(3, 4, rows, cols, generator=g)
    x[0, 0, 0, 0], x[1, 2, -1, -1], x[2, 3] = float("nan"), float("-inf"), float("-inf")
    if channels_last:
        x = x.permute(0, 2, 3, 1).contiguous().permute(0, 3, 1, 2)
    expected = torch.nn.functional.max_pool2d(x, kernel, stride, 0, dilation)
    got = max_pool_window(x, kernel, stride, dilation)
    assert got.shape == expected.shape
    assert torch.equal(got.isnan(), expected.isnan())
    assert torch.equal(got.nan_to_num(0.0), expected.nan_to_num(0.0))


@pytest.mark.parametrize("pool", [nn.MaxPool2d(2), nn.MaxPool2d(3, 2), nn.MaxPool2d(3, 2, padding=1)],
                         ids=["2x2", "3x3-stride2", "3x3-padded"])
def test_max_pool_stage_on_whole_maps_gives_the_module_values(pool: nn.MaxPool2d) -> None:
    """The clean pass (and so the clean logits) pools whole maps with the stage's full-map call: the module's values."""
    x = torch.randn(2, 3, 11, 10, generator=torch.Generator().manual_seed(0))
    x[0, 1, 2, 3] = float("nan")
    stage = window_stage_of(pool, (11, 10))
    got, expected = stage.apply_full(x), pool(x)
    assert torch.equal(got.isnan(), expected.isnan())
    assert torch.equal(got.nan_to_num(0.0), expected.nan_to_num(0.0))
    assert got.is_contiguous()


def test_strided_conv_that_skips_inputs_still_matches() -> None:
    """Stride 3 > kernel 1: some pixels reach no output at all (an empty cone)."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 2, 1, stride=3), nn.ReLU(), nn.Flatten(), nn.Linear(2 * 4 * 4, 3)).eval()
    assert_matches_model(model, torch.rand(2, 1, 12, 12), n=30)


def test_same_padding_and_size_view_tail() -> None:
    class SameConv(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(1, 3, 4, padding="same")
            self.fc = nn.Linear(3 * 9 * 9, 2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            h = torch.relu(self.conv(x))
            return self.fc(h.view(h.size(0), -1))

    torch.manual_seed(0)
    forward = assert_matches_model(SameConv().eval(), torch.rand(2, 1, 9, 9), size=(2, 2))
    assert len(forward.stages) == 2  # conv, relu; h is used twice (size and view), so the stem ends there
    assert forward.fold is None  # and no plain flatten feeds the linear layer


# -- what is refused, and what is left alone ------------------------------------------

def test_torchscript_model_is_unsupported(tiny_cnn) -> None:
    scripted = torch.jit.script(tiny_cnn())
    with pytest.raises(UnsupportedModel):
        PatchForward(scripted, torch.rand(1, 1, 28, 28))
    assert try_patch_forward(scripted, torch.rand(1, 1, 28, 28)) is None


def test_input_used_twice_is_unsupported() -> None:
    class Residual(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(1, 1, 3, padding=1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return (x + self.conv(x)).flatten(1)

    with pytest.raises(UnsupportedModel, match="no supported layer"):
        PatchForward(Residual(), torch.rand(1, 1, 8, 8))


def test_hooked_modules_are_left_to_the_tail(tiny_cnn) -> None:
    model = tiny_cnn()
    calls = []
    model.features[3].register_forward_hook(lambda module, inputs, output: calls.append(len(output)))
    forward = assert_matches_model(model, torch.rand(2, 1, 28, 28), n=6)
    assert len(forward.stages) == 3  # conv, relu, pool; the hooked conv starts the tail
    assert calls  # the hook still ran, on whole maps
    model.register_forward_hook(lambda module, inputs, output: output)
    with pytest.raises(UnsupportedModel, match="hooks"):
        PatchForward(model, torch.rand(1, 1, 28, 28))


def test_layer_subclass_with_its_own_forward_ends_the_stem() -> None:
    class DoubledConv(nn.Conv2d):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return 2 * super().forward(x)

    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), DoubledConv(2, 2, 3), nn.Flatten(), nn.Linear(2 * 4 * 4, 3))
    forward = assert_matches_model(model.eval(), torch.rand(2, 1, 8, 8), n=10)
    assert len(forward.stages) == 2


def test_training_mode_batchnorm_ends_the_stem() -> None:
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2), nn.Flatten(), nn.Linear(2 * 6 * 6, 2))
    model.train()
    forward = PatchForward(model, torch.rand(4, 1, 8, 8))
    assert len(forward.stages) == 1


def test_tracing_leaves_the_model_untouched(tiny_cnn) -> None:
    class Counting(nn.Module):
        def __init__(self, inner: nn.Module) -> None:
            super().__init__()
            self.inner, self.images = inner, 0

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            self.images += x.shape[0]
            return self.inner(x)

    counting = Counting(tiny_cnn())
    with pytest.raises(UnsupportedModel):  # the input feeds the counter too: no stem
        PatchForward(counting, torch.rand(1, 1, 28, 28))
    assert counting.images == 0 and type(counting.images) is int


def test_inplace_first_layer_changes_neither_clean_images_nor_patch() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Hardtanh(0.2, 0.6, inplace=True), nn.Conv2d(1, 2, 3), nn.ReLU(inplace=True),
                          nn.Flatten(), nn.Linear(2 * 6 * 6, 3)).eval()
    clean = torch.rand(2, 1, 8, 8)
    clean_copy = clean.clone()
    forward = PatchForward(model, clean)
    assert torch.equal(clean, clean_copy)
    image, top, left, patch = random_patches(clean, 8, (1, 1), seed=1)
    patch_copy = patch.clone()
    with torch.no_grad():
        expected = model(patched(clean, image, top, left, patch))
        torch.testing.assert_close(forward(image, top, left, patch), expected, atol=1e-6, rtol=1e-6)
    assert torch.equal(patch, patch_copy)


def test_bad_shapes_raise_shape_error(tiny_cnn) -> None:
    model = tiny_cnn()
    with pytest.raises(ShapeError, match="must be"):
        PatchForward(model, torch.rand(1, 28, 28))
    with pytest.raises(ShapeError, match="does not fit"):
        PatchForward(model, torch.rand(1, 1, 28, 28), (29, 1))
    forward = PatchForward(model, torch.rand(1, 1, 28, 28))
    with pytest.raises(ShapeError, match="built for"):
        forward(torch.zeros(1, dtype=torch.long), torch.zeros(1), torch.zeros(1), torch.rand(1, 1, 2, 2))


def test_stem_rows_do_not_depend_on_the_batch(tiny_cnn) -> None:
    """The incremental stem gives each row the same values whether it runs with 15 others or alone.

    The model here ends at the stem (its tail is a flatten). Equal to float
    rounding, not bit for bit: oneDNN picks convolution kernels by batch size
    on some CPUs (rows differ by 6e-8 on an AMD EPYC, bit-equal on others), as
    in the model's own forward. A mixed-up row would differ by O(1).
    """
    features = tiny_cnn().features
    model = nn.Sequential(*features, nn.Flatten()).eval()
    clean = torch.rand(3, 1, 28, 28)
    together, alone, patches = together_and_alone(PatchForward(model, clean), clean, 16, seed=3)
    with torch.no_grad():
        torch.testing.assert_close(together, model(patched(clean, *patches)), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(together, alone, atol=1e-6, rtol=1e-6)


# -- the whole graph: residual and mobile networks (GraphPatchForward) ------------------

class _ShortcutA(nn.Module):
    """Option-A shortcut: ``x[:, :, ::s, ::s]`` then zero channels (as in the CIFAR ResNets)."""

    def __init__(self, stride: int, pad: int) -> None:
        super().__init__()
        self.stride, self.pad = stride, pad

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride != 1:
            x = x[:, :, ::self.stride, ::self.stride]
        return nn.functional.pad(x, (0, 0, 0, 0, self.pad, self.pad)) if self.pad else x


class _Residual(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int, kernel: int, act: nn.Module, shortcut: str) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, kernel, stride, kernel // 2, bias=False)
        self.bn1, self.act1 = nn.BatchNorm2d(cout), act
        self.conv2 = nn.Conv2d(cout, cout, kernel, 1, kernel // 2, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        if stride == 1 and cin == cout:
            self.shortcut: nn.Module = nn.Identity()
        elif shortcut == "A" and cout >= cin and (cout - cin) % 2 == 0:
            self.shortcut = _ShortcutA(stride, (cout - cin) // 2)
        else:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.bn2(self.conv2(self.act1(self.bn1(self.conv1(x)))))
        return torch.relu(out + self.shortcut(x))


class _SamePadConv(nn.Conv2d):
    """TensorFlow-style 'same' padding as a ZeroPad2d before an unpadded F.conv2d (EfficientNet ports)."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int, size: int, groups: int = 1) -> None:
        super().__init__(cin, cout, kernel, stride, groups=groups, bias=False)
        out = -(-size // stride)
        total = max((out - 1) * stride + kernel - size, 0)
        self.static_padding = nn.ZeroPad2d((total // 2, total - total // 2, total // 2, total - total // 2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.conv2d(self.static_padding(x), self.weight, self.bias, self.stride, 0, self.dilation,
                                    self.groups)


class _MBConv(nn.Module):
    """Expand 1x1 - depthwise kxk (stride s) - [squeeze-excitation] - project 1x1, skip when shapes allow."""

    def __init__(self, cin: int, cout: int, expand: int, kernel: int, stride: int, size: int, se: bool) -> None:
        super().__init__()
        mid = cin * expand
        self.expand = nn.Sequential(_SamePadConv(cin, mid, 1, 1, size), nn.BatchNorm2d(mid), nn.ReLU6()) \
            if expand != 1 else nn.Identity()
        self.depthwise = nn.Sequential(_SamePadConv(mid, mid, kernel, stride, size, groups=mid),
                                       nn.BatchNorm2d(mid), nn.ReLU6())
        self.se = nn.Sequential(nn.Conv2d(mid, max(1, mid // 4), 1), nn.ReLU(), nn.Conv2d(max(1, mid // 4), mid, 1)) \
            if se else None
        self.project = nn.Sequential(nn.Conv2d(mid, cout, 1, bias=False), nn.BatchNorm2d(cout))
        self.skip = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.depthwise(self.expand(x))
        if self.se is not None:
            h = torch.sigmoid(self.se(nn.functional.adaptive_avg_pool2d(h, 1))) * h
        h = self.project(h)
        return h + x if self.skip else h


class _Net(nn.Module):
    def __init__(self, stem: nn.Module, blocks: list[nn.Module], channels: int, classes: int = 5) -> None:
        super().__init__()
        self.stem, self.blocks = stem, nn.Sequential(*blocks)
        self.pool, self.fc = nn.AdaptiveAvgPool2d(1), nn.Linear(channels, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.pool(self.blocks(self.stem(x))), 1))


@st.composite
def residual_models(draw: st.DrawFn) -> tuple[nn.Module, int, int]:
    channels, size = draw(st.integers(1, 3)), draw(st.integers(8, 16))
    width = draw(st.sampled_from([4, 6, 8]))
    stem_stride = draw(st.integers(1, 2))
    stem = nn.Sequential(nn.Conv2d(channels, width, 3, stem_stride, 1, bias=False), nn.BatchNorm2d(width),
                         draw(st.sampled_from([nn.ReLU(), nn.ReLU6()])))
    blocks, cin = [], width
    for _ in range(draw(st.integers(1, 4))):
        cout = cin * draw(st.sampled_from([1, 1, 2]))
        stride = draw(st.integers(1, 2)) if cout != cin else draw(st.sampled_from([1, 1, 2]))
        kernel = draw(st.sampled_from([1, 3, 5]))
        act = draw(st.sampled_from([nn.ReLU(), nn.ReLU6(), nn.Hardswish(), nn.SiLU()]))
        blocks.append(_Residual(cin, cout, stride, kernel, act, draw(st.sampled_from(["A", "B"]))))
        cin = cout
    model = _Net(stem, blocks, cin)
    return with_random_batchnorm_stats(model, draw(st.integers(0, 9))), channels, size


@st.composite
def mbconv_models(draw: st.DrawFn) -> tuple[nn.Module, int, int]:
    channels, size = 3, draw(st.integers(9, 17))
    width = draw(st.sampled_from([4, 8]))
    stem = nn.Sequential(_SamePadConv(channels, width, 3, 2, size), nn.BatchNorm2d(width), nn.ReLU6())
    side, blocks, cin = -(-size // 2), [], width
    for _ in range(draw(st.integers(1, 4))):
        stride, kernel = draw(st.integers(1, 2)), draw(st.sampled_from([3, 5]))
        cout = draw(st.sampled_from([cin, cin, cin + 4]))
        blocks.append(_MBConv(cin, cout, draw(st.sampled_from([1, 3])), kernel, stride, side, draw(st.booleans())))
        side, cin = -(-side // stride), cout
    return with_random_batchnorm_stats(_Net(stem, blocks, cin), draw(st.integers(0, 9))), channels, size


def assert_graph_matches_model(model: nn.Module, clean: torch.Tensor, size: tuple[int, int] = (1, 1),
                               n: int = 24, seed: int = 0) -> GraphPatchForward:
    return assert_matches_model(model, clean, size, n, seed, GraphPatchForward)  # type: ignore[return-value]


@settings(max_examples=30, deadline=None)
@given(model_spec=residual_models(), patch_rows=st.integers(1, 2), patch_cols=st.integers(1, 2),
       seed=st.integers(0, 2**16))
def test_random_residual_networks_match_full_forward(model_spec, patch_rows: int, patch_cols: int, seed: int) -> None:
    model, channels, size = model_spec
    torch.manual_seed(seed)
    assert_graph_matches_model(model, torch.rand(2, channels, size, size), (patch_rows, patch_cols), seed=seed)


@settings(max_examples=30, deadline=None)
@given(model_spec=mbconv_models(), seed=st.integers(0, 2**16))
def test_random_mbconv_networks_match_full_forward(model_spec, seed: int) -> None:
    """Depthwise strided convolutions, ZeroPad2d + F.conv2d, ReLU6, skips; squeeze-excitation runs whole."""
    model, channels, size = model_spec
    torch.manual_seed(seed)
    assert_graph_matches_model(model, torch.rand(2, channels, size, size), seed=seed)


def test_cifar_resnet20_follows_the_cone_through_every_block() -> None:
    from advspatial.models.cifar_resnet import cifar_resnet

    torch.manual_seed(0)
    model = with_random_batchnorm_stats(cifar_resnet(20))
    model.linear.weight.data.mul_(0.1)  # logits of order 1, so that 1e-5 is a fair tolerance
    forward = assert_graph_matches_model(model, torch.rand(2, 3, 32, 32), n=16)
    kinds = {step.kind for step in forward.steps}
    assert {"window-op", "pointwise", "binary"} <= kinds
    # every convolution runs on a window; the cone covers the 8x8 maps of the last stage entirely
    assert all(step.kind != "dense" for step in forward.steps if forward._conv_weight(step.node) is not None)
    incremental, full = forward.conv_cost()
    assert incremental < full
    assert isinstance(try_patch_forward(model, torch.rand(2, 3, 32, 32)), GraphPatchForward)


def test_efficientnet_lite0_matches_full_forward() -> None:
    pytest.importorskip("efficientnet_lite_pytorch")
    from advspatial.models.zoo import _LiteBuilder

    torch.manual_seed(0)
    model = with_random_batchnorm_stats(_LiteBuilder(0)())
    forward = assert_graph_matches_model(model, torch.rand(1, 3, 64, 64), n=6)
    incremental, full = forward.conv_cost()
    assert incremental < full


def test_chain_models_keep_the_chain_evaluator(tiny_cnn) -> None:
    assert isinstance(try_patch_forward(tiny_cnn(), torch.rand(2, 1, 28, 28)), PatchForward)
    model = with_random_batchnorm_stats(build_model("lenet5"))
    assert isinstance(try_patch_forward(model, torch.rand(2, 1, 28, 28)), PatchForward)


def test_graph_rows_do_not_depend_on_the_batch() -> None:
    from advspatial.models.cifar_resnet import cifar_resnet

    torch.manual_seed(1)
    model = with_random_batchnorm_stats(cifar_resnet(8))
    clean = torch.rand(3, 3, 16, 16)
    together, alone, _ = together_and_alone(GraphPatchForward(model, clean), clean, 10, seed=5)
    torch.testing.assert_close(together, alone, atol=1e-6, rtol=1e-6)


class _Untraceable(nn.Module):
    """Control flow on a tensor's value: torch.fx cannot trace it."""

    def __init__(self) -> None:
        super().__init__()
        self.conv, self.fc = nn.Conv2d(1, 4, 3, padding=1), nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv(x)
        if h.mean() > 0:
            h = h + torch.relu(h)
        return self.fc(h.mean(dim=(2, 3)))


def test_untraceable_or_training_models_fall_back() -> None:
    torch.manual_seed(0)
    clean = torch.rand(2, 1, 10, 10)
    model = _Untraceable().eval()
    with pytest.raises(UnsupportedModel):
        GraphPatchForward(model, clean)
    assert try_patch_forward(model, clean) is None
    from advspatial.models.cifar_resnet import cifar_resnet

    resnet = cifar_resnet(8).train()
    with pytest.raises(UnsupportedModel):
        GraphPatchForward(resnet, torch.rand(2, 3, 16, 16))
    # the attack still runs on both, with full forward passes, and gives the full-forward result
    from advspatial.attacks.onepixel import OnePixel

    y = model(clean).argmax(dim=1)
    fast = OnePixel(model, popsize=8, maxiter=2, seed=3).run(clean, y)
    slow = OnePixel(model, popsize=8, maxiter=2, seed=3, incremental=False).run(clean, y)
    assert torch.equal(fast.x_adv, slow.x_adv)


def test_unsupported_nodes_run_on_whole_maps() -> None:
    """A node the cone cannot follow (here a spatial flip) gets the whole map and runs as in the model."""

    class Flip(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a, self.b = nn.Conv2d(2, 4, 3, padding=1), nn.Conv2d(4, 4, 3, padding=1)
            self.fc = nn.Linear(4 * 9 * 9, 3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            h = torch.flip(torch.relu(self.a(x)), dims=(3,))
            return self.fc(torch.flatten(self.b(h), 1))

    torch.manual_seed(0)
    forward = assert_graph_matches_model(Flip().eval(), torch.rand(3, 2, 9, 9), size=(2, 2))
    assert [s.kind for s in forward.steps].count("dense") >= 2
