"""Accuracies with Wilson intervals and paired accuracy differences (McNemar, sign flips).

Part of the statistics engine (:mod:`advspatial.statistics.inference`, which names everything here too).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch

from ..errors import ConfigError, ShapeError, check_range
from .estimates import Estimate, finite_values, share_difference_ci, sign_flip_p

# -- accuracies and paired accuracy differences -------------------------------------------------

@dataclass(frozen=True)
class Proportion:
    """An accuracy ``k / n`` with its Wilson score 95% interval."""

    value: float
    low: float
    high: float
    k: int
    n: int

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def wilson_interval(k: int, n: int, level: float = 0.95) -> Proportion:
    """``k/n`` with the Wilson score interval (Wilson 1927); NaN for n = 0.

    Unlike the normal (Wald) interval it stays inside [0, 1] and has close to
    nominal coverage at accuracies near 0 or 1, where robust accuracies live.
    """
    from scipy.stats import norm

    check_range("level", level, 0.0, 1.0, low_inclusive=False, high_inclusive=False)
    if n < 0 or k < 0 or k > n:
        raise ConfigError(f"need 0 <= k <= n, got k={k}, n={n}")
    if n == 0:
        return Proportion(math.nan, math.nan, math.nan, 0, 0)
    z = float(norm.ppf(0.5 + level / 2))
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    low = 0.0 if k == 0 else max(0.0, centre - half)  # exact ends: the float residue of centre - half is not a bound
    high = 1.0 if k == n else min(1.0, centre + half)
    return Proportion(p, low, high, int(k), int(n))


def accuracy(correct: Any, level: float = 0.95) -> Proportion:
    """Wilson-interval accuracy of per-image 0/1 outcomes (NaN left out)."""
    v = finite_values(correct)
    if np.any((v != 0) & (v != 1)):
        raise ConfigError("accuracy needs 0/1 outcomes per image")
    return wilson_interval(int(v.sum()), int(v.size), level)


def mcnemar_p(a_correct: Any, b_correct: Any) -> float:
    """Exact two-sided McNemar p of paired 0/1 outcomes: a binomial test on the discordant pairs.

    Under H0 (the two classifiers are equally accurate on these images) each of
    the ``n01 + n10`` discordant images is equally likely to favour either, so
    p = P(|Bin(n01+n10, 1/2) - m/2| >= |n10 - m/2|). 1.0 without discordant pairs.
    """
    from scipy.stats import binomtest

    a, b = _paired_arrays(a_correct, b_correct)
    if np.any((a != 0) & (a != 1)) or np.any((b != 0) & (b != 1)):
        raise ConfigError("McNemar needs 0/1 outcomes per image")
    wins, losses = int(np.sum((a == 1) & (b == 0))), int(np.sum((a == 0) & (b == 1)))
    if wins + losses == 0:
        return 1.0
    return float(binomtest(wins, wins + losses, 0.5, alternative="two-sided").pvalue)


def _paired_arrays(a: Any, b: Any) -> tuple[np.ndarray, np.ndarray]:
    a_arr, b_arr = (np.asarray(v.detach().cpu().double() if isinstance(v, torch.Tensor) else v, float).reshape(-1)
                    for v in (a, b))
    if a_arr.shape != b_arr.shape:
        raise ShapeError(f"paired outcomes must have one value per image each, got {a_arr.shape} and {b_arr.shape}")
    keep = np.isfinite(a_arr) & np.isfinite(b_arr)
    return a_arr[keep], b_arr[keep]


@dataclass(frozen=True)
class PairedAccuracy:
    """Accuracy of A minus accuracy of B on the same images: Δ with a bootstrap CI and a paired p.

    ``test`` names the p: ``mcnemar`` (exact, both outcomes 0/1) or
    ``sign-flip`` (a per-image score in [0,1] on one side, e.g. the mean over
    the draws of a random control; reduces to McNemar's statistic for 0/1).
    """

    a: float
    b: float
    delta: Estimate
    p: float
    test: str

    def as_dict(self) -> dict[str, Any]:
        return {"a": self.a, "b": self.b, "delta": self.delta.as_dict(), "p": self.p, "test": self.test}


def paired_accuracy(a_scores: Any, b_scores: Any, seed: int = 0) -> PairedAccuracy:
    """Δ = mean(a) - mean(b) over images, paired: bootstrap CI of the per-image differences and a paired p.

    ``a_scores`` and ``b_scores`` are per-image correctness: 0/1, or a share
    in [0,1] (a randomized defence or control evaluated over several draws).
    The p is McNemar's exact test when both are 0/1, else the sign-flip test.
    """
    a, b = _paired_arrays(a_scores, b_scores)
    if np.any((a < 0) | (a > 1)) or np.any((b < 0) | (b > 1)):
        raise ConfigError("paired accuracies need per-image scores in [0, 1]")
    binary = bool(np.all((a == 0) | (a == 1)) and np.all((b == 0) | (b == 1)))
    p = mcnemar_p(a, b) if binary else sign_flip_p(a - b, seed=seed)
    return PairedAccuracy(float(a.mean()) if a.size else math.nan, float(b.mean()) if b.size else math.nan,
                          share_difference_ci(a - b, seed=seed), p, "mcnemar" if binary else "sign-flip")


