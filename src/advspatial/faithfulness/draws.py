"""A randomization check repeated over independent re-initializations of the model, read with one CI over the
re-initializations ("draws") and the images.

Each check of the randomization row (:mod:`.randomization`, :mod:`.mprt`) gives one value per image for one randomly
re-initialized copy of the model, and two draws of the same check on the same images can differ far more than their
image-to-image CIs (Grad-CAM on a CIFAR-10 ResNet-20: an efficient-MPRT change of -0.42 under one draw and -0.07
under another, whatever the images). So the gate draws several copies, each from its own seed
(:func:`draw_seeds`), and reads a table of values with one row per draw and one column per image (crossed: every
draw meets the same images):

- the **value** is the mean over draws of each draw's aggregate over its images (the mean Spearman; the median
  complexity change), :func:`aggregate`;
- its **CI** (:func:`two_level_ci`) carries both sources of variation. For a mean (cascading and smooth MPRT's
  Spearman) it is the statistics engine's crossed random-effects t-interval
  (:func:`~advspatial.statistics.seeds.crossed_mean_ci`, draws in the place of training seeds). For efficient
  MPRT's median, which has no such closed form, it comes from the pigeonhole bootstrap (Owen 2007): draws
  resampled with replacement and images resampled with replacement independently of them, each resampled table
  aggregated as above; the replicates' standard deviation, scaled by sqrt(D / (D - 1)) (a bootstrap of D values
  has (D - 1) / D of their variance), times the t quantile with D - 1 degrees of freedom gives the interval. The
  bootstrap's percentile interval over 5 draws would cover the truth only 80-87% of the time when the draws
  differ more than the images (measured by simulation while building this; the scaled t-interval 93-97%, and more
  where the images dominate).

A table of one draw (a record written before the draws) is read by the one-level bootstrap over its images, as
before. :func:`simulated_error_rates` measures the three-outcome rule's error rates on such tables.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np

from ..errors import check_range
from ..runtime import stream_seed
from ..statistics.estimates import Estimate, bootstrap_mean_ci, bootstrap_median_ci
from ..statistics.outcomes import DEFAULT_POWER
from ..statistics.seeds import crossed_mean_ci

#: independent re-initializations of the model per randomization check of the RoI's explainer (the gate every
#: headline verdict rests on): at 5, the ResNet-20's Grad-CAM read failed, failed, undecided at three run seeds, at
#: 10 failed at all three (docs/methods.md, "The randomization checks")
DEFAULT_DRAWS = 10
#: re-initializations per check of the other explainers of a sensitivity panel, which qualify secondary rows only
PANEL_DRAWS = 5
#: resampled tables of the two-level bootstrap
RESAMPLES = 1000
#: the per-image aggregates of a draw: the Spearman checks average their images, efficient MPRT takes the median
STATISTICS = ("mean", "median")

_STREAM_DRAWS = 43
_STREAM_BOOTSTRAP = 44


def draw_seeds(seed: int, draws: int) -> list[int]:
    """The seed of each draw: the run's ``seed`` for the first (the one-draw check of earlier runs), then one
    independent stream per further draw. The same seed gives the same copies whatever the images or batch size."""
    check_range("draws", draws, 1)
    return [int(seed)] + [stream_seed(seed, _STREAM_DRAWS, d) for d in range(1, int(draws))]


def as_table(values: Any) -> np.ndarray:
    """``values`` as a float (draws, images) table: a list of per-draw lists, or one flat per-image list (one draw)."""
    table = np.asarray(values, dtype=float)
    return table.reshape(1, -1) if table.ndim == 1 else table


def _aggregate_rows(table: np.ndarray, statistic: str) -> np.ndarray:
    """(..., D, N) -> (..., D): each draw's mean or median over its finite images (NaN where it has none)."""
    finite = np.isfinite(table)
    out = np.full(table.shape[:-1], math.nan)
    has = finite.any(-1)
    if not has.any():
        return out
    if statistic == "mean":
        out[has] = np.where(finite, table, 0.0).sum(-1)[has] / finite.sum(-1)[has]
    else:
        out[has] = np.nanmedian(np.where(finite[has], table[has], math.nan), -1)
    return out


def aggregate(table: np.ndarray, statistic: str) -> float:
    """The check's value: the mean over draws of each draw's ``statistic`` (mean or median) over its images."""
    per_draw = _aggregate_rows(as_table(table), statistic)
    return float(np.nanmean(per_draw)) if np.isfinite(per_draw).any() else math.nan


