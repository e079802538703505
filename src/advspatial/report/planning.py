"""What more data would decide: every undecided gate comparison and claim with the images that would decide it.

A comparison that is *undecided* is neither a pass nor a failure, and a report that stops there leaves its reader
guessing whether more images would help. So every undecided faithfulness cell, specificity cell and claim of a run
is listed with a projection (:mod:`advspatial.statistics.outcomes`): at the observed effect and paired standard
deviation, the images at which the test of the outcome the data lean towards reaches the requested power. It is a
projection, not a promise: the observed effect is itself uncertain. The same rows are the report's "What more data
would decide" section and ``advspatial plan RUN_DIR`` (:func:`plan_rows` on a finished run's findings, at any power).

Examples:
    >>> from advspatial.statistics.claims import Claim
    >>> from advspatial.statistics.estimates import Estimate
    >>> claim = Claim("the attack acts where the model looks", "pgd", "energy_in_roi", "same-class", 0.31, 0.30,
    ...               Estimate(0.004, -0.002, 0.010, 120), 1.01, 0.2, verdict="not supported", sesoi=0.002)
    >>> [(r.kind, r.leans, r.images) for r in plan_rows({}, [claim])]
    [('claim', 'beats', 552.0)]
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ..faithfulness.record import Comparison, GateResult
from ..faithfulness.sanity import CHECK_WORDS, check_projection
from ..statistics.claims import Claim
from ..statistics.estimates import interval_text
from ..statistics.outcomes import (
    DEFAULT_POWER, PRACTICAL_FACTOR, Projection, images_for_estimate, images_to_decide,
)
from ..statistics.wording import how_many
from .html import Section, Table

#: the order of the kinds of rows in a plan
KIND_ORDER = ("faithfulness", "primary claim", "specificity", "claim")
#: the anchor of the report's "What more data would decide" section (the first screen links to it)
PLAN_ANCHOR = "what-would-decide"
#: rows beyond which the plan's table is folded in a report
FOLD_ROWS = 12
#: the verdicts of a claim that more images could change into a decided one
UNDECIDED_VERDICTS = ("not supported", "insufficient data")


@dataclass(frozen=True)
class PlanRow:
    """One undecided comparison: what it is, its effect now, and the images that would decide it.

    ``kind``: ``faithfulness`` or ``specificity`` (a gate cell, counted in correctly classified images), ``primary
    claim`` or ``claim`` (counted in the images that enter it); ``leans``: the outcome whose test the projection is for
    (``beats``, ``not better``, ``equivalent``, ``does less``); ``images``: the projection (inf: none decides it at
    the observed effect).
    """

    subject: str
    kind: str
    effect: str
    n: int
    leans: str
    images: float

    def need(self) -> str:
        """The images that would decide it, in words: a number, none at the observed effect, no practical number, or
        (when no image entered it, so there is no effect to project) images that enter it."""
        if self.n == 0:
            return "images that enter it (none did)"
        if not math.isfinite(self.images):
            return "none at the observed effect"
        if self.images > PRACTICAL_FACTOR * self.n:
            return f"no practical number (over {PRACTICAL_FACTOR}x the {self.n:,} it has)"
        return f"{int(self.images):,}"

    def cells(self) -> list[Any]:
        return [self.subject, self.kind, self.effect, self.n, self.leans, self.need()]


def _effect(mean: float, low: float, high: float) -> str:
    return interval_text(mean, low, high, "+.4g")


def gate_rows(name: str, gate: GateResult, power: float = DEFAULT_POWER) -> list[PlanRow]:
    """The undecided faithfulness and specificity cells of one explainer's gate (cells the positive control cannot
    pass either are decided: the gate cannot judge them; the restricted attack, which measures gradient mass and
    counts in no outcome, has none to decide)."""
    judged = {(c.comparison, c.measure): c.reading for c in gate.cells()}
    rows = []
    for key, comparison in gate.comparisons.items():
        for measure, d in comparison.counted_decisions.items():
            if d.decided or judged.get((key, measure), "undecided") != "undecided":
                continue
            p = images_to_decide(d, power)
            where = "gate" if comparison.role == "faithfulness" else comparison.role  # specificity: not in the gate
            rows.append(PlanRow(f"{where} {name}: {comparison.short} x {measure}", comparison.role,
                                _effect(d.mean, d.low, d.high), d.n, p.outcome, p.images))
    randomization = gate.comparisons.get("randomization")
    if randomization is not None and randomization.undecided:
        rows += randomization_rows(name, randomization, power)
    return rows


def randomization_rows(name: str, randomization: Comparison, power: float = DEFAULT_POWER) -> list[PlanRow]:
    """The undecided randomization checks of one gate, each with the check images that would decide it (counted
    in the images of the randomization checks, ``--randomization-images``)."""
    rows = []
    for check, effect in randomization.effects.items():
        words = CHECK_WORDS.get(check, check)
        if not any(text.startswith(words) for text in randomization.undecided):
            continue
        e = effect.estimate
        p = check_projection(check, e, power)
        rows.append(PlanRow(f"gate {name}: randomization: {words}", "faithfulness", _effect(e.mean, e.low, e.high),
                            e.n, p.outcome, p.images))
    return rows


def claim_rows(claims: Sequence[Claim], power: float = DEFAULT_POWER) -> list[PlanRow]:
    """The claims whose verdict more images could change ("not supported", "insufficient data"); not a claim about a
    training procedure, whose unit is the training seed (its verdict also needs the sign in every seed), nor a
    claim "not supported" whose effect would already be decided on the images it has (its verdict is held by its
    test: an intersection-union's largest p, or the multiple-comparison adjustment, which more images of the same
    effect do not lift)."""
    rows = []
    for c in claims:
        if c.verdict not in UNDECIDED_VERDICTS or c.per_seed is not None:
            continue
        p = claim_projection(c, power)
        if p is None:
            continue
        rows.append(PlanRow(f"claim: {c.subject}: {c.statistic} vs {c.null}", "primary claim" if c.primary else "claim",
                            _effect(c.effect.mean, c.effect.low, c.effect.high), c.effect.n, p.outcome,
                            max(p.images, 30.0) if c.verdict == "insufficient data" else p.images))
    return rows


def claim_projection(claim: Claim, power: float = DEFAULT_POWER) -> Projection | None:
    """The images that would decide a claim at its observed effect, or None for a claim "not supported" whose
    effect would already be decided on the images it has: its verdict is held by its test (an intersection-union's
    largest p, or the multiple-comparison adjustment), which more images of the same effect do not lift."""
    p = images_for_estimate(claim.effect, claim.sesoi, power)
    held = claim.verdict == "not supported" and (p.images <= claim.effect.n or ci_excludes_zero(claim))
    return None if held else p


def ci_excludes_zero(claim: Claim) -> bool:
    """The claim's 95% CI lies wholly above or wholly below 0."""
    e = claim.effect
    return bool(e.n) and (e.low > 0 or e.high < 0)


