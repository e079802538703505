"""Three outcomes of a paired comparison (statistics/outcomes.py): the rule on known intervals, the projections
against statsmodels' power solver, and the rule's error rates and power by simulation (a fast version; the full
grid is benchmarks/gate_calibration.py, its figures in docs/methods.md)."""

from __future__ import annotations

import math
import os

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from statsmodels.stats.power import NormalIndPower

from advspatial.statistics.estimates import Estimate
from advspatial.statistics.outcomes import (
    BEATS, DOES_LESS, EQUIVALENT, FAITHFULNESS, NOT_BETTER, SPECIFICITY, UNDECIDED, Decision, decide,
    images_for_estimate, images_to_decide, outcome_of, simulated_outcomes, tost_power, SAME_DAMAGE, WITHIN_MARGIN,
)

REPEATS = 2000 if os.environ.get("ADVSPATIAL_CALIBRATION") else 400


@pytest.mark.parametrize(("rule", "bounds", "margin", "expected"), [
    (FAITHFULNESS, (0.1, 0.9, 0.2, 0.8), 0.1, BEATS),
    (FAITHFULNESS, (-0.3, 0.05, -0.25, 0.04), 0.1, NOT_BETTER),      # 90% CI below +margin
    (FAITHFULNESS, (-0.3, 0.2, -0.25, 0.15), 0.1, UNDECIDED),
    (FAITHFULNESS, (-3.0, -1.4, -2.8, -1.5), 0.1, NOT_BETTER),       # does less is not better
    (SPECIFICITY, (0.1, 0.9, 0.2, 0.8), 0.1, BEATS),
    (SPECIFICITY, (-0.9, -0.1, -0.8, -0.2), 0.1, DOES_LESS),
    (SPECIFICITY, (-0.012, 0.011, -0.01, 0.009), 0.05, EQUIVALENT),  # 90% CI inside (-margin, +margin)
    (SPECIFICITY, (-0.25, 0.82, -0.2, 0.7), 0.05, UNDECIDED),
    (SPECIFICITY, (-0.01, 0.01, -0.008, 0.008), 0.0, UNDECIDED),     # a zero margin: nothing is equivalent
])
def test_the_rule_on_known_intervals(rule: str, bounds: tuple[float, ...], margin: float, expected: str) -> None:
    assert outcome_of(rule, *bounds, margin=margin, n=100) == expected


def test_no_images_or_no_interval_is_undecided_and_an_unknown_rule_is_refused() -> None:
    from advspatial.errors import ConfigError

    assert outcome_of(FAITHFULNESS, math.nan, math.nan, math.nan, math.nan, 0.1, 0) == UNDECIDED
    with pytest.raises(ConfigError):
        outcome_of("both", 0.1, 0.2, 0.1, 0.2, 0.1, 10)


def test_a_significant_difference_inside_the_margin_keeps_its_direction_and_says_so() -> None:
    values = np.random.default_rng(0).normal(0.02, 0.05, 2000)   # clearly above 0, clearly inside +-0.1
    d = decide(values, SPECIFICITY, 0.1)
    assert d.outcome == BEATS and d.within_margin
    assert decide(values, SPECIFICITY, 0.005).within_margin is False


def test_decisions_read_back_from_their_json() -> None:
    d = decide(np.random.default_rng(1).normal(0.3, 1.0, 50), FAITHFULNESS, 0.2, seed=4)
    assert Decision.from_dict(d.as_dict()) == d
    assert d.estimate == Estimate(d.mean, d.low, d.high, d.n)


@pytest.mark.parametrize("effect", [0.2, 0.3, 0.5, 1.0])
def test_the_images_to_beat_match_statsmodels_power_solver(effect: float) -> None:
    """One-sample two-sided z test at 0.05 (ratio 0 = one sample), 80% power: the n the projection gives."""
    d = Decision(SPECIFICITY, UNDECIDED, effect, -1.0, 1.0, -1.0, 1.0, 1.0, 10, 0.0)
    expected = NormalIndPower().solve_power(effect_size=effect, alpha=0.05, power=0.8, ratio=0)
    projection = images_to_decide(d)
    assert projection.outcome == BEATS
    assert projection.images == math.ceil(expected) or abs(projection.images - expected) < 1.0


