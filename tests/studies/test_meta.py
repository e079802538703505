"""Random-effects meta-analysis across models: known answers from statsmodels, the prediction interval, the
meta-regression against statsmodels' WLS, properties, coverage by simulation and one-line errors."""

from __future__ import annotations

import json
import math
from dataclasses import fields

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from advspatial.errors import ConfigError, ShapeError
from advspatial.studies.meta import MetaAnalysis, MetaRegression, meta_regression, random_effects

# (effects, variances): moderate heterogeneity; large heterogeneity (I^2 > 0.9); two models; effects far closer
# together than their variances allow, so the untruncated DL tau2 is negative and ours is 0
MODERATE = ([0.1, 0.3, 0.35, 0.65, 0.45, 0.15], [0.03, 0.03, 0.05, 0.01, 0.05, 0.02])
LARGE = ([-1.2, 0.5, 2.3, 0.1, 1.8, -0.4, 3.0], [0.02, 0.1, 0.05, 0.01, 0.2, 0.04, 0.08])
TWO = ([0.1, 0.9], [0.02, 0.03])
TRUNCATED = ([0.2, 0.22, 0.19, 0.21], [0.04, 0.05, 0.03, 0.06])

close = pytest.approx


def approx(value):
    return close(value, rel=1e-6, abs=1e-9)


def statsmodels_dl(effects, variances):
    from statsmodels.stats.meta_analysis import combine_effects

    return combine_effects(np.asarray(effects), np.asarray(variances), method_re="dl", use_t=False, alpha=0.05)


@pytest.mark.parametrize("data", [MODERATE, LARGE, TWO], ids=["moderate", "large", "two"])
@pytest.mark.parametrize("level", [0.95, 0.8])
def test_pooling_equals_statsmodels_dl(data, level):
    res = statsmodels_dl(*data)
    ours = random_effects(*data, level=level)
    assert res.tau2 > 0  # the random-effects branch, not the truncated one
    assert (ours.effect, ours.se) == approx((res.mean_effect_re, res.sd_eff_w_re))
    assert (ours.tau2, ours.i2, ours.q, ours.q_p) == approx((res.tau2, res.i2, res.q, res.test_homogeneity().pvalue))
    assert (ours.fixed_effect, ours.fixed_se) == approx((res.mean_effect_fe, res.sd_eff_w_fe))
    frame = res.summary_frame(alpha=1 - level, use_t=False)
    assert list(ours.weights) == approx(list(frame["w_re"].iloc[: ours.k]))
    assert ours.df == ours.k - 1 == res.df_resid


@pytest.mark.parametrize("data", [LARGE, TWO], ids=["large", "two"])
@pytest.mark.parametrize("level", [0.95, 0.8])
def test_ci_is_statsmodels_hksj_when_its_scale_is_at_least_one(data, level):
    """statsmodels' random-effects "wls" row of ``conf_int(use_t=True)`` is the Hartung-Knapp-Sidik-Jonkman interval
    (t with k - 1 df at the HKSJ standard error); where the HKSJ scale is >= 1 ours is that interval."""
    res = statsmodels_dl(*data)
    ours = random_effects(*data, level=level)
    assert ours.hk_scale >= 1 - 1e-12
    assert ours.hk_scale == approx(res.scale_hksj_re)
    assert ours.hk_se == approx(res.sd_eff_w_re_hksj)
    assert (ours.low, ours.high) == approx(tuple(res.conf_int(alpha=1 - level, use_t=True)[3]))
    assert ours.t == approx(res.mean_effect_re / res.sd_eff_w_re_hksj)
    assert ours.p == approx(2 * stats.t.sf(abs(res.mean_effect_re / res.sd_eff_w_re_hksj), df=ours.k - 1))


