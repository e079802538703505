"""One call evaluates a defence with its convergence curves: the same numbers as the attack, the curves and the rule
called one by one; the per-image records it returns are saved, read back and joined over batches unchanged."""

from __future__ import annotations

import json
import math

import pytest
import torch
from helpers import grad_map, intensity_map

from advspatial.defence import (
    AdaptiveBudget, AdaptivePlan, ComponentOutcome, Convergence, CurveGrid, NeutralizedModel, TransformDefence,
    attack_defence, convergence_curves, convergence_rule, evaluate_adaptive, read_curve, roi_attack_mask,
)

BUDGET = AdaptiveBudget(steps=3, restarts=1, queries=10, eot_iter=2, draws=3)
GRID = CurveGrid(steps=(2, 3, 6), restarts=(1, 2), eps_factors=(0.5, 1.0, 4.0), eot=(1, 2, 4))
PLAN = AdaptivePlan(0.03, BUDGET, GRID)


def _batch(model, n: int = 6, seed: int = 21) -> tuple[torch.Tensor, torch.Tensor]:  # type: ignore[no-untyped-def]
    x = torch.rand(n, 1, 12, 12, generator=torch.Generator().manual_seed(seed))
    return x, model(x).argmax(1)


def _separately(defence, x, y, ids, **kw):  # type: ignore[no-untyped-def]
    """The attack, its curves (extending it) and the rule, called one by one."""
    left_side, mask = kw.pop("left_side", True), kw.get("mask")
    outcome = attack_defence(defence, x, y, PLAN.eps, BUDGET, sample_ids=ids, seed=3, **kw)
    curves = convergence_curves(defence, x, y, PLAN.eps, BUDGET, GRID, sample_ids=ids, seed=3, mask=mask,
                                reported=outcome, left_side=left_side)
    accuracies = {k: float(v.double().mean()) for k, v in curves.items()}
    rule = convergence_rule(accuracies, len(x), BUDGET, GRID, PLAN.eps, randomized=defence.randomized)
    return outcome, curves, {"accuracy": accuracies, **rule}


@pytest.mark.parametrize("kind", ["deterministic", "randomized", "confined"])
def test_one_call_gives_the_numbers_of_the_separate_calls(tiny_cnn, kind):
    model = tiny_cnn(size=12)
    x, y = _batch(model)
    ids = torch.arange(100, 106)
    kw: dict = {}
    if kind == "randomized":
        defence = TransformDefence(model, "noise", 0.3, seed=1)
    else:
        defence = NeutralizedModel(model, intensity_map, grad_map(model), fraction=0.2)
    if kind == "confined":
        kw = {"mask": roi_attack_mask(x, intensity_map, 0.3, seed=0), "components": ("apgd-ce",), "left_side": False}
    outcome, curves, reading = _separately(defence, x, y, ids, **dict(kw))
    if isinstance(defence, TransformDefence):
        defence = TransformDefence(model, "noise", 0.3, seed=1)  # the same draws again
    result = evaluate_adaptive(defence, x, y, PLAN, sample_ids=ids, seed=3, **kw)
    assert result.outcome.correct.keys() == outcome.correct.keys()
    for g, values in outcome.correct.items():
        assert torch.equal(result.outcome.correct[g], values), g
    assert torch.equal(result.x_adv, outcome.x_adv)
    assert list(result.curves) == list(curves)
    assert all(torch.equal(result.curves[k], v) for k, v in curves.items())
    assert result.randomized == (kind == "randomized")
    assert result.convergence().as_dict() == reading
    component = result.component
    assert torch.equal(component.worst, outcome.correct["worst"]) and component.curve is result.curves


def test_no_curve_is_the_attack_alone(tiny_cnn):
    model = tiny_cnn(size=12)
    x, y = _batch(model, n=4)
    defence = NeutralizedModel(model, intensity_map, grad_map(model), fraction=0.2)
    result = evaluate_adaptive(defence, x, y, PLAN, sample_ids=torch.arange(4), seed=0, curve=False)
    alone = attack_defence(defence, x, y, PLAN.eps, BUDGET, sample_ids=torch.arange(4), seed=0)
    assert result.curves == {} and torch.equal(result.component.worst, alone.correct["worst"])
    reading = result.convergence()
    assert not reading.converged and math.isnan(reading.steps_gap)  # no curve is never "flat"


def test_the_rule_reads_the_same_typed_or_as_a_dict():
    flat = {"steps=3": 0.1, "steps=6": 0.1, "restarts=1": 0.1, "restarts=2": 0.1, "eps=0.12": 0.0}
    for accuracies, randomized in ((flat, False), ({"eot=2": 0.3, "eot=4": 0.1}, True), ({}, True), ({}, False)):
        reading = read_curve(accuracies, 10, BUDGET, GRID, 0.03, randomized=randomized)
        as_dict = convergence_rule(accuracies, 10, BUDGET, GRID, 0.03, randomized=randomized)
        assert json.dumps(reading.reading()) == json.dumps(as_dict)  # NaN gaps (missing points) included
        assert list(reading.as_dict()) == ["accuracy", *as_dict]
    assert read_curve(flat, 10, BUDGET, GRID, 0.03).converged
    assert not read_curve({"eot=2": 0.3, "eot=4": 0.1}, 10, BUDGET, GRID, 0.03, randomized=True).converged


@pytest.mark.parametrize("randomized", [False, True])
def test_a_reading_survives_metrics_json(randomized):
    """A convergence reading written as JSON (NaN gaps included) reads back as the same reading."""
    accuracies = {"eot=2": 0.3} if randomized else {"steps=3": 0.2, "eps=0.12": 0.0}
    reading = read_curve(accuracies, 12, BUDGET, GRID, 0.03, randomized=randomized)
    text = json.dumps(reading.as_dict())
    back = Convergence.from_dict(json.loads(text))
    assert json.dumps(back.as_dict()) == text and back.randomized == randomized
    assert back.converged == reading.converged and back.reaches_zero == reading.reaches_zero


def test_a_component_outcome_round_trips_and_joins_over_batches():
    gen = torch.Generator().manual_seed(0)
    parts = [ComponentOutcome({"worst": torch.rand(n, generator=gen)}, {"eot=2": torch.rand(n, generator=gen)})
             for n in (3, 4)]
    for part in parts:
        back = ComponentOutcome.from_dict(part.as_dict())
        assert back.correct.keys() == part.correct.keys() and torch.equal(back.worst, part.worst)
    whole = ComponentOutcome.concatenated(parts)
    assert torch.equal(whole.worst, torch.cat([p.worst for p in parts]))
    assert whole.accuracies() == {"eot=2": float(torch.cat([p.curve["eot=2"] for p in parts]).double().mean())}
    reading = PLAN.convergence(whole, randomized=True)
    assert reading.n == 7 and reading.accuracy == whole.accuracies()
    with pytest.raises(KeyError):
        ComponentOutcome.from_dict({"correct": {}})


def test_the_entry_points_example_runs():
    """The usage example in :func:`evaluate_adaptive`'s docstring runs as written, pasted into an empty namespace."""
    import doctest

    import advspatial.defence.adaptive_evaluation as module

    runner = doctest.DocTestRunner()
    for test in doctest.DocTestFinder().find(module.evaluate_adaptive, "evaluate_adaptive", globs={}):
        runner.run(test)
    assert runner.summarize(verbose=False) == (0, 11)
