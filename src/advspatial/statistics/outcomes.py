"""Three outcomes of a paired comparison, and the images that would decide it.

A paired per-image effect (the mean of per-image differences, > 0 where the first region does more) is read by a
fixed rule into an outcome, never into a bare pass or fail. Two questions use two rules:

- **faithfulness** (is the map what *this* model uses? :data:`FAITHFULNESS`): *beats* when the 95% CI lies above
  0; *not better* when the 90% CI lies below ``+margin`` (a one-sided test at 5% that the effect is smaller than
  the margin: the map does at most a negligible bit more, or less); otherwise *undecided*;
- **specificity** (does the map tell more than a model-free one? :data:`SPECIFICITY`): *beats* when the 95% CI
  lies above 0; *does less* when it lies below 0; *equivalent* when the 90% CI lies inside ``(-margin, +margin)``
  (two one-sided tests at 5% each, Schuirmann 1987); otherwise *undecided*.

A significant difference smaller than the margin keeps its direction (*beats*, *does less*) and is flagged
``within_margin``, so a large sample never turns a negligible difference into a finding without saying so.

Error rates of the rule (docs/methods.md, "Three outcomes per comparison"; simulated in
``benchmarks/gate_calibration.py`` and tests/statistics/test_outcomes.py): with no true difference, *beats* reads at
most 2.5% of the time (the 95% CI's lower tail); at a true difference equal to the margin, *equivalent* or *not
better* at most 5%; at Cohen's d = 0.3 and the images :func:`images_to_decide` projects, *beats* about 80%.

**The images that would decide** an undecided comparison (:func:`images_to_decide`) are a projection, from the
observed mean and paired standard deviation: the n at which a test of the outcome the data lean towards reaches
the requested power, assuming the observed effect is the true one (normal approximation):
``((z_{1-a} + z_power) sd / distance)^2``, with the two-sided ``a = 0.025`` per side for *beats* and *does less*,
``a = 0.05`` for *not better*, and the two one-sided tests' power solved exactly for *equivalent*.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from statistics import NormalDist
from typing import Any

import numpy as np

from ..errors import check_range, unknown_name
from .estimates import Estimate, bootstrap_mean_ci, finite_values

BEATS = "beats"
NOT_BETTER = "not better"
EQUIVALENT = "equivalent"
DOES_LESS = "does less"
UNDECIDED = "undecided"
#: simulation tallies beside the outcomes (:func:`simulated_outcomes`), not outcomes of their own
WITHIN_MARGIN = "within margin"
SAME_DAMAGE = "same damage"

#: the two rules: which outcomes each can give
FAITHFULNESS = "faithfulness"
SPECIFICITY = "specificity"
RULES = {FAITHFULNESS: (BEATS, NOT_BETTER, UNDECIDED), SPECIFICITY: (BEATS, EQUIVALENT, DOES_LESS, UNDECIDED)}

#: the CI whose lower bound must lie above 0 to beat (two-sided 95%: 2.5% per side)
BEATS_LEVEL = 0.95
#: the CI of the one-sided margin tests (90%: 5% per side)
MARGIN_LEVEL = 0.90
#: the power a projection is made for unless asked otherwise
DEFAULT_POWER = 0.8

_NORMAL = NormalDist()


def _z(p: float) -> float:
    return _NORMAL.inv_cdf(p)


@dataclass(frozen=True)
class Decision:
    """One paired comparison read by a rule: its outcome, the numbers it rests on and the margin.

    ``low``/``high`` bound the 95% CI, ``low90``/``high90`` the 90% CI (both bootstrap BCa over images),
    ``sd`` is the paired standard deviation, ``margin`` the margin in the effect's units (>= 0).
    ``within_margin``: a *beats* or *does less* whose 90% CI lies inside ``(-margin, +margin)`` too.
    """

    rule: str
    outcome: str
    mean: float
    low: float
    high: float
    low90: float
    high90: float
    sd: float
    n: int
    margin: float
    within_margin: bool = False

    @property
    def estimate(self) -> Estimate:
        """The mean with its 95% CI."""
        return Estimate(self.mean, self.low, self.high, self.n)

    @property
    def decided(self) -> bool:
        return self.outcome != UNDECIDED

    @property
    def inside_margin(self) -> bool:
        """No difference that matters: *equivalent*, or a *beats* / *does less* whose 90% CI lies inside the margin
        too (:attr:`within_margin`), which a sentence never words "more" or "less"."""
        return self.outcome == EQUIVALENT or (self.within_margin and self.outcome in (BEATS, DOES_LESS))

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Decision:
        """The decision :meth:`as_dict` wrote (NaN for a missing number)."""
        def num(key: str) -> float:
            return math.nan if d.get(key) is None else float(d[key])
        return cls(str(d["rule"]), str(d["outcome"]), num("mean"), num("low"), num("high"), num("low90"),
                   num("high90"), num("sd"), int(d["n"]), num("margin"), bool(d.get("within_margin", False)))


def outcome_of(rule: str, low: float, high: float, low90: float, high90: float, margin: float, n: int) -> str:
    """The fixed rule (module docstring) on the CI bounds: one of :data:`RULES` ``[rule]``."""
    if rule not in RULES:
        raise unknown_name("rule", rule, tuple(RULES))
    if n == 0 or not all(math.isfinite(v) for v in (low, high, low90, high90)):
        return UNDECIDED
    if low > 0:
        return BEATS
    if rule == FAITHFULNESS:
        return NOT_BETTER if high90 < margin else UNDECIDED
    if high < 0:
        return DOES_LESS
    return EQUIVALENT if -margin < low90 and high90 < margin else UNDECIDED


def decide(differences: Any, rule: str, margin: float, seed: int = 0) -> Decision:
    """The :class:`Decision` of per-image paired ``differences`` (NaN left out) under ``rule`` with ``margin``
    (in the differences' units; a negative or NaN margin counts as 0: nothing can then be equivalent)."""
    margin = float(margin) if math.isfinite(float(margin)) and float(margin) > 0 else 0.0
    v = finite_values(differences)
    wide = bootstrap_mean_ci(v, seed, BEATS_LEVEL)
    narrow = bootstrap_mean_ci(v, seed, MARGIN_LEVEL)
    sd = float(v.std(ddof=1)) if v.size > 1 else math.nan
    outcome = outcome_of(rule, wide.low, wide.high, narrow.low, narrow.high, margin, int(v.size))
    within = outcome in (BEATS, DOES_LESS) and -margin < narrow.low and narrow.high < margin
    return Decision(rule, outcome, wide.mean, wide.low, wide.high, narrow.low, narrow.high, sd, int(v.size),
                    margin, within)


# -- the images that would decide ----------------------------------------------------------------------------------

#: a projection above this many times the images a comparison has is no practical number of images
PRACTICAL_FACTOR = 100
#: the largest projection computed (an effect a hair from its bound would need more images than a float holds)
MAX_IMAGES = 1e15


@dataclass(frozen=True)
class Projection:
    """The images at which an undecided comparison would reach ``power`` for ``outcome``, at the observed effect
    (``images`` is inf when no outcome is in reach: the observed effect sits on a boundary). ``n_now``: the images
    the comparison has (0: not known); a projection above :data:`PRACTICAL_FACTOR` times that is worded as no
    practical number."""

    outcome: str
    images: float
    power: float
    n_now: int = 0

    @property
    def practical(self) -> bool:
        """A finite projection within :data:`PRACTICAL_FACTOR` times the images the comparison has."""
        return math.isfinite(self.images) and not (self.n_now > 0 and self.images > PRACTICAL_FACTOR * self.n_now)

    def text(self) -> str:
        """'about 2,150 images would decide it (beats)', 'no practical number of images decides it (more than 100
        times the 200 it has)' or 'no number of images decides it at the observed effect'."""
        if not math.isfinite(self.images):
            return "no number of images decides it at the observed effect"
        if not self.practical:
            return (f"no practical number of images decides it (more than {PRACTICAL_FACTOR} times the "
                    f"{self.n_now:,} it has)")
        return f"about {int(self.images):,} images would decide it ({self.outcome})"


def _one_sided_n(distance: float, sd: float, alpha: float, power: float) -> float:
    """Images for a one-sided z test at ``alpha`` to reach ``power`` when the effect lies ``distance`` beyond
    its bound."""
    if not (distance > 0 and sd > 0):
        return math.inf if not distance > 0 else 2.0
    ratio = (_z(1 - alpha) + _z(power)) * sd / distance
    return float(max(2, math.ceil(ratio ** 2))) if ratio < MAX_IMAGES ** 0.5 else MAX_IMAGES


def tost_power(mean: float, sd: float, margin: float, n: float, alpha: float = (1 - MARGIN_LEVEL) / 2) -> float:
    """Power of the two one-sided tests at ``alpha`` each to show ``|effect| < margin`` on ``n`` images when the
    true mean is ``mean`` (normal approximation)."""
    if not (margin > 0 and sd > 0 and n > 0) or abs(mean) >= margin:
        return 0.0
    se = sd / math.sqrt(n)
    z = _z(1 - alpha)
    return max(0.0, _NORMAL.cdf((margin - mean) / se - z) + _NORMAL.cdf((margin + mean) / se - z) - 1.0)


def _tost_n(mean: float, sd: float, margin: float, power: float, alpha: float = (1 - MARGIN_LEVEL) / 2) -> float:
    """The fewest images at which :func:`tost_power` reaches ``power`` (bisection; inf when out of reach)."""
    if not (margin > 0 and sd > 0) or abs(mean) >= margin:
        return math.inf
    low, high = 2.0, 4.0
    while tost_power(mean, sd, margin, high, alpha) < power:
        high *= 2
        if high > 1e12:
            return math.inf
    while high - low > 1:
        mid = math.floor((low + high) / 2)
        low, high = (mid, high) if tost_power(mean, sd, margin, mid, alpha) < power else (low, mid)
    return float(high)


def sd_behind(estimate: Estimate, level: float = BEATS_LEVEL) -> float:
    """The per-unit SD behind a mean's ``level`` CI over ``estimate.n`` units (normal approximation: the
    half-width over z, times the square root of n); NaN without a finite CI."""
    if estimate.n < 2 or not all(math.isfinite(v) for v in (estimate.mean, estimate.low, estimate.high)):
        return math.nan
    return (estimate.high - estimate.low) / 2 / _z(1 - (1 - level) / 2) * math.sqrt(estimate.n)


def images_beyond(estimate: Estimate, bound: float, power: float = DEFAULT_POWER,
                  level: float = BEATS_LEVEL) -> float:
    """The units at which the ``level`` CI of an estimate like this one would clear ``bound`` on the side the
    estimate lies (a one-sided test at ``(1 - level) / 2``), at 80% power by default; inf when none would."""
    sd = sd_behind(estimate, level)
    return _one_sided_n(abs(estimate.mean - bound), sd, (1 - level) / 2, power) if math.isfinite(sd) else math.inf


def images_within(estimate: Estimate, margin: float, power: float = DEFAULT_POWER,
                  level: float = BEATS_LEVEL) -> float:
    """The units at which the ``level`` CI of an estimate like this one would lie inside ``(-margin, +margin)``
    (two one-sided tests at ``(1 - level) / 2`` each); inf when none would (the estimate outside the margin)."""
    sd = sd_behind(estimate, level)
    return _tost_n(estimate.mean, sd, margin, power, (1 - level) / 2) if math.isfinite(sd) else math.inf


def candidate_projections(decision: Decision, power: float = DEFAULT_POWER) -> dict[str, float]:
    """Per outcome the data lean towards, the images at which its test reaches ``power`` at the observed effect."""
    check_range("power", power, 0, 1, low_inclusive=False, high_inclusive=False)
    mean, sd, margin = decision.mean, decision.sd, decision.margin
    if not (math.isfinite(mean) and math.isfinite(sd)):
        return {}
    two_sided = (1 - BEATS_LEVEL) / 2
    one_sided = (1 - MARGIN_LEVEL) / 2
    out: dict[str, float] = {}
    if mean > 0:
        out[BEATS] = _one_sided_n(mean, sd, two_sided, power)
    if decision.rule == FAITHFULNESS:
        if mean < margin:
            out[NOT_BETTER] = _one_sided_n(margin - mean, sd, one_sided, power)
    else:
        if mean < 0:
            out[DOES_LESS] = _one_sided_n(-mean, sd, two_sided, power)
        if abs(mean) < margin:
            out[EQUIVALENT] = _tost_n(mean, sd, margin, power)
    return out


def images_to_decide(decision: Decision, power: float = DEFAULT_POWER) -> Projection:
    """The fewest images at which some outcome the data lean towards reaches ``power`` (module docstring), a
    projection at the observed effect; for a decided comparison, its own n."""
    if decision.decided:
        return Projection(decision.outcome, float(decision.n), power, decision.n)
    candidates = candidate_projections(decision, power)
    if not candidates:
        return Projection(UNDECIDED, math.inf, power, decision.n)
    outcome = min(candidates, key=lambda k: candidates[k])
    return Projection(outcome, candidates[outcome], power, decision.n)


def images_for_estimate(estimate: Estimate, sesoi: float, power: float = DEFAULT_POWER,
                        level: float = BEATS_LEVEL) -> Projection:
    """The projection of a claim's effect (a mean with its ``level`` CI over ``estimate.n`` units): the paired SD
    is recovered from the CI's half-width, then read as a specificity comparison with margin ``sesoi`` (an effect
    whose CI would exclude 0, or would lie inside the smallest effect of interest)."""
    sd = sd_behind(estimate, level)
    if not math.isfinite(sd):
        return Projection(UNDECIDED, math.inf, power, estimate.n)
    shown = Decision(SPECIFICITY, UNDECIDED, estimate.mean, estimate.low, estimate.high, math.nan, math.nan, sd,
                     estimate.n, max(float(sesoi), 0.0) if math.isfinite(sesoi) else 0.0)
    return images_to_decide(shown, power)


def simulated_outcomes(draw: Any, rule: str, margin: float, n: int, repeats: int, seed: int = 0) -> dict[str, float]:
    """Share of each outcome over ``repeats`` samples of ``n`` per-image differences (``draw(rng, n)``), judged by
    :func:`decide`: the error rates and power of the rule, by simulation.

    Besides the rule's outcomes, :data:`WITHIN_MARGIN` counts the *beats* and *does less* flagged "within the
    margin", and :data:`SAME_DAMAGE` every reading that says the difference is negligible (*equivalent*, or a
    direction within the margin): at a true difference equal to the margin that share is the equivalence error.
    """
    check_range("repeats", repeats, 1)
    rng = np.random.default_rng(seed)
    counts = dict.fromkeys((*RULES[rule], WITHIN_MARGIN, SAME_DAMAGE), 0)
    for k in range(repeats):
        decision = decide(draw(rng, n), rule, margin, seed=k)
        counts[decision.outcome] += 1
        counts[WITHIN_MARGIN] += decision.within_margin
        counts[SAME_DAMAGE] += decision.outcome == EQUIVALENT or decision.within_margin
    return {outcome: c / repeats for outcome, c in counts.items()}
