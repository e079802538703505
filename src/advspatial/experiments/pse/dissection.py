"""Dissection stage of ``pse``: are the units the attack moves the interpretable ones?

The analysed model itself is dissected on its test images with concept masks
that are not its labels (the dataset's own, or a user file), and the units'
relative sensitivity under ``dissection_attack`` is correlated with their best
IoU; never-active units are left out. Without concept masks the summary says
why and nothing is dissected (no other model is dissected in its place).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import torch

from ...analysis.dissection import DissectionResult, dissect, sensitivity_vs_interpretability
from ...analysis.units import UnitChange
from ...attacks import Attack
from ...errors import ConfigError
from ...files import load_torch_file
from ...regions import dilate
from .config import PSEConfig
from .context import Context, build_attack
from .units import UnitSums, attacked_unit_sums


@dataclass
class DissectionSummary:
    """Dissection of the analysed model's unit layer, or why it could not be dissected (``reason``)."""

    dataset: str
    layer: str
    reason: str = ""
    concept_source: str = ""
    images: int = 0
    successful: int = 0
    sensitivity: torch.Tensor | None = None  # (U,) relative: mean |A(x') - A(x)| / mean |A(x)|
    active: torch.Tensor | None = None  # (U,) bool: units active somewhere on the images
    result: DissectionResult | None = None
    rho: float = math.nan
    p_value: float = math.nan

    @property
    def dissected(self) -> bool:
        return self.result is not None


def label_concept(name: str, class_names: Sequence[str]) -> bool:
    """True when a concept names one of the model's classes (e.g. ``shape:circle``): such a concept is a label."""
    classes = {c.lower() for c in class_names}
    return name.lower() in classes or name.split(":")[-1].lower() in classes


def dataset_concepts(data: Any) -> dict[str, torch.Tensor]:
    """The dataset's concept masks that are not its labels, plus ``object`` and ``object-boundary`` from its
    foreground masks (when it has them)."""
    out = {k: v.bool() for k, v in data.concepts.items() if not label_concept(k, data.class_names)}
    if out and data.masks is not None:
        obj = data.masks.bool()
        out["object"] = obj
        out["object-boundary"] = obj & dilate(~obj, 1)
    return out


def load_concepts(path: str, data: Any) -> dict[str, torch.Tensor]:
    """Concept masks from a user file, rows picked by the test images' global ids (format: docs/experiments/pse.md)."""
    import numpy as np

    file = Path(path)
    if not file.is_file():
        raise ConfigError(f"concepts file {path!r} does not exist")
    if file.suffix == ".npz":
        with np.load(file) as arrays:
            raw = {k: torch.from_numpy(arrays[k]) for k in arrays.files}
    elif file.suffix == ".pt":
        loaded = load_torch_file(file, f"concepts file {path}", "save a dict of (N,H,W) bool tensors")
        if not isinstance(loaded, dict):
            raise ConfigError(f"concepts file {path!r} must hold a dict name -> (N,H,W) bool masks")
        raw = loaded
    else:
        raise ConfigError(f"concepts file {path!r} must be .pt or .npz")
    _, h, w = data.image_shape
    out = {}
    for name, mask in raw.items():
        mask = torch.as_tensor(mask)
        if mask.ndim != 3 or tuple(mask.shape[1:]) != (h, w) or mask.shape[0] <= int(data.ids.max()):
            raise ConfigError(f"concept {name!r} must be (N,{h},{w}) with a row for every test image (N > "
                              f"{int(data.ids.max())}), got {tuple(mask.shape)}")
        out[str(name)] = mask[data.ids].bool()
    if not out:
        raise ConfigError(f"concepts file {path!r} holds no masks")
    return out


def concept_masks(config: PSEConfig, data: Any) -> tuple[dict[str, torch.Tensor], str]:
    """The concept masks of the test images and where they come from ({} when there are none)."""
    if config.concepts:
        return load_concepts(config.concepts, data), f"user file {config.concepts}"
    concepts = dataset_concepts(data)
    if concepts:
        return concepts, f"{config.dataset}'s own concepts (class concepts left out)"
    return {}, ""


def dissection_units_batch(ctx: Context, attack: Attack, b: int) -> UnitSums:
    """Unit change under the untargeted dissection attack on one test batch (cached)."""

    def compute() -> dict[str, Any]:
        x, y, ids = ctx.batch(ctx.slices[b])
        return attacked_unit_sums(ctx, attack, x, y, ids).as_dict()

    return UnitSums(**ctx.rundir.cached(f"dissection/units/batch-{b:05d}", compute))


def run_dissection(ctx: Context) -> DissectionSummary | None:
    """Dissect the analysed model's unit layer on the test images and correlate it with relative sensitivity.

    Concepts are never the model's labels; units never active on the images are
    left out (and counted); sensitivity is relative to the unit's clean scale.
    Without concept masks the summary says why instead (no other model is dissected).
    """
    cfg = ctx.config
    if not cfg.dissection:
        return None
    concepts, source = concept_masks(cfg, ctx.data)
    if not concepts:
        return DissectionSummary(cfg.dataset, ctx.layer, reason=(
            f"{cfg.dataset} has no concept masks, so the analysed model cannot be dissected; pass concepts=FILE "
            "(docs/experiments/pse.md) to dissect it. No other model is dissected in its place."))
    attack = build_attack(cfg.dissection_attack, ctx.model, cfg)
    parts = ctx.each_batch(lambda b, sl: dissection_units_batch(ctx, attack, b), desc="dissection: unit change")
    sums = sum(parts, UnitSums.from_change(None, 0, ctx.units))

    def compute_dissection() -> dict[str, Any]:
        res = dissect(ctx.model, ctx.layer, ctx.data, concepts, quantile=cfg.dissection_quantile,
                      batch_size=cfg.batch_size)
        return {f.name: getattr(res, f.name) for f in fields(res)}

    values = dict(ctx.rundir.cached("dissection/result", compute_dissection))
    values["concept_names"] = tuple(values["concept_names"])
    result = DissectionResult(**values)
    change = sums.change()
    active, rho, p = relative_correlation(change, result, cfg.correlation_permutations, cfg.seed)
    return DissectionSummary(cfg.dataset, ctx.layer, concept_source=source, images=len(ctx.data),
                             successful=sums.images, sensitivity=change.relative, active=active, result=result,
                             rho=rho, p_value=p)


def relative_correlation(change: UnitChange, result: DissectionResult, n_perm: int,
                         seed: int) -> tuple[torch.Tensor, float, float]:
    """Active units, and Spearman rho and p of their relative sensitivity with their best IoU.

    A unit is active when its clean activation is non-zero somewhere on the attacked
    images and its dissection region is not empty; the others have both ~0
    sensitivity and ~0 IoU and would inflate the correlation, so they are left out.
    Relative sensitivity (change over the unit's clean scale) keeps loud units from
    looking sensitive just by their scale. NaN with fewer than 3 active units.
    """
    scale = change.clean_mean_abs.nan_to_num(0.0)
    active = (result.unit_area > 0) & (scale > 0)
    if int(active.sum()) < 3:
        return active, math.nan, math.nan
    corr = sensitivity_vs_interpretability(change.relative[active], result.best_iou[active], n_perm, seed)
    return active, corr.rho, corr.p_value
