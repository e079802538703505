"""The gate's randomization row, each check read with a CI over its draws and images: passes, fails or undecided.

The randomization checks (:mod:`.randomization`, :mod:`.mprt`) measure, on the check images, whether a map changes
when the model's weights are destroyed. Their bounds are fixed (cascading and smooth MPRT: a Spearman of 0.5;
efficient MPRT: a 5% rise of the maps' complexity), but one random re-initialization can decide the value by itself,
and a value a hair from its bound decides nothing. So each check is repeated over several independent
re-initializations (draws) and read like every other row of the gate: from its (draws x images) table of values, a
95% CI over draws and images (:func:`~advspatial.faithfulness.draws.two_level_ci`: of the mean Spearman; of the
median complexity change) and:

- cascading randomization, smooth MPRT: **passes** when the CI lies below the bound (both signs for the cascade's
  |Spearman|), **fails** when it lies at or beyond it, else **undecided**;
- efficient MPRT, one-sided as Hedström et al. (2024) define it (a randomized model's maps must get *noisier*):
  **passes** when the CI lies above +5%, **fails** when it lies below +5% (no rise, or a fall), else **undecided**.

Below ``min_n`` check images with a defined value (the gate's ``MIN_N``) a check that would pass reads **undecided:
insufficient data**: like the gate's cells, a check may fail on fewer images (a model-free map's Spearman is 1 on
every one) but never pass. A randomized map that collapsed to a constant is counted (Spearman 0: it changed;
efficient MPRT: a fall, the entropy drops to 0), and its count is printed in the check's words. A record written
without per-image values (hand-made rows) is read by the point value. A model-free map keeps every value at its
extreme (Spearman 1 on every image, no change at all): it fails.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ..statistics.estimates import Estimate
from ..statistics.outcomes import DEFAULT_POWER, Projection, images_beyond, images_within
from ..statistics.wording import how_many
from .draws import as_table, draws_to_decide, two_level_ci
from .mprt import EFFICIENT_MPRT_MIN_RISE, SMOOTH_MPRT_MAX_SPEARMAN
from .randomization import CASCADE_MAX_SPEARMAN
from .record import Comparison, PairedEffect

PASSES, FAILS, UNDECIDED = "passes", "fails", "undecided"
#: the randomization checks a gate may leave out once its verdict is decided (:mod:`.sequential`): the cascading
#: check and smooth/efficient MPRT
SKIPPABLE_CHECKS = ("randomization", "mprt")
RANDOMIZATION_WORDS = "randomization (the map changes when the weights are destroyed)"
#: check images with a defined value below which a check reads "insufficient data" (the gate passes its MIN_N)
MIN_CHECK_IMAGES = 30


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
                     bound: float | None = None, min_n: int = MIN_CHECK_IMAGES) -> Projection:
    """The check images at which an undecided randomization check would be decided, at its observed value (the SD
    recovered from its 95% CI, normal approximation), against the check's own bound (``bound``: the one its record
    states; default the check's constant); never fewer than ``min_n``. A check whose value lies on the passing side
    leans *passes* (the cascade's Spearman inside +-0.5 is an equivalence; smooth MPRT's Spearman below 0.5 and
    efficient MPRT's rise above 5% are one-sided), else it leans *fails*. A projection, not a promise: it holds the
    draws fixed, and where they differ more than the images, more draws decide it sooner than more images."""
    e = estimate
    if name == "efficient MPRT rise":
        m = EFFICIENT_MPRT_MIN_RISE if bound is None else bound
        p = Projection(PASSES if e.mean > m else FAILS, images_beyond(e, m, power), power)
    elif name == "cascade spearman":
        b = CASCADE_MAX_SPEARMAN if bound is None else bound
        if abs(e.mean) < b:
            p = Projection(PASSES, images_within(e, b, power), power)
        else:
            p = Projection(FAILS, images_beyond(e, b if e.mean > 0 else -b, power), power)
    else:
        b = SMOOTH_MPRT_MAX_SPEARMAN if bound is None else bound
        p = Projection(PASSES if e.mean < b else FAILS, images_beyond(e, b, power), power)
    if e.n < min_n:
        return Projection(p.outcome, float(min_n) if not p.images < math.inf else max(p.images, min_n), power)
    return p


def _worded(word: str, outcome: str) -> str:
    """The rule's word after a check's value: in parentheses, or after a comma when undecided (its projection
    follows in parentheses)."""
    return f", {word}" if outcome == UNDECIDED else f" ({word})"


def _distance(name: str, e: Estimate, bound: float) -> float:
    """How far a check's value lies from the bound that would decide it (the cascade inside +-bound: from the
    nearer edge)."""
    if name == "cascade spearman":
        return abs(abs(e.mean) - bound)
    return abs(e.mean - bound)


def _with_projection(text: str, name: str, e: Estimate, bound: float, min_n: int, table: Any,
                     statistic: str) -> str:
    """An undecided check's text with what would decide it: the check images at these draws and, where the check
    has several draws, the re-initializations at these images (the draws often differ more than the images, and
    then more draws decide it sooner than more images)."""
    p = check_projection(name, e, bound=bound, min_n=min_n)
    d, n = as_table(table).shape if table is not None else (1, 0)
    draws = draws_to_decide(table, statistic, _distance(name, e, bound)) if d > 1 else math.inf
    if not p.images < math.inf and not draws < math.inf:
        return text
    if not draws < math.inf:
        return (f"{text} (about {int(p.images):,} check images would decide it, as '{p.outcome}'; "
                "--randomization-images sets them)")
    images = (f", or about {int(p.images):,} check images at these {how_many(d, 're-initialization')}"
              if p.images < math.inf else "")
    return (f"{text} (about {how_many(int(draws), 're-initialization')} at these {how_many(n, 'check image')}"
            f"{images}, would decide it, as '{p.outcome}'; --randomization-draws and --randomization-images set them)")


def _interval(e: Estimate) -> str:
    return f"{e.mean:+.2f}" if e.low == e.high else f"{e.mean:+.2f} [{e.low:+.2f}, {e.high:+.2f}]"


def _point(value: float) -> Estimate:
    return Estimate(value, value, value, 1 if math.isfinite(value) else 0)


def _estimate(record: Mapping[str, Any], statistic: str, point_key: str) -> tuple[Estimate, bool]:
    """(value with its CI over draws and images, whether per-image values exist): from ``per_draw`` (draws x
    images), else a one-draw ``per_image`` list, else the record's point value."""
    table = _table(record)
    if table is None:
        return _point(float(record.get(point_key, math.nan))), False
    return two_level_ci(table, statistic), True


