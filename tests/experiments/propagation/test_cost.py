"""What propagation's forecast follows (experiments/propagation/cost.py): its k-pixel attacks' iterations, and the
one-pixel search priced apart on the model, as the measurement's is."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from advspatial.experiments import forecast as fc
from advspatial.experiments.cost_references import REFERENCE_STEPS, REFERENCES
from advspatial.experiments.measurement import onepixel_cost
from advspatial.experiments.propagation import cost
from advspatial.experiments.propagation.config import PropagationConfig
from advspatial.experiments.registry import get_experiment


def test_the_one_pixel_candidates_are_the_populations_on_every_image_at_the_stated_share() -> None:
    share = onepixel_cost.QUERY_SHARE
    assert cost.search_queries(PropagationConfig(n=100)) == pytest.approx(100 * 100 * 21 * share)
    assert cost.search_queries(PropagationConfig(n=40, popsize=400, maxiter=75, pixels_list=[1, 3])) == \
        pytest.approx(40 * 400 * 76 * share)
    assert cost.search_queries(PropagationConfig(n=40, maxiter=0)) == pytest.approx(40 * 100 * 1 * share)
    assert cost.search_queries(PropagationConfig(n=100, pixels_list=[3, 5])) == 0.0


def test_the_k_pixel_attacks_follow_the_population_times_the_generations_and_the_initial_one() -> None:
    """The literature's 400 x 75 is 14.5 times the default 100 x 20 (76 and 21 populations scored); the forecast
    at the defaults' work said "about 3 minutes" for it."""
    experiment = get_experiment("propagation")
    groups = REFERENCES["propagation"]
    assert REFERENCE_STEPS["propagation"] == {"popsize": 100, "maxiter+1": 21}
    assert {"popsize", "maxiter"} <= fc.followed_settings(experiment)
    literature = fc.stage_scales("propagation", groups, 100, PropagationConfig(popsize=400, maxiter=75))
    none = fc.stage_scales("propagation", groups, 100, PropagationConfig(maxiter=0))
    attacks = {group for group in groups if group.startswith("attack/k")}
    assert attacks == {"attack/k1", "attack/k3", "attack/k5"}
    for group in groups:
        expected = 400 * 76 / (100 * 21) if group in attacks else 1.0
        assert literature[group] == fc.Scale(pytest.approx(expected), pytest.approx(expected)), group
        assert none[group].images == pytest.approx(1 / 21 if group in attacks else 1.0), group
    followed = frozenset(fc.followed_settings(experiment))
    assert not fc.differing_settings(PropagationConfig(popsize=400, maxiter=75), followed)


def test_the_search_is_priced_apart_on_the_model_and_left_out_without_a_one_pixel_attack(monkeypatch) -> None:
    monkeypatch.setattr(onepixel_cost, "seconds_per_query", lambda model, images, seed=0: 1e-3)
    model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                          nn.Linear(4, 10)).eval()
    images, price = torch.rand(4, 1, 8, 8), fc.CallPrice(0.0, 0.0, 0.0, 0.0)
    config = PropagationConfig(n=100, popsize=400, maxiter=75)
    assert get_experiment("propagation").priced_apart is cost.search_seconds_of
    assert cost.search_seconds_of(config, model, images, price) == {
        fc.GROUP_NAMES["attack"]: pytest.approx(cost.search_queries(config) * 1e-3)}
    assert cost.search_seconds_of(PropagationConfig(n=100, pixels_list=[3]), model, images, price) == {}
