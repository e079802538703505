"""Attack maps: known answers, completeness of the contribution map on real data, batching."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from advspatial.errors import ConfigError, ShapeError
from advspatial.maps import attack_map, list_attack_maps, quadrature
from advspatial.maps.attack import integrated_margin_gradient


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


def test_contribution_on_linear_model_is_exact() -> None:
    """Margin z_0 - z_1 (class 2 never the runner-up): A = |delta * (w_0 - w_1)| exactly."""
    gen = torch.Generator().manual_seed(0)
    w = torch.randn(3, 2 * 3 * 3, generator=gen)
    w[2] = -10.0  # class 2 has a very negative score on [0,1] images
    model = Linear3(w)
    x = torch.rand(2, 2, 3, 3, generator=gen) * 0.5
    x_adv = x + torch.rand(2, 2, 3, 3, generator=gen) * 0.4
    y = torch.zeros(2, dtype=torch.long)
    out = attack_map("contribution", model, x, x_adv, y, steps=3)
    expected = ((x_adv - x) * (w[0] - w[1]).view(1, 2, 3, 3)).abs().sum(1)
    torch.testing.assert_close(out.map, expected, atol=1e-5, rtol=1e-5)
    assert float(out.completeness_error.max()) < 1e-5
    torch.testing.assert_close(out.labels, y)


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
    big = attack_map("contribution", model, x, x_adv, y, steps=8, batch_size=1000)
    small = attack_map("contribution", model, x, x_adv, y, steps=8, batch_size=5)
    torch.testing.assert_close(small.map, big.map, atol=1e-6, rtol=1e-5)
    alone = attack_map("contribution", model, x[1:2], x_adv[1:2], y[1:2], steps=8)
    torch.testing.assert_close(alone.map, big.map[1:2], atol=1e-6, rtol=1e-5)
    direct = integrated_margin_gradient(model, x, x_adv - x, y, steps=8, batch_size=3)
    torch.testing.assert_close(((x_adv - x) * direct).abs().sum(1), big.map, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("eps", [0.05, 0.1])
def test_contribution_completeness_on_fashion_mnist(trained_tiny_cnn, fmnist_test_subset, eps: float) -> None:
    x, y = fmnist_test_subset
    x, y = x[:24], y[:24]
    model = trained_tiny_cnn
    x_adv = _signed_gradient_ascent(model, x, y, eps, steps=8)
    out = attack_map("contribution", model, x, x_adv, y)  # default steps and rule
    err = out.completeness_error
    assert bool((out.margin_adv < out.margin_clean).float().mean() > 0.9)  # the attack did lower the margin
    assert float(err.max()) < 0.02, err
    assert out.map.shape == (24, 28, 28) and bool((out.map >= 0).all())


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
