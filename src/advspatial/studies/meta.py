"""Random-effects meta-analysis across models: DerSimonian-Laird pooling of per-model effects with a
Hartung-Knapp-Sidik-Jonkman confidence interval, and a one-covariate mixed-effects meta-regression.

An effect measured on several models, each with its own standard error, speaks about models in general only when
the spread between models is part of the model: each model's true effect is drawn from a distribution with
between-model variance tau2, and the pooled effect weights model i by 1 / (v_i + tau2) (DerSimonian & Laird 1986).
A study pools few models (often 3 to 5), where the normal-quantile CI of DerSimonian-Laird is far too narrow: it
treats tau2, estimated from k - 1 degrees of freedom, as known. The Hartung-Knapp-Sidik-Jonkman (HKSJ) interval
rescales the standard error by the weighted spread of the effects and takes t quantiles with k - 1 df (Hartung &
Knapp 2001; Sidik & Jonkman 2002), in the modified form that never lets the scale fall below 1 (Roever, Knapp &
Friede 2015), so the interval is never narrower than the same t interval at the DerSimonian-Laird standard error
(plain HKSJ shrinks to zero width when the effects happen to agree). The prediction interval says where a new
model's true effect would lie (Higgins, Thompson & Spiegelhalter 2009), here with the HKSJ standard error, so it
always contains the CI. Checked against ``statsmodels.stats.meta_analysis.combine_effects``
(tests/studies/test_meta.py).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from ..errors import ConfigError, ShapeError, check_range


@dataclass(frozen=True)
class MetaAnalysis:
    """DerSimonian-Laird random-effects pooling of k >= 2 per-model effects, with its HKSJ confidence interval."""

    k: int
    effect: float  # random-effects pooled effect
    se: float  # its DerSimonian-Laird standard error sqrt(1 / sum w*)
    hk_scale: float  # the HKSJ scale: sum w* (y - effect)^2 / (k - 1)
    hk_se: float  # the HKSJ standard error: se * sqrt(max(1, hk_scale))
    df: int  # degrees of freedom of the CI and the test: k - 1
    low: float  # level CI of the pooled effect: effect -+ t_{k-1} hk_se
    high: float
    t: float  # effect / hk_se (H0: 0)
    p: float  # its two-sided t_{k-1} p
    tau2: float  # DL between-model variance, >= 0
    i2: float  # share of the spread beyond sampling error: max(0, (Q - (k-1)) / Q), 0 when Q == 0
    q: float  # Cochran's Q
    q_p: float  # its chi2(k-1) upper-tail p
    prediction_low: float  # where a new model's true effect lies (t with k-2 df); NaN when k < 3
    prediction_high: float
    fixed_effect: float  # inverse-variance common-effect estimate
    fixed_se: float  # its standard error sqrt(1 / sum w)
    weights: tuple[float, ...]  # normalized random-effects weights (sum 1), in input order
    level: float

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready: the weights as a list; NaN stays NaN."""
        return {**asdict(self), "weights": list(self.weights)}


@dataclass(frozen=True)
class MetaRegression:
    """Mixed-effects meta-regression of the effects on one covariate (method-of-moments residual tau2)."""

    covariate: str
    k: int
    intercept: float
    slope: float  # change of the effect per unit of the covariate
    se: float  # its standard error from (X'W*X)^-1 (scale 1, as in the random-effects model)
    low: float  # level CI of the slope, normal quantiles
    high: float
    z: float  # Wald z of the slope (H0: 0)
    p: float  # its two-sided normal p
    tau2: float  # residual between-model variance, >= 0
    level: float

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _vector(name: str, values: Any) -> np.ndarray:
    arr = np.asarray(values, dtype=float)
    if arr.ndim != 1:
        raise ShapeError(f"{name} must be one value per model (1-D); got shape {arr.shape}")
    return arr