def _table(record: Mapping[str, Any]) -> Any:
    """The record's (draws x images) values, or its one draw's per-image list, or None."""
    return record.get("per_draw") or record.get("per_image") or None


def _counted(record: Mapping[str, Any], how: str) -> str:
    """'; 3 of 640 randomized maps collapsed to constants (counted as ...)' and the trained-model maps left out."""
    parts = []
    if record.get("n_collapsed"):
        parts.append(f"{record['n_collapsed']} of {record.get('maps', '?')} randomized maps collapsed to constants "
                     f"({how})")
    if record.get("n_undefined"):
        parts.append(f"{how_many(int(record['n_undefined']), 'trained-model map')} constant, left out")
    return "".join(f"; {p}" for p in parts)


def _read(name: str, outcome: str, e: Estimate, text: str, bound: float, min_n: int, table: Any,
          statistic: str) -> CheckReading:
    """A check's reading: below ``min_n`` images with values a check that does not fail reads "undecided:
    insufficient data" (like the gate's cells, it may fail there but never pass); an undecided check's text with
    its projection."""
    if table is not None and e.n < min_n and outcome != FAILS:
        outcome = UNDECIDED
        text += f", undecided: insufficient data ({how_many(e.n, 'check image')} < {min_n})"
    if outcome == UNDECIDED:
        text = _with_projection(text, name, e, bound, min_n, table, statistic)
    return CheckReading(name, outcome, e, text)


def cascade_reading(rows: Sequence[Mapping[str, Any]], min_n: int = MIN_CHECK_IMAGES) -> CheckReading:
    """The cascade's last step: the mean Spearman of the maps with the trained model's, against ±0.5."""
    last = rows[-1]
    e, has_values = _estimate(last, "mean", "spearman")
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
            + ("" if e.low == e.high else f" [{e.low:+.2f}, {e.high:+.2f}]") + _worded(word, outcome)
            + _counted(last, "counted as Spearman 0"))
    return _read("cascade spearman", outcome, e, text, b, min_n, _table(last), "mean")


