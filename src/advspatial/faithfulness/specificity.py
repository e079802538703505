"""Specificity in words: what the RoI adds beyond maps that need no model.

The gate's specificity rows (:data:`~advspatial.faithfulness.gate.COMPARISONS` with role ``specificity``) compare
the RoI's damage with that of the class and dataset layout, the centre prior, the image's intensity and its edges,
each measure read as *beats*, *equivalent*, *does less* or *undecided*. They are a finding about the model, not a
test of the map: a faithful map of a model that reads a garment's silhouette points at its edges. This module turns
them into the plain sentence a report opens its gate section with (:func:`specificity_sentence`) and names the
references the RoI cannot be told apart from (:func:`inseparable`), which the co-location claims use to say "the
co-location is the class layout" instead of a bare "explained by".
"""

from __future__ import annotations

from ..statistics.outcomes import BEATS, DOES_LESS, EQUIVALENT, images_to_decide
from .record import Comparison, GateResult

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


def specificity_rows(gate: GateResult) -> dict[str, Comparison]:
    """The gate's specificity comparisons that were measured, in report order."""
    return {k: c for k, c in gate.comparisons.items() if c.role == "specificity" and c.decisions}


def inseparable(gate: GateResult) -> list[str]:
    """The references the RoI is equivalent to on every measure: on this model the two cannot be told apart."""
    return [k for k, c in specificity_rows(gate).items()
            if all(d.outcome == EQUIVALENT for d in c.decisions.values())]


def _join(items: list[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def _detail(c: Comparison) -> str:
    """'beats on deletion:road, undecided on attack (about 2,100 images would decide it)'."""
    parts = []
    for measure, d in c.decisions.items():
        text = f"{d.outcome} on {measure}"
        if not d.decided:
            text += f" ({images_to_decide(d).text()})"
        parts.append(text)
    return ", ".join(parts)


def specificity_sentence(gate: GateResult) -> str:
    """What the RoI adds beyond content, in plain sentences ('' when no specificity row was measured), e.g. "On
    this model the RoI is as damaging as the image's edges: the model looks where the edges are."."""
    rows = specificity_rows(gate)
    if not rows:
        return ""
    same = inseparable(gate)
    beats = [k for k, c in rows.items() if all(d.outcome == BEATS for d in c.decisions.values())]
    less = [k for k, c in rows.items() if k not in same and any(d.outcome == DOES_LESS for d in c.decisions.values())]
    rest = [k for k in rows if k not in same and k not in beats and k not in less]
    sentences = []
    if same:
        sentences.append(f"On this model the RoI is as damaging as {_join([REFERENCE_NOUNS[k] for k in same])}: the "
                         f"model looks {_join([LOOKS_WHERE[k] for k in same])}.")
    if beats:
        sentences.append(f"The RoI does more damage than {_join([REFERENCE_NOUNS[k] for k in beats])}: it tells more "
                         f"about this model than {_join([LOOKS_WHERE[k] for k in beats])}.")
    for k in less:
        sentences.append(f"The RoI does less damage than {REFERENCE_NOUNS[k]} ({_detail(rows[k])}).")
    for k in rest:
        sentences.append(f"Against {REFERENCE_NOUNS[k]}: {_detail(rows[k])}.")
    return " ".join(sentences)
