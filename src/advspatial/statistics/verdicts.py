"""Multiple-comparison corrections (Holm, Benjamini-Hochberg) and the fixed verdict rules.

Part of the statistics engine (:mod:`advspatial.statistics.inference`, which names everything here too).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
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


# -- smallest effects of interest ----------------------------------------------------------------

@dataclass(frozen=True)
class Sesoi:
    """The smallest effect of interest of one statistic, on a stated scale.

    ``relative``: ``value`` times the null's mean (a ratio observed / null of
    1 + value); otherwise ``value`` in the statistic's own units.
    """

    value: float
    relative: bool = False

    def describe(self, scale: float = 1.0) -> str:
        """In words: '5% of the null' or '0.05'."""
        value = self.value * scale
        return f"{value:.0%} of the null" if self.relative else f"{value:g} in its units"

    def threshold(self, null_value: float, scale: float = 1.0) -> float:
        """The SESOI in the units of the effect (observed - null), times ``scale``; 0 when the null is not finite."""
        base = self.value * (abs(null_value) if self.relative else 1.0)
        return float(base * scale) if math.isfinite(base) else 0.0


#: default SESOI per statistic (justified in docs/methods.md, "Smallest effects of interest")
SESOI: dict[str, Sesoi] = {
    "energy_in_roi": Sesoi(0.05, relative=True),
    "iou": Sesoi(0.05, relative=True),
    "dice": Sesoi(0.05, relative=True),
    "pointing_game": Sesoi(0.05),
    "spearman": Sesoi(0.05),
    "pearson": Sesoi(0.05),
}

#: the SESOI of any other statistic (shares, success rates, PM units of the paired claims): 0.01 in its units
DEFAULT_SESOI = Sesoi(0.01)


#: the value of the ``sesoi`` setting at which every default of :data:`SESOI` applies as stated
SESOI_SETTING_DEFAULT = 0.01


def sesoi_text(setting: float) -> str:
    """The smallest effects of interest in words, for a report's method note (``setting``: the run's ``sesoi``)."""
    scale = setting / SESOI_SETTING_DEFAULT
    shown = "; ".join(f"{name}: {s.describe(scale)}" for name, s in SESOI.items())
    return (f"smallest effect of interest per statistic ({shown}; anything else {DEFAULT_SESOI.describe(scale)}; "
            f"sesoi={setting:g} scales them by {scale:g}): a significant effect below it is 'negligible'")


def sesoi_for(statistic: str, null_value: float, scale: float = 1.0) -> float:
    """The absolute SESOI of an effect of ``statistic`` against a null of mean ``null_value`` (see :data:`SESOI`)."""
    check_range("sesoi scale", scale, 0.0)
    return SESOI.get(statistic, DEFAULT_SESOI).threshold(null_value, scale)


# -- verdicts -----------------------------------------------------------------------------------

VERDICTS = ("supported", "negligible", "not supported", "reversed", "equivalent to null", "not interpretable",
            "insufficient data")

VERDICT_CLAUSES = {
    "supported": "the attack co-locates with the RoI beyond chance",
    "negligible": "a difference from chance too small to matter (below the smallest effect of interest)",
    "reversed": "the attack avoids the RoI more than chance",
    "equivalent to null": "co-location is at chance level (the CI lies within the smallest effect of interest)",
    "not supported": "no clear difference from chance",
    "not interpretable": "a validity gate failed, so this says nothing about the model",
    "insufficient data": "too few images (or training seeds) to judge",
}

#: fewest training runs (seeds per procedure) on which a claim about a training procedure is judged
MIN_SEEDS = 3


def seeds_agreeing(per_seed: Sequence[float], sign: int = 1) -> int:
    """How many seeds' own effects have the sign ``sign`` (+1: the claim's direction; 0 counts for neither)."""
    return sum(1 for d in per_seed if math.isfinite(d) and d * sign > 0)


def verdict(
    effect: Estimate, p_adjusted: float, gates: Mapping[str, bool], sesoi: float,
    alpha: float = 0.05, min_n: int = 30, per_seed: Sequence[float] | None = None, min_seeds: int = MIN_SEEDS,
) -> str:
    """One of :data:`VERDICTS` by fixed rules, checked in this order.

    A failed gate -> "not interpretable"; fewer than ``min_n`` images ->
    "insufficient data"; a claim about a training procedure (``per_seed``: each
    training seed's own effect) on fewer than ``min_seeds`` seeds -> "insufficient
    data" too (one or two runs cannot tell the procedure from the run).
    Significant (adjusted p < alpha) with the CI above 0: "supported" when the
    point estimate is at least ``sesoi`` (the effect's units), else "negligible";
    with the CI below 0: "reversed" when the estimate is at most -``sesoi``, else
    "negligible". So a significant effect whose CI lies inside ±sesoi is always
    "negligible", and one whose CI straddles +sesoi is judged by its point estimate
    (its best single guess of the size). Not significant: CI inside [-sesoi, +sesoi]
    -> "equivalent to null", anything else -> "not supported".
    With ``per_seed``, "supported" (or "reversed") also needs the effect's sign in
    every seed (:func:`seeds_agreeing`); a seed that disagrees makes it "not supported".
    """
    check_range("sesoi", sesoi, 0.0)
    check_range("alpha", alpha, 0.0, 1.0)
    if not all(bool(ok) for ok in gates.values()):
        return "not interpretable"
    if effect.n < min_n or (per_seed is not None and len(per_seed) < min_seeds):
        return "insufficient data"
    significant = p_adjusted < alpha  # False for NaN
    if significant and effect.low > 0:
        if effect.mean < sesoi:
            return "negligible"
        return "supported" if per_seed is None or seeds_agreeing(per_seed, 1) == len(per_seed) else "not supported"
    if significant and effect.high < 0:
        if effect.mean > -sesoi:
            return "negligible"
        return "reversed" if per_seed is None or seeds_agreeing(per_seed, -1) == len(per_seed) else "not supported"
    if -sesoi <= effect.low and effect.high <= sesoi:
        return "equivalent to null"
    return "not supported"


#: the verdicts that draw one conclusion about an effect's size: smaller than its smallest effect of interest
WITHIN_MARGIN = ("negligible", "equivalent to null")


def same_conclusion(a: str, b: str) -> bool:
    """Whether verdicts ``a`` and ``b`` say the same of an effect: the same word, or both that it is smaller than
    any of interest (:data:`WITHIN_MARGIN`: *negligible* and *equivalent to null* differ only in whether the data
    also tell its sign)."""
    return a == b or (a in WITHIN_MARGIN and b in WITHIN_MARGIN)


#: p-values below this print as "< 1e-10": a Monte Carlo or asymptotic p that small says only "very small"
P_FLOOR = 1e-10


def format_p(p: float | None, digits: int = 2) -> str:
    """A p-value for people: '-' for None/NaN, '< 1e-10' below :data:`P_FLOOR`, else ``digits`` significant digits."""
    if p is None or not math.isfinite(p):
        return "-"
    if p < P_FLOOR:
        return "< 1e-10"
    return f"{p:.{digits}g}"
