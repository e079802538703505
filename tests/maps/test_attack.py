"""Attack maps: known answers, completeness of the contribution map on real data, batching."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from advspatial.errors import ConfigError, ShapeError
from advspatial.maps import attack_map, describe_attack_maps, list_attack_maps
from advspatial.maps.attack.contribution import integrated_margin_gradient, quadrature


def _signed_gradient_ascent(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, steps: int) -> torch.Tensor:
    """A few steps of L-inf PGD on cross-entropy, written here (the attack module is tested elsewhere)."""
    x_adv = x.clone()
    for _ in range(steps):
        x_adv.requires_grad_(True)
        (g,) = torch.autograd.grad(nn.functional.cross_entropy(model(x_adv), y), x_adv)
        x_adv = (x + (x_adv.detach() + eps / 4 * g.sign() - x).clamp(-eps, eps)).clamp(0, 1)
    return x_adv.detach()


class Linear3(nn.Module):
    """z = W x (3 classes), flattened input: the margin is linear while the runner-up stays the same."""

    def __init__(self, w: torch.Tensor) -> None:
        super().__init__()
        self.w = nn.Parameter(w)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1) @ self.w.T


def test_registry() -> None:
    assert list_attack_maps() == ["contribution", "gradient", "magnitude"]
    x = torch.rand(1, 1, 4, 4)
    with pytest.raises(ConfigError, match="valid: contribution, gradient, magnitude"):
        attack_map("magn", None, x, x)
    with pytest.raises(ConfigError, match="needs x_adv"):
        attack_map("contribution", Linear3(torch.zeros(3, 16)), x)
    with pytest.raises(ShapeError):
        attack_map("magnitude", None, x, torch.rand(1, 1, 4, 5))
    with pytest.raises(ConfigError, match="no parameter"):
        attack_map("magnitude", None, x, x, steps=3)


def test_magnitude_known_answer() -> None:
    x = torch.full((1, 3, 2, 2), 0.5)
    delta = torch.zeros_like(x)
    delta[0, :, 0, 1] = torch.tensor([0.3, 0.0, 0.4])  # norm 0.5
    delta[0, 1, 1, 0] = -0.2
    out = attack_map("magnitude", None, x, x + delta)
    torch.testing.assert_close(out.map, torch.tensor([[[0.0, 0.5], [0.2, 0.0]]]))
    assert out.method == "magnitude" and out.completeness_error is None


def test_quadrature_rules_integrate_polynomials() -> None:
    for rule, steps, degree in (("gausslegendre", 4, 7), ("trapezoid", 50, 1), ("midpoint", 50, 1)):
        t, w = quadrature(steps, rule)
        assert math.isclose(float(w.sum()), 1.0, rel_tol=1e-12) and bool(((t >= 0) & (t <= 1)).all())
        assert math.isclose(float((w * t**degree).sum()), 1 / (degree + 1), rel_tol=1e-9)
    with pytest.raises(ConfigError, match="valid: gausslegendre, midpoint, trapezoid"):
        quadrature(8, "simpson")


class LinearB(nn.Module):
    """logits = W x + b on the flattened input."""

    def __init__(self, w: torch.Tensor, b: torch.Tensor) -> None:
        super().__init__()
        self.fc = nn.Linear(w.shape[1], w.shape[0])
        with torch.no_grad():
            self.fc.weight.copy_(w)
            self.fc.bias.copy_(b)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x.flatten(1))


class SmoothNet(nn.Module):
    """conv-tanh-linear: smooth, so Gauss-Legendre converges fast, and nonlinear enough to need points."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.fc = nn.Linear(4 * 8 * 8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.tanh(4 * self.conv(x)).flatten(1))


