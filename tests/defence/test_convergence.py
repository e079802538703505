"""The convergence checks: points beyond the budget extend the reported attack on the images it left standing,
the fixed rule for deterministic and randomized defences."""

from __future__ import annotations

import pytest
import torch

from advspatial.defence.adaptive import AdaptiveBudget, attack_defence
from advspatial.defence.convergence import CurveGrid, convergence_curves, convergence_rule
from advspatial.defence.neutralize import NeutralizedModel
from advspatial.defence.transforms import TransformDefence
from advspatial.errors import ConfigError
from helpers import grad_map, intensity_map


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



def test_points_beyond_the_budget_never_raise_an_image_above_the_reported_attack(tiny_cnn):
    model = tiny_cnn(size=12)
    x = torch.rand(10, 1, 12, 12, generator=torch.Generator().manual_seed(12))
    y = model(x).argmax(1)
    defence = NeutralizedModel(model, intensity_map, grad_map(model), fraction=0.2)
    budget = AdaptiveBudget(steps=3, restarts=1, queries=5)
    grid = CurveGrid(steps=(3, 12), restarts=(1, 3), eps_factors=(1.0, 4.0), eot=(20, 50))
    ids = torch.arange(10)
    reported = attack_defence(defence, x, y, 0.01, budget, sample_ids=ids, seed=0)
    curves = convergence_curves(defence, x, y, 0.01, budget, grid, sample_ids=ids, seed=0, reported=reported,
                                left_side=False)
    base = reported.correct["worst"]
    assert torch.equal(curves["steps=3"], base) and torch.equal(curves["restarts=1"], base)
    for key in ("steps=12", "restarts=3", "eps=0.04"):
        assert bool((curves[key] <= base).all()), key
    assert float(base.mean()) > 0  # images left standing, so the extension ran


def test_the_restart_extension_uses_new_random_starts(tiny_cnn, monkeypatch):
    import advspatial.defence.convergence as convergence

    seeds = []
    real = convergence.attack_defence

    def spy(*args, **kwargs):
        seeds.append((kwargs["seed"], kwargs.get("restarts")))
        return real(*args, **kwargs)

    monkeypatch.setattr(convergence, "attack_defence", spy)
    model = tiny_cnn(size=12)
    x = torch.rand(4, 1, 12, 12, generator=torch.Generator().manual_seed(13))
    y = model(x).argmax(1)
    defence = NeutralizedModel(model, intensity_map, grad_map(model), fraction=0.2)
    budget = AdaptiveBudget(steps=2, restarts=2, queries=5)
    reported = real(defence, x, y, 0.001, budget, sample_ids=torch.arange(4), seed=7)
    grid = CurveGrid(steps=(2, 4), restarts=(2, 5), eps_factors=(1.0, 2.0), eot=(20, 50))
    convergence_curves(defence, x, y, 0.001, budget, grid, sample_ids=torch.arange(4), seed=7, reported=reported,
                       left_side=False)
    assert (7 + 2, 3) in seeds  # restarts 3..5 of 5: seeds 9, 10, 11 (APGD restart j uses seed + j)


def test_randomized_curve_is_over_eot_draws(tiny_cnn):
    model = tiny_cnn(size=12)
    x = torch.rand(4, 1, 12, 12, generator=torch.Generator().manual_seed(14))
    y = model(x).argmax(1)
    noise = TransformDefence(model, "noise", 0.3)
    budget = AdaptiveBudget(steps=3, eot_iter=2, draws=3)
    grid = CurveGrid(steps=(3, 6), restarts=(5, 10), eot=(1, 2, 4))
    curves = convergence_curves(noise, x, y, 0.02, budget, grid, sample_ids=torch.arange(4), seed=0)
    assert set(curves) == {"eot=1", "eot=2", "eot=4"}
    rule = convergence_rule({k: float(v.mean()) for k, v in curves.items()}, 4, budget, grid, 0.02, randomized=True)
    assert rule["reaches_zero"] is None and "EOT 4" in rule["rule"] and not rule["full_strength"]


def test_randomized_rule_known_answers():
    budget, grid = AdaptiveBudget(), CurveGrid()
    assert convergence_rule({"eot=20": 0.15, "eot=50": 0.145}, 50, budget, grid, 0.1, randomized=True)["converged"]
    assert not convergence_rule({"eot=20": 0.15, "eot=50": 0.10}, 50, budget, grid, 0.1, randomized=True)["converged"]
    assert not convergence_rule({"eot=20": 0.15}, 50, budget, grid, 0.1, randomized=True)["converged"]


def test_grid_must_hold_and_pass_the_budgets_eot():
    with pytest.raises(ConfigError, match="EOT"):
        CurveGrid(eot=(1, 4, 20)).check(AdaptiveBudget())
    with pytest.raises(ConfigError, match="eps"):
        CurveGrid(eps_factors=(0.5, 1.0)).check(AdaptiveBudget())
