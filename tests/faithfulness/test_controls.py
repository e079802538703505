"""The gate's positive control (faithfulness/controls.py), the restricted attack's budget (calibration.py) and its
measures (measures.py): known answers on models whose attacks and occlusions can be computed by hand."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from advspatial.attacks import PGD
from advspatial.attacks.base import margin
from advspatial.faithfulness.calibration import (
    Budget, _RowBudgetPGD, bisection_budgets, calibrate_budget, flip_rates,
)
from advspatial.faithfulness.controls import control_maps, control_regions, control_tag, occlusion_control
from advspatial.faithfulness.deletion import make_deletion_fill
from advspatial.faithfulness.measures import damage, differences, fills_in, margin_drop, margins
from advspatial.passes import PassLedger


class Linear(nn.Module):
    """Logits W x (flattened): the L-inf attack's effect on a margin is known in closed form."""

    def __init__(self, weight: torch.Tensor) -> None:
        super().__init__()
        self.weight = nn.Parameter(weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1) @ self.weight.T


def linear_case(n: int = 60, size: int = 6, seed: int = 0) -> tuple[Linear, torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    weight = torch.randn(2, size * size, generator=gen)
    x = 0.3 + 0.4 * torch.rand(n, 1, size, size, generator=gen)   # inside (0, 1): no clipping at small budgets
    model = Linear(weight).eval()
    with torch.no_grad():
        y = model(x).argmax(1)
    return model, x, y


def test_occlusion_under_blur_is_the_mean_logit_drop_of_the_blurred_windows_covering_a_pixel() -> None:
    model, x, y = linear_case(n=3, size=8)
    got = occlusion_control(model, x, y, sample_ids=torch.arange(3))
    blurred = make_deletion_fill("blur", {}, x, 0, torch.arange(3))(x, torch.ones(3, 8, 8, dtype=torch.bool))
    # window 4, stride 2 on 8 pixels: windows at 0, 2, 4; a pixel's value is the mean drop of the windows covering it
    drops = torch.zeros(3, 8, 8)
    counts = torch.zeros(8, 8)
    with torch.no_grad():
        clean = model(x).gather(1, y[:, None]).squeeze(1)
        for r in (0, 2, 4):
            for c in (0, 2, 4):
                window = torch.zeros(8, 8, dtype=torch.bool)
                window[r:r + 4, c:c + 4] = True
                occluded = torch.where(window, blurred, x)
                drop = clean - model(occluded).gather(1, y[:, None]).squeeze(1)
                drops[:, window] += drop[:, None]
                counts[window] += 1
    torch.testing.assert_close(got, (drops / counts).clamp_min(0), rtol=1e-4, atol=1e-5)


def test_control_regions_keep_the_fraction_and_each_comparison_the_same_pixel_count() -> None:
    model, x, y = linear_case()
    maps = control_maps(model, x, y, sample_ids=torch.arange(len(x)) + 7)
    regions = control_regions(maps, 0.25, 0, torch.arange(len(x)) + 7)
    assert set(regions) == {"deletion"}   # the restricted attack has no control: it reads gradient mass
    for kind, by_tag in regions.items():
        assert set(by_tag) == {control_tag(kind), control_tag(kind, "shifted"), control_tag(kind, "scattered")}
        counts = {tag: r.flatten(1).sum(1) for tag, r in by_tag.items()}
        assert all(torch.equal(c, counts[control_tag(kind)]) for c in counts.values())
        assert int(counts[control_tag(kind)][0]) == 9   # 25% of 36 pixels


def flip_rate(model: nn.Module, x: torch.Tensor, y: torch.Tensor, sample_ids: torch.Tensor, eps: float,
              steps: int, seed: int) -> float:
    """The reference: the share of the images that :class:`~advspatial.attacks.PGD` alone at ``eps`` (auto step)
    moves off ``y``."""
    attack = PGD(model, eps=eps, alpha="auto", steps=steps, seed=seed)
    return int(attack.run(x, y, sample_ids=sample_ids).success.sum()) / len(y)


def test_the_calibrated_budget_flips_about_half_and_never_exceeds_the_experiments() -> None:
    model, x, y = linear_case(n=80)
    ids = torch.arange(80)
    planned = 0.2
    assert flip_rate(model, x, y, ids, planned, 10, 0) > 0.5   # the experiment's budget is saturated here
    budget = calibrate_budget(model, x, y, ids, planned, steps=10)
    assert budget.calibrated and 0 < budget.eps < planned
    assert abs(budget.flip_rate - 0.5) <= 0.1
    # a linear model flips an image once eps * ||w_y - w_other||_1 exceeds its margin: the calibrated eps lies near
    # the median of those per-image thresholds
    with torch.no_grad():
        thresholds = margin(model(x), y) / (model.weight[y] - model.weight[1 - y]).abs().sum(1)
    assert abs(budget.eps - float(thresholds.median())) <= planned / 2 ** 6
    assert budget.tried[0] == (planned, pytest.approx(flip_rate(model, x, y, ids, planned, 10, 0)))
    again = Budget.from_dict(budget.as_dict())
    assert again == budget and "calibrated: the unrestricted attack flips" in budget.text()


def _one_budget_at_a_time(model: nn.Module, x: torch.Tensor, y: torch.Tensor, planned: float, target: float,
                          steps: int = 10, levels: int = 7) -> list[tuple[float, float]]:
    """The bisection made one budget after another (what :func:`calibrate_budget` must agree with)."""
    ids = torch.arange(len(y))
    tried = [(planned, flip_rate(model, x, y, ids, planned, steps, 0))]
    low, high = 0.0, planned
    for _ in range(levels):
        mid = (low + high) / 2
        tried.append((mid, flip_rate(model, x, y, ids, mid, steps, 0)))
        low, high = (mid, high) if tried[-1][1] <= target else (low, mid)
    return tried


@pytest.mark.parametrize("target", [0.3, 0.5, 0.8])
def test_the_stacked_bisection_tries_the_budgets_and_rates_of_one_budget_at_a_time_in_half_the_rounds(target):
    model, x, y = linear_case(n=50)
    ledger = PassLedger()
    ledger.watch(model)
    budget = calibrate_budget(model, x, y, torch.arange(50), 0.2, steps=10, target=target, max_images=20)
    rounds, calls = ledger.outside.rounds, ledger.outside.calls
    assert budget.tried == _one_budget_at_a_time(model, x, y, 0.2, target)
    assert rounds == 4 * (10 + 2)          # 4 runs of 10 steps, each with its clean and final pass
    assert calls > rounds                  # 100 or 150 stacked rows called 20 at a time inside each round
    assert ledger.outside.rounds - rounds == 8 * (10 + 2)   # one budget at a time: 8 runs


def test_each_row_of_the_budget_stack_is_the_attack_at_its_own_budget() -> None:
    model, x, y = linear_case(n=12)
    ids = torch.arange(12) + 40
    budgets = [0.2, 0.05, 0.0125]
    stacked = _RowBudgetPGD(model, [e for e in budgets for _ in range(12)], steps=7, seed=3).run(
        x.repeat(3, 1, 1, 1), y.repeat(3), sample_ids=ids.repeat(3))
    for k, eps in enumerate(budgets):
        alone = PGD(model, eps=eps, alpha="auto", steps=7, seed=3).run(x, y, sample_ids=ids)
        assert torch.equal(stacked.x_adv[12 * k:12 * (k + 1)], alone.x_adv)
    assert flip_rates(model, x, y, ids, budgets, 7, 3, max_images=5) == [
        flip_rate(model, x, y, ids, eps, 7, 3) for eps in budgets]
    assert bisection_budgets(0.0, 0.2, 2) == pytest.approx([0.1, 0.05, 0.15])


def test_a_budget_that_flips_at_most_half_is_kept() -> None:
    model, x, y = linear_case(n=40)
    budget = calibrate_budget(model, x, y, torch.arange(40), 1e-4, steps=5)
    assert not budget.calibrated and budget.eps == 1e-4 and budget.flip_rate <= 0.5 and len(budget.tried) == 1


def test_the_attack_measure_is_the_margin_removed_and_undefined_on_wrong_images() -> None:
    cols = {"attack:margin_clean": torch.tensor([4.0, 4.0, 4.0, -1.0]),
            "attack:margin:roi": torch.tensor([2.0, -10.0, 5.0, -3.0]),
            "attack:margin:shifted": torch.tensor([3.0, -1.0, 4.0, -2.0])}
    drop = margin_drop(cols, "roi")
    assert drop is not None
    assert drop[:3].tolist() == [2.0, 14.0, -1.0] and math.isnan(float(drop[3]))
    diff = differences(cols, [], "roi", "shifted")["attack"]
    assert diff[:3].tolist() == [1.0, 9.0, -1.0]   # the other region's attacked margin minus the RoI's
    assert margin_drop(cols, "scattered") is None


def test_a_comparisons_margin_is_a_share_of_the_regions_own_damage() -> None:
    cols = {"deletion:blur:drop:roi": torch.tensor([2.0, 4.0]), "deletion:blur:drop:shifted": torch.tensor([1.0, 1.0]),
            "deletion:road:drop:roi": torch.tensor([-1.0, -1.0]),
            "attack:margin_clean": torch.tensor([2.0, 2.0]), "attack:margin:roi": torch.tensor([1.0, 0.0])}
    assert fills_in(cols) == ["blur", "road"] and fills_in(cols, "shifted") == ["blur"]
    assert margins(cols, ["blur", "road"], "roi", 0.1) == pytest.approx(
        {"deletion:blur": 0.3, "deletion:road": 0.0, "attack": 0.15})
    assert set(damage(cols, ["blur"], "roi", measures=["attack"])) == {"attack"}