def _finite(name: str, arr: np.ndarray, positive: bool = False) -> None:
    """One-line ConfigError naming the first entry that is not finite (or not > 0 when ``positive``)."""
    bad = ~np.isfinite(arr) | (arr <= 0 if positive else False)
    if np.any(bad):
        i = int(np.flatnonzero(bad)[0])
        valid = "finite and > 0" if positive else "finite"
        raise ConfigError(f"{name}[{i}]={float(arr[i])!r} is not {valid}; valid: {valid} numbers")


def _checked(effects: Any, variances: Any, level: float, fewest: int, caller: str) -> tuple[np.ndarray, np.ndarray]:
    """The effects and variances as float arrays, after checking the level, the lengths and every value."""
    check_range("level", level, 0.0, 1.0, low_inclusive=False, high_inclusive=False)
    y, v = _vector("effects", effects), _vector("variances", variances)
    if y.size != v.size:
        raise ShapeError(f"effects and variances differ in length ({y.size} vs {v.size}); valid: one of each per model")
    if y.size < fewest:
        raise ConfigError(f"{caller} needs k >= {fewest} models (one effect each); got k = {y.size}")
    _finite("effects", y)
    _finite("variances", v, positive=True)
    return y, v


def _weighted_mean(y: np.ndarray, w: np.ndarray) -> float:
    """sum w y / sum w, kept within [min y, max y] (a convex combination, which rounding could leave by an ulp:
    so one effect, or equal effects, come back exactly)."""
    return float(np.clip(np.sum(w * y) / np.sum(w), y.min(), y.max()))


def _normal_test(estimate: float, se: float, level: float) -> tuple[float, float, float, float]:
    """(low, high, z, two-sided p) of a normal Wald test of ``estimate`` against 0."""
    from scipy.stats import norm  # on first use: scipy.stats costs a third of a second to import

    half = float(norm.ppf((1.0 + level) / 2.0)) * se
    z = estimate / se
    return estimate - half, estimate + half, z, float(2.0 * norm.sf(abs(z)))


def random_effects(effects: Any, variances: Any, level: float = 0.95) -> MetaAnalysis:
    """DerSimonian-Laird random-effects meta-analysis of k >= 2 effects with their sampling variances, with the
    modified Hartung-Knapp-Sidik-Jonkman CI and test.

    tau2 = max(0, (Q - (k-1)) / (sum w - sum w^2 / sum w)) with w = 1/v and Q = sum w (y - fixed)^2; the pooled
    effect weights by w* = 1 / (v + tau2), with the DL standard error se = sqrt(1 / sum w*) (statsmodels
    ``combine_effects(method_re="dl")``, except that its tau2 is not truncated at 0). The CI is effect -+ t_{k-1}
    hk_se with hk_se = se sqrt(max(1, sum w* (y - effect)^2 / (k - 1))): statsmodels' HKSJ interval
    (``conf_int(use_t=True)``, its random-effects "wls" row) whenever that scale is at least 1, and the t interval
    at the DL standard error otherwise. The prediction interval effect -+ t_{k-2} sqrt(tau2 + hk_se^2) needs
    k >= 3. One model is refused: no spread between models can be estimated from it.
    """
    from scipy.stats import chi2, t as student_t  # on first use: scipy.stats costs a third of a second to import

    y, v = _checked(effects, variances, level, 2, "random_effects")
    k = y.size
    w = 1.0 / v
    fixed = _weighted_mean(y, w)
    q = float(np.sum(w * (y - fixed) ** 2))
    c = float(w.sum() - np.sum(w * w) / w.sum())
    tau2 = max(0.0, (q - (k - 1)) / c) if c > 0 else 0.0
    w_re = 1.0 / (v + tau2)
    effect = _weighted_mean(y, w_re)
    se = math.sqrt(1.0 / float(w_re.sum()))
    hk_scale = float(np.sum(w_re * (y - effect) ** 2)) / (k - 1)
    hk_se = se * math.sqrt(max(1.0, hk_scale))
    low, high, t, p = _t_test(effect, hk_se, k - 1, level)
    pred_low = pred_high = math.nan
    if k >= 3:
        half = float(student_t.ppf((1.0 + level) / 2.0, k - 2)) * math.sqrt(tau2 + hk_se * hk_se)
        pred_low, pred_high = effect - half, effect + half
    return MetaAnalysis(
        k=k, effect=effect, se=se, hk_scale=hk_scale, hk_se=hk_se, df=k - 1, low=low, high=high, t=t, p=p,
        tau2=tau2, i2=max(0.0, (q - (k - 1)) / q) if q > 0 else 0.0, q=q, q_p=float(chi2.sf(q, k - 1)),
        prediction_low=pred_low, prediction_high=pred_high,
        fixed_effect=fixed, fixed_se=math.sqrt(1.0 / float(w.sum())),
        weights=tuple(float(x) for x in w_re / w_re.sum()), level=float(level),
    )