@pytest.mark.parametrize("data", [MODERATE, TRUNCATED], ids=["moderate", "truncated"])
def test_ci_never_narrower_than_t_at_the_dersimonian_laird_se(data):
    """Where the effects agree better than their variances predict, plain HKSJ is narrower than the DL interval
    (and of zero width when they agree exactly); the modified form keeps the scale at 1 there: the t interval at
    the DL standard error (statsmodels' random-effects row of ``conf_int(use_t=True)``)."""
    with np.errstate(invalid="ignore"):  # statsmodels' sqrt of a negative tau2 on the truncated data
        res = statsmodels_dl(*data)
        t_at_dl = tuple(res.conf_int(alpha=0.05, use_t=True)[1]) if res.tau2 >= 0 else None
    ours = random_effects(*data)
    assert ours.hk_scale < 1 and ours.hk_se == ours.se
    plain_half = stats.t.ppf(0.975, ours.k - 1) * math.sqrt(ours.hk_scale) * ours.se
    assert ours.high - ours.effect > plain_half  # wider than plain HKSJ
    if t_at_dl is not None:
        assert (ours.low, ours.high) == approx(t_at_dl)
    else:  # tau2 truncated at 0: the DL se is the fixed-effect se
        half = stats.t.ppf(0.975, ours.k - 1) * res.sd_eff_w_fe
        assert (ours.low, ours.high) == approx((res.mean_effect_fe - half, res.mean_effect_fe + half))


def test_few_heterogeneous_models_are_not_supported_by_a_normal_interval():
    """Three models with I² near 0.97 (per-model effects and 95% CIs of a CNN-versus-ViT study): the normal DL
    interval excludes 0, the HKSJ interval (t with 2 df) includes it."""
    rows = [(0.014, 0.010, 0.017), (0.016, 0.013, 0.019), (0.057, 0.048, 0.066)]
    effects = [m for m, _, _ in rows]
    variances = [((hi - lo) / (2 * stats.norm.ppf(0.975))) ** 2 for _, lo, hi in rows]
    normal = statsmodels_dl(effects, variances).conf_int(alpha=0.05, use_t=False)[1]
    ours = random_effects(effects, variances)
    assert normal[0] > 0 and ours.i2 > 0.95
    assert ours.low < 0 < ours.high and ours.p > 0.1
    assert ours.prediction_low < ours.low and ours.high < ours.prediction_high


def test_negative_dl_tau2_is_truncated_to_the_fixed_effect_model():
    """statsmodels 0.15 does not truncate the DL tau2: here its tau2 and I^2 are negative (and its random-effects
    se NaN). Truncated at 0, the random-effects model is the common-effect model, so ours must equal statsmodels'
    fixed-effect row, with tau2 = max(0, tau2) and I^2 = max(0, I^2)."""
    with np.errstate(invalid="ignore"):  # its sqrt of a negative variance
        res = statsmodels_dl(*TRUNCATED)
    ours = random_effects(*TRUNCATED)
    assert res.tau2 < 0 and res.i2 < 0
    assert (ours.tau2, ours.i2) == (0.0, 0.0)
    assert (ours.effect, ours.se) == approx((res.mean_effect_fe, res.sd_eff_w_fe))
    assert (ours.effect, ours.se) == (ours.fixed_effect, ours.fixed_se)
    assert (ours.q, ours.q_p) == approx((res.q, res.test_homogeneity().pvalue))
    assert list(ours.weights) == approx(list(res.weights_rel_fe))


@pytest.mark.parametrize("data", [MODERATE, LARGE, TRUNCATED], ids=["moderate", "large", "truncated"])
@pytest.mark.parametrize("level", [0.95, 0.9])
def test_prediction_interval_is_higgins_thompson_spiegelhalter_at_the_hksj_se(data, level):
    ours = random_effects(*data, level=level)
    k = len(data[0])
    half = stats.t.ppf(1 - (1 - level) / 2, df=k - 2) * math.sqrt(ours.tau2 + ours.hk_se ** 2)
    assert (ours.prediction_low, ours.prediction_high) == approx((ours.effect - half, ours.effect + half))
    assert ours.prediction_low < ours.low and ours.high < ours.prediction_high  # wider than the CI (t, + tau2)


