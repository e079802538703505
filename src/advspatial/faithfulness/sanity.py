"""The gate's randomization row, each check read with a CI over its images: passes, fails or undecided.

The randomization checks (:mod:`.randomization`, :mod:`.mprt`) measure, on a few images, whether a map changes when
the model's weights are destroyed. Their bounds are fixed (cascading and smooth MPRT: a Spearman of 0.5; efficient
MPRT: a 5% change of the maps' complexity), but the measured values are means or medians over 16 images, and a value
a hair from its bound decides nothing. So each check is read like every other row of the gate: from its per-image
values, a 95% bootstrap CI (of the mean Spearman; of the median complexity change) and:

- cascading randomization, smooth MPRT: **passes** when the CI lies below the bound (both signs for the cascade's
  |Spearman|), **fails** when it lies at or beyond it, else **undecided**;
- efficient MPRT: **passes** when the CI of the median change lies beyond ±5% (the complexity changed, either way),
  **fails** when its 90% CI lies inside ±5% (two one-sided tests: the complexity did not change), else **undecided**.

A record written without per-image values (older runs, hand-made rows) is read by the point value, as before. A
model-free map keeps every value at its extreme (Spearman 1 on every image, no change at all): it fails.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ..statistics.estimates import Estimate, bootstrap_mean_ci, bootstrap_median_ci
from ..statistics.outcomes import DEFAULT_POWER, Projection, images_beyond, images_within
from .mprt import EFFICIENT_MPRT_MIN_RISE, SMOOTH_MPRT_MAX_SPEARMAN
from .randomization import CASCADE_MAX_SPEARMAN
from .record import Comparison, PairedEffect

PASSES, FAILS, UNDECIDED = "passes", "fails", "undecided"
#: the randomization checks a gate may leave out once its verdict is decided (:mod:`.sequential`): the cascading
#: check and smooth/efficient MPRT
SKIPPABLE_CHECKS = ("randomization", "mprt")
RANDOMIZATION_WORDS = "randomization (the map changes when the weights are destroyed)"


@dataclass(frozen=True)
class CheckReading:
    """One randomization check read by its rule: ``outcome``, the value with its CI (``estimate``) and the words."""

    name: str
    outcome: str
    estimate: Estimate
    text: str


#: the words each check's text starts with (its reading's ``name`` -> words), so a record's ``undecided`` texts name
#: their check
CHECK_WORDS = {"cascade spearman": "cascade |Spearman|", "smooth MPRT spearman": "smooth MPRT Spearman",
               "efficient MPRT rise": "efficient MPRT complexity change"}


def check_projection(name: str, estimate: Estimate, power: float = DEFAULT_POWER,
                     bound: float | None = None) -> Projection:
    """The check images at which an undecided randomization check would be decided, at its observed value (the SD
    recovered from its 95% CI, normal approximation), against the check's own bound (``bound``: the one its record
    states; default the check's constant). A check whose value lies on the passing side leans *passes* (the
    cascade's Spearman inside +-0.5 is an equivalence; smooth MPRT's Spearman below 0.5 and efficient MPRT's change
    beyond +-5% are one-sided), else it leans *fails*. A projection, not a promise."""
    e = estimate
    if name == "efficient MPRT rise":
        m = EFFICIENT_MPRT_MIN_RISE if bound is None else bound
        if abs(e.mean) <= m:  # leans fails: the change inside +-m
            return Projection(FAILS, images_within(e, m, power, level=0.90), power)
        return Projection(PASSES, images_beyond(e, m if e.mean > 0 else -m, power), power)
    if name == "cascade spearman":
        b = CASCADE_MAX_SPEARMAN if bound is None else bound
        if abs(e.mean) < b:
            return Projection(PASSES, images_within(e, b, power), power)
        return Projection(FAILS, images_beyond(e, b if e.mean > 0 else -b, power), power)
    b = SMOOTH_MPRT_MAX_SPEARMAN if bound is None else bound
    return Projection(PASSES if e.mean < b else FAILS, images_beyond(e, b, power), power)


def _worded(word: str, outcome: str) -> str:
    """The rule's word after a check's value: in parentheses, or after a comma when undecided (its projection
    follows in parentheses)."""
    return f", {word}" if outcome == UNDECIDED else f" ({word})"


def _with_projection(text: str, name: str, e: Estimate, bound: float) -> str:
    """An undecided check's text with the check images that would decide it."""
    p = check_projection(name, e, bound=bound)
    if not p.images < math.inf:
        return text
    return f"{text} (about {int(p.images):,} check images would decide it, {p.outcome}: --randomization-images)"


def _interval(e: Estimate) -> str:
    return f"{e.mean:+.2f}" if e.low == e.high else f"{e.mean:+.2f} [{e.low:+.2f}, {e.high:+.2f}]"


def _point(value: float) -> Estimate:
    return Estimate(value, value, value, 1 if math.isfinite(value) else 0)


