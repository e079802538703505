"""Accuracies with Wilson intervals and paired accuracy differences, against SciPy and statsmodels."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from advspatial.errors import ConfigError, ShapeError
from advspatial.statistics.accuracy import accuracy, mcnemar_p, paired_accuracy, wilson_interval
from advspatial.statistics.estimates import sign_flip_p


@given(n=st.integers(1, 400), data=st.data())
@settings(max_examples=60, deadline=None)
def test_wilson_matches_statsmodels(n, data):
    from statsmodels.stats.proportion import proportion_confint

    k = data.draw(st.integers(0, n))
    ours = wilson_interval(k, n)
    low, high = proportion_confint(k, n, alpha=0.05, method="wilson")
    assert ours.low == pytest.approx(low, abs=1e-12) and ours.high == pytest.approx(high, abs=1e-12)
    assert 0 <= ours.low <= ours.value <= ours.high <= 1


def test_wilson_edges_and_errors():
    assert math.isnan(wilson_interval(0, 0).value)
    zero = wilson_interval(0, 100)
    assert zero.low == 0 and 0.03 < zero.high < 0.04  # not a zero-width Wald interval at 0
    with pytest.raises(ConfigError):
        wilson_interval(5, 3)
    with pytest.raises(ConfigError, match="0/1"):
        accuracy([0, 0.5, 1])
    assert accuracy([1, 0, 1, 1]).k == 3


@given(st.lists(st.tuples(st.integers(0, 1), st.integers(0, 1)), min_size=1, max_size=80))
@settings(max_examples=80, deadline=None)
def test_mcnemar_is_the_binomial_test_on_discordant_pairs(pairs):
    from scipy.stats import binomtest

    a = np.array([p[0] for p in pairs], float)
    b = np.array([p[1] for p in pairs], float)
    wins, losses = int(((a == 1) & (b == 0)).sum()), int(((a == 0) & (b == 1)).sum())
    expected = 1.0 if wins + losses == 0 else binomtest(wins, wins + losses, 0.5).pvalue
    assert mcnemar_p(a, b) == pytest.approx(expected, abs=1e-12)
    assert mcnemar_p(a, b) == pytest.approx(mcnemar_p(b, a), abs=1e-12)  # symmetric


def test_paired_accuracy_chooses_its_test_and_pairs_by_image():
    rng = np.random.default_rng(0)
    a = (rng.random(200) < 0.6).astype(float)
    b = np.where(rng.random(200) < 0.8, a, 1 - a)  # 20% of images flipped at random: no systematic difference
    binary = paired_accuracy(a, b)
    assert binary.test == "mcnemar" and binary.p == pytest.approx(mcnemar_p(a, b))
    assert binary.delta.mean == pytest.approx(a.mean() - b.mean())
    assert binary.delta.low <= binary.delta.mean <= binary.delta.high
    better = paired_accuracy(np.ones(200), b)  # A right on every image
    assert better.delta.low > 0 and better.p < 1e-6
    shares = paired_accuracy(a, np.clip(b * 0.7 + 0.1, 0, 1))  # a control scored as a share of draws
    assert shares.test == "sign-flip" and 0 < shares.p <= 1
    with pytest.raises(ShapeError):
        paired_accuracy([1, 0], [1])
    with pytest.raises(ConfigError):
        paired_accuracy([1, 2], [1, 0])


def test_sign_flip_p_is_exact_mcnemar_in_distribution_and_symmetric():
    d = np.array([1.0] * 14 + [-1.0] * 4 + [0.0] * 30)
    from scipy.stats import binomtest

    assert sign_flip_p(d, resamples=40000, seed=1) == pytest.approx(binomtest(14, 18, 0.5).pvalue, abs=0.006)
    assert sign_flip_p(-d, seed=3) == pytest.approx(sign_flip_p(d, seed=3))
    assert sign_flip_p(np.zeros(5)) == 1.0 and math.isnan(sign_flip_p([]))
