"""Unit-level stages of ``pse``: which units of the layer an attack moves, and what masking them does.

The units are ranked on attacks of *training* images (:func:`train_split`,
:func:`units_batch`), the masking curve is measured on the test images against
random units (:func:`masking_batch`), and an attack is run on the masked model
itself (:func:`adaptive_attack`: by default the registered ``autoattack``
ensemble, since masking is evaluated as a defence; PGD is the cheaper option). Every per-batch result is cached in
the run directory and streamed through ``ctx.each_batch``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, cast

import torch
from torch import nn

from ...analysis.units import UnitChange, mask_units, masking_curve, unit_activation_change
from ...attacks import Attack, AttackResult, make_attack
from ...maps import declared_cam_layer, find_feature_layer
from ...runtime import batch_slices
from ..context import shared_splits, train_images
from .config import PSEConfig
from .context import Context, build_attack
from .targets import choose_targets


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
        return UnitSums(change.mean_abs.double() * images, change.signed_mean.double() * images,
                        change.clean_mean_abs.double() * images, images)

    def __add__(self, other: UnitSums) -> UnitSums:
        return UnitSums(self.mean_abs + other.mean_abs, self.signed_mean + other.signed_mean,
                        self.clean_mean_abs + other.clean_mean_abs, self.images + other.images)

    def change(self) -> UnitChange:
        """The mean change over all images seen (NaN units when none were seen)."""
        d = self.images if self.images else math.nan
        return UnitChange((self.mean_abs / d).float(), (self.signed_mean / d).float(),
                          (self.clean_mean_abs / d).float())

    def as_dict(self) -> dict[str, Any]:
        """The fields as a dict (what the run directory caches; ``UnitSums(**d)`` reads it back)."""
        return {k: getattr(self, k) for k in ("mean_abs", "signed_mean", "clean_mean_abs", "images")}


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


def sensitive_units_in_batch(model: nn.Module, layer: str, x: torch.Tensor, x_adv: torch.Tensor,
                             keep: torch.Tensor, units: int) -> UnitSums:
    """Unit change of ``layer`` over the images ``keep`` (bool) of a batch, as weighted sums."""
    count = int(keep.sum())
    change = unit_activation_change(model, layer, x[keep], x_adv[keep]) if count else None
    return UnitSums.from_change(change, count, units)


def attacked_unit_sums(ctx: Context, attack: Attack, x: torch.Tensor, y: torch.Tensor, ids: torch.Tensor,
                       target: torch.Tensor | None = None) -> UnitSums:
    """Attack a batch and sum the unit change over its successful attacks (clean-correct and fooled)."""
    result = attack.run(x, y, target=target, sample_ids=ids)
    ok = (result.clean_pred == y) & result.success
    return sensitive_units_in_batch(ctx.model, ctx.layer, x, result.x_adv, ok, ctx.units)


def cam_layer_name(model: nn.Module, probe: torch.Tensor, layer: str = "") -> str:
    """``layer`` if given, else the model's declared ``cam_layer``, else the last 4-D feature layer."""
    return layer or declared_cam_layer(model) or find_feature_layer(model, probe)


def count_units(model: nn.Module, layer: str, probe: torch.Tensor) -> int:
    """Channels of ``layer``'s output (one probe forward pass)."""
    change = unit_activation_change(model, layer, probe, probe)
    return len(change)


@dataclass
class TrainSplit:
    """The training images the units are ranked on, with their targets for targeted variants."""

    data: Any  # ImageDataset
    slices: list[slice]
    targets: torch.Tensor
    shared: bool = False  # train and test are one image set (then the test images were left out)


def train_split(ctx: Context) -> TrainSplit:
    """``unit_train_n`` class-stratified training images (never the test images) and their attack targets."""
    cfg = ctx.config
    data = train_images(cfg, cfg.unit_train_n, exclude=ctx.data.ids)
    slices = list(batch_slices(len(data), cfg.batch_size))

    def logits(b: int, sl: slice) -> torch.Tensor:
        def compute() -> torch.Tensor:
            with torch.no_grad():
                return ctx.model(data.images(sl).to(ctx.device)).cpu()
        return ctx.rundir.cached(f"units/train/clean/batch-{b:05d}", compute)

    z = torch.cat(ctx.each_batch(logits, desc="train: clean logits", slices=slices))
    return TrainSplit(data, slices, choose_targets(data.labels, z.shape[1], cfg.target_mode, cfg.seed, z),
                      shared_splits(cfg.dataset))