def test_one_model_is_refused_and_two_have_no_prediction_interval():
    with pytest.raises(ConfigError, match=r"random_effects needs k >= 2 models .*got k = 1"):
        random_effects([0.3], [0.1])
    two = random_effects(*TWO)
    assert math.isfinite(two.q_p) and math.isnan(two.prediction_low) and math.isnan(two.prediction_high)
    assert two.df == 1 and two.high - two.low > 2 * stats.norm.ppf(0.975) * two.hk_se  # t with 1 df
    same = random_effects([0.4, 0.4, 0.4], [0.1, 0.2, 0.3])  # Q == 0: I^2 is 0, not 0/0; the CI keeps its width
    assert (same.effect, same.q, same.i2, same.tau2, same.hk_scale) == (0.4, 0.0, 0.0, 0.0, 0.0)
    assert same.hk_se == same.se > 0 and same.low < 0.4 < same.high


def test_as_dict_is_json_ready():
    ours = random_effects(*TWO)
    d = ours.as_dict()
    assert list(d) == [f.name for f in fields(MetaAnalysis)] and isinstance(d["weights"], list)
    assert json.loads(json.dumps(d))["weights"] == d["weights"]
    assert math.isnan(json.loads(json.dumps(d))["prediction_low"])  # NaN written as NaN
    reg = meta_regression(*LARGE, covariate_values=np.arange(7.0), covariate="depth")
    assert json.loads(json.dumps(reg.as_dict())) == reg.as_dict()
    assert list(reg.as_dict()) == [f.name for f in fields(MetaRegression)]


# -- meta-regression ------------------------------------------------------------------------------------------------

REGRESSION = ([0.1, 0.5, 0.2, 0.9, 0.6, 1.3, 0.7, 1.6], [0.02, 0.05, 0.03, 0.04, 0.01, 0.06, 0.02, 0.03],
              [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0])


@pytest.mark.parametrize("level", [0.95, 0.9])
def test_meta_regression_equals_statsmodels_wls_at_our_tau2(level):
    """Our slope is WLS at weights 1/(v + tau2). statsmodels' plain ``WLS.fit()`` multiplies (X'W*X)^-1 by the
    estimated residual variance (weighted SSR / (k - 2), the Knapp-Hartung-type scale); the mixed-effects model
    knows the variances, so its scale is 1: ``fit(cov_type="fixed scale")`` (scale 1 by default), whose bse is
    sqrt of the diagonal of ``normalized_cov_params`` = (X'W*X)^-1, is the right comparison."""
    from statsmodels.api import WLS, add_constant

    y, v, x = (np.asarray(a) for a in REGRESSION)
    ours = meta_regression(y, v, x, covariate="depth", level=level)
    assert ours.tau2 > 0 and (ours.covariate, ours.k) == ("depth", 8)
    design = add_constant(x)
    fixed_scale = WLS(y, design, weights=1 / (v + ours.tau2)).fit(cov_type="fixed scale")
    assert (ours.intercept, ours.slope) == approx(tuple(fixed_scale.params))
    assert ours.se == approx(fixed_scale.bse[1])
    assert ours.se == approx(math.sqrt(fixed_scale.normalized_cov_params[1, 1]))
    assert (ours.low, ours.high) == approx(tuple(fixed_scale.conf_int(alpha=1 - level)[1]))
    assert (ours.z, ours.p) == approx((fixed_scale.tvalues[1], fixed_scale.pvalues[1]))
    plain = WLS(y, design, weights=1 / (v + ours.tau2)).fit()
    assert plain.bse[1] == approx(ours.se * math.sqrt(plain.scale)) and plain.scale != approx(1.0)


def test_meta_regression_tau2_is_the_moment_estimator():
    """tau2 from statsmodels' fixed-effect WLS (its weighted SSR is Q_E) and the trace of the projection
    P = W - W X (X'WX)^-1 X'W, which is the denominator sum w - tr((X'WX)^-1 X'W^2 X) written another way."""
    from statsmodels.api import WLS, add_constant

    y, v, x = (np.asarray(a) for a in REGRESSION)
    design, w = add_constant(x), np.diag(1 / v)
    q_e = WLS(y, design, weights=1 / v).fit().ssr
    projection = w - w @ design @ np.linalg.inv(design.T @ w @ design) @ design.T @ w
    assert meta_regression(y, v, x).tau2 == approx(max(0.0, (q_e - (len(y) - 2)) / np.trace(projection)))


