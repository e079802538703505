"""Sequential looks at the faithfulness gate: the looks, the interim rule, and the error the looks add (simulated)."""

from __future__ import annotations

import math
import os

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from advspatial.errors import ConfigError
from advspatial.faithfulness.sequential import (
    INTERIM_Z, cell_state, disagreement_rate, effect_z, interim_decision, look_sizes, sequential_verdict,
)
from advspatial.statistics.estimates import bootstrap_mean_ci


def test_looks_double_from_the_first_and_end_at_the_planned_images() -> None:
    assert look_sizes(200) == (50, 100, 200)
    assert look_sizes(460) == (50, 100, 200, 400, 460)
    assert look_sizes(400) == (50, 100, 200, 400)
    assert look_sizes(50) == (50,) and look_sizes(24) == (24,) and look_sizes(0) == (0,)
    assert look_sizes(100, first=30) == (30, 60, 100)
    with pytest.raises(ConfigError):
        look_sizes(10, first=0)


def test_z_is_the_one_sample_t_statistic_and_degenerate_samples_are_stated() -> None:
    values = np.random.default_rng(0).normal(0.3, 1.0, 80)
    assert effect_z(values) == pytest.approx(stats.ttest_1samp(values, 0.0).statistic, rel=1e-12)
    assert effect_z(np.array([2.0, 2.0, 2.0])) == math.inf
    assert effect_z(np.array([-1.0, -1.0])) == -math.inf
    assert math.isnan(effect_z(np.zeros(5))) and math.isnan(effect_z(np.array([1.0])))
    assert effect_z(np.array([1.0, 2.0, np.nan, 3.0])) == pytest.approx(effect_z(np.array([1.0, 2.0, 3.0])))


def _cells(rule: str = "faithfulness", margin: float = 0.0, **measures: np.ndarray
           ) -> dict[str, dict[str, tuple[torch.Tensor, float, str]]]:
    return {name: {"attack": (torch.from_numpy(values), margin, rule)} for name, values in measures.items()}


def test_a_clearly_not_better_faithfulness_row_fails_the_gate_and_is_named() -> None:
    rng = np.random.default_rng(1)
    cells = {**_cells(location=rng.normal(1.0, 1.0, 60)), **_cells(scatter=rng.normal(-1.0, 1.0, 60))}
    decision = interim_decision(cells, n=60, min_n=30)
    assert decision.verdict == "fails" and decision.reason.startswith("scatter: attack not better (z = -")
    assert decision.comparisons == ("scatter",)


def test_a_specificity_row_never_fails_the_gate_and_must_be_decided_to_stop() -> None:
    rng = np.random.default_rng(2)
    location = _cells(location=rng.normal(1.0, 1.0, 60))
    assert interim_decision(location, n=60, min_n=30).verdict == "decided"
    does_less = {**location, **_cells("specificity", 0.1, edges=rng.normal(-1.0, 1.0, 60))}
    assert interim_decision(does_less, n=60, min_n=30).verdict == "decided"   # a finding, decided: not a failure
    unclear = {**location, **_cells("specificity", 0.1, edges=rng.normal(0.2, 1.0, 60))}
    assert interim_decision(unclear, n=60, min_n=30).verdict is None
    equivalent = {**location, **_cells("specificity", 1.0, edges=rng.normal(0.0, 0.5, 400))}
    assert interim_decision(equivalent, n=60, min_n=30).verdict == "decided"
    assert interim_decision(location, n=29, min_n=30).verdict is None  # nothing is decided on too few images
    # a comparison without any measure (its columns missing) is never decided early
    assert interim_decision({**location, "scatter": {}}, n=60, min_n=30).verdict is None


def test_a_row_the_positive_control_cannot_pass_does_not_fail_the_gate_early() -> None:
    rng = np.random.default_rng(4)
    cells = _cells(location=rng.normal(-1.0, 1.0, 60))
    assert interim_decision(cells, n=60, min_n=30).verdict == "fails"
    blind = _cells(location=rng.normal(0.0, 1.0, 60))   # the control does not beat location either
    assert interim_decision(cells, n=60, min_n=30, controls=blind).verdict is None
    sighted = _cells(location=rng.normal(1.5, 1.0, 60))
    assert interim_decision(cells, n=60, min_n=30, controls=sighted).verdict == "fails"


def test_not_better_is_judged_against_the_margin() -> None:
    d = np.random.default_rng(5).normal(0.05, 0.2, 400)   # beats 0 clearly, and lies far below a margin of 0.5
    assert cell_state(torch.from_numpy(d), 0.5, "faithfulness") == "beats"
    small = np.random.default_rng(6).normal(0.0, 0.2, 400)
    assert cell_state(torch.from_numpy(small), 0.5, "faithfulness") == "not better"
    assert cell_state(torch.from_numpy(small), 0.0, "faithfulness") is None
    assert cell_state(torch.from_numpy(small), 0.5, "specificity") == "equivalent"


@settings(max_examples=40, deadline=None)
@given(st.lists(st.floats(-5, 5, allow_nan=False, width=32), min_size=30, max_size=60),
       st.floats(0.01, 100))
def test_the_decision_ignores_the_scale_and_a_sign_flip_swaps_fail_and_pass(values: list[float], scale: float) -> None:
    d = np.asarray(values, dtype=np.float64)
    base = interim_decision(_cells(location=d), n=d.size, min_n=30).verdict
    assert interim_decision(_cells(location=d * scale), n=d.size, min_n=30).verdict == base
    flipped = interim_decision(_cells(location=-d), n=d.size, min_n=30).verdict
    assert flipped == {"fails": "decided", "decided": "fails", None: None}[base]


def bca_above_zero(values: np.ndarray) -> bool:
    """The gate's fixed rule for one effect: its 95% BCa bootstrap CI lies above 0."""
    return bootstrap_mean_ci(values).low > 0


def test_an_undecided_effect_gets_the_fixed_rule_on_every_image() -> None:
    values = np.random.default_rng(3).normal(0.1, 1.0, 200)
    assert sequential_verdict(values, (50, 100, 200), bca_above_zero) == bca_above_zero(values)


# The error the looks add: how often the sequential verdict differs from the fixed rule's on all planned images,
# at the effect sizes where it is largest (about 1-1.5 standard errors of the full sample, where early noise can
# cross the bound and the full sample still decides the other way). A fast check here; the full sweep over effect
# sizes and real gate columns is benchmarks/gate_sequential.py, its figures in docs/methods.md.
@pytest.mark.parametrize("family", ["normal", "t3"])
def test_the_looks_change_at_most_a_fraction_of_a_percent_of_verdicts(family: str) -> None:
    planned, looks = 200, look_sizes(200)
    repeats = 4000 if os.environ.get("ADVSPATIAL_CALIBRATION") else 600

    def draw(shift: float):  # type: ignore[no-untyped-def]
        def one(rng: np.random.Generator) -> np.ndarray:
            noise = rng.standard_normal(planned) if family == "normal" else rng.standard_t(3, planned) / math.sqrt(3)
            return noise + shift / math.sqrt(planned)
        return one

    def final(values: np.ndarray) -> bool:  # the fixed rule, normal-theory for speed (BCa: the benchmark)
        return effect_z(values) > 1.96

    worst = max(disagreement_rate(draw(shift), looks, final, repeats, seed=7) for shift in (-3.3, 1.0, 1.5, 2.0))
    assert worst <= 0.01


def test_the_interim_bound_is_haybittle_peto() -> None:
    assert INTERIM_Z == pytest.approx(stats.norm.isf(0.0005), abs=0.005)
