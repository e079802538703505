"""Summaries of the per-image rows of attacks on one model: accuracy per attack condition, the importance map's
share outside the attacked region before and after the attack, and the spread of the accuracies over the models of
several training seeds.

A row is one image of one model: ``model``, ``label``, ``<condition>_pred`` per attack condition (-1 where the
condition did not attack the image), ``region_share``, ``cam_energy_clean`` and ``cam_energy_region_adv`` (NaN where
the map is zero everywhere). Every summary is computed from the rows alone, so the two always agree.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from ...statistics.estimates import finite_mean


@dataclass
class RowStats:
    """One model's means over its per-image rows: accuracy per attack condition (``attacked``: the images a
    condition attacked, for a condition that attacked fewer than all), the region's share of the image, the
    importance map's share outside the region on clean and attacked images (``cam_zero_images``: images left out,
    their map all zero on either)."""

    images: float
    accuracy: dict[str, float]
    attacked: dict[str, float]
    region_share: float
    cam_energy_clean: float
    cam_energy_region_adv: float
    cam_zero_images: float


@dataclass
class SeedSpread:
    """One condition's accuracy of each training seed's model, their mean and sample sd (NaN for one seed)."""

    values: list[float]
    mean: float
    sd: float


def row_stats(rows: list[dict[str, Any]], name: str) -> RowStats:
    """The summary of model ``name``'s rows."""
    group = [r for r in rows if r["model"] == name]
    accuracy: dict[str, float] = {}
    attacked_images: dict[str, float] = {}
    for cond in [k[: -len("_pred")] for k in group[0] if k.endswith("_pred")]:
        # an image a condition did not attack (prediction -1) is left out of its accuracy
        attacked = [r for r in group if r[f"{cond}_pred"] != -1]
        accuracy[cond] = finite_mean([float(r[f"{cond}_pred"] == r["label"]) for r in attacked])
        if len(attacked) != len(group):
            attacked_images[cond] = float(len(attacked))
    # before/after means over the same images: those whose map is not all zero on either image
    both = [r for r in group if r["cam_energy_clean"] == r["cam_energy_clean"]
            and r["cam_energy_region_adv"] == r["cam_energy_region_adv"]]
    return RowStats(float(len(group)), accuracy, attacked_images, finite_mean([r["region_share"] for r in group]),
                    finite_mean([r["cam_energy_clean"] for r in both]),
                    finite_mean([r["cam_energy_region_adv"] for r in both]), float(len(group) - len(both)))


def seed_spread(rows: list[dict[str, Any]], models: Sequence[str]) -> dict[str, SeedSpread]:
    """Per condition, the accuracy of each of ``models`` (one training procedure, one model per training seed)
    and their mean and sample sd."""
    per_seed = [row_stats(rows, name).accuracy for name in models]
    out = {}
    for cond in per_seed[0]:
        values = [accuracy[cond] for accuracy in per_seed]
        mean = sum(values) / len(values)
        sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1)) if len(values) > 1 else math.nan
        out[cond] = SeedSpread(values, mean, sd)
    return out


def model_rows(name: str, labels: torch.Tensor, preds: Mapping[str, torch.Tensor], region_share: torch.Tensor,
               cam_energy_clean: torch.Tensor, cam_energy_region_adv: torch.Tensor) -> list[dict[str, Any]]:
    """One row per image of model ``name`` from its per-image columns (``preds``: per condition)."""
    cols: dict[str, list[Any]] = {f"{c}_pred": p.tolist() for c, p in preds.items()}
    cols.update(region_share=region_share.tolist(), cam_energy_clean=cam_energy_clean.tolist(),
                cam_energy_region_adv=cam_energy_region_adv.tolist())
    return [{"model": name, "index": i, "label": label, **{k: v[i] for k, v in cols.items()}}
            for i, label in enumerate(labels.tolist())]