def test_exact_linear_effects_are_recovered_with_no_residual_heterogeneity():
    x = np.array([0.0, 1.0, 2.0, 3.0, 4.5, 7.0])
    y = 0.5 + 2.0 * x
    ours = meta_regression(y, np.full(6, 0.1), x)
    assert (ours.intercept, ours.slope, ours.tau2) == (close(0.5, abs=1e-12), close(2.0, rel=1e-12), 0.0)
    assert ours.se == close(math.sqrt(0.1 / np.sum((x - x.mean()) ** 2)), rel=1e-12)
    assert random_effects(y, np.full(6, 0.1)).tau2 > 1  # all of that spread is the covariate's


# -- properties -----------------------------------------------------------------------------------------------------

FINITE = {"allow_nan": False, "allow_infinity": False}


@st.composite
def meta_inputs(draw, effect_bound=10.0, variance_range=(1e-3, 10.0)):
    k = draw(st.integers(2, 12))
    effects = draw(st.lists(st.floats(-effect_bound, effect_bound, **FINITE), min_size=k, max_size=k))
    variances = draw(st.lists(st.floats(*variance_range, **FINITE), min_size=k, max_size=k))
    return effects, variances


@given(meta_inputs())
@settings(max_examples=150, deadline=None)
def test_pooled_effect_lies_within_the_effects_and_tau2_i2_are_in_range(data):
    ours = random_effects(*data)
    assert min(data[0]) <= ours.effect <= max(data[0]) and min(data[0]) <= ours.fixed_effect <= max(data[0])
    assert ours.tau2 >= 0 and 0 <= ours.i2 < 1 and ours.q >= 0
    assert sum(ours.weights) == close(1.0) and all(w > 0 for w in ours.weights)
    assert ours.low <= ours.effect <= ours.high and ours.se >= ours.fixed_se


@given(meta_inputs(), st.sampled_from([0.8, 0.9, 0.95, 0.99]))
@settings(max_examples=150, deadline=None)
def test_hksj_interval_is_never_narrower_than_t_at_the_dl_se_and_inside_the_prediction_interval(data, level):
    ours = random_effects(*data, level=level)
    t = stats.t.ppf((1 + level) / 2, ours.k - 1)
    assert ours.hk_se >= ours.se > 0 and ours.hk_scale >= 0
    assert ours.high - ours.low >= 2 * t * ours.se * (1 - 1e-12) > 0
    assert (ours.high - ours.effect) == close(ours.effect - ours.low, rel=1e-9, abs=1e-12)  # symmetric
    assert 0 <= ours.p <= 1
    if abs(abs(ours.t) - t) > 1e-9 * t:  # away from the boundary, the test and the CI agree
        assert (ours.p < 1 - level) == (not ours.low <= 0 <= ours.high)
    if ours.k >= 3:
        assert ours.prediction_low <= ours.low and ours.high <= ours.prediction_high
    else:
        assert math.isnan(ours.prediction_low) and math.isnan(ours.prediction_high)


@given(meta_inputs(), st.randoms(use_true_random=False))
@settings(max_examples=100, deadline=None)
def test_permuting_the_models_permutes_only_the_weights(data, rnd):
    order = list(range(len(data[0])))
    rnd.shuffle(order)
    ours = random_effects(*data)
    permuted = random_effects([data[0][i] for i in order], [data[1][i] for i in order])
    for name in ("effect", "se", "low", "high", "tau2", "i2", "q", "fixed_effect", "fixed_se"):
        assert getattr(permuted, name) == close(getattr(ours, name), rel=1e-9, abs=1e-12), name
    assert list(permuted.weights) == close([ours.weights[i] for i in order], rel=1e-9, abs=1e-12)


@given(meta_inputs(effect_bound=0.5, variance_range=(4.0, 10.0)), st.floats(0.5, 100.0))
@settings(max_examples=100, deadline=None)
def test_scaling_the_variances_without_heterogeneity_keeps_the_effect(data, c):
    """Effects within +-0.5 and variances >= 4 give Q <= k/4, so Q / c <= k - 1 for c >= 1/2: tau2 is 0 on both."""
    ours = random_effects(*data)
    scaled = random_effects(data[0], [c * v for v in data[1]])
    assert ours.tau2 == 0 and scaled.tau2 == 0
    assert scaled.effect == close(ours.effect, rel=1e-9, abs=1e-12)
    assert scaled.se == close(ours.se * math.sqrt(c), rel=1e-9)


