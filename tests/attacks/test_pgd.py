"""PGD (L-inf, L2) and BIM: torchattacks cross-checks, known answers, mask budget, early stop, random start."""

from __future__ import annotations

import math

import pytest
import torch
import torchattacks
from torch import nn

from advspatial.attacks.pgd import PGD, PGDL2
from advspatial.errors import ConfigError


def _batch(channels: int = 1, size: int = 12, n: int = 8, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, channels, size, size, generator=g), torch.randint(0, 10, (n,), generator=g)


@pytest.mark.parametrize("targeted", [False, True])
@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_matches_torchattacks_without_random_start(tiny_cnn, norm, targeted):
    model = tiny_cnn(in_channels=3, size=12)
    x, y = _batch(channels=3)
    if norm == "linf":
        ours = PGD(model, eps=0.05, alpha=0.01, steps=7, random_start=False)
        ref = torchattacks.PGD(model, eps=0.05, alpha=0.01, steps=7, random_start=False)
    else:
        ours = PGDL2(model, eps=0.8, alpha=0.15, steps=7, random_start=False)
        ref = torchattacks.PGDL2(model, eps=0.8, alpha=0.15, steps=7, random_start=False)
    if targeted:
        t = (y + 1) % 10
        ref.set_mode_targeted_by_label(quiet=True)
        a, b = ours(x, y, target=t), ref(x, t)
    else:
        a, b = ours(x, y), ref(x, y)
    assert torch.allclose(a, b, atol=1e-5, rtol=0)
    assert (a != x).any()


def test_matches_torchattacks_on_trained_model_and_real_images(trained_tiny_cnn, fmnist_test_subset):
    x, y = fmnist_test_subset[0][:32], fmnist_test_subset[1][:32]
    a = PGD(trained_tiny_cnn, eps=0.1, alpha=0.02, steps=10, random_start=False)(x, y)
    b = torchattacks.PGD(trained_tiny_cnn, eps=0.1, alpha=0.02, steps=10, random_start=False)(x, y)
    assert torch.allclose(a, b, atol=1e-5, rtol=0)
    a = PGDL2(trained_tiny_cnn, eps=1.0, alpha=0.2, steps=10, random_start=False)(x, y)
    b = torchattacks.PGDL2(trained_tiny_cnn, eps=1.0, alpha=0.2, steps=10, random_start=False)(x, y)
    assert torch.allclose(a, b, atol=1e-5, rtol=0)


def _linear(dim: int = 16) -> nn.Module:
    torch.manual_seed(1)
    return nn.Sequential(nn.Flatten(), nn.Linear(dim, 2)).eval()


def test_l2_known_answer_on_linear_model():
    """2 linear classes: the gradient direction is constant, d = (w_1 - w_0)/||w_1 - w_0||,
    so after k steps without box effects delta = min(k*alpha, eps) * d."""
    model = _linear()
    w = model[1].weight.detach()
    d = (w[1] - w[0]) / (w[1] - w[0]).norm()
    x, y = torch.full((1, 1, 4, 4), 0.5), torch.tensor([0])
    for steps, expected_len in [(1, 0.05), (3, 0.15), (10, 0.2)]:
        delta = PGDL2(model, eps=0.2, alpha=0.05, steps=steps, random_start=False)(x, y) - x
        assert torch.allclose(delta.flatten(), expected_len * d, atol=1e-6)


def test_l2_masked_step_spends_its_budget_inside_the_mask(tiny_cnn):
    """The masked gradient is normalized, so one step has length alpha even with a small mask."""
    model = tiny_cnn(size=8)
    x, y = torch.full((3, 1, 8, 8), 0.5), torch.tensor([0, 4, 9])
    mask = torch.zeros(8, 8)
    mask[1:3, 1:4] = 1.0
    res = PGDL2(model, eps=1.0, alpha=0.1, steps=1, random_start=False).run(x, y, mask=mask)
    assert torch.allclose(res.l2, torch.full((3,), 0.1), atol=1e-6)
    assert (res.x_adv - x)[..., mask == 0].abs().max() == 0


def test_linf_fractional_mask_scales_each_step(tiny_cnn):
    model = tiny_cnn(size=8)
    x, y = torch.full((2, 1, 8, 8), 0.5), torch.tensor([0, 4])
    mask = torch.full((1, 1, 8, 8), 0.25)
    delta = PGD(model, eps=0.3, alpha=0.04, steps=1, random_start=False)(x, y, mask=mask) - x
    assert torch.allclose(delta.abs(), torch.full_like(delta, 0.01), atol=1e-7)