def cascade_reading(rows: Sequence[Mapping[str, Any]]) -> CheckReading:
    """The cascade's last step: the mean Spearman of the maps with the trained model's, against ±0.5."""
    last = rows[-1]
    per_image = last.get("per_image")
    e = bootstrap_mean_ci(per_image) if per_image else _point(float(last.get("spearman", math.nan)))
    b = CASCADE_MAX_SPEARMAN
    if e.n == 0 or not math.isfinite(e.mean):
        outcome = FAILS
    elif -b < e.low and e.high < b:
        outcome = PASSES
    elif e.low >= b or e.high <= -b:
        outcome = FAILS
    else:
        outcome = UNDECIDED
    word = {PASSES: "< 0.5 passes", FAILS: f">= {b:g} fails", UNDECIDED: f"undecided against {b:g}"}[outcome]
    text = (f"cascade |Spearman| after every layer {abs(e.mean):.2f}"
            + ("" if e.low == e.high else f" [{e.low:+.2f}, {e.high:+.2f}]") + _worded(word, outcome))
    return CheckReading("cascade spearman", outcome, e,
                        _with_projection(text, "cascade spearman", e, b) if outcome == UNDECIDED else text)


def smooth_reading(smooth: Mapping[str, Any]) -> CheckReading:
    """Smooth MPRT: the mean Spearman of the denoised maps with the fully randomized model's, below its bound."""
    per_image = smooth.get("per_image")
    e = bootstrap_mean_ci(per_image) if per_image else _point(float(smooth["spearman"]))
    b = float(smooth.get("bound", SMOOTH_MPRT_MAX_SPEARMAN))
    if not per_image:
        outcome = PASSES if smooth.get("passed", False) else FAILS
    else:
        outcome = PASSES if e.high < b else FAILS if e.low >= b else UNDECIDED
    word = {PASSES: f"< {b:g} passes", FAILS: f">= {b:g} fails", UNDECIDED: f"undecided against {b:g}"}[outcome]
    text = f"smooth MPRT Spearman {_interval(e).lstrip('+')}" + _worded(word, outcome)
    return CheckReading("smooth MPRT spearman", outcome, e,
                        _with_projection(text, "smooth MPRT spearman", e, b) if outcome == UNDECIDED else text)


def efficient_reading(efficient: Mapping[str, Any]) -> CheckReading:
    """Efficient MPRT: the median change of the maps' complexity under full randomization, beyond ±its bound."""
    per_image = efficient.get("per_image")
    m = float(efficient.get("bound", EFFICIENT_MPRT_MIN_RISE))
    if not per_image:
        e = _point(float(efficient["rise"]))
        outcome = PASSES if efficient.get("passed", False) else FAILS
    else:
        e, narrow = bootstrap_median_ci(per_image), bootstrap_median_ci(per_image, level=0.90)
        outcome = PASSES if e.low > m or e.high < -m else FAILS if -m < narrow.low and narrow.high < m else UNDECIDED
    word = {PASSES: f"beyond +-{m:g} passes", FAILS: f"within +-{m:g} fails",
            UNDECIDED: f"undecided against +-{m:g}"}[outcome]
    text = f"efficient MPRT complexity change {_interval(e)}" + _worded(word, outcome)
    return CheckReading("efficient MPRT rise", outcome, e,
                        _with_projection(text, "efficient MPRT rise", e, m) if outcome == UNDECIDED else text)


def randomization_passed(rows: Sequence[Mapping[str, Any]] | None) -> bool | None:
    """The cascading check: True when it passes, False when it fails, None when it was not run or is undecided."""
    if not rows:
        return None
    outcome = cascade_reading(rows).outcome
    return True if outcome == PASSES else False if outcome == FAILS else None


def randomization_comparison(rows: Sequence[Mapping[str, Any]] | None, mprt: Mapping[str, Any] | None = None,
                             skipped: Sequence[str] = ()) -> Comparison:
    """The randomization row: the cascading check and, when given, smooth and efficient MPRT
    (``RandomizationResult.as_dict()``), each read by its rule (module docstring). ``failed`` names each check that
    fails, ``undecided`` each that cannot tell yet; it passes (``beats``) only when every check passes. With
    ``"randomization"`` in ``skipped`` the row was not run (the gate had already failed)."""
    if "randomization" in skipped:
        return Comparison("randomization", RANDOMIZATION_WORDS, {}, beats=False, checked=False, failed=[],
                          skipped=True, role="randomization")
    readings = [cascade_reading(rows)] if rows else []
    if mprt is not None:
        readings += [smooth_reading(mprt["smooth_mprt"]), efficient_reading(mprt["efficient_mprt"])]
    effects = {r.name: PairedEffect(r.estimate, math.nan) for r in readings}
    failed = [r.text for r in readings if r.outcome == FAILS]
    undecided = [r.text for r in readings if r.outcome == UNDECIDED]
    checked = bool(rows)
    return Comparison("randomization", RANDOMIZATION_WORDS, effects, beats=checked and not failed and not undecided,
                      checked=checked, failed=failed, role="randomization", undecided=undecided)
