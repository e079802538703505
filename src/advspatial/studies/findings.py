"""What a study found (:class:`StudyFindings`; the study's metrics.json is its serialization), assembled from the
models' records by the cross-model analysis (:mod:`.analysis`, :mod:`.agreement`)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from ..experiments.findings import Findings
from ..experiments.measurement.config import MeasurementConfig
from ..statistics.claims import Claim
from . import agreement as agree
from .analysis import (
    ENDPOINTS, Agreement, Contrast, Endpoint, Regression, contrasts, correct_agreement, endpoint_across, judge_pooled,
    regressions,
)
from .records import ModelRecord


@dataclass
class ModelSummary:
    """One model: its spec, its own report, its covariates, its RoI explainer and gate, its cost."""

    spec: str
    report: str
    parameters: int
    depth: int
    image_shape: list[int]
    clean_accuracy: float
    robust_accuracy: float
    roi_method: str
    roi_status: str
    wall_seconds: float
    skipped: dict[str, str] = field(default_factory=dict)
    covariates: dict[str, float] = field(default_factory=dict)

    @classmethod
    def of(cls, record: ModelRecord) -> ModelSummary:
        return cls(record.spec, f"models/{record.label}/report.html", record.parameters, record.depth,
                   list(record.image_shape), record.clean_accuracy, record.robust_accuracy, record.roi_method,
                   record.roi_status, record.wall_seconds, dict(record.skipped), dict(record.covariates))


@dataclass
class StudyFindings(Findings):
    """Per model its summary (and the failed ones with their reason); per attack and endpoint every model's effect
    and the pooled one; the paired contrasts, the agreement between models, the meta-regressions; the pooled
    claims with their verdicts."""

    dataset: str
    n: int
    models: dict[str, ModelSummary]
    failed: dict[str, str]
    endpoints: list[Endpoint]
    contrasts: list[Contrast]
    agreement: list[Agreement]
    regressions: list[Regression]
    claims: list[Claim]


def study_findings(records: Sequence[ModelRecord], failed: Mapping[str, str],
                   config: MeasurementConfig) -> StudyFindings:
    """The cross-model analysis of the measured models (``config``: the settings they share)."""
    attacks = list(config.attacks)  # an attack no model could compare is listed too, each model with its reason
    claims: list[Claim] = []
    endpoints = [endpoint_across(records, a, e, config.seed, claims) for a in attacks for e in ENDPOINTS]
    judge_pooled(endpoints, claims, config.sesoi, config.significance)
    pairs = contrasts(records, attacks, config.seed, config.sesoi, config.significance)
    cells = agree.roi_agreement(records, config.fraction, config.seed, config.permutations)
    for attack in attacks:
        cells += agree.attack_agreement(records, attack, config.fraction, config.seed, config.permutations)
    correct_agreement(cells, config.sesoi, config.significance)
    return StudyFindings(config.dataset, config.n, {r.label: ModelSummary.of(r) for r in records}, dict(failed),
                         endpoints, pairs, cells, regressions(endpoints, records), claims)
