"""Unit-level helpers of the promotion-suppression analysis (METHODS §5), free of any run context.

* :class:`UnitSums`: the unit change of a layer (:class:`~advspatial.analysis.units.UnitChange`) as image-weighted
  sums, so that it streams over batches and adds up to the change over the whole set;
* :func:`combine_curves`: per-batch masking curves as one curve over every image; :func:`adaptive_k`: the k an
  adaptive attack on the masked model must test;
* :func:`cam_layer_name`, :func:`count_units`: the layer whose channels are the units, and how many there are;
* concept masks for dissection that are never the model's labels (:func:`concept_masks`), and the correlation
  of relative sensitivity with interpretability over the units that are active (:func:`relative_correlation`).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
from torch import nn

from ...analysis.dissection import DissectionResult, sensitivity_vs_interpretability
from ...analysis.units import UnitChange, mask_units, unit_activation_change
from ...attacks import Attack
from ...errors import ConfigError
from ...files import load_torch_file
from ...models.hooks import declared_cam_layer, find_feature_layer
from ...regions import dilate


@dataclass
class UnitSums:
    """Running sums of :class:`UnitChange` means, weighted by image counts (streams over batches)."""

    mean_abs: torch.Tensor
    signed_mean: torch.Tensor
    clean_mean_abs: torch.Tensor
    images: int

    @staticmethod
    def from_change(change: UnitChange | None, images: int, units: int) -> UnitSums:
        if change is None or images == 0:
            zero = torch.zeros(units, dtype=torch.float64)
            return UnitSums(zero, zero.clone(), zero.clone(), 0)
        # on the CPU, whatever the model's device: sums of batches computed on a GPU and read back from stage files
        # (always on the CPU) are added up together
        return UnitSums(change.mean_abs.double().cpu() * images, change.signed_mean.double().cpu() * images,
                        change.clean_mean_abs.double().cpu() * images, images)

    @staticmethod
    def total(parts: Iterable[UnitSums], units: int) -> UnitSums:
        """The sums of several batches added up (none: zero sums of ``units`` units over 0 images)."""
        return sum(parts, UnitSums.from_change(None, 0, units))

    def __add__(self, other: UnitSums) -> UnitSums:
        return UnitSums(self.mean_abs + other.mean_abs, self.signed_mean + other.signed_mean,
                        self.clean_mean_abs + other.clean_mean_abs, self.images + other.images)

    def change(self) -> UnitChange:
        """The mean change over all images seen (NaN units when none were seen)."""
        d = self.images if self.images else math.nan
        return UnitChange((self.mean_abs / d).float(), (self.signed_mean / d).float(),
                          (self.clean_mean_abs / d).float())


def sensitive_units_in_batch(model: nn.Module, layer: str, x: torch.Tensor, x_adv: torch.Tensor,
                             keep: torch.Tensor, units: int) -> UnitSums:
    """Unit change of ``layer`` over the images ``keep`` (bool) of a batch, as weighted sums."""
    count = int(keep.sum())
    change = unit_activation_change(model, layer, x[keep], x_adv[keep]) if count else None
    return UnitSums.from_change(change, count, units)


def attacked_unit_sums(model: nn.Module, layer: str, units: int, attack: Attack, x: torch.Tensor, y: torch.Tensor,
                       ids: torch.Tensor, target: torch.Tensor | None = None) -> UnitSums:
    """Attack a batch and sum the unit change of ``layer`` over its successful attacks (clean-correct and fooled)."""
    result = attack.run(x, y, target=target, sample_ids=ids)
    ok = (result.clean_pred == y) & result.success
    return sensitive_units_in_batch(model, layer, x, result.x_adv, ok, units)


def masked_attack_counts(model: nn.Module, layer: str, units: torch.Tensor, attack: Attack, x: torch.Tensor,
                         y: torch.Tensor, ids: torch.Tensor) -> dict[str, int]:
    """A batch's images, and how many of them the model classifies correctly, clean and under ``attack``, with
    ``units`` of ``layer`` masked while the attack runs: the attack adapts to the masked model."""
    with mask_units(model, layer, units):
        result = attack.run(x, y, sample_ids=ids)
    return {"images": len(y), "clean_correct": int((result.clean_pred == y).sum()),
            "robust_correct": int((result.adv_pred == y).sum())}


def combine_curves(curves: Sequence[dict[str, torch.Tensor]], weights: Sequence[int]) -> dict[str, torch.Tensor]:
    """Image-weighted mean of per-batch masking curves (accuracies are means over images)."""
    total = float(sum(weights))
    out = {"ks": curves[0]["ks"]}
    for key in curves[0]:
        if key != "ks":
            # a tensor: curves is not empty (curves[0] above)
            weighted = sum(c[key].double() * w for c, w in zip(curves, weights, strict=True))
            out[key] = cast(torch.Tensor, weighted) / total
    return out


def adaptive_k(curve: dict[str, torch.Tensor]) -> int:
    """The k the masking curve is most favourable to (highest fixed-x' accuracy over 0 < k < all units; ties:
    the smallest k): the one an adaptive attack must test."""
    ks, acc = curve["ks"].tolist(), curve["robust_acc"].tolist()
    inner = ([(a, -k) for k, a in zip(ks, acc, strict=True) if 0 < k < ks[-1]]
             or [(a, -k) for k, a in zip(ks, acc, strict=True) if k > 0])
    return -max(inner)[1] if inner else 0


def cam_layer_name(model: nn.Module, probe: torch.Tensor, layer: str = "") -> str:
    """``layer`` if given, else the model's declared ``cam_layer``, else the last 4-D feature layer."""
    return layer or declared_cam_layer(model) or find_feature_layer(model, probe)


def count_units(model: nn.Module, layer: str, probe: torch.Tensor) -> int:
    """Channels of ``layer``'s output (one probe forward pass)."""
    return len(unit_activation_change(model, layer, probe, probe))


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
    """Concept masks from a user file, rows picked by the images' global ids (format: docs/experiments/pse.md)."""
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


def concept_masks(concepts: str, dataset: str, data: Any) -> tuple[dict[str, torch.Tensor], str]:
    """The concept masks of ``data`` (the ``concepts`` file when given, else the dataset's own that are not its
    labels) and where they come from; ({}, "") when there are none."""
    if concepts:
        return load_concepts(concepts, data), f"user file {concepts}"
    masks = dataset_concepts(data)
    return (masks, f"{dataset}'s own concepts (class concepts left out)") if masks else ({}, "")


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
