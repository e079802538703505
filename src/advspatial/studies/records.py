"""What a study keeps of each model's measurement (:class:`ModelRecord`): the per-image values behind its primary
endpoints, its maps on a small common grid, its gates, verdicts and covariates.

A record is computed once, right after the model's ``maps`` run (while its kept images are in memory), and saved
as the run's stage ``study-record``; a study that resumes reads it back and never touches that model again.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn

from ..experiments.measurement import colocation
from ..experiments.measurement.claims import claim_gates
from ..experiments.measurement.config import MeasurementConfig
from ..experiments.measurement.run import Measurement
from ..experiments.measurement.stages import AttackSummary, Context
from ..experiments.stage import Stage
from ..regions.binarization import pool_to_scale
from ..statistics.claims import Claim
from ..statistics.excess import PerImage
from ..statistics.store import PRIMARY_NULL, PRIMARY_STATISTIC, store_values

#: the largest side of the grid a record keeps maps at (the agreement between models is measured there)
GRID_CAP = 64


@dataclass
class Values:
    """Per-image values of one endpoint on one model: ``values[k]`` belongs to the image of global id ``ids[k]``;
    their mean is the model's effect. ``observed``/``null``: that image's statistic and its same-class null."""

    ids: torch.Tensor
    values: torch.Tensor
    observed: torch.Tensor
    null: torch.Tensor

    @classmethod
    def of(cls, per_image: PerImage, ids: torch.Tensor) -> Values:
        columns = torch.as_tensor(per_image.columns, dtype=torch.long)
        return cls(ids[columns].long(), torch.as_tensor(per_image.values, dtype=torch.float64),
                   torch.as_tensor(per_image.observed, dtype=torch.float64),
                   torch.as_tensor(per_image.null, dtype=torch.float64))


@dataclass
class AttackRecord:
    """One attack on one model: the kept images (successful, correctly classified, complete maps), their labels and
    attack maps on the grid, the per-image values of the plain excess over the same-class null and of the excess
    beyond each model-free reference, the claims' gates and the single run's verdict words."""

    name: str
    kind: str
    ids: torch.Tensor
    labels: torch.Tensor
    attack_map: torch.Tensor
    excess: Values
    beyond: dict[str, Values]
    gates: dict[str, bool]
    verdicts: dict[str, str]


@dataclass
class ModelRecord:
    """One model of a study: who it is, its covariates, its gate, its RoI maps on all n images and its attacks."""

    label: str
    spec: str
    parameters: int
    depth: int
    image_shape: tuple[int, int]
    wall_seconds: float
    clean_accuracy: float
    robust_accuracy: float
    roi_method: str
    roi_status: str
    roi_ids: torch.Tensor
    roi_labels: torch.Tensor
    roi_correct: torch.Tensor
    roi_map: torch.Tensor
    attacks: dict[str, AttackRecord]
    skipped: dict[str, str] = field(default_factory=dict)
    covariates: dict[str, float] = field(default_factory=dict)

    def covariate_values(self) -> dict[str, float]:
        """The meta-regression's covariates: measured (log10 parameters, depth, clean and robust accuracy) and
        stated."""
        return {"log10_parameters": math.log10(max(self.parameters, 1)), "depth": float(self.depth),
                "clean_accuracy": self.clean_accuracy, "robust_accuracy": self.robust_accuracy, **self.covariates}


class RecordStage(Stage[ModelRecord]):
    """A model record saved as plain dicts of tensors and numbers (what a stage file may hold)."""

    def saved(self, value: ModelRecord) -> dict[str, Any]:
        return asdict(value)

    def loaded(self, saved: Any) -> ModelRecord:
        attacks = {name: AttackRecord(**{**a, "excess": Values(**a["excess"]),
                                         "beyond": {r: Values(**v) for r, v in a["beyond"].items()}})
                   for name, a in saved["attacks"].items()}
        return ModelRecord(**{**saved, "image_shape": tuple(saved["image_shape"]), "attacks": attacks})


#: a model's record in its own run directory
STUDY_RECORD = RecordStage("study-record", per="run")


def model_record(measured: Measurement[MeasurementConfig], label: str, spec: str, wall_seconds: float,
                 covariates: Mapping[str, float]) -> ModelRecord:
    """The record of a finished measurement of one model (its kept images still in memory)."""
    ctx, outcomes = measured.context, measured.outcomes
    pgd = outcomes.attacks.get("pgd")
    attacks: dict[str, AttackRecord] = {}
    skipped: dict[str, str] = {}
    for summary in measured.summaries:
        reason = not_compared(summary, ctx.config.attack_map)
        if reason:
            skipped[summary.name] = reason
        else:
            attacks[summary.name] = attack_record(ctx, summary, measured)
    ids, labels, correct, roi = roi_maps(ctx)
    shape = (int(ctx.data.image_shape[-2]), int(ctx.data.image_shape[-1]))
    return ModelRecord(label, spec, parameter_count(ctx.model), weight_layers(ctx.model), shape,
                       float(wall_seconds), float(outcomes.clean_accuracy),
                       math.nan if pgd is None else float(pgd.adversarial_accuracy), ctx.importance,
                       str(measured.parts.roi.status), ids, labels, correct, roi, attacks, skipped, dict(covariates))


def not_compared(summary: AttackSummary, kind: str) -> str:
    """Why an attack enters no cross-model comparison ('' when it does)."""
    if summary.norm == "l0":
        return "an L0 attack: its co-location is the pixel-in-RoI test, not the energy share the study pools"
    if summary.kept(kind) < 3:
        return f"{summary.kept(kind)} successful images with a complete map (the statistics need 3)"
    return ""


def attack_record(ctx: Context[MeasurementConfig], summary: AttackSummary,
                  measured: Measurement[MeasurementConfig]) -> AttackRecord:
    """The per-image values of both primary endpoints of one attack, as the run's own claims computed them (one
    engine call: :func:`~advspatial.statistics.store.store_values`)."""
    cfg = ctx.config
    kind = cfg.attack_map
    store = summary.store(kind)
    assert store.ids is not None  # the measurement keeps every image's id
    ids = store.ids.long()
    values = store_values(store, cfg.seed)
    beyond = {name: Values.of(v, ids) for name, v in values.beyond.items()}
    roi_gate = measured.parts.faithfulness[ctx.importance]
    gates = claim_gates(roi_gate, measured.outcomes.attacks[summary.name].maps[kind], cfg)
    return AttackRecord(summary.name, kind, ids, store.labels.long(), on_grid(store.attack),
                        Values.of(values.excess, ids), beyond, gates,
                        run_verdicts(measured.parts.claims, f"{summary.name} ({kind} RoA)"))


def run_verdicts(claims: list[Claim], subject: str) -> dict[str, str]:
    """The single run's verdict words of the two endpoints a study pools (``beyond`` and ``excess``)."""
    out = {}
    for c in claims:
        if c.subject != subject or c.statistic != PRIMARY_STATISTIC:
            continue
        if c.claim == colocation.BEYOND_CLAIM:
            out["beyond"] = c.verdict
        elif c.null == PRIMARY_NULL and c.claim == colocation.CLAIM:
            out["excess"] = c.verdict
    return out