def coverage(k: int, tau2: float, runs: int = 2000) -> tuple[float, float]:
    """(share of our CIs, share of the normal DL CIs) covering the true mean effect over ``runs`` meta-analyses of
    ``k`` models whose true effects spread with variance ``tau2``; sampling variances uniform in [0.05, 1]."""
    rng = np.random.default_rng(20240601)
    truth, ours_in, normal_in = 0.3, 0, 0
    for _ in range(runs):
        v = rng.uniform(0.05, 1.0, size=k)
        ours = random_effects(rng.normal(truth + rng.normal(0, math.sqrt(tau2), size=k), np.sqrt(v)), v)
        ours_in += ours.low <= truth <= ours.high
        normal_in += abs(ours.effect - truth) <= stats.norm.ppf(0.975) * ours.se
    return ours_in / runs, normal_in / runs


def test_ci_covers_the_true_effect_without_heterogeneity():
    """2000 meta-analyses of k = 5 models with true tau2 = 0: the 95% CI covers at least 95% (the modified HKSJ is
    conservative there); the binomial sd of the share is 0.005."""
    ours, _ = coverage(5, 0.0)
    assert 0.94 <= ours <= 1.0


def test_ci_keeps_its_coverage_with_three_heterogeneous_models_where_the_normal_one_loses_it():
    """k = 3 models, tau2 = 1 (large next to the sampling variances): the normal DL interval covers about 86%,
    ours at least 94% (2000 runs each, binomial sd about 0.005-0.008)."""
    ours, normal = coverage(3, 1.0)
    assert ours >= 0.94 and normal <= 0.90


# -- bad input ------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("call,error,message", [
    (lambda: random_effects([0.1, 0.2], [0.1]), ShapeError, r"effects and variances differ in length \(2 vs 1\)"),
    (lambda: random_effects([0.1, 0.2], [0.1, 0.0]), ConfigError, r"variances\[1\]=0.0 is not finite and > 0"),
    (lambda: random_effects([0.1, 0.2], [-0.1, 0.1]), ConfigError, r"variances\[0\]=-0.1 is not finite and > 0"),
    (lambda: random_effects([0.1, 0.2], [0.1, np.nan]), ConfigError, r"variances\[1\]=nan is not finite and > 0"),
    (lambda: random_effects([0.1, np.inf], [0.1, 0.1]), ConfigError, r"effects\[1\]=inf is not finite"),
    (lambda: random_effects([], []), ConfigError, r"random_effects needs k >= 2 models .*got k = 0"),
    (lambda: random_effects([0.1], [0.1]), ConfigError, r"random_effects needs k >= 2 models .*got k = 1"),
    (lambda: random_effects([[0.1]], [[0.1]]), ShapeError, r"effects must be one value per model"),
    (lambda: random_effects([0.1], [0.1], level=0.0), ConfigError, r"level=0.0 is out of range; valid: \(0, 1\)"),
    (lambda: random_effects([0.1], [0.1], level=1.0), ConfigError, r"level=1.0 is out of range; valid: \(0, 1\)"),
    (lambda: random_effects([0.1], [0.1], level=95), ConfigError, r"level=95 is out of range"),
    (lambda: meta_regression([1, 2, 3], [1, 1, 1], [2, 2, 2], "depth"), ConfigError,
     r"covariate 'depth' is constant \(2 on every model\)"),
    (lambda: meta_regression([1, 2], [1, 1], [1, 2]), ConfigError, r"meta_regression needs k >= 3 models"),
    (lambda: meta_regression([1, 2, 3], [1, 1, 1], [1, 2]), ShapeError, r"has 2 values for 3 effects"),
    (lambda: meta_regression([1, 2, 3], [1, 1, 1], [1, np.nan, 2]), ConfigError,
     r"covariate_values\[1\]=nan is not finite"),
    (lambda: meta_regression([1, 2, 3], [1, 1, 1], [1, 2, 3], level=1.5), ConfigError, r"level=1.5 is out of range"),
])
def test_bad_input_is_one_line(call, error, message):
    with pytest.raises(error, match=message) as caught:
        call()
    assert "\n" not in str(caught.value)
