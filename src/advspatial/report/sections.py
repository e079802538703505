"""Report sections that several experiments build the same way (rendering only: plain values in, a Section out).

* :func:`explainer_verdict` - the sentence that names an explainer and what the faithfulness gate said of it;
* :func:`faithfulness_section` - the "Faithfulness gate" section: paragraphs, the gate's tables, anchor
  ``faithfulness``.

An experiment writes its own paragraphs (its gate rule, what the gated maps are
used for) and hands them here, so every report's gate section has one shape.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from .html import Section
from .verdicts import gate_tables


def explainer_verdict(role: str, explainer: str, why: str, faithful: bool, reason: str | None = None) -> str:
    """``"{role}: {explainer} ({why}). It is FAITHFUL|NOT faithful by the gate below[ ({reason})]."``

    ``role`` names what the explainer is for (e.g. "RoI explainer"); ``reason``,
    when not None, is the gate's reason, shown in parentheses.
    """
    verdict = "FAITHFUL" if faithful else "NOT faithful"
    suffix = "" if reason is None else f" ({reason})"
    return f"{role}: {explainer} ({why}). It is {verdict} by the gate below{suffix}."


def faithfulness_section(paragraphs: Sequence[str], gates: Mapping[str, Mapping[str, Any]],
                         per_class_of: Sequence[str] = ()) -> Section:
    """The "Faithfulness gate" section: ``paragraphs``, then the gate of every explainer in ``gates``, the
    model-randomization check and the per-class results of the explainers ``per_class_of``."""
    return Section("Faithfulness gate", list(paragraphs), tables=gate_tables(gates, per_class_of=per_class_of),
                   anchor="faithfulness")
