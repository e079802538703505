"""Effect estimates: the mean of per-image values with a bootstrap (BCa) CI, and the paired test of differences.

Part of the statistics engine (:mod:`advspatial.statistics.inference`, which names everything here too).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from functools import lru_cache
from statistics import NormalDist
from typing import Any

import numpy as np
import torch

from ..errors import check_range, unknown_name

#: bootstrap resamples of every CI
BOOTSTRAP_RESAMPLES = 2000

#: random sign flips of a paired test (:func:`sign_flip_p`)
SIGN_FLIPS = 20000


@dataclass(frozen=True)
class Estimate:
    """A mean with its bootstrap confidence interval over ``n`` finite values."""

    mean: float
    low: float
    high: float
    n: int

    def excludes_zero(self) -> bool:
        """True when the whole CI lies strictly above or strictly below 0."""
        return self.n > 0 and (self.low > 0 or self.high < 0)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


#: what an interval reads as when no value entered it (its mean is not a number)
NO_ESTIMATE = "no estimate"


def interval_text(mean: float, low: float, high: float, spec: str = "+.3f") -> str:
    """``'+0.014 [+0.009, +0.019]'`` (each number by the format ``spec``), or :data:`NO_ESTIMATE` when ``mean`` is
    not a number: a comparison no image entered has no effect to print, and ``+nan [+nan, +nan]`` reads as one.

    Example::

        >>> interval_text(0.0141, 0.0093, 0.0188), interval_text(float("nan"), float("nan"), float("nan"))
        ('+0.014 [+0.009, +0.019]', 'no estimate')
    """
    if math.isnan(mean):
        return NO_ESTIMATE
    return f"{mean:{spec}} [{low:{spec}}, {high:{spec}}]"


def finite_values(values: Any) -> np.ndarray:
    arr = values.detach().cpu().double().numpy() if isinstance(values, torch.Tensor) else np.asarray(values, float)
    arr = arr.reshape(-1)
    return arr[np.isfinite(arr)]


def finite_mean(values: Sequence[float]) -> float:
    """Mean of the non-NaN values (NaN when there is none): a per-image statistic over the images where it is
    defined, the way every metric is computed from per-image rows."""
    finite = [v for v in values if v == v]
    return sum(finite) / len(finite) if finite else math.nan

@lru_cache(maxsize=4)
def _resample_indices(seed: int, n: int, resamples: int) -> np.ndarray:
    """(resamples, n) read-only bootstrap indices of one seed (cached: the engine resamples many statistics of the
    same images with one seed)."""
    idx = np.random.default_rng(seed).integers(0, n, size=(resamples, n))
    idx.flags.writeable = False
    return idx


#: resampled values gathered at once (float64: 8 MB), so that a large sample's resamples are reduced while in cache
RESAMPLED_VALUES = 1_000_000


def _resampled(values: np.ndarray, seed: int, resamples: int,
               reduce: Callable[..., np.ndarray]) -> np.ndarray:
    """(resamples,) ``reduce(values[indices], axis=1)`` over the bootstrap indices of ``seed``, a chunk of resamples
    at a time: the same numbers as all at once (each resample's row is reduced alone), without a (resamples, n)
    array of values."""
    idx = _resample_indices(int(seed), values.size, int(resamples))
    rows = max(1, RESAMPLED_VALUES // values.size)
    return np.concatenate([reduce(values[idx[start:start + rows]], axis=1) for start in range(0, idx.shape[0], rows)])


#: the interval methods of :func:`bootstrap_mean_ci`
CI_METHODS = ("bca", "percentile")


def bootstrap_mean_ci(
    values: Any, seed: int = 0, level: float = 0.95, resamples: int = BOOTSTRAP_RESAMPLES, *, method: str = "bca",
) -> Estimate:
    """Mean of the finite ``values`` with a bootstrap CI over images (resampled with replacement).

    ``method="bca"`` (default): the bias-corrected and accelerated interval (Efron 1987; Efron & Tibshirani 1993,
    ch. 14): the percentile interval's quantile levels moved by the resamples' median bias z0 and the acceleration
    a, which for the mean has the jackknife's closed form (:func:`mean_acceleration`). It corrects the
    percentile interval's error from skewness (second-order accurate; equal to ``scipy.stats.bootstrap``'s BCa
    on the same resamples), which matters for skewed per-image values at small n; at n = 200 both cover about
    0.95 under an image-specific alternative (tests/statistics/test_coverage.py). ``method="percentile"``: the plain
    percentile interval of the resampled means, kept for comparison.

    NaN/inf values are left out (``n`` counts the rest). One value, or values all equal, give a zero-width
    interval; none gives NaN everywhere. The same seed gives the same interval (the resample indices are a
    function of seed, n and ``resamples`` only).
    """
    check_range("level", level, 0.0, 1.0, low_inclusive=False, high_inclusive=False)
    check_range("resamples", resamples, 1)
    if method not in CI_METHODS:
        raise unknown_name("method", method, CI_METHODS)
    v = finite_values(values)
    if v.size == 0:
        return Estimate(math.nan, math.nan, math.nan, 0)
    mean = float(v.mean())
    if v.size == 1 or not np.any(v != v[0]):
        return Estimate(mean, mean, mean, int(v.size))
    means = _resampled(v, seed, resamples, np.mean)
    tail = (1 - level) / 2
    levels = [tail, 1 - tail] if method == "percentile" else bca_levels(means, mean, mean_acceleration(v), tail)
    low, high = np.quantile(means, levels)
    return Estimate(mean, float(low), float(high), int(v.size))


def bootstrap_median_ci(values: Any, seed: int = 0, level: float = 0.95,
                        resamples: int = BOOTSTRAP_RESAMPLES) -> Estimate:
    """Median of the finite ``values`` with a percentile bootstrap CI over them (the same resample indices as
    :func:`bootstrap_mean_ci`): for a statistic reported as a median, such as efficient MPRT's complexity change,
    whose per-image ratios are heavy-tailed. NaN everywhere for no value; zero width for one."""
    check_range("level", level, 0.0, 1.0, low_inclusive=False, high_inclusive=False)
    v = finite_values(values)
    if v.size == 0:
        return Estimate(math.nan, math.nan, math.nan, 0)
    median = float(np.median(v))
    if v.size == 1:
        return Estimate(median, median, median, 1)
    medians = _resampled(v, seed, resamples, np.median)
    tail = (1 - level) / 2
    low, high = np.quantile(medians, [tail, 1 - tail])
    return Estimate(median, float(low), float(high), int(v.size))


def mean_acceleration(values: np.ndarray) -> float:
    """The BCa acceleration of the mean, from the jackknife in closed form: sum c^3 / (6 (sum c^2)^(3/2)), c = x - mean.

    The jackknife means are (n mean - x_i) / (n - 1), so their deviations from their own mean are
    c_i / (n - 1) and the factor cancels (Efron & Tibshirani 1993, eq. 14.15). 0 for a constant sample.
    """
    c = values - values.mean()
    spread = float(np.sum(c * c))
    return float(np.sum(c ** 3)) / (6.0 * spread ** 1.5) if spread > 0 else 0.0


def bca_levels(resampled: np.ndarray, estimate: float, acceleration: float, tail: float) -> list[float]:
    """The BCa interval's two quantile levels of the ``resampled`` statistics for a two-sided ``1 - 2 tail`` CI.

    z0 = Phi^-1(share of resamples below the estimate, ties counted half); the share is kept within
    [1/(2B), 1 - 1/(2B)] so z0 stays finite. Level = Phi(z0 + (z0 + z) / (1 - a (z0 + z))) at z = Phi^-1(tail)
    and Phi^-1(1 - tail). With |a| < 1/6 (true of any mean) and |z0| <= 3.5 the denominator stays positive.
    """
    b = resampled.size
    share: float = (np.count_nonzero(resampled < estimate) + np.count_nonzero(resampled <= estimate)) / (2.0 * b)
    share = min(max(share, 0.5 / b), 1.0 - 0.5 / b)
    normal = NormalDist()
    z0 = normal.inv_cdf(share)
    levels = []
    for z in (normal.inv_cdf(tail), normal.inv_cdf(1.0 - tail)):
        shifted = z0 + z
        levels.append(normal.cdf(z0 + shifted / (1.0 - acceleration * shifted)))
    return levels


def share_difference_ci(
    differences: Any, seed: int = 0, level: float = 0.95, resamples: int = BOOTSTRAP_RESAMPLES
) -> Estimate:
    """:func:`bootstrap_mean_ci` of per-image differences of two shares in [0, 1] (correct or not, a success
    share), which cannot collapse to a zero-width interval.

    When no image differs, every bootstrap resample has mean 0 and the bootstrap CI is [0, 0]: read against a
    smallest effect of interest that would say "equivalent", although the data only show that no image of
    ``n`` differed (two models both at 0% accuracy: a floor, not an equivalence). The interval is then the exact
    bound the data allow: each image's difference lies in [-1, 1] and the share of images that differ is at most
    ``1 - ((1 - level) / 2) ** (1 / n)`` (the Clopper-Pearson upper limit for 0 of ``n``), so
    ``+-`` that. With any differing image the bootstrap interval is returned unchanged.
    """
    estimate = bootstrap_mean_ci(differences, seed=seed, level=level, resamples=resamples)
    v = finite_values(differences)
    if v.size == 0 or np.any(v != 0):
        return estimate
    bound = no_difference_bound(v.size, level)
    return Estimate(0.0, -bound, bound, int(v.size))


def no_difference_bound(n: int, level: float = 0.95) -> float:
    """The largest mean difference of shares that ``n`` images of which none differed still allow: the
    Clopper-Pearson upper limit ``1 - ((1 - level) / 2) ** (1 / n)`` for 0 of ``n`` (each difference lies in
    [-1, 1]). The half-width of :func:`share_difference_ci` when no image differs."""
    check_range("n", n, 1)
    return 1.0 - ((1.0 - level) / 2.0) ** (1.0 / n)


#: random signs of :func:`sign_flip_p` drawn per call of NumPy's generator (the draw is a function of the seed,
#: the number of images and this chunking)
SIGN_CHUNK = 2000
#: int8 entries of the signs kept for reuse (64 MB), the most recently used sets first
SIGN_ENTRIES = 64_000_000
_kept_signs: dict[tuple[int, int, int], tuple[np.ndarray, ...]] = {}


def _sign_chunks(seed: int, n: int, resamples: int) -> tuple[np.ndarray, ...]:
    """The random signs of :func:`sign_flip_p` for ``n`` values, as (rows, n) int8 chunks of +-1.

    A run tests many differences over the same images with one seed (every gate comparison, every claim, every
    class of the gate's per-class table), so the most recently used sets are kept, up to :data:`SIGN_ENTRIES`
    signs: the same numbers as drawing them again, without the draw.
    """
    key = (seed, n, resamples)
    if key in _kept_signs:
        _kept_signs[key] = _kept_signs.pop(key)  # most recently used last
        return _kept_signs[key]
    rng = np.random.default_rng(seed)
    chunks = []
    for start in range(0, resamples, SIGN_CHUNK):
        signs = rng.integers(0, 2, size=(min(SIGN_CHUNK, resamples - start), n)).astype(np.int8)
        signs *= 2
        signs -= 1
        signs.flags.writeable = False
        chunks.append(signs)
    out = tuple(chunks)
    if n * resamples <= SIGN_ENTRIES:
        while _kept_signs and sum(k[1] * k[2] for k in _kept_signs) + n * resamples > SIGN_ENTRIES:
            _kept_signs.pop(next(iter(_kept_signs)))  # the least recently used
        _kept_signs[key] = out
    return out


def sign_flip_p(differences: Any, resamples: int = SIGN_FLIPS, seed: int = 0) -> float:
    """Two-sided paired randomization p of the mean difference: flip each image's sign at random.

    Under H0 the two conditions are exchangeable within an image, so each
    difference is as likely to have either sign. Monte Carlo with ``resamples``
    flips, p = (1 + #{|mean*| >= |mean|}) / (1 + resamples) (valid at any
    ``resamples``; its smallest value is 1 / (1 + resamples)). 1.0 when every
    difference is 0; NaN when none is finite. The signs are a function of ``seed``, the number of finite
    differences and ``resamples`` only (:func:`_sign_chunks`).
    """
    check_range("resamples", resamples, 1)
    d = finite_values(differences)
    if d.size == 0:
        return math.nan
    if not np.any(d != 0):
        return 1.0
    observed = abs(d.mean())
    bound = observed - 1e-12 * (1 + observed)  # a flip as far out as the observed mean counts in any summation order
    hits = 0
    as_float = np.empty((min(SIGN_CHUNK, int(resamples)), d.size))
    for signs in _sign_chunks(int(seed), int(d.size), int(resamples)):
        rows = as_float[: signs.shape[0]]
        rows[...] = signs  # int8 to float64 once, so the flipped sums are one matrix-vector product
        means = rows @ d
        means /= d.size
        hits += int(np.count_nonzero(np.abs(means) >= bound))
    return (1 + hits) / (1 + int(resamples))


def paired_p(differences: Any, seed: int = 0) -> float:
    """Two-sided p of paired differences about the estimand of their CI, the mean: a sign-flip test.

    :func:`sign_flip_p` with :data:`SIGN_FLIPS` resamples (so p >= 1/20001). A
    Wilcoxon signed-rank p, used before, tests symmetry about 0 (the median), not
    the mean that :func:`bootstrap_mean_ci` estimates, and disagreed with that CI
    for skewed differences. 1.0 when every difference is 0; NaN when none is
    finite. Symmetric: negating the differences gives the same p.
    """
    return sign_flip_p(differences, seed=seed)