def _resampled(table: np.ndarray, statistic: str, rng: np.random.Generator, resamples: int) -> np.ndarray:
    """The aggregate of ``resamples`` pigeonhole resamples (draws and images resampled independently)."""
    d, n = table.shape
    out = np.empty(resamples)
    chunk = max(1, 2_000_000 // max(1, d * n))
    for start in range(0, resamples, chunk):
        b = min(chunk, resamples - start)
        rows = rng.integers(0, d, (b, d))
        cols = rng.integers(0, n, (b, n))
        per_draw = _aggregate_rows(table[rows[:, :, None], cols[:, None, :]], statistic)
        with np.errstate(all="ignore"):
            out[start:start + b] = np.nanmean(np.where(np.isfinite(per_draw), per_draw, math.nan), -1)
    return out


def two_level_ci(values: Any, statistic: str = "mean", level: float = 0.95, seed: int = 0,
                 resamples: int = RESAMPLES) -> Estimate:
    """The check's value (:func:`aggregate`) with its ``level`` CI over draws and images (module docstring); ``n``
    counts the images with a defined value (for a mean: in every draw). One draw: the one-level bootstrap over the
    images."""
    from scipy import stats  # on first use: scipy.stats costs a third of a second to import

    if statistic not in STATISTICS:
        raise ValueError(f"statistic must be one of {STATISTICS}, got {statistic!r}")
    check_range("level", level, 0.0, 1.0, low_inclusive=False, high_inclusive=False)
    table = as_table(values)
    defined = table[:, np.isfinite(table).any(0)]
    defined = defined[np.isfinite(defined).any(1)]
    d, n = defined.shape
    if d <= 1:
        one = defined.reshape(-1)
        return (bootstrap_mean_ci if statistic == "mean" else bootstrap_median_ci)(one, seed=seed, level=level)
    if statistic == "mean":
        return crossed_mean_ci(defined, level).effect
    value = aggregate(defined, statistic)
    rng = np.random.default_rng(stream_seed(seed, _STREAM_BOOTSTRAP))
    replicates = _resampled(defined, statistic, rng, resamples)
    se = float(np.nanstd(replicates, ddof=1)) * math.sqrt(d / (d - 1))
    half = float(stats.t.ppf(0.5 + level / 2, d - 1)) * se
    return Estimate(value, value - half, value + half, n)


#: the most re-initializations a projection considers (beyond it no practical number of draws decides a check)
MAX_PROJECTED_DRAWS = 1000


def draws_to_decide(values: Any, statistic: str, distance: float, power: float = DEFAULT_POWER,
                    level: float = 0.95) -> float:
    """The re-initializations (draws, on the same images) at which a check whose value lies ``distance`` from its
    bound would be decided at ``power``: the smallest D with ``distance >= (t_{D-1, level} + z_power) x SD / sqrt(D)``,
    SD the spread of the draws' aggregates (which carries the images' noise too, so the projection is an upper
    bound's cousin, not a promise); inf below two draws, for a zero spread or beyond :data:`MAX_PROJECTED_DRAWS`.

    Examples:
        >>> draws_to_decide([[0.0, 0.2], [0.4, 0.6], [0.2, 0.4]], "mean", distance=0.5)
        4.0
    """
    from scipy import stats  # on first use: scipy.stats costs a third of a second to import

    per_draw = _aggregate_rows(as_table(values), statistic)
    per_draw = per_draw[np.isfinite(per_draw)]
    if per_draw.size < 2 or not distance > 0:
        return math.inf
    sd = float(np.std(per_draw, ddof=1))
    if not sd > 0:
        return math.inf
    z = float(stats.norm.ppf(power))
    for d in range(max(2, per_draw.size), MAX_PROJECTED_DRAWS + 1):
        if distance >= (float(stats.t.ppf(0.5 + level / 2, d - 1)) + z) * sd / math.sqrt(d):
            return float(d)
    return math.inf


# -- calibration by simulation ------------------------------------------------------------------------------------

#: (draws, images) -> a simulated table: the generator's draw of one check's values
TableDraw = Callable[[np.random.Generator], np.ndarray]


def crossed_table(center: float, draw_sd: float, image_sd: float, noise_sd: float, draws: int, images: int
                  ) -> TableDraw:
    """Tables of a crossed random-effects model: ``center`` + a draw effect + an image effect + noise (normal)."""
    def draw(rng: np.random.Generator) -> np.ndarray:
        return (center + rng.normal(0, draw_sd, (draws, 1)) + rng.normal(0, image_sd, (1, images))
                + rng.normal(0, noise_sd, (draws, images)))
    return draw


def simulated_error_rates(draw: TableDraw, outcome: Callable[[Estimate], str], statistic: str, repeats: int,
                          seed: int = 0, resamples: int = 400) -> dict[str, float]:
    """Share of each outcome over ``repeats`` simulated tables (``draw``) read by ``outcome`` (an Estimate -> its
    outcome): at a true value on a bound, the share of a decided outcome is the rule's error rate there."""
    check_range("repeats", repeats, 1)
    rng = np.random.default_rng(seed)
    counts: dict[str, int] = {}
    for i in range(repeats):
        e = two_level_ci(draw(rng), statistic, seed=seed + i, resamples=resamples)
        key = outcome(e)
        counts[key] = counts.get(key, 0) + 1
    return {k: v / repeats for k, v in sorted(counts.items())}