def smooth_reading(smooth: Mapping[str, Any], min_n: int = MIN_CHECK_IMAGES) -> CheckReading:
    """Smooth MPRT: the mean Spearman of the denoised maps with the fully randomized models', below its bound."""
    e, has_values = _estimate(smooth, "mean", "spearman")
    b = float(smooth.get("bound", SMOOTH_MPRT_MAX_SPEARMAN))
    if not has_values:
        outcome = PASSES if smooth.get("passed", False) else FAILS
    else:
        outcome = PASSES if e.high < b else FAILS if e.low >= b else UNDECIDED
    word = {PASSES: f"< {b:g} passes", FAILS: f">= {b:g} fails", UNDECIDED: f"undecided against {b:g}"}[outcome]
    text = (f"smooth MPRT Spearman {_interval(e).lstrip('+')}" + _worded(word, outcome)
            + _counted(smooth, "counted as Spearman 0"))
    return _read("smooth MPRT spearman", outcome, e, text, b, min_n, _table(smooth), "mean")


def efficient_reading(efficient: Mapping[str, Any], min_n: int = MIN_CHECK_IMAGES) -> CheckReading:
    """Efficient MPRT: the median change of the maps' complexity under full randomization, one-sided: it must rise
    by more than its bound (a fall fails, as a rise too small does)."""
    e, has_values = _estimate(efficient, "median", "rise")
    m = float(efficient.get("bound", EFFICIENT_MPRT_MIN_RISE))
    if not has_values:
        outcome = PASSES if efficient.get("passed", False) else FAILS
    else:
        outcome = PASSES if e.low > m else FAILS if e.high < m else UNDECIDED
    word = {PASSES: f"a rise above +{m:g} passes", FAILS: f"a rise of at most +{m:g} fails",
            UNDECIDED: f"undecided against +{m:g}"}[outcome]
    text = (f"efficient MPRT complexity change {_interval(e)}" + _worded(word, outcome)
            + _counted(efficient, "counted as a fall to entropy 0"))
    return _read("efficient MPRT rise", outcome, e, text, m, min_n, _table(efficient), "median")


def randomization_passed(rows: Sequence[Mapping[str, Any]] | None) -> bool | None:
    """The cascading check: True when it passes, False when it fails, None when it was not run or is undecided."""
    if not rows:
        return None
    outcome = cascade_reading(rows).outcome
    return True if outcome == PASSES else False if outcome == FAILS else None


def randomization_comparison(rows: Sequence[Mapping[str, Any]] | None, mprt: Mapping[str, Any] | None = None,
                             skipped: Sequence[str] = (), min_n: int = MIN_CHECK_IMAGES) -> Comparison:
    """The randomization row: the cascading check and, when given, smooth and efficient MPRT
    (``RandomizationResult.as_dict()``), each read by its rule (module docstring). ``failed`` names each check that
    fails, ``undecided`` each that cannot tell yet; it passes (``beats``) only when every check passes. With
    ``"randomization"`` in ``skipped`` the row was not run (the gate had already failed). Below ``min_n`` check
    images a check is undecided (insufficient data)."""
    if "randomization" in skipped:
        return Comparison("randomization", RANDOMIZATION_WORDS, {}, beats=False, checked=False, failed=[],
                          skipped=True, role="randomization")
    readings = [cascade_reading(rows, min_n)] if rows else []
    if mprt is not None:
        readings += [smooth_reading(mprt["smooth_mprt"], min_n), efficient_reading(mprt["efficient_mprt"], min_n)]
    effects = {r.name: PairedEffect(r.estimate, math.nan) for r in readings}
    failed = [r.text for r in readings if r.outcome == FAILS]
    undecided = [r.text for r in readings if r.outcome == UNDECIDED]
    checked = bool(rows)
    return Comparison("randomization", RANDOMIZATION_WORDS, effects, beats=checked and not failed and not undecided,
                      checked=checked, failed=failed, role="randomization", undecided=undecided)
