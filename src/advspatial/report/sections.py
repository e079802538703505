"""Report sections that several experiments build the same way (rendering only: plain values in, a Section out).

* :func:`explainer_verdict` - the sentence that names an explainer and what the faithfulness gate said of it;
* :func:`faithfulness_section` - the "Faithfulness gate" section: paragraphs, the gate's tables, anchor
  ``faithfulness``;
* :func:`drawn_figure` - a figure of the run, shown only when the run drew its file.

An experiment writes its own paragraphs (its gate rule, what the gated maps are
used for) and hands them here, so every report's gate section has one shape.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from ..faithfulness.record import GateResult
from .html import Figure, Section
from .gates import gate_tables


#: how an explainer stands by its gate's status, in a report's words
STATUS_WORDS = {"passed": "FAITHFUL", "failed": "NOT faithful", "undecided": "UNDECIDED",
                "cannot judge": "NOT JUDGED (the gate cannot judge this setting)"}


def status_words(status: str) -> str:
    """The gate status ("passed", "failed", "undecided", "cannot judge") as a report says it of an explainer."""
    return STATUS_WORDS.get(status, status)


def explainer_verdict(role: str, explainer: str, why: str, status: str, reason: str | None = None) -> str:
    """``"{role}: {explainer} ({why}). It is FAITHFUL|NOT faithful|UNDECIDED|NOT JUDGED by the gate below[ (...)]."``

    ``role`` names what the explainer is for (e.g. "RoI explainer"); ``status`` is the gate's
    (:data:`~advspatial.faithfulness.record.GATE_STATUSES`); ``reason``, when not None, is the gate's reason, shown
    in parentheses.
    """
    suffix = "" if reason is None else f" ({reason})"
    return f"{role}: {explainer} ({why}). It is {status_words(status)} by the gate below{suffix}."


def faithfulness_section(paragraphs: Sequence[str], gates: Mapping[str, GateResult],
                         per_class_of: Sequence[str] = ()) -> Section:
    """The "Faithfulness gate" section: ``paragraphs``, then the gate of every explainer in ``gates``, the
    model-randomization check and the per-class results of the explainers ``per_class_of``."""
    return Section("Faithfulness gate", list(paragraphs), tables=gate_tables(gates, per_class_of=per_class_of),
                   anchor="faithfulness")


def drawn_figure(folder: Path, name: str, caption: str) -> list[Figure]:
    """The figure file ``name`` in a run's figure ``folder`` with its ``caption``, or none when the run did not draw
    it: a report rendered from findings alone shows the figures the run drew, and says nothing of the others."""
    return [Figure(folder / name, caption)] if (folder / name).is_file() else []