def units_batch(ctx: Context, train: TrainSplit, variant: str, attack: Attack, mode: str, b: int,
                sl: slice) -> UnitSums:
    """Unit change over the successful attacks of one batch of *training* images (cached): the ranking set."""

    def compute() -> dict[str, Any]:
        x, y = train.data.images(sl).to(ctx.device), train.data.labels[sl].to(ctx.device)
        t = train.targets[sl].to(ctx.device) if mode == "targeted" else None
        return attacked_unit_sums(ctx, attack, x, y, train.data.ids[sl], t).as_dict()

    return UnitSums(**ctx.rundir.cached(f"units/train/{variant}/batch-{b:05d}", compute))


def masking_batch(ctx: Context, variant: str, b: int, result: AttackResult,
                  ranked: torch.Tensor) -> dict[str, torch.Tensor]:
    """Masking curve on one batch of test images (all its images; the random draws are the same in every batch)."""
    cfg = ctx.config

    def compute() -> dict[str, torch.Tensor]:
        x, y, _ = ctx.batch(ctx.slices[b])
        curve = masking_curve(ctx.model, ctx.layer, ranked, x, y, result.x_adv.to(ctx.device),
                              n_random=cfg.mask_random, seed=cfg.seed, batch_size=len(x))
        return {k: getattr(curve, k) for k in curve.__dataclass_fields__}

    return ctx.rundir.cached(f"masking/{variant}/batch-{b:05d}", compute)


#: how the report labels the accuracy under the PGD option
PGD_UPPER_BOUND = "a weaker attack than the ensemble: its accuracy is an upper bound on robust accuracy"


def adaptive_attack_of(model: nn.Module, config: PSEConfig) -> Attack:
    """The attack run on the masked model: the registered ensemble (default: masking is a defence, and a defence is
    evaluated by the adaptive ensemble), or PGD at the experiment's budget (cheaper, weaker)."""
    if config.adaptive_attack == "autoattack":
        return make_attack("autoattack", model, eps=config.eps, steps=config.steps, n_restarts=1,
                           n_queries=config.adaptive_queries, seed=config.seed)
    return build_attack("pgd", model, config)


def adaptive_description(config: PSEConfig) -> str:
    """How the report names the adaptive attack."""
    if config.adaptive_attack == "autoattack":
        return (f"the APGD-CE/APGD-DLR/Square ensemble (L-inf eps {config.eps}, {config.steps} steps, "
                f"{config.adaptive_queries} queries)")
    return f"PGD (L-inf eps {config.eps}, {config.steps} steps; {PGD_UPPER_BOUND})"


def adaptive_batch(ctx: Context, name: str, units: torch.Tensor, b: int, sl: slice) -> dict[str, int]:
    """The adaptive attack run against the model with ``units`` masked, on one test batch:
    counts of clean-correct and still-correct images (cached)."""
    cfg = ctx.config

    def compute() -> dict[str, int]:
        x, y, ids = ctx.batch(sl)
        with mask_units(ctx.model, ctx.layer, units):
            result = adaptive_attack_of(ctx.model, cfg).run(x, y, sample_ids=ids)
        return {"images": len(y), "clean_correct": int((result.clean_pred == y).sum()),
                "robust_correct": int((result.adv_pred == y).sum())}

    return ctx.rundir.cached(f"adaptive/{name}/batch-{b:05d}", compute)


def adaptive_k(curve: dict[str, torch.Tensor]) -> int:
    """The k the masking curve is most favourable to (highest fixed-x' accuracy over 0 < k < all units; ties:
    the smallest k): the one an adaptive attack must test."""
    ks, acc = curve["ks"].tolist(), curve["robust_acc"].tolist()
    inner = ([(a, -k) for k, a in zip(ks, acc, strict=True) if 0 < k < ks[-1]]
             or [(a, -k) for k, a in zip(ks, acc, strict=True) if k > 0])
    return -max(inner)[1] if inner else 0


def adaptive_attack(ctx: Context, name: str, units: torch.Tensor) -> dict[str, float]:
    """Clean and robust accuracy of the model with ``units`` masked, the adaptive attack run on it, over the
    first ``adaptive_n`` test images."""
    slices = list(batch_slices(min(ctx.config.adaptive_n, len(ctx.data)), ctx.config.batch_size))
    parts = ctx.each_batch(lambda b, sl: adaptive_batch(ctx, name, units, b, sl), desc=f"{name}: adaptive attack",
                           slices=slices)
    n = sum(p["images"] for p in parts)
    return {"k": len(units), "clean_acc": sum(p["clean_correct"] for p in parts) / n,
            "robust_acc": sum(p["robust_correct"] for p in parts) / n, "images": n}
