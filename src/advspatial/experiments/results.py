"""What an experiment returns, and the text of its files: metrics.json, per_image.csv."""

from __future__ import annotations

import csv
import hashlib
import io
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from ..report.html import Section
from ..report.answer import answer_lines
from ..report.planning import findings_parts, plan_section
from ..report.verdicts import claim_line, secondary_count_line
from .findings import RUN_KEYS, Findings

RESULT_FILES = ("config.yaml", "metrics.json", "per_image.csv", "report.html")


@dataclass
class ExperimentResult:
    """What an experiment returns: summary metrics, per-image rows, a report."""

    metrics: dict[str, Any]
    per_image: list[dict[str, Any]]
    summary: str
    report_sections: list[Any] = field(default_factory=list)
    answer: list[str] = field(default_factory=list)
    #: every claim's row, printed after the summary with ``--verbose`` ('' when the summary already says all)
    details: str = ""

    @classmethod
    def of(cls, findings: Findings, per_image: Sequence[dict[str, Any]], rendered: Rendered) -> ExperimentResult:
        """The result of an experiment with typed findings: metrics.json is their serialization; the report opens
        with its answer (:func:`~advspatial.report.answer.answer_lines`) and ends with what more data would decide
        (:func:`with_plan`)."""
        summary, details = printed(findings, rendered)
        return cls(findings.to_metrics(), list(per_image), summary, with_plan(rendered.sections, findings),
                   answer_lines(findings), details)


def printed(findings: Findings, rendered: Rendered) -> tuple[str, str]:
    """What a run prints (its summary) and what ``--verbose`` adds (every claim's row): an experiment whose
    rendering gives no details gets every claim's line, and its summary the other claims counted by verdict."""
    summary, details = rendered.summary, rendered.details
    if not details:
        claims = findings_parts(findings)[1]
        details = "\n".join(claim_line(c) for c in claims)
        count = secondary_count_line(claims)
        summary += f"\n{count}" if count else ""
    return summary, details


def with_plan(sections: Sequence[Section], findings: Findings) -> list[Section]:
    """A report's sections followed by its "What more data would decide" section
    (:func:`~advspatial.report.planning.plan_section`)."""
    return [*sections, plan_section(findings)]


@dataclass(frozen=True)
class RunFindings:
    """What an experiment's run returns: its typed findings and its per-image rows. The runner renders the report
    from them (the experiment's registered ``render``), so every run's report is timed as its "report" phase."""

    findings: Findings
    rows: Sequence[dict[str, Any]]


@dataclass(frozen=True)
class Rendered:
    """A report as an experiment renders it from its findings: the printed summary and the report's sections."""

    summary: str
    sections: list[Section]
    #: every claim's row for ``--verbose`` (the summary itself stays short: primaries, the gate, counts)
    details: str = ""




def metrics_to_json(metrics: dict[str, Any]) -> str:
    """Metrics as metrics.json's text (indented; tensors and arrays as lists)."""
    return json.dumps(metrics, indent=2, default=_json_default)


def findings_checksum(metrics: dict[str, Any]) -> str:
    """A short SHA-256 of metrics.json's findings (its keys but those a run adds: wall time, passes, its stamp):
    stamped into the file when it is written, so that ``advspatial report`` re-renders only findings as the run
    wrote them, not a file edited since."""
    findings = {k: v for k, v in metrics.items() if k not in RUN_KEYS}
    text = json.dumps(findings, sort_keys=True, default=_json_default)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def rows_to_csv(rows: list[dict[str, Any]]) -> str:
    """Rows as CSV text: columns in order of first appearance, missing cells empty; floats at repr precision."""
    buffer = io.StringIO()
    if rows:
        fieldnames = list(dict.fromkeys(key for row in rows for key in row))
        writer = csv.DictWriter(buffer, fieldnames=fieldnames, restval="", lineterminator="\n")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: _csv_value(v) for k, v in row.items()})
    return buffer.getvalue()


def _csv_value(value: Any) -> Any:
    if isinstance(value, float):
        return repr(value)
    return value


def _json_default(value: Any) -> Any:
    if hasattr(value, "tolist"):
        return value.tolist()
    raise TypeError(f"not JSON serializable: {type(value).__name__}")