def roi_maps(ctx: Context[MeasurementConfig]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(ids, labels, correct, RoI explainer's maps on the grid) of all n images, from the run's cached stages."""
    parts: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]] = []
    for b, sl in enumerate(ctx.slices):
        labels = ctx.data.labels[sl]
        pred = ctx.clean(b).pred[: len(labels)]
        parts.append((ctx.data.ids[sl].long(), labels.long(), pred == labels,
                      on_grid(ctx.at_scale(ctx.importance_of(b)[: len(labels)]))))
    return tuple(torch.cat(column) for column in zip(*parts, strict=True))  # type: ignore[return-value]


def on_grid(maps: torch.Tensor) -> torch.Tensor:
    """(N,H,W) maps average-pooled to at most :data:`GRID_CAP` per side (area-weighted, so mass is kept)."""
    h, w = maps.shape[-2:]
    size = (min(h, GRID_CAP), min(w, GRID_CAP))
    pooled = maps if (h, w) == size else pool_to_scale(maps, size)
    return pooled.float().cpu()


def parameter_count(model: nn.Module) -> int:
    """The model's number of parameters (a covariate of the meta-regression)."""
    return sum(p.numel() for p in model.parameters())


def weight_layers(model: nn.Module) -> int:
    """The model's depth as its number of convolution and linear layers (a covariate of the meta-regression)."""
    return sum(isinstance(m, nn.Conv1d | nn.Conv2d | nn.Conv3d | nn.Linear) for m in model.modules())
