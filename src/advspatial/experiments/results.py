"""What an experiment returns, and the text of its files: metrics.json, per_image.csv."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from ..report.html import Section
from .findings import Findings

RESULT_FILES = ("config.yaml", "metrics.json", "per_image.csv", "report.html")


@dataclass
class ExperimentResult:
    """What an experiment returns: summary metrics, per-image rows, a report."""

    metrics: dict[str, Any]
    per_image: list[dict[str, Any]]
    summary: str
    report_sections: list[Any] = field(default_factory=list)

    @classmethod
    def of(cls, findings: Findings, per_image: Sequence[dict[str, Any]], rendered: Rendered) -> ExperimentResult:
        """The result of an experiment with typed findings: metrics.json is their serialization."""
        return cls(findings.to_metrics(), list(per_image), rendered.summary, list(rendered.sections))


@dataclass(frozen=True)
class Rendered:
    """A report as an experiment renders it from its findings: the printed summary and the report's sections."""

    summary: str
    sections: list[Section]




def metrics_to_json(metrics: dict[str, Any]) -> str:
    """Metrics as metrics.json's text (indented; tensors and arrays as lists)."""
    return json.dumps(metrics, indent=2, default=_json_default)


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
