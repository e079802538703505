"""The engine's estimates: the BCa bootstrap CI of a mean, checked against scipy and on its edge cases."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from advspatial.errors import ConfigError
from advspatial.statistics.estimates import (
    CI_METHODS, bca_levels, bootstrap_mean_ci, bootstrap_median_ci, mean_acceleration, sign_flip_p,
)


@pytest.mark.parametrize("n,seed,resamples", [(7, 0, 999), (30, 3, 2000), (200, 11, 500)])
def test_bca_equals_scipy_on_the_same_resamples(n, seed, resamples):
    """scipy.stats.bootstrap draws its indices as rng.integers(0, n, (B, n)) from the rng it is given, which is
    how the engine draws them: fed the same seed, scipy's BCa interval must equal ours to rounding."""
    values = np.random.default_rng(seed).lognormal(size=n)  # skewed: z0 and a both matter
    ours = bootstrap_mean_ci(values, seed=seed, resamples=resamples)
    ref = stats.bootstrap((values,), np.mean, n_resamples=resamples, method="BCa",
                          rng=np.random.default_rng(seed)).confidence_interval
    assert ours.low == pytest.approx(ref.low, abs=1e-12)
    assert ours.high == pytest.approx(ref.high, abs=1e-12)
    pct = bootstrap_mean_ci(values, seed=seed, resamples=resamples, method="percentile")
    ref_pct = stats.bootstrap((values,), np.mean, n_resamples=resamples, method="percentile",
                              rng=np.random.default_rng(seed)).confidence_interval
    assert (pct.low, pct.high) == pytest.approx((ref_pct.low, ref_pct.high), abs=1e-12)
    assert (ours.low, ours.high) != (pct.low, pct.high)  # the correction moved the interval


@pytest.mark.parametrize("chunk", [1, 7, 45, 10**9])  # one value a chunk, a ragged last chunk, one chunk
def test_resamples_reduced_in_chunks_give_every_digit_of_all_at_once(monkeypatch, chunk):
    from advspatial.statistics import estimates

    values = np.random.default_rng(2).lognormal(size=23)
    whole = (bootstrap_mean_ci(values, seed=5, resamples=301), bootstrap_median_ci(values, seed=5, resamples=301))
    monkeypatch.setattr(estimates, "RESAMPLED_VALUES", chunk)
    assert (bootstrap_mean_ci(values, seed=5, resamples=301),
            bootstrap_median_ci(values, seed=5, resamples=301)) == whole
    idx = np.random.default_rng(5).integers(0, values.size, size=(301, values.size))  # the definition, at once
    means, medians = values[idx].mean(axis=1), np.median(values[idx], axis=1)
    assert np.array_equal(estimates._resampled(values, 5, 301, np.mean), means)
    assert np.array_equal(estimates._resampled(values, 5, 301, np.median), medians)


def test_acceleration_is_the_jackknife_closed_form():
    values = np.random.default_rng(1).exponential(size=25)
    jack = np.array([np.delete(values, i).mean() for i in range(values.size)])
    d = jack.mean() - jack
    assert mean_acceleration(values) == pytest.approx((d ** 3).sum() / (6 * ((d ** 2).sum()) ** 1.5), rel=1e-12)
    assert mean_acceleration(-values) == pytest.approx(-mean_acceleration(values))
    assert mean_acceleration(np.full(5, 2.0)) == 0.0


def test_bca_levels_without_bias_or_acceleration_are_the_percentile_levels():
    resampled = np.concatenate([np.linspace(-1, -0.01, 500), np.linspace(0.01, 1, 500)])  # half below 0
    assert bca_levels(resampled, 0.0, 0.0, 0.025) == pytest.approx([0.025, 0.975])
    shifted = bca_levels(resampled, 0.5, 0.0, 0.025)  # 75% of resamples below the estimate: both levels rise
    assert shifted[0] > 0.025 and shifted[1] > 0.975
    extreme = bca_levels(resampled, 5.0, 0.0, 0.025)  # every resample below: z0 stays finite
    assert all(0 < level <= 1 for level in extreme)  # finite; the upper one may round to the largest resample


def test_bca_for_a_right_skewed_mean_reaches_further_right():
    values = np.random.default_rng(4).lognormal(sigma=1.2, size=40)
    bca = bootstrap_mean_ci(values, seed=2)
    pct = bootstrap_mean_ci(values, seed=2, method="percentile")
    assert bca.high > pct.high and bca.low > pct.low


def test_same_seed_same_interval_and_nan_left_out():
    values = np.random.default_rng(0).normal(size=50)
    with_nan = np.concatenate([values, [np.nan, np.inf]])
    assert bootstrap_mean_ci(values, seed=7) == bootstrap_mean_ci(values, seed=7)
    assert bootstrap_mean_ci(with_nan, seed=7) == bootstrap_mean_ci(values, seed=7)
    assert bootstrap_mean_ci(values, seed=7) != bootstrap_mean_ci(values, seed=8)


@pytest.mark.parametrize("method", CI_METHODS)
def test_degenerate_samples(method):
    assert bootstrap_mean_ci([3.0], method=method) == bootstrap_mean_ci([3.0, np.nan], method=method)
    one = bootstrap_mean_ci([3.0], method=method)
    assert (one.mean, one.low, one.high, one.n) == (3.0, 3.0, 3.0, 1)
    same = bootstrap_mean_ci(np.full(20, 0.1), method=method)
    assert (same.low, same.high, same.n) == (same.mean, same.mean, 20)
    assert all(math.isnan(x) for x in (lambda e: (e.mean, e.low, e.high))(bootstrap_mean_ci([np.nan], method=method)))


def test_unknown_method_is_one_line():
    with pytest.raises(ConfigError, match="unknown method 'bc'"):
        bootstrap_mean_ci([1.0, 2.0], method="bc")


def _sign_flip_reference(d: np.ndarray, resamples: int, seed: int) -> float:
    """The sign-flip p as defined: draw the +-1 signs (NumPy's integers, in chunks of 2000 rows), count the flipped
    means at least as far from 0 as the observed one."""
    rng = np.random.default_rng(seed)
    hits = 0
    for start in range(0, resamples, 2000):
        signs = rng.integers(0, 2, size=(min(2000, resamples - start), d.size)) * 2 - 1
        hits += int(np.sum(np.abs((signs * d).mean(axis=1)) >= abs(d.mean()) - 1e-12 * (1 + abs(d.mean()))))
    return (1 + hits) / (1 + resamples)


def test_sign_flip_p_reuses_its_signs_without_changing_a_digit(monkeypatch):
    from advspatial.statistics import estimates

    rng = np.random.default_rng(4)
    samples = [rng.normal(0.1, 1.0, n) for n in (3, 17, 184, 460)] + [np.round(rng.normal(0, 1, 40), 1)]
    samples.append(0.1 * rng.choice([-1.0, 1.0], 31))  # equal magnitudes: many flips as far out as observed
    monkeypatch.setattr(estimates, "SIGN_ENTRIES", 200 * 4500)  # room for a few sets only: eviction is exercised
    estimates._kept_signs.clear()
    for d in samples * 2:  # the second round reads the kept signs where they were kept
        for seed, resamples in ((0, 20000), (3, 4500), (1, 7)):
            assert sign_flip_p(d, resamples, seed) == _sign_flip_reference(d, resamples, seed)
        assert sum(n * r for _, n, r in estimates._kept_signs) <= estimates.SIGN_ENTRIES
