"""Effect estimates: the mean of per-image values with a bootstrap CI, and the paired test of differences.

Part of the statistics engine (:mod:`advspatial.regions.inference`, which names everything here too).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from functools import lru_cache
from typing import Any

import numpy as np
import torch

from ..errors import check_range

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


def _finite(values: Any) -> np.ndarray:
    arr = values.detach().cpu().double().numpy() if isinstance(values, torch.Tensor) else np.asarray(values, float)
    arr = arr.reshape(-1)
    return arr[np.isfinite(arr)]


@lru_cache(maxsize=4)
def _resample_indices(seed: int, n: int, resamples: int) -> np.ndarray:
    """(resamples, n) read-only bootstrap indices of one seed (cached: the engine resamples many statistics of the
    same images with one seed)."""
    idx = np.random.default_rng(seed).integers(0, n, size=(resamples, n))
    idx.flags.writeable = False
    return idx


def bootstrap_mean_ci(
    values: Any, seed: int = 0, level: float = 0.95, resamples: int = BOOTSTRAP_RESAMPLES
) -> Estimate:
    """Mean of the finite ``values`` with a percentile bootstrap CI (images resampled with replacement).

    NaN/inf values are left out (``n`` counts the rest). One value gives a
    zero-width interval; none gives NaN everywhere. The same seed gives the
    same interval.
    """
    check_range("level", level, 0.0, 1.0, low_inclusive=False, high_inclusive=False)
    check_range("resamples", resamples, 1)
    v = _finite(values)
    if v.size == 0:
        return Estimate(math.nan, math.nan, math.nan, 0)
    mean = float(v.mean())
    if v.size == 1:
        return Estimate(mean, mean, mean, 1)
    means = v[_resample_indices(int(seed), v.size, int(resamples))].mean(axis=1)
    tail = (1 - level) / 2
    low, high = np.quantile(means, [tail, 1 - tail])
    return Estimate(mean, float(low), float(high), int(v.size))


def share_difference_ci(
    differences: Any, seed: int = 0, level: float = 0.95, resamples: int = BOOTSTRAP_RESAMPLES
) -> Estimate:
    """:func:`bootstrap_mean_ci` of per-image differences of two shares in [0, 1] (correct or not, a success
    share), which cannot collapse to a zero-width interval.

    When no image differs, every bootstrap resample has mean 0 and the percentile CI is [0, 0]: read against a
    smallest effect of interest that would say "equivalent", although the data only show that no image of
    ``n`` differed (two models both at 0% accuracy: a floor, not an equivalence). The interval is then the exact
    bound the data allow: each image's difference lies in [-1, 1] and the share of images that differ is at most
    ``1 - ((1 - level) / 2) ** (1 / n)`` (the Clopper-Pearson upper limit for 0 of ``n``), so
    ``+-`` that. With any differing image the bootstrap interval is returned unchanged.
    """
    estimate = bootstrap_mean_ci(differences, seed=seed, level=level, resamples=resamples)
    v = _finite(differences)
    if v.size == 0 or np.any(v != 0):
        return estimate
    bound = 1.0 - ((1.0 - level) / 2.0) ** (1.0 / v.size)
    return Estimate(0.0, -bound, bound, int(v.size))


def sign_flip_p(differences: Any, resamples: int = SIGN_FLIPS, seed: int = 0) -> float:
    """Two-sided paired randomization p of the mean difference: flip each image's sign at random.

    Under H0 the two conditions are exchangeable within an image, so each
    difference is as likely to have either sign. Monte Carlo with ``resamples``
    flips, p = (1 + #{|mean*| >= |mean|}) / (1 + resamples) (valid at any
    ``resamples``; its smallest value is 1 / (1 + resamples)). 1.0 when every
    difference is 0; NaN when none is finite.
    """
    check_range("resamples", resamples, 1)
    d = _finite(differences)
    if d.size == 0:
        return math.nan
    if not np.any(d != 0):
        return 1.0
    rng = np.random.default_rng(int(seed))
    observed = abs(d.mean())
    hits = 0
    for start in range(0, int(resamples), 2000):
        size = min(2000, int(resamples) - start)
        signs = rng.integers(0, 2, size=(size, d.size)) * 2 - 1
        hits += int(np.sum(np.abs((signs * d).mean(axis=1)) >= observed - 1e-12 * (1 + observed)))
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
