"""The report of the ``maps`` experiment: the measurement's sections and limits
(:mod:`advspatial.experiments.measurement.sections`), and its printed summary. Pure rendering (:func:`render`)."""

from __future__ import annotations

from pathlib import Path

from ..measurement.sections import (
    MeasuredReport, claims_lines, compact_claims_lines, measurement_limits_section, measurement_sections,
)
from ..results import Rendered
from .config import MapsConfig
from .findings import MapsFindings


def render(config: MapsConfig, findings: MapsFindings, figures: Path) -> Rendered:
    """The summary and the report of a ``maps`` run."""
    sections = [*measurement_sections(config, findings, figures),
                measurement_limits_section(config, findings, external=False)]
    return Rendered(maps_summary(findings), sections, "\n".join(claims_lines(findings)))


def maps_summary(f: MeasuredReport) -> str:
    """The summary of the ``maps`` experiment: each attack's success, then the gate, the primaries and the counts
    (:func:`compact_claims_lines`)."""
    lines = [f"{name} on {m.images} images: success rate {m.success_rate:.3f}, {m.successful} successful "
             "attacks analysed" for name, m in f.attacks.items()]
    return "\n".join([*lines, *compact_claims_lines(f)])
