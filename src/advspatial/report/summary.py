"""Report pieces that every RoI-using experiment writes the same way, from its metrics alone.

The faithfulness gate's section: which explainer the RoI uses and whether it passed, the experiment's own
statement of the gate's rule, then the gate tables (:func:`~advspatial.report.verdicts.gate_tables`).
Rendering only: the numbers come from ``metrics["roi"]`` and ``metrics["faithfulness"]``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Literal

from .html import Section
from .verdicts import gate_tables

#: when the gate's reason ("passed", or the failed checks) follows the verdict sentence
ReasonShown = Literal["always", "if failed", "never"]


def gate_verdict_sentence(metrics: Mapping[str, Any], explainer: str = "RoI explainer", target: str = "",
                          reason: ReasonShown = "never") -> str:
    """'RoI explainer: gradcam (why). It is FAITHFUL by the gate below.' for the RoI of ``metrics``.

    ``target`` follows the method's name (e.g. " of the true class"); ``reason`` says when the gate's
    reason is added in parentheses.
    """
    roi = metrics["roi"]
    gate = metrics["faithfulness"][roi["method"]]
    shown = reason == "always" or (reason == "if failed" and not roi["faithful"])
    suffix = f" ({gate.get('reason', '')})" if shown else ""
    return (f"{explainer}: {roi['method']}{target} ({roi['why']}). It is "
            f"{'FAITHFUL' if roi['faithful'] else 'NOT faithful'} by the gate below{suffix}.")


def faithfulness_section(metrics: Mapping[str, Any], paragraphs: Sequence[str]) -> Section:
    """The 'Faithfulness gate' section: ``paragraphs``, then the gate of every explainer the run used, the
    model-randomization check, and the RoI explainer's gate per class."""
    tables = gate_tables(metrics["faithfulness"], per_class_of=[metrics["roi"]["method"]])
    return Section("Faithfulness gate", list(paragraphs), tables=tables, anchor="faithfulness")
