"""The ``maps`` experiment's findings (:class:`MapsFindings`; metrics.json is their serialization): the
measurement's (:class:`~advspatial.experiments.measurement.findings.MeasurementFindings`) as they are."""

from __future__ import annotations

from dataclasses import dataclass

from ..measurement.findings import MeasurementFindings


@dataclass
class MapsFindings(MeasurementFindings):
    """What a ``maps`` run found: per attack its outcome, the gates, the RoI, the comparisons, panel and claims."""
