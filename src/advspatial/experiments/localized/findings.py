"""The findings of experiment ``localized-training`` (``metrics.json`` is their serialization): per model its
accuracy per condition and map shift from the per-image rows (:mod:`.attack_rows`, so the two agree), its
training and seed spread; the gates, the claims, fine-tuning."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from ...faithfulness.record import GateResult
from ...statistics.claims import Claim
from ...training import TrainedModel
from ..findings import Findings, optional_part, to_json
from ..measurement.roi import Roi
from .attack_rows import RowStats, SeedSpread, row_stats, seed_spread
from .config import MODES, LocalizedConfig, seed_name
from .finetuning import FinetuneConfig


@dataclass
class TrainingFacts:
    """What the model cache (or the run directory) knows of a model: full test-set accuracy (NaN for a fine-tuned
    one), training time, epochs, checkpoint; a fine-tuned model also its steps, last-epoch loss and key."""

    test_accuracy: float
    train_seconds: float
    epochs: int
    checkpoint: str
    steps: int | None = None
    last_epoch_loss: float | None = None
    key: str | None = None

    @classmethod
    def of(cls, trained: TrainedModel) -> TrainingFacts:
        meta = trained.metadata
        facts = cls(meta.get("test_accuracy", math.nan), meta.get("train_seconds", math.nan), trained.config.epochs,
                    str(trained.path) if trained.path else "")
        if isinstance(trained.config, FinetuneConfig):
            facts.steps, facts.key = meta.get("steps", 0), meta.get("key", "")
            facts.last_epoch_loss = meta.get("last_epoch_loss", math.nan)
        return facts


@dataclass
class ModelFindings:
    """One model: its row statistics, training, seed spread per condition and how its map may be read. In
    metrics.json one flat object (``<condition>_accuracy``, ``<condition>_images``, the training facts...)."""

    stats: RowStats
    training: TrainingFacts
    seeds: dict[str, SeedSpread]
    cam_interpretation: str
    mask_interpretation: str

    def as_dict(self) -> dict[str, Any]:
        s = self.stats
        out: dict[str, Any] = {"images": s.images}
        for cond, accuracy in s.accuracy.items():
            out[f"{cond}_accuracy"] = accuracy
            if cond in s.attacked:
                out[f"{cond}_images"] = s.attacked[cond]
        out.update(region_share=s.region_share, cam_energy_clean=s.cam_energy_clean,
                   cam_energy_region_adv=s.cam_energy_region_adv, cam_zero_images=s.cam_zero_images)
        out.update({k: v for k, v in asdict(self.training).items() if v is not None})
        return {**out, "seeds": to_json(self.seeds), "cam_interpretation": self.cam_interpretation,
                "mask_interpretation": self.mask_interpretation}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelFindings:
        own = {f.name for f in fields(TrainingFacts)}
        conditions = [k[: -len("_accuracy")] for k in data if k.endswith("_accuracy") and k not in own]
        stats = RowStats(data["images"], {c: data[f"{c}_accuracy"] for c in conditions},
                         {c: data[f"{c}_images"] for c in conditions if f"{c}_images" in data}, data["region_share"],
                         data["cam_energy_clean"], data["cam_energy_region_adv"], data["cam_zero_images"])
        training = TrainingFacts(**{k: data[k] for k in own if k in data})
        seeds = {c: SeedSpread(**s) for c, s in data["seeds"].items()}
        return cls(stats, training, seeds, data["cam_interpretation"], data["mask_interpretation"])


@dataclass
class FinetuneFacts:
    """Fine-tuning from a pretrained start: the start (checksum, clean accuracy on the evaluated images, the gate
    of the map that cut the localized model's training background), the recipe and the training images."""

    start: str
    weights: str
    start_sha256: str
    start_clean_accuracy: float
    epochs: int
    steps: int
    lr: float
    momentum: float
    weight_decay: float
    batch_size: int
    bn: str
    seed: int
    train_images: int
    train_ids_sha: str
    excludes_evaluated: bool
    train_source: str
    mask_method: str
    mask_why: str
    mask_source: str
    start_gate: GateResult | None


@dataclass
class LocalizedFindings(Findings):
    """Everything a localized-training run found: per model (``models``, keyed by training mode) its findings,
    the gate of its map (``faithfulness``) and the map (``importance``); the judged claims; fine-tuning."""

    n: int
    mask: str
    eps: float
    norm: str
    models: dict[str, ModelFindings]
    faithfulness: dict[str, GateResult]
    importance: dict[str, Roi]
    mask_from_importance: bool
    claims: list[Claim]
    finetune: FinetuneFacts | None = optional_part()  # a run trained from scratch has none
    timings: dict[str, float] = field(default_factory=dict)


def read_importance(methods: dict[str, dict[str, str]], gates: dict[str, GateResult]) -> dict[str, Roi]:
    """Per model its map (``methods``: method and why) and how it may be read by its gate."""
    return {mode: Roi.judged(methods[mode]["method"], methods[mode]["why"], gates[mode]) for mode in MODES}


def build_findings(config: LocalizedConfig, n: int, rows: list[dict[str, Any]], trained: dict[str, TrainedModel],
                   gates: dict[str, GateResult], importance: dict[str, Roi], mask_gated: bool,
                   claims: list[Claim]) -> LocalizedFindings:
    """The findings: per model its statistics from the rows, its training, its seed spread and how its map (and,
    when the mask is cut from it, its masked accuracies) may be read; the gates and the judged claims."""
    models = {mode: ModelFindings(row_stats(rows, mode), TrainingFacts.of(trained[mode]),
                                  seed_spread(rows, [seed_name(mode, k) for k in range(config.training_seeds)]),
                                  importance[mode].interpretation,
                                  importance[mode].interpretation if mask_gated else "interpretable (mask-free)")
              for mode in MODES}
    return LocalizedFindings(n, config.mask, config.eps, config.norm, models, gates, importance, mask_gated, claims)
