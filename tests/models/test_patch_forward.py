"""Tests for PatchForward: incremental logits equal the model's own on patched images."""

from __future__ import annotations

import pytest
import torch
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from torch import nn

from advspatial.errors import ShapeError
from advspatial.models import Normalized, build_model
from advspatial.models.patch_forward import PatchForward, UnsupportedModel, _LinearFold, try_patch_forward


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


def assert_matches_model(model: nn.Module, clean: torch.Tensor, size: tuple[int, int] = (1, 1),
                         n: int = 40, seed: int = 0) -> PatchForward:
    forward = PatchForward(model, clean, size)
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
    """The Linear after the stem is folded into a per-corner update, or (when too big) run in full."""
    if not fold:
        monkeypatch.setattr(_LinearFold, "MAX_CORNERS", 0)
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
    forward = PatchForward(model, clean)
    image, top, left, patch = random_patches(clean, 16, (1, 1), seed=3)
    with torch.no_grad():
        together = forward(image, top, left, patch)
        alone = [forward(image[i:i + 1], top[i:i + 1], left[i:i + 1], patch[i:i + 1]) for i in range(16)]
        torch.testing.assert_close(together, model(patched(clean, image, top, left, patch)), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(together, torch.cat(alone), atol=1e-6, rtol=1e-6)