def _t_test(estimate: float, se: float, df: int, level: float) -> tuple[float, float, float, float]:
    """(low, high, t, two-sided p) of a t test with ``df`` degrees of freedom of ``estimate`` against 0."""
    from scipy.stats import t as student_t  # on first use: scipy.stats costs a third of a second to import

    half = float(student_t.ppf((1.0 + level) / 2.0, df)) * se
    t = estimate / se
    return estimate - half, estimate + half, t, float(2.0 * student_t.sf(abs(t), df))


def _wls(x: np.ndarray, y: np.ndarray, w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Coefficients and (X'WX)^-1 of the weighted least-squares fit of ``y`` on the design ``x``."""
    xtw = x.T * w
    cov = np.linalg.inv(xtw @ x)
    return cov @ (xtw @ y), cov


def meta_regression(
    effects: Any, variances: Any, covariate_values: Any, covariate: str = "", level: float = 0.95,
) -> MetaRegression:
    """Mixed-effects meta-regression y_i = a + b x_i + u_i + e_i, u ~ N(0, tau2), e_i ~ N(0, v_i), on k >= 3 models.

    Residual tau2 by the method of moments that generalises DL to a regression: with w = 1/v and Q_E the weighted
    residual sum of squares of the fixed-effect WLS fit, tau2 = max(0, (Q_E - (k-2)) / (sum w - tr((X'WX)^-1
    X'W^2 X))). Then WLS with weights 1/(v + tau2); the slope's se is from (X'W*X)^-1 at scale 1 and its CI and
    p are normal. The covariate is centred for the fit (slope, se and tau2 do not change; the intercept is at x=0).
    """
    y, v = _checked(effects, variances, level, 3, "meta_regression")
    name = f"covariate {covariate!r}" if covariate else "the covariate"
    x = _vector("covariate_values", covariate_values)
    if x.size != y.size:
        raise ShapeError(f"{name} has {x.size} values for {y.size} effects; valid: one per model")
    _finite("covariate_values", x)
    if np.ptp(x) == 0:
        raise ConfigError(f"{name} is constant ({float(x[0]):g} on every model); valid: one that varies across models")
    centre = float(x.mean())
    design = np.column_stack([np.ones(y.size), x - centre])
    w = 1.0 / v
    beta, cov = _wls(design, y, w)
    q_e = float(np.sum(w * (y - design @ beta) ** 2))
    denominator = float(w.sum() - np.trace(cov @ ((design.T * w * w) @ design)))
    tau2 = max(0.0, (q_e - (y.size - 2)) / denominator) if denominator > 0 else 0.0
    beta, cov = _wls(design, y, 1.0 / (v + tau2))
    slope, se = float(beta[1]), math.sqrt(float(cov[1, 1]))
    low, high, z, p = _normal_test(slope, se, level)
    return MetaRegression(
        covariate=covariate, k=int(y.size), intercept=float(beta[0]) - slope * centre, slope=slope, se=se,
        low=low, high=high, z=z, p=p, tau2=tau2, level=float(level),
    )
