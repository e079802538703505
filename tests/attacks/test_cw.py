"""Carlini-Wagner L2: analytic lower bound on a linear model, torchattacks cross-check, binary search, masks."""

from __future__ import annotations

import pytest
import torch
import torchattacks
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from advspatial import host_syncs
from advspatial.attacks.cw import Adam, CarliniWagnerL2, from_tanh_space, to_tanh_space
from advspatial.errors import ConfigError


def _linear(dim: int = 16, seed: int = 1) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(dim, 2)).eval()


def test_tanh_space_round_trip_keeps_box_pixels_finite():
    x = torch.tensor([0.0, 0.25, 0.5, 1.0])
    w = to_tanh_space(x)
    assert torch.isfinite(w).all()
    assert torch.allclose(from_tanh_space(w), x, atol=1e-6)


def test_finds_nearly_minimal_perturbation_on_linear_model():
    """For z = Wx + b with 2 classes, any successful perturbation has L2 >= |z_y - z_o| / ||w_y - w_o||."""
    model = _linear()
    w, b = model[1].weight.detach(), model[1].bias.detach()
    x = 0.4 + 0.2 * torch.rand(6, 1, 4, 4, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        y = model(x).argmax(1)
    gap = (model(x).gather(1, y[:, None]) - model(x).gather(1, 1 - y[:, None])).squeeze(1).detach()
    lower_bound = gap / (w[1] - w[0]).norm()
    res = CarliniWagnerL2(model, c_init=1.0, binary_search_steps=8, steps=200, lr=0.05).run(x, y)
    assert res.success.all()
    assert (res.l2 >= lower_bound - 1e-5).all()
    assert (res.l2 <= 1.1 * lower_bound).all()
    assert torch.equal(b, model[1].bias)


def test_kappa_gives_a_confident_margin():
    model = _linear()
    with torch.no_grad():
        model[1].weight.mul_(5)  # so that a margin of 1 is reachable inside the box
    x = torch.full((2, 1, 4, 4), 0.5)
    with torch.no_grad():
        y = model(x).argmax(1)
    res = CarliniWagnerL2(model, c_init=10.0, binary_search_steps=3, steps=100, lr=0.05, kappa=1.0).run(x, y)
    assert res.success.all()
    with torch.no_grad():
        logits = model(res.x_adv)
    gap = logits.gather(1, 1 - y[:, None]) - logits.gather(1, y[:, None])
    assert (gap.squeeze(1) > 1.0).all()


def _compare(model, x, y, ours_kwargs, theirs_kwargs):
    ours = CarliniWagnerL2(model, **ours_kwargs).run(x, y)
    theirs_adv = torchattacks.CW(model, **theirs_kwargs)(x, y)
    with torch.no_grad():
        theirs_ok = model(theirs_adv).argmax(1) != y
    theirs_l2 = (theirs_adv - x).flatten(1).norm(dim=1)
    both = ours.success & theirs_ok
    return ours.success.float().mean(), theirs_ok.float().mean(), ours.l2[both], theirs_l2[both]


@pytest.mark.slow
def test_matches_torchattacks_success_and_norms(trained_tiny_cnn, fmnist_test_subset):
    """torchattacks' CW has a fixed c (no binary search): at the same c ours must do as well,
    and with a binary search starting there it must do better on norms."""
    x, y = fmnist_test_subset[0][:64], fmnist_test_subset[1][:64]
    ref = dict(c=10.0, steps=60, lr=0.01)
    ours_rate, theirs_rate, ours_l2, theirs_l2 = _compare(
        trained_tiny_cnn, x, y, dict(c_init=10.0, binary_search_steps=1, steps=60, lr=0.01), ref)
    assert theirs_rate > 0.6  # the comparison means something
    assert ours_rate >= theirs_rate - 0.02
    assert ours_l2.median() <= 1.05 * theirs_l2.median()
    ours_rate, theirs_rate, ours_l2, theirs_l2 = _compare(
        trained_tiny_cnn, x, y, dict(c_init=10.0, binary_search_steps=3, steps=60, lr=0.01), ref)
    assert ours_rate >= theirs_rate - 0.02
    assert ours_l2.median() <= theirs_l2.median()


def test_targeted_and_masked(trained_tiny_cnn, fmnist_test_subset):
    x, y = fmnist_test_subset[0][:16], fmnist_test_subset[1][:16]
    t = (y + 1) % 10
    mask = torch.zeros(28, 28)
    mask[4:24, 4:24] = 1.0
    res = CarliniWagnerL2(trained_tiny_cnn, c_init=100.0, binary_search_steps=1, steps=100, lr=0.05).run(
        x, y, target=t, mask=mask)
    assert res.success_rate > 0.8
    assert torch.equal(res.success, res.adv_pred == t)
    assert (res.x_adv - x)[..., mask == 0].abs().max() == 0
    failed = ~res.success
    assert torch.equal(res.x_adv[failed], x[failed])  # no successful iterate: the clean image


def test_already_misclassified_image_is_returned_unchanged(tiny_cnn):
    model = tiny_cnn(size=8)
    x = torch.rand(4, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        wrong = (model(x).argmax(1) + 1) % 10
    res = CarliniWagnerL2(model, binary_search_steps=1, steps=5).run(x, wrong)
    assert res.success.all() and torch.equal(res.x_adv, x)


@pytest.mark.parametrize("kwargs, match", [
    ({"c_init": 0.0}, r"c_init=0.0 is out of range; valid: \(0, inf\]"),
    ({"binary_search_steps": 0}, r"valid: \[1, inf\]"),
    ({"steps": 0}, r"steps=0 is out of range; valid: \[1, inf\]"),
    ({"lr": -1.0}, r"valid: \(0, inf\]"),
    ({"kappa": -0.5}, r"kappa=-0.5 is out of range; valid: \[0, inf\]"),
])
def test_bad_parameters_name_the_valid_range(tiny_cnn, kwargs, match):
    with pytest.raises(ConfigError, match=match):
        CarliniWagnerL2(tiny_cnn(size=8), **kwargs)


@given(st.integers(1, 40), st.floats(1e-4, 0.5), st.integers(0, 2**16))
@settings(max_examples=25, deadline=None)
def test_adam_takes_torch_adams_steps_to_the_bit(steps: int, lr: float, seed: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    ours = torch.randn(4, 3, 5, 5, generator=gen)
    theirs = ours.clone().requires_grad_(True)
    adam, reference = Adam(ours, lr=lr), torch.optim.Adam([theirs], lr=lr)
    for _ in range(steps):
        grad = torch.randn(ours.shape, generator=gen) * 10 ** torch.randint(-3, 3, (1,), generator=gen).item()
        adam.update(grad)
        theirs.grad = grad.clone()
        reference.step()
    assert torch.equal(ours, theirs.detach())


def test_an_attack_step_reads_nothing_back_to_the_host(tiny_cnn, monkeypatch) -> None:
    monkeypatch.setattr(host_syncs, "DEVICE_PATH_ON_CPU", True)  # checks held as on a device
    model, x = tiny_cnn(), torch.rand(6, 1, 28, 28)
    y = model(x).argmax(1)
    def reads(steps: int) -> int:
        seen: list[int] = []
        with host_syncs.counting(lambda: seen.append(1)), host_syncs.stage_checks():
            CarliniWagnerL2(model, binary_search_steps=2, steps=steps).run(x, y)
        return len(seen)

    assert reads(3) == reads(9)  # the reads of a run do not grow with its steps
