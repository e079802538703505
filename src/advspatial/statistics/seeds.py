"""The effect of a training *procedure*: training runs (seeds) crossed with test images.

Part of the statistics engine (:mod:`advspatial.statistics.inference`, which names everything here too).

A claim such as "localized training raises robust accuracy over natural training" is about a procedure,
not about the few models one run happened to train. Each training seed ``s`` gives its own model of every
procedure, and every model is evaluated on the same ``N`` images, so the per-image differences form an
(S, N) table: seeds crossed with images. Averaging each image over the seeds and bootstrapping images
(what the experiments did before) treats the S models as fixed: its CI leaves out the between-run
variance and under-covers when runs differ more than images do (tests/statistics/test_seeds.py measures it).

:func:`crossed_mean_ci` gives the grand mean with a CI that carries both sources, each seed's own mean
(the per-seed Δ a verdict needs for its sign rule, :func:`~advspatial.statistics.verdicts.verdict`), and a
two-sided p from the same t statistic and degrees of freedom, so p < 1 - level exactly when the CI
excludes 0.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import ShapeError, check_range
from .estimates import Estimate, no_difference_bound


@dataclass(frozen=True)
class SeedEffect:
    """A mean over training seeds and images with its CI, p and each seed's own mean.

    Attributes:
        effect: the grand mean with its CI; ``n`` counts the images (those finite in every seed).
        p: two-sided p of the grand mean against 0 (the same t and df as the CI).
        per_seed: each seed's mean over those images, in seed order.
        df: the degrees of freedom of the t quantile (NaN where no CI can be formed).
    """

    effect: Estimate
    p: float
    per_seed: tuple[float, ...]
    df: float

    def as_dict(self) -> dict[str, Any]:
        return {"effect": self.effect.as_dict(), "p": self.p, "per_seed": list(self.per_seed), "df": self.df}


def seed_table(values: Any) -> np.ndarray:
    """(S, N) float64 array of per-seed, per-image values with every image that is not finite in some seed left
    out (the design stays crossed: each kept image is measured on every seed's model)."""
    arr = values.detach().cpu().double().numpy() if hasattr(values, "detach") else np.asarray(values, float)
    if arr.ndim != 2:
        raise ShapeError(f"values must be an (S, N) table of seeds x images, got shape {tuple(arr.shape)}")
    return arr[:, np.isfinite(arr).all(axis=0)]


def crossed_mean_ci(values: Any, level: float = 0.95, *, shares: bool = False) -> SeedEffect:
    """The mean of an (S seeds, N images) table with a t-interval that carries between-run variance.

    Model: d[s, i] = mu + u_s + v_i + e_si, seeds and images both random (a two-way crossed random-effects
    design, the one of multi-reader multi-case studies: readers are seeds, cases are images; Obuchowski &
    Rockette 1995, Hillis 2007). With the mean squares of seeds, images and residual (MS_s, MS_i, MS_r),
    Var(mean) = s_u^2/S + s_v^2/N + s_e^2/(SN) has the unbiased estimate (MS_s + MS_i - MS_r) / (SN). Used
    here as (A + B) / (SN) with A = max(MS_s, MS_r) and B = max(MS_i - MS_r, 0): the seed term is never
    estimated below the residual and the image term never below 0, so the variance is never negative and
    the seed term is never dropped. The t quantile takes Satterthwaite's degrees of freedom (A with S - 1,
    B with those of MS_i - MS_r), so when runs dominate it is a t with S - 1 df over the per-seed means, and
    when images dominate a t over images.

    Why not a two-stage bootstrap (seeds, then images within each seed): with S = 3 seeds there are only 10
    distinct seed resamples, and a bootstrap of 3 means has the spread of (S-1)/S of their variance with
    normal-like tails, where the truth needs a t with 2 df (quantile 4.30, not 1.96): its coverage with 3
    seeds is about 0.75-0.77 (5 seeds: 0.82-0.85) when runs dominate (tests/statistics/test_seeds.py).
    Resampling images within each seed separately also breaks the crossing (the same images in every seed),
    and the image-only bootstrap of the per-image means over seeds covers 0.09 there. The t-interval
    above holds >= 0.94 with 3 and 5 seeds in that test, honest at the price of width: with 3 seeds the
    between-run variance is estimated on 2 df. Where the per-cell noise dominates it is conservative (coverage
    0.97-1.0), because the seed term is floored at the residual; letting the residual's many df stand in for
    the seed term whenever MS_s < MS_r narrows the interval by about a fifth but covered only 0.93 when the
    seed and noise terms are of one size (N s_u^2 ~ s_e^2, 3 seeds), so the floor keeps S - 1 df.

    ``values``: (S, N); an image not finite in every seed is left out (:func:`seed_table`). ``shares``: the
    values are differences of per-image shares in [0, 1] (correctness); when no entry differs from 0 the
    interval is the exact bound of :func:`~advspatial.statistics.estimates.no_difference_bound` over the N
    images (not a zero-width interval) and p = 1. Fewer than 2 seeds or 2 images: the mean and per-seed means
    with a NaN CI, p and df (between-run variance cannot be estimated from one run).
    """
    from scipy.stats import t as student_t  # on first use: scipy.stats costs a third of a second to import

    check_range("level", level, 0.0, 1.0, low_inclusive=False, high_inclusive=False)
    d = seed_table(values)
    s, n = d.shape
    per_seed = tuple(float(m) for m in d.mean(axis=1)) if n else tuple(math.nan for _ in range(s))
    if s == 0 or n == 0:
        return SeedEffect(Estimate(math.nan, math.nan, math.nan, n), math.nan, per_seed, math.nan)
    mean = float(d.mean())
    if s < 2 or n < 2:
        return SeedEffect(Estimate(mean, math.nan, math.nan, n), math.nan, per_seed, math.nan)
    if shares and not np.any(d != 0):
        bound = no_difference_bound(n, level)
        return SeedEffect(Estimate(0.0, -bound, bound, n), 1.0, per_seed, math.nan)
    if not np.any(d != d.flat[0]):  # every entry equal: no spread to estimate
        value = float(d.flat[0])
        return SeedEffect(Estimate(value, value, value, n), 1.0 if value == 0 else 0.0, per_seed, math.nan)
    variance, df = _crossed_variance(d)
    se = math.sqrt(variance)
    half = float(student_t.ppf(0.5 + level / 2, df)) * se
    p = float(min(1.0, 2.0 * student_t.sf(abs(mean) / se, df)))
    return SeedEffect(Estimate(mean, mean - half, mean + half, n), p, per_seed, float(df))


def _crossed_variance(d: np.ndarray) -> tuple[float, float]:
    """Var(grand mean) of an (S, N) table, S, N >= 2, by :func:`crossed_mean_ci`'s rule, and its Satterthwaite df."""
    s, n = d.shape
    grand = d.mean()
    rows = d.mean(axis=1)
    cols = d.mean(axis=0)
    ms_seed = n * float(np.sum((rows - grand) ** 2)) / (s - 1)
    ms_image = s * float(np.sum((cols - grand) ** 2)) / (n - 1)
    residual = d - rows[:, None] - cols[None, :] + grand
    df_res = (s - 1) * (n - 1)
    ms_res = float(np.sum(residual ** 2)) / df_res
    a = max(ms_seed, ms_res)
    b = max(ms_image - ms_res, 0.0)
    spread = a ** 2 / (s - 1) + ((ms_image ** 2 / (n - 1) + ms_res ** 2 / df_res) if b > 0 else 0.0)
    df = (a + b) ** 2 / spread if spread > 0 else float(s - 1)
    return (a + b) / (s * n), df
