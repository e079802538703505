"""The one-pixel search priced apart (experiments/measurement/onepixel_cost.py): its candidates counted from the
settings, timed on the model as the run scores them, and added to the forecast of the experiments that run it."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from advspatial.experiments import forecast as fc
from advspatial.experiments.maps import MapsConfig
from advspatial.experiments.measurement import onepixel_cost as cost
from advspatial.experiments.registry import get_experiment


def test_the_candidates_are_the_searchs_populations_on_its_images_at_the_stated_share() -> None:
    assert cost.onepixel_queries(MapsConfig(n=60)) == pytest.approx(60 * 100 * 31 * cost.QUERY_SHARE)  # n < onepixel_n
    assert cost.onepixel_queries(MapsConfig(n=500, onepixel_n=40, onepixel_popsize=10, onepixel_steps=4)) == \
        pytest.approx(40 * 10 * 5 * cost.QUERY_SHARE)
    assert cost.onepixel_queries(MapsConfig(n=60, attacks=["fgsm", "pgd"])) == 0.0
    assert round(cost.onepixel_queries(MapsConfig(n=60))) == 98580  # the module docstring's example


def _tiny_cnn() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(4, 10)).eval()


@pytest.mark.parametrize("model", [_tiny_cnn(), nn.Sequential(nn.Flatten(), nn.Linear(64, 10)).eval()],
                         ids=["incremental", "full-passes"])
def test_a_candidate_is_timed_on_the_model(model: nn.Module) -> None:
    seconds = cost.seconds_per_query(model, torch.rand(6, 1, 8, 8), repeats=1)
    assert 0.0 <= seconds < 0.1  # a candidate of a tiny model: microseconds, not a whole probe


def test_the_search_is_added_to_the_attacks_part_of_spatial_and_maps(monkeypatch) -> None:
    monkeypatch.setattr(cost, "seconds_per_query", lambda model, images, seed=0: 1e-3)
    model, images, price = _tiny_cnn(), torch.rand(4, 1, 8, 8), fc.CallPrice(0.0, 0.0, 0.0, 0.0)
    config = MapsConfig(n=60)
    assert cost.onepixel_seconds(config, model, images, price) == {
        fc.GROUP_NAMES["attack"]: pytest.approx(cost.onepixel_queries(config) * 1e-3)}
    assert cost.onepixel_seconds(MapsConfig(n=60, attacks=["fgsm"]), model, images, price) == {}
    for name in ("spatial", "maps"):
        assert get_experiment(name).priced_apart is cost.onepixel_seconds
    with_search = fc.forecast("maps", 60, fc.CallPrice(1e-3, 1e-4, 1e-3, 1e-4),
                              apart=cost.onepixel_seconds(config, model, images, price), config=config)
    without = fc.forecast("maps", 60, fc.CallPrice(1e-3, 1e-4, 1e-3, 1e-4), config=config)
    assert with_search is not None and without is not None
    assert with_search.seconds - without.seconds == pytest.approx(cost.onepixel_queries(config) * 1e-3)


def test_a_model_the_attack_cannot_run_on_leaves_the_search_out_of_the_forecast(monkeypatch) -> None:
    from advspatial.errors import ShapeError

    def refused(model: nn.Module, images: torch.Tensor, seed: int = 0) -> float:
        raise ShapeError("the model's logits are not (N, classes)")

    monkeypatch.setattr(cost, "seconds_per_query", refused)
    assert cost.onepixel_seconds(MapsConfig(n=60), _tiny_cnn(), torch.rand(4, 1, 8, 8),
                                 fc.CallPrice(0.0, 0.0, 0.0, 0.0)) == {}


def test_the_probe_leaves_the_runs_model_without_an_evaluator_built_for_it() -> None:
    """The incremental evaluator keeps its structures per model object; one built by the probe before the run watches
    its model was the one the run's search found: the default run's one-pixel stage then counted 0 passes and 870
    host reads where it counts 80 and 113 unforecast (n = 40). The probe times a copy."""
    from advspatial import models
    from advspatial.models.patch.forward import STRUCTURES

    torch.manual_seed(0)
    model = models.build_model("lenet5").eval()  # a chain the evaluator's structures are built for
    cost.seconds_per_query(model, torch.rand(4, 1, 28, 28), repeats=1)
    assert model not in STRUCTURES._entries  # the run's model object: nothing built for it