def not_supported_words(claim: Claim, power: float = DEFAULT_POWER) -> str:
    """Why a claim reads "not supported", in words that follow its numbers: a CI wholly on one side of 0 whose
    corrected test does not reject is held by its test, never "undecided"; otherwise undecided, with the images
    that would decide it (or none practical)."""
    e = claim.effect
    if ci_excludes_zero(claim):
        side = "above" if e.low > 0 else "below"
        return (f"its CI lies {side} 0 but its corrected test does not reject (p_adj = {claim.p_adjusted:.2g}): held "
                "by the test, which more images of the same effect do not lift")
    projection = claim_projection(claim, power)
    if projection is None:
        return f"held by its test (p_adj = {claim.p_adjusted:.2g}), not by its images"
    return f"undecided: {projection.text()}"


def plan_rows(gates: Mapping[str, GateResult], claims: Sequence[Claim], power: float = DEFAULT_POWER
              ) -> list[PlanRow]:
    """Every undecided gate cell (each gate in ``gates``) and claim, with its projection at ``power``: the
    faithfulness cells first, then the primary claims, the specificity cells and the other claims."""
    rows = [row for name, g in gates.items() for row in gate_rows(name, g, power)] + claim_rows(claims, power)
    return sorted(rows, key=lambda r: KIND_ORDER.index(r.kind))


def plan_table(rows: Sequence[PlanRow], power: float = DEFAULT_POWER) -> Table:
    """The rows as a report table."""
    return Table(f"What more data would decide: each undecided comparison with the images at which the test of the "
                 f"outcome it leans towards reaches {power:.0%} power, a projection at the observed effect and paired "
                 "standard deviation (gate cells count correctly classified images; claims count the images that "
                 "enter them)",
                 ["comparison", "kind", "effect now [95% CI]", "n now", "leans towards", "images that would decide"],
                 [r.cells() for r in rows], folded=len(rows) > FOLD_ROWS)


def findings_parts(findings: Any) -> tuple[dict[str, GateResult], list[Claim]]:
    """Every gate record and every claim a finished run's findings hold, wherever they sit (an experiment's
    ``faithfulness`` dict, a single ``gate``, nested parts): what :func:`plan_rows` reads."""
    gates: dict[str, GateResult] = {}
    claims: list[Claim] = []

    def walk(value: Any, name: str) -> None:
        if isinstance(value, GateResult):
            if not any(g is value for g in gates.values()):
                gates[name if name not in gates else f"{name} ({value.method})"] = value
        elif isinstance(value, Claim):
            if not any(c is value for c in claims):
                claims.append(value)
        elif dataclasses.is_dataclass(value) and not isinstance(value, type):
            for f in dataclasses.fields(value):
                walk(getattr(value, f.name), f.name)
        elif isinstance(value, Mapping):
            for k, v in value.items():
                walk(v, str(k))
        elif isinstance(value, (list, tuple)):
            for v in value:
                walk(v, name)

    walk(findings, "gate")
    return gates, claims


def plan_section(findings: Any, power: float = DEFAULT_POWER) -> Section:
    """The report's "What more data would decide" section for a run's findings (:func:`findings_parts`)."""
    gates, claims = findings_parts(findings)
    rows = plan_rows(gates, claims, power=power)
    if not gates and not claims:
        return Section("What more data would decide", [
            "This run makes no gate comparison and no claim: there is nothing for more images to decide."],
            anchor=PLAN_ANCHOR)
    if not rows:
        return Section("What more data would decide", [
            "Every gate comparison and every claim of this run is decided: more images would not change what kind "
            "of verdict any of them has."], anchor=PLAN_ANCHOR)
    return Section("What more data would decide", [
        f"{how_many(len(rows), 'comparison')} of this run {'is' if len(rows) == 1 else 'are'} undecided: "
        f"{'its' if len(rows) == 1 else 'their'} CI holds both readings. Each is listed with the "
        "images that would decide it, a projection at the observed effect (a smaller true effect needs more). "
        "`advspatial plan RUN_DIR --power P` prints the same table at another power."],
        tables=[plan_table(rows, power)], anchor=PLAN_ANCHOR)
