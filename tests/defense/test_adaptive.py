"""The adaptive evaluation: identity-BPDA vs the local gradient, gradient masking exposed, the convergence rule."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from advspatial.attacks import make_attack
from advspatial.defense.adaptive import (
    AdaptiveBudget, CurveGrid, attack_defence, attack_undefended, convergence_curves, convergence_rule,
    ensemble_attack, roi_mask,
)
from advspatial.defense.neutralize import NeutralizedModel
from advspatial.defense.transforms import TransformDefence
from advspatial.errors import ConfigError
from helpers import grad_map, intensity_map

SMALL = AdaptiveBudget(steps=10, restarts=1, queries=200, eot_iter=2, draws=3)


class _LinearModel(nn.Module):
    """z = [0, w.x - b, -10] on 1x8x8 images (a third class that never wins, so DLR is defined): every
    gradient attack breaks it when eps*|w|_1 exceeds the margin."""

    def __init__(self) -> None:
        super().__init__()
        gen = torch.Generator().manual_seed(0)
        self.w = nn.Parameter(torch.randn(1, 1, 8, 8, generator=gen))
        self.b = nn.Parameter(torch.tensor(0.0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z1 = (x * self.w).flatten(1).sum(1) - self.b
        return torch.stack([torch.zeros_like(z1), z1, torch.full_like(z1, -10.0)], 1)


def _images(n: int = 24, seed: int = 1) -> torch.Tensor:
    return torch.rand(n, 1, 8, 8, generator=torch.Generator().manual_seed(seed))


def test_identity_bpda_through_a_no_op_defence_is_the_undefended_attack(tiny_cnn):
    model = tiny_cnn(size=12)
    x = torch.rand(6, 1, 12, 12, generator=torch.Generator().manual_seed(3))
    y = model(x).argmax(1)
    ids = torch.arange(30, 36)
    no_op = NeutralizedModel(model, intensity_map, grad_map(model), fraction=0.0)  # neutralizes nothing
    defended = attack_defence(no_op, x, y, 0.05, SMALL, sample_ids=ids, seed=4, gradients=("identity",))
    plain = attack_undefended(model, x, y, 0.05, SMALL, sample_ids=ids, seed=4)
    assert torch.equal(defended.correct["identity"], plain.correct["white-box"])
    assert torch.allclose(defended.x_adv, plain.x_adv)
    assert float(plain.correct["white-box"].mean()) < 1.0  # the attack did something


def test_gradient_masking_defence_beats_plain_pgd_but_not_bpda_or_square():
    model = _LinearModel()
    x = _images(32)
    with torch.no_grad():
        model.b.fill_(float((x * model.w).flatten(1).sum(1).median()))
    quantized = TransformDefence(model, "jpeg", 40)  # rounding: a zero local gradient
    with torch.no_grad():
        y = quantized(x).argmax(1)
    eps = 0.15
    pgd = make_attack("pgd", quantized, eps=eps, alpha=eps / 4, steps=20, random_start=False)
    x_pgd = pgd(x, y)
    with torch.no_grad():
        pgd_acc = float((quantized(x_pgd).argmax(1) == y).float().mean())
    assert pgd_acc == 1.0  # masked: the local gradient is 0, plain PGD does not move
    ids = torch.arange(32)
    bpda = attack_defence(quantized, x, y, eps, SMALL, sample_ids=ids, seed=0, gradients=("identity",))
    assert float(bpda.correct["identity"].mean()) <= 0.1
    square = make_attack("square", quantized, eps=eps, n_queries=300, seed=0)
    x_square = square(x, y, sample_ids=ids)
    with torch.no_grad():
        square_acc = float((quantized(x_square).argmax(1) == y).float().mean())
    assert square_acc <= 0.25  # the gradient-free attack needs no gradient at all
    local = attack_defence(quantized, x, y, eps, AdaptiveBudget(steps=10, restarts=1, queries=300), sample_ids=ids,
                           seed=0, gradients=("local",))
    assert float(local.correct["worst"].mean()) <= 0.25  # in the ensemble, Square exposes the masking too


def test_worst_case_is_the_per_image_minimum_over_gradients(tiny_cnn):
    model = tiny_cnn(size=12)
    x = torch.rand(8, 1, 12, 12, generator=torch.Generator().manual_seed(5))
    y = model(x).argmax(1)
    defence = NeutralizedModel(model, intensity_map, grad_map(model), fraction=0.2, fill="zero")
    out = attack_defence(defence, x, y, 0.03, SMALL, sample_ids=torch.arange(8), seed=1)
    assert set(out.correct) == {"identity", "local", "worst"}
    assert torch.equal(out.correct["worst"], torch.minimum(out.correct["identity"], out.correct["local"]))
    with torch.no_grad():
        rescored = (defence(out.x_adv).argmax(1) == y).float()
    assert torch.equal(rescored, out.correct["worst"])  # x_adv holds the worst case's examples


def test_randomized_control_is_attacked_with_eot_and_scored_on_fresh_draws(tiny_cnn):
    model = tiny_cnn(size=12)
    x = torch.rand(4, 1, 12, 12, generator=torch.Generator().manual_seed(6))
    y = model(x).argmax(1)
    control = NeutralizedModel(model, intensity_map, grad_map(model), fraction=0.2, mode="random")
    assert control.randomized
    attack = ensemble_attack(control, 0.03, SMALL, randomized=True, seed=0)
    assert attack.eot_iter == SMALL.eot_iter and not any(c.startswith("square") for c in attack.components)
    out = attack_defence(control, x, y, 0.03, SMALL, sample_ids=torch.arange(4), seed=0)
    shares = out.correct["worst"]
    assert bool(((shares * SMALL.draws).round() == shares * SMALL.draws).all())  # multiples of 1/draws
    assert not ensemble_attack(model, 0.03, SMALL, randomized=False, seed=0).eot_iter > 1


def test_convergence_rule_known_answers():
    budget, grid = AdaptiveBudget(steps=100, restarts=5), CurveGrid()
    flat = {"steps=100": 0.10, "steps=500": 0.095, "restarts=5": 0.10, "restarts=10": 0.10, "eps=0.8": 0.0}
    rule = convergence_rule(flat, 200, budget, grid, 0.1)
    assert rule["converged"] and rule["reaches_zero"] and rule["tolerance"] == pytest.approx(0.01)
    falling = dict(flat, **{"steps=500": 0.05})
    assert not convergence_rule(falling, 200, budget, grid, 0.1)["converged"]
    more_restarts = dict(flat, **{"restarts=10": 0.07})
    assert not convergence_rule(more_restarts, 200, budget, grid, 0.1)["converged"]
    # one image of 50 is within tolerance; a defence that stays accurate at a huge eps is flagged
    assert convergence_rule(dict(flat, **{"steps=500": 0.08}), 50, budget, grid, 0.1)["converged"]
    assert not convergence_rule(dict(flat, **{"eps=0.8": 0.3}), 200, budget, grid, 0.1)["reaches_zero"]
    assert not convergence_rule({}, 10, budget, grid, 0.1)["converged"]  # missing points are not "flat"


def test_convergence_curves_cover_the_grid(tiny_cnn):
    model = tiny_cnn(size=12)
    x = torch.rand(3, 1, 12, 12, generator=torch.Generator().manual_seed(8))
    y = model(x).argmax(1)
    defence = NeutralizedModel(model, intensity_map, grad_map(model), fraction=0.2)
    grid = CurveGrid(steps=(2, 5, 10), restarts=(1, 2), eps_factors=(0.5, 1.0, 8.0))
    budget = AdaptiveBudget(steps=5, restarts=1, queries=10)
    curves = convergence_curves(defence, x, y, 0.05, budget, grid, sample_ids=torch.arange(3), seed=0)
    assert set(curves) == {"steps=2", "steps=5", "steps=10", "restarts=1", "restarts=2", "eps=0.025", "eps=0.05",
                           "eps=0.4"}
    assert all(v.shape == (3,) for v in curves.values())
    assert float(curves["eps=0.4"].mean()) <= float(curves["eps=0.025"].mean())
    with pytest.raises(ConfigError, match="beyond"):
        CurveGrid(steps=(5,), restarts=(1, 2)).check(budget)


def test_roi_mask_is_the_clean_top_fraction():
    x = torch.rand(2, 1, 10, 10, generator=torch.Generator().manual_seed(0))
    mask = roi_mask(x, intensity_map, 0.2)
    assert mask.shape == (2, 1, 10, 10) and torch.equal(mask.flatten(1).sum(1), torch.tensor([20.0, 20.0]))
    top = x[:, 0].flatten(1).topk(20).values[:, -1]
    assert bool((x[:, 0][mask[:, 0] > 0].view(2, -1) >= top[:, None]).all())


def test_budget_validates():
    with pytest.raises(ConfigError):
        AdaptiveBudget(steps=0)
    with pytest.raises(ConfigError):
        AdaptiveBudget(components=())
    assert not math.isnan(AdaptiveBudget().as_dict()["steps"])
