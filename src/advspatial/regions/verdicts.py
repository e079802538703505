"""Multiple-comparison corrections (Holm, Benjamini-Hochberg) and the fixed verdict rules.

Part of the statistics engine (:mod:`advspatial.regions.inference`, which names everything here too).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from ..errors import ConfigError, check_range

from .estimates import Estimate

# -- multiple comparisons ---------------------------------------------------------------------

def _adjust(pvalues: Any, step: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
    """Apply ``step`` (ascending finite p-values -> adjusted, same order) and put the results back in place.

    NaN entries stay NaN and are not counted in the family; results are capped at 1.
    """
    p = np.asarray(pvalues, dtype=float)
    finite = np.isfinite(p)
    if np.any((p[finite] < 0) | (p[finite] > 1)):
        raise ConfigError("p-values must lie in [0, 1]")
    out = np.full(p.shape, np.nan)
    v = p[finite]
    if v.size:
        order = np.argsort(v, kind="stable")
        res = np.empty(v.size)
        res[order] = np.minimum(1.0, step(v[order]))
        out[finite] = res
    return out


def holm(pvalues: Any) -> np.ndarray:
    """Holm step-down adjusted p-values (family-wise error); NaN entries stay NaN and are not counted.

    Sorted ascending, p_(k) becomes max_{j<=k} min(1, (m - j + 1) p_(j)).
    """
    return _adjust(pvalues, lambda v: np.maximum.accumulate((v.size - np.arange(v.size)) * v))


def benjamini_hochberg(pvalues: Any) -> np.ndarray:
    """Benjamini-Hochberg adjusted p-values (false discovery rate); NaN entries stay NaN and are not counted.

    Sorted ascending, p_(k) becomes min_{j>=k} min(1, m p_(j) / j).
    """
    return _adjust(pvalues, lambda v: np.minimum.accumulate((v * v.size / np.arange(1, v.size + 1))[::-1])[::-1])


# -- verdicts -----------------------------------------------------------------------------------

VERDICTS = ("supported", "not supported", "reversed", "equivalent to null", "not interpretable", "insufficient data")

_CLAUSES = {
    "supported": "the attack co-locates with the RoI beyond chance",
    "reversed": "the attack avoids the RoI more than chance",
    "equivalent to null": "co-location is at chance level (the CI lies within the smallest effect of interest)",
    "not supported": "no clear difference from chance",
    "not interpretable": "a validity gate failed, so this says nothing about the model",
    "insufficient data": "too few images to judge",
}


def verdict(
    effect: Estimate, p_adjusted: float, gates: Mapping[str, bool], sesoi: float,
    alpha: float = 0.05, min_n: int = 30,
) -> str:
    """One of :data:`VERDICTS` by fixed rules, checked in this order.

    A failed gate -> "not interpretable"; fewer than ``min_n`` images ->
    "insufficient data"; adjusted p < alpha with the CI above 0 -> "supported",
    below 0 -> "reversed"; CI inside [-sesoi, +sesoi] -> "equivalent to null";
    anything else -> "not supported".
    """
    check_range("sesoi", sesoi, 0.0)
    check_range("alpha", alpha, 0.0, 1.0)
    if not all(bool(ok) for ok in gates.values()):
        return "not interpretable"
    if effect.n < min_n:
        return "insufficient data"
    significant = p_adjusted < alpha  # False for NaN
    if significant and effect.low > 0:
        return "supported"
    if significant and effect.high < 0:
        return "reversed"
    if -sesoi <= effect.low and effect.high <= sesoi:
        return "equivalent to null"
    return "not supported"


