"""The metrics of experiment ``localized-training`` (``metrics.json``), computed from the per-image rows only (so the
two agree): accuracy per model and condition, the importance map's share in the region before and after the
attack, and the spread of the accuracies over the training seeds."""

from __future__ import annotations

import math
from typing import Any

from ...training import TrainedModel
from ..results import mean_of
from .config import MODES, LocalizedConfig
from .models import seed_name, training_facts


def model_metrics(rows: list[dict[str, Any]], name: str) -> dict[str, float]:
    """Accuracies and importance-map energies of one model, computed from its per-image rows only."""
    group = [r for r in rows if r["model"] == name]
    out: dict[str, float] = {"images": float(len(group))}
    conditions = [k[: -len("_pred")] for k in group[0] if k.endswith("_pred")]
    for cond in conditions:  # an image a condition did not attack (prediction -1) is left out of its accuracy
        attacked = [r for r in group if r[f"{cond}_pred"] != -1]
        out[f"{cond}_accuracy"] = mean_of([float(r[f"{cond}_pred"] == r["label"]) for r in attacked])
        if len(attacked) != len(group):
            out[f"{cond}_images"] = float(len(attacked))
    out["region_share"] = mean_of([r["region_share"] for r in group])
    # before/after means over the same images: those whose map is not all zero on either image
    both = [r for r in group if r["cam_energy_clean"] == r["cam_energy_clean"]
            and r["cam_energy_region_adv"] == r["cam_energy_region_adv"]]
    out["cam_energy_clean"] = mean_of([r["cam_energy_clean"] for r in both])
    out["cam_energy_region_adv"] = mean_of([r["cam_energy_region_adv"] for r in both])
    out["cam_zero_images"] = float(len(group) - len(both))
    return out


def seed_spread(rows: list[dict[str, Any]], mode: str, seeds: int) -> dict[str, dict[str, Any]]:
    """Per condition, the accuracy of each training seed's model and their mean and sample sd."""
    per_seed = [model_metrics(rows, seed_name(mode, k)) for k in range(seeds)]
    out = {}
    for key in per_seed[0]:
        if key.endswith("_accuracy"):
            values = [m[key] for m in per_seed]
            mean = sum(values) / len(values)
            sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1)) if len(values) > 1 else math.nan
            out[key[: -len("_accuracy")]] = {"values": values, "mean": mean, "sd": sd}
    return out



def build_metrics(config: LocalizedConfig, n: int, rows: list[dict[str, Any]],
                  trained: dict[str, TrainedModel]) -> dict[str, Any]:
    """What ``metrics.json`` holds before the claims: the budget, and per model its metrics from the rows, what
    the model cache knows of it and the spread over the training seeds."""
    metrics: dict[str, Any] = {
        "n": n, "mask": config.mask, "eps": config.eps, "norm": config.norm,
        "models": {mode: {**model_metrics(rows, mode), **training_facts(trained[mode])} for mode in MODES},
    }
    for mode in MODES:
        metrics["models"][mode]["seeds"] = seed_spread(rows, mode, config.training_seeds)
    return metrics