@pytest.mark.parametrize("cls", [PGD, PGDL2])
def test_early_stop_keeps_the_first_adversarial_iterate(tiny_cnn, cls):
    """An image frozen after q queries equals the plain attack run for q-1 steps."""
    model = tiny_cnn(size=8, seed=3)
    x, y = _batch(size=8, n=16, seed=2)
    kwargs = dict(eps=0.3, alpha=0.05, steps=8) if cls is PGD else dict(eps=2.0, alpha=0.4, steps=8)
    res = cls(model, early_stop=True, seed=7, **kwargs).run(x, y)
    q = res.queries - 1  # minus the final evaluation added by run()
    assert (q < 8).any(), "test needs images that become adversarial early"
    assert res.success[q < 8].all()  # a frozen iterate is adversarial
    start = (x + cls(model, seed=7, **kwargs).random_delta(x, None, torch.arange(16))).clamp(0, 1)
    for k in sorted(set(q.tolist()) - {8}):
        rows = q == k
        if k == 1:  # adversarial at the random start: the start itself is kept
            assert torch.allclose(res.x_adv[rows], start[rows], atol=1e-6)
            continue
        plain = cls(model, early_stop=False, seed=7, **{**kwargs, "steps": k - 1})(x, y)
        assert torch.allclose(res.x_adv[rows], plain[rows], atol=1e-6)


def test_random_start_is_seeded_per_sample_and_inside_the_ball(tiny_cnn):
    model = tiny_cnn(size=8)
    x, y = _batch(size=8, n=4)
    ids = torch.tensor([10, 11, 12, 13])
    a = PGD(model, eps=0.1, alpha=0.01, steps=1, seed=1).run(x, y, sample_ids=ids).x_adv
    b = PGD(model, eps=0.1, alpha=0.01, steps=1, seed=1).run(x, y, sample_ids=ids).x_adv
    c = PGD(model, eps=0.1, alpha=0.01, steps=1, seed=2).run(x, y, sample_ids=ids).x_adv
    no_rs = PGD(model, eps=0.1, alpha=0.01, steps=1, random_start=False)(x, y)
    assert torch.equal(a, b) and not torch.equal(a, c) and not torch.equal(a, no_rs)
    assert (a - x).abs().max() <= 0.1 + 1e-6


def test_l2_random_start_is_uniform_in_the_ball():
    """Radius of a uniform point in the D-ball: P(r <= t*eps) = t^D; for D=2, mean radius = 2/3 eps."""
    atk = PGDL2(_linear(2), eps=0.3, steps=1)
    x = torch.full((4000, 1, 1, 2), 0.5)
    delta = atk.random_delta(x, None, torch.arange(4000))
    radius = delta.flatten(1).norm(dim=1)
    assert radius.max() <= 0.3 + 1e-6
    assert radius.mean().item() == pytest.approx(0.2, abs=0.005)
    assert (radius <= 0.15).float().mean().item() == pytest.approx(0.25, abs=0.03)
    angle = torch.atan2(delta[:, 0, 0, 1], delta[:, 0, 0, 0])
    assert angle.abs().mean().item() == pytest.approx(math.pi / 2, abs=0.06)  # isotropic


def test_attack_succeeds_on_trained_model(trained_tiny_cnn, fmnist_test_subset):
    x, y = fmnist_test_subset[0][:64], fmnist_test_subset[1][:64]
    weak = PGD(trained_tiny_cnn, eps=0.02, alpha=0.005, steps=10).run(x, y)
    strong = PGD(trained_tiny_cnn, eps=0.15, alpha=0.03, steps=10).run(x, y)
    margin_loss = PGD(trained_tiny_cnn, eps=0.15, alpha=0.03, steps=10, loss="margin").run(x, y)
    assert strong.success_rate > 0.9 and margin_loss.success_rate > 0.9
    assert weak.success_rate < strong.success_rate
    t = (y + 1) % 10
    targeted = PGD(trained_tiny_cnn, eps=0.2, alpha=0.03, steps=20).run(x, y, target=t)
    assert targeted.success_rate > 0.8 and torch.equal(targeted.success, targeted.adv_pred == t)


@pytest.mark.parametrize("cls, kwargs, match", [
    (PGD, {"eps": 1.2}, r"eps=1.2 is out of range; valid: \[0, 1\]"),
    (PGD, {"alpha": 0.0}, r"alpha=0.0 is out of range; valid: \(0, inf\]"),
    (PGD, {"steps": 0}, r"steps=0 is out of range; valid: \[1, inf\]"),
    (PGD, {"loss": "l1"}, "ce, margin"),
    (PGDL2, {"eps": -1.0}, r"valid: \[0, inf\]"),
])
def test_bad_parameters_name_the_valid_range(tiny_cnn, cls, kwargs, match):
    with pytest.raises(ConfigError, match=match):
        cls(tiny_cnn(size=8), **kwargs)


def test_l2_eps_above_one_is_allowed(tiny_cnn):
    assert PGDL2(tiny_cnn(size=8), eps=3.0).eps == 3.0


def test_alpha_auto_is_the_madry_step():
    """alpha='auto' is 2.5*eps/steps for both norms (the one owner of the rule); other strings are refused."""
    from advspatial.attacks import PGD, PGDL2
    from advspatial.errors import ConfigError

    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 2))
    assert PGD(model, eps=0.1, alpha="auto", steps=20).alpha == pytest.approx(2.5 * 0.1 / 20)
    assert PGDL2(model, eps=1.5, alpha="auto", steps=10).alpha == pytest.approx(0.375)
    with pytest.raises(ConfigError, match="auto"):
        PGD(model, eps=0.1, alpha="big", steps=5)
