"""Specificity in words: what the RoI adds beyond maps that need no model, one sentence per measure.

The gate's specificity rows (:data:`~advspatial.faithfulness.gate.COMPARISONS` with role ``specificity``) compare
the RoI's damage with that of the class and dataset layout, the centre prior, the image's intensity and its edges.
They are a finding about the model, not a test of the map: a faithful map of a model that reads a garment's
silhouette points at its edges.

Each row is measured two ways that answer different questions, so they are worded apart, never folded into one
word per row: **deletion** (both fills: what the model uses) and the **restricted attack** (at its calibrated
budget, first-order gradient mass: where a small perturbation moves the margin most;
:data:`~advspatial.faithfulness.record.GRADIENT_MASS`). Within a measure, a reference reads:

- *more*: the RoI does more (*beats*, and not within the margin);
- *less*: the RoI does less (*does less*, and not within the margin);
- *within the margin*: *equivalent*, or a *beats* / *does less* whose 90% CI lies inside the margin too
  (``within_margin``): a difference too small to matter is never worded "more" or "less";
- *undecided*, with the images that would decide it;

and when the deletion fills disagree, each fill's reading is named. :func:`specificity_sentence` renders this.
"""

from __future__ import annotations

from ..statistics.outcomes import BEATS, DOES_LESS, Decision, images_to_decide
from ..statistics.wording import listed
from .record import GRADIENT_MASS, WITHIN_MARGIN, Comparison, GateResult

#: where a model looks when its RoI is as damaging as each reference
LOOKS_WHERE = {
    "class-layout": "where objects of the class usually are",
    "dataset-layout": "where objects usually are in this dataset",
    "centre": "at the centre of the image",
    "intensity": "at the brightest pixels",
    "edges": "where the edges are",
}
#: each reference as a noun
REFERENCE_NOUNS = {
    "class-layout": "the class layout",
    "dataset-layout": "the dataset layout",
    "centre": "the centre prior",
    "intensity": "the image's intensity",
    "edges": "the image's edges",
}
#: a specificity decision in words, one of these
MORE, WITHIN, LESS, UNDECIDED = "more", WITHIN_MARGIN, "less", "undecided"
#: the two measures the sentence keeps apart, as they open their sentence
DELETION, ATTACK = "deletion", "attack"
MEASURE_OPENINGS = {DELETION: "On deletion (what the model uses)",
                    ATTACK: "On the restricted attack (gradient mass, not counted in the gate)"}
#: the verbs of *more* and *less* per measure
_VERBS = {DELETION: "does", ATTACK: "removes"}
_OBJECTS = {DELETION: "damage", ATTACK: "margin"}


def specificity_rows(gate: GateResult) -> dict[str, Comparison]:
    """The gate's specificity comparisons that were measured, in report order."""
    return {k: c for k, c in gate.comparisons.items() if c.role == "specificity" and c.decisions}


def reading(d: Decision) -> str:
    """One specificity decision in words (module docstring): :data:`MORE`, :data:`WITHIN`, :data:`LESS` or
    :data:`UNDECIDED`."""
    if d.inside_margin:
        return WITHIN
    return {BEATS: MORE, DOES_LESS: LESS}.get(d.outcome, UNDECIDED)


def measure_decisions(c: Comparison) -> dict[str, dict[str, Decision]]:
    """A row's decisions by the measure they belong to: ``{"deletion": {"deletion:road": ..., ...}, "attack":
    {"attack": ...}}`` (a measure without decisions left out)."""
    out = {DELETION: dict(c.counted_decisions),
           ATTACK: {k: d for k, d in c.decisions.items() if k == GRADIENT_MASS}}
    return {k: v for k, v in out.items() if v}


def _fill(measure: str) -> str:
    return measure.split(":", 1)[1] if ":" in measure else measure


def _undecided(decisions: dict[str, Decision]) -> str:
    """What would decide the undecided decisions of one reference and measure, in the words of the largest
    projection (:func:`~advspatial.statistics.outcomes.images_to_decide`)."""
    need = [images_to_decide(d) for d in decisions.values() if reading(d) == UNDECIDED]
    return max(need, key=lambda p: p.images).text()


def _clauses(measure: str, decisions: dict[str, dict[str, Decision]]) -> list[str]:
    """The clauses of one measure's sentence, each naming the references of one reading (``decisions``: per
    reference, that measure's decisions); the first clause's subject is the RoI, the others' "it"."""
    verb, thing = _VERBS[measure], _OBJECTS[measure]
    by_reading: dict[str, list[str]] = {}
    mixed = []
    for ref, ds in decisions.items():
        words = {reading(d) for d in ds.values()}
        if len(words) == 1:
            by_reading.setdefault(words.pop(), []).append(ref)
        else:
            mixed.append(ref)
    nouns = {r: [REFERENCE_NOUNS[k] for k in refs] for r, refs in by_reading.items()}
    out = []
    if MORE in nouns:
        out.append(f"{verb} more {thing} than {listed(nouns[MORE])}")
    if WITHIN in nouns:
        where = (f" (the model looks {listed([LOOKS_WHERE[k] for k in by_reading[WITHIN]])})"
                 if measure == DELETION else "")
        out.append(f"is within the margin of {listed(nouns[WITHIN])}{where}")
    if LESS in nouns:
        out.append(f"{verb} less {thing} than {listed(nouns[LESS])}")
    for ref in by_reading.get(UNDECIDED, []):
        out.append(f"is undecided against {REFERENCE_NOUNS[ref]} ({_undecided(decisions[ref])})")
    for ref in mixed:
        parts = [f"{reading(d)} on {_fill(m)}" for m, d in decisions[ref].items()]
        out.append(f"reads differently per fill against {REFERENCE_NOUNS[ref]}: {', '.join(parts)}")
    return [("the RoI " if i == 0 else "it ") + clause for i, clause in enumerate(out)]


def measure_sentence(gate: GateResult, measure: str) -> str:
    """The specificity sentence of one measure (:data:`DELETION` or :data:`ATTACK`), its clauses separated by
    "; "; '' when no row measured it."""
    decisions = {k: by[measure] for k, c in specificity_rows(gate).items()
                 if measure in (by := measure_decisions(c))}
    if not decisions:
        return ""
    return f"{MEASURE_OPENINGS[measure]}: " + "; ".join(_clauses(measure, decisions)) + "."


def specificity_sentence(gate: GateResult) -> str:
    """What the RoI adds beyond maps that need no model, one sentence per measure ('' when no specificity row was
    measured), e.g. "On deletion (what the model uses): the RoI does more damage than the class layout and the
    centre prior. On the restricted attack (gradient mass, not counted in the gate): the RoI is within the
    margin of the class layout and the centre prior."."""
    return " ".join(s for s in (measure_sentence(gate, DELETION), measure_sentence(gate, ATTACK)) if s)