def test_the_images_to_show_not_better_are_one_sided_at_five_percent() -> None:
    d = Decision(FAITHFULNESS, UNDECIDED, 0.0, -1.0, 1.0, -1.0, 1.0, 1.0, 10, 0.25)
    expected = NormalIndPower().solve_power(effect_size=0.25, alpha=0.05, power=0.8, ratio=0, alternative="larger")
    assert images_to_decide(d).outcome == NOT_BETTER
    assert abs(images_to_decide(d).images - expected) < 1.0


@settings(max_examples=30, deadline=None)
@given(st.floats(0.0, 0.9), st.floats(20, 3000))
def test_tost_power_grows_with_n_and_is_what_a_simulation_gives(mean_share: float, n: float) -> None:
    margin, sd = 0.1, 1.0
    mean = mean_share * margin
    p = tost_power(mean, sd, margin, n)
    assert 0.0 <= p <= 1.0 and tost_power(mean, sd, margin, 4 * n) >= p
    se = sd / math.sqrt(n)
    rng = np.random.default_rng(int(n))
    means = rng.normal(mean, se, 20000)
    z = 1.6448536269514722
    simulated = float(np.mean((means - z * se > -margin) & (means + z * se < margin)))
    assert abs(p - simulated) < 0.02


def test_a_claims_projection_recovers_the_sd_from_its_interval() -> None:
    rng = np.random.default_rng(2)
    values = rng.normal(0.1, 1.0, 200)
    half = 1.959963984540054 * values.std(ddof=1) / math.sqrt(200)
    estimate = Estimate(float(values.mean()), float(values.mean() - half), float(values.mean() + half), 200)
    claim = images_for_estimate(estimate, sesoi=0.0)
    gate = images_to_decide(Decision(SPECIFICITY, UNDECIDED, estimate.mean, estimate.low, estimate.high, math.nan,
                                     math.nan, float(values.std(ddof=1)), 200, 0.0))
    assert claim.outcome == gate.outcome == BEATS and abs(claim.images - gate.images) <= 1
    assert "images would decide it (beats)" in claim.text()
    assert math.isinf(images_for_estimate(Estimate(0.0, -1.0, 1.0, 50), sesoi=0.0).images)


# -- the rule's error rates and power, by simulation -----------------------------------------------------------

def normal(mean: float, sd: float = 1.0):  # type: ignore[no-untyped-def]
    return lambda rng, n: rng.normal(mean, sd, n)


def test_with_no_true_difference_beats_reads_at_most_five_percent() -> None:
    rates = simulated_outcomes(normal(0.0), SPECIFICITY, 0.1, 60, REPEATS, seed=1)
    assert rates[BEATS] <= 0.05 and rates[DOES_LESS] <= 0.05


def test_at_d_0_3_and_the_projected_images_beats_reads_about_eighty_percent() -> None:
    projection = images_to_decide(Decision(SPECIFICITY, UNDECIDED, 0.3, -1, 1, -1, 1, 1.0, 10, 0.0))
    rates = simulated_outcomes(normal(0.3), SPECIFICITY, 0.0, int(projection.images), REPEATS, seed=2)
    assert 0.72 <= rates[BEATS] <= 0.88, (projection.images, rates)


@pytest.mark.parametrize(("rule", "outcome"), [(SPECIFICITY, EQUIVALENT), (FAITHFULNESS, NOT_BETTER)])
def test_at_a_true_difference_equal_to_the_margin_the_margin_outcomes_hold_their_five_percent(
        rule: str, outcome: str) -> None:
    rates = simulated_outcomes(normal(0.3), rule, 0.3, 100, REPEATS, seed=3)
    assert rates[outcome] <= 0.07, rates


def test_at_the_margin_with_many_images_a_within_margin_direction_counts_as_same_damage() -> None:
    # at n = 400 a true difference of 0.3 sd beats nearly always, so *equivalent* alone would hide the error:
    # the "within the margin" flag carries it, and the two together hold the TOST's 5%
    rates = simulated_outcomes(normal(0.3), SPECIFICITY, 0.3, 400, REPEATS, seed=4)
    assert rates[BEATS] > 0.9, rates
    assert rates[SAME_DAMAGE] == pytest.approx(rates[EQUIVALENT] + rates[WITHIN_MARGIN])
    assert rates[SAME_DAMAGE] <= 0.09, rates