def _linear_case() -> tuple[nn.Module, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """W, b with class 2 never the runner-up on [0,1] images, label 0: m = (w_0 - w_1) x + b_0 - b_1."""
    gen = torch.Generator().manual_seed(0)
    w = torch.randn(3, 2 * 3 * 3, generator=gen)
    w[2] = -10.0  # class 2 has a very negative score on [0,1] images
    b = torch.tensor([0.3, -0.2, 0.0])
    x = torch.rand(3, 2, 3, 3, generator=gen) * 0.5
    x_adv = x + (torch.rand(3, 2, 3, 3, generator=gen) - 0.5) * 0.8  # signed: some pixels raise the margin
    x_adv = x_adv.clamp(0, 1)
    return LinearB(w, b), w, x, x_adv, torch.zeros(3, dtype=torch.long)


def test_contribution_on_linear_model_is_exact_with_one_point() -> None:
    """Linear margin: one Gauss-Legendre point is exact; drop = max(0, -sum_c delta (w_y - w_j))."""
    model, w, x, x_adv, y = _linear_case()
    signed = ((x_adv - x) * (w[0] - w[1]).view(1, 2, 3, 3)).sum(1)
    assert bool((signed > 0).any()) and bool((signed < 0).any())  # both parts present
    out = attack_map("contribution", model, x, x_adv, y, steps=1)
    torch.testing.assert_close(out.map, (-signed).clamp_min(0), atol=1e-5, rtol=1e-5)
    assert float(out.completeness_error.max()) < 1e-5
    assert out.steps_used.tolist() == [1, 1, 1] and not bool(out.flagged.any())
    torch.testing.assert_close(out.labels, y)
    # the margin change is the drop part minus the raise part
    raise_part = signed.clamp_min(0)
    torch.testing.assert_close((out.margin_adv - out.margin_clean).double(),
                               (raise_part - out.map).flatten(1).sum(1).double(), atol=1e-5, rtol=1e-5)
    absolute = attack_map("contribution", model, x, x_adv, y, steps=1, part="absolute")
    expected = ((x_adv - x) * (w[0] - w[1]).view(1, 2, 3, 3)).abs().sum(1)  # the old map: |.| per channel
    torch.testing.assert_close(absolute.map, expected, atol=1e-5, rtol=1e-5)


def test_contribution_uses_the_max_class_at_every_step() -> None:
    """The runner-up switches along the path; only the gradient of m itself keeps completeness exact."""
    w = torch.tensor([[0.0, 0.0], [2.0, 0.0], [0.0, 2.0]])  # z_0 = 0, z_1 = 2 a, z_2 = 2 b
    model = Linear3(w)
    x = torch.tensor([[[[0.5]], [[0.0]]]])  # runner-up class 1 at x ...
    x_adv = torch.tensor([[[[0.5]], [[1.0]]]])  # ... class 2 after t = 1/2
    out = attack_map("contribution", model, x, x_adv, torch.tensor([0]), steps=64, rule="midpoint")
    # m(x) = -1, m(x') = -2: the whole drop is due to channel 1, which moved by 1 and acted during t in (1/2, 1]
    assert math.isclose(float(out.margin_clean), -1.0) and math.isclose(float(out.margin_adv), -2.0)
    assert float(out.completeness_error) < 1e-6
    assert math.isclose(float(out.map.sum()), 1.0, rel_tol=1e-6)


def test_contribution_defaults_to_clean_prediction(tiny_cnn) -> None:
    model = tiny_cnn()
    x = torch.rand(3, 1, 28, 28, generator=torch.Generator().manual_seed(1))
    x_adv = (x + 0.05).clamp(0, 1)
    out = attack_map("contribution", model, x, x_adv, steps=4)
    torch.testing.assert_close(out.labels, model(x).argmax(1))
    with pytest.raises(ConfigError, match=r"\[0, 9\]"):
        attack_map("contribution", model, x, x_adv, torch.tensor([0, 1, 12]), steps=2)


def test_contribution_chunking_is_invisible(tiny_cnn) -> None:
    model = tiny_cnn()
    gen = torch.Generator().manual_seed(2)
    x = torch.rand(3, 1, 28, 28, generator=gen)
    x_adv = (x + 0.1 * torch.randn(x.shape, generator=gen)).clamp(0, 1)
    y = torch.tensor([1, 2, 3])
    for kw in ({"max_steps": 8}, {"max_steps": 8, "part": "absolute"}, {"tolerance": 1e-4, "max_steps": 64}):
        big = attack_map("contribution", model, x, x_adv, y, steps=8, batch_size=1000, **kw)
        small = attack_map("contribution", model, x, x_adv, y, steps=8, batch_size=5, **kw)
        torch.testing.assert_close(small.map, big.map, atol=1e-6, rtol=1e-5)
        assert torch.equal(small.steps_used, big.steps_used)
        alone = attack_map("contribution", model, x[1:2], x_adv[1:2], y[1:2], steps=8, **kw)
        torch.testing.assert_close(alone.map, big.map[1:2], atol=1e-6, rtol=1e-5)
    direct = (x_adv - x) * integrated_margin_gradient(model, x, x_adv - x, y, steps=8, batch_size=3)
    absolute = attack_map("contribution", model, x, x_adv, y, steps=8, max_steps=8, part="absolute")
    torch.testing.assert_close(direct.abs().sum(1), absolute.map, atol=1e-6, rtol=1e-5)
    drop = attack_map("contribution", model, x, x_adv, y, steps=8, max_steps=8)
    torch.testing.assert_close((-direct.sum(1)).clamp_min(0), drop.map, atol=1e-6, rtol=1e-5)


def _smooth_case() -> tuple[nn.Module, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Image 0: tiny perturbation (nearly linear path); 1, 2: large ones; 3: no perturbation."""
    torch.manual_seed(5)
    model = SmoothNet().eval()
    gen = torch.Generator().manual_seed(6)
    x = torch.rand(4, 1, 8, 8, generator=gen) * 0.5 + 0.25
    scale = torch.tensor([1e-3, 0.25, 0.25, 0.0]).view(4, 1, 1, 1)
    x_adv = (x + scale * torch.randn(x.shape, generator=gen)).clamp(0, 1)
    return model, x, x_adv, torch.zeros(4, dtype=torch.long)


def test_contribution_refines_only_images_above_tolerance() -> None:
    model, x, x_adv, y = _smooth_case()
    start = attack_map("contribution", model, x, x_adv, y, steps=1, max_steps=1)
    err0 = start.completeness_error
    assert float(err0[0]) < 0.02 and float(err0[1]) > 0.02 and float(err0[2]) > 0.02, err0
    assert math.isnan(float(err0[3])) and start.steps_used.tolist() == [1, 1, 1, 1]
    assert start.flagged.tolist() == [False, True, True, False]

    out = attack_map("contribution", model, x, x_adv, y, steps=1)  # default tolerance 0.02, max_steps 256
    assert float(out.completeness_error[:3].max()) < 0.02 and math.isnan(float(out.completeness_error[3]))
    assert out.steps_used[0] == 1 and out.steps_used[3] == 1  # untouched: within tolerance / no change
    assert bool((out.steps_used[1:3] > 1).all()) and not bool(out.flagged.any())
    torch.testing.assert_close(out.map[0], start.map[0])
    assert float(out.map[3].abs().max()) == 0.0
    for i in (1, 2):  # each refined image equals a single pass with its final number of points
        k = int(out.steps_used[i])
        alone = attack_map("contribution", model, x[i:i + 1], x_adv[i:i + 1], y[i:i + 1], steps=k, max_steps=k)
        torch.testing.assert_close(out.map[i:i + 1], alone.map, atol=1e-6, rtol=1e-5)
        assert k & (k - 1) == 0  # 1, doubled: a power of two


def test_contribution_flags_images_left_above_tolerance() -> None:
    model, x, x_adv, y = _smooth_case()
    out = attack_map("contribution", model, x, x_adv, y, steps=1, max_steps=2, tolerance=1e-9)
    assert out.steps_used.tolist() == [2, 2, 2, 1]  # capped at max_steps; the unchanged image is never refined
    assert out.flagged.tolist() == [True, True, True, False]
    assert bool((out.completeness_error[:3] > 1e-9).all())
    capped = attack_map("contribution", model, x, x_adv, y, steps=2, max_steps=3, rule="trapezoid")
    assert set(capped.steps_used.tolist()) <= {2, 3}  # doubling stops at max_steps exactly
    with pytest.raises(ConfigError, match="max_steps"):
        attack_map("contribution", model, x, x_adv, y, steps=8, max_steps=4)
    with pytest.raises(ConfigError, match="valid: absolute, drop"):
        attack_map("contribution", model, x, x_adv, y, part="abs")
    with pytest.raises(ConfigError, match="tolerance"):
        attack_map("contribution", model, x, x_adv, y, tolerance=-0.1)


def test_other_kinds_have_no_refinement_fields(tiny_cnn) -> None:
    x = torch.rand(2, 1, 28, 28, generator=torch.Generator().manual_seed(7))
    for out in (attack_map("magnitude", None, x, (x + 0.01).clamp(0, 1)), attack_map("gradient", tiny_cnn(), x)):
        assert out.steps_used is None and out.flagged is None and out.completeness_error is None
    described = describe_attack_maps()
    assert set(described) == {"contribution", "gradient", "magnitude"}
    assert "margin drop" in described["contribution"]


@pytest.mark.parametrize("eps", [0.05, 0.1])
def test_contribution_completeness_on_fashion_mnist(trained_tiny_cnn, fmnist_test_subset, eps: float) -> None:
    x, y = fmnist_test_subset
    x, y = x[:24], y[:24]
    model = trained_tiny_cnn
    x_adv = _signed_gradient_ascent(model, x, y, eps, steps=8)
    out = attack_map("contribution", model, x, x_adv, y)  # default steps, rule, tolerance
    err = out.completeness_error
    assert bool((out.margin_adv < out.margin_clean).float().mean() > 0.9)  # the attack did lower the margin
    assert float(err.max()) < 0.02, err
    assert not bool(out.flagged.any())
    assert out.map.shape == (24, 28, 28) and bool((out.map >= 0).all())
    # the drop part carries at least the whole margin drop (drop - raise = -(m(x') - m(x)))
    drop = out.map.flatten(1).sum(1).double()
    assert bool((drop >= -(out.margin_adv - out.margin_clean).double() * 0.98).all())


def test_gradient_map_matches_autograd_and_needs_no_clean_image(tiny_cnn) -> None:
    model = tiny_cnn()
    gen = torch.Generator().manual_seed(3)
    x_tilde = torch.rand(4, 1, 28, 28, generator=gen)
    point = x_tilde.clone().requires_grad_(True)
    logits = model(point)
    loss = nn.functional.cross_entropy(logits, logits.argmax(1).detach(), reduction="sum")
    (g,) = torch.autograd.grad(loss, point)
    out = attack_map("gradient", model, x_tilde)
    torch.testing.assert_close(out.map, g.abs().sum(1))
    torch.testing.assert_close(attack_map("gradient", model, torch.zeros_like(x_tilde), x_tilde).map, out.map)
    assert all(p.grad is None for p in model.parameters())
