"""The cached stages of ``pse`` (the package docstring lists them in order), each a
:class:`~advspatial.experiments.stage.Stage` saved per batch (or per run); the clean pass is the shared ``ctx.clean``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import Any

import torch

from ...analysis.dissection import DissectionResult, dissect
from ...analysis.pse import promotion_suppression
from ...analysis.pse_cam import PSECamResult, pse_vs_cam
from ...analysis.pse_types import TYPE_NAMES, PSEResult, cat_pse, pse_to_dict, retype, select_pse
from ...analysis.units import masking_curve, rank_sensitive_units
from ...attacks import Attack, AttackResult
from ...maps import importance_map
from ...runtime import batch_slices
from ...statistics.store import informative
from ..context import ExperimentContext, shared_splits, train_images
from ..measurement.colocation import composition
from ..stage import ATTACK, FieldsStage, Stage
from .config import PSEConfig, adaptive_attack_of, adaptive_description, measure_settings
from .control import SHARE_NAMES, control_shares
from .findings import Adaptive, DissectionFindings, MaskedAccuracy, RankingSet, VariantRun, variant_name
from .rows import cam_columns, pse_rows
from .stability import (
    confusion, group_confusions, group_spec, summed_agreements, superpixels_available,
)
from .targets import adversarial_class, choose_targets, prespecified_target
from .units import (
    UnitSums, adaptive_k, attacked_unit_sums, combine_curves, concept_masks, masked_attack_counts, relative_correlation,
)


@dataclass
class Context(ExperimentContext[PSEConfig]):
    """The common context plus the unit layer, its number of units, and the CAM explainer this run resolved."""

    layer: str = ""
    units: int = 0
    cam: str = ""
    cam_reason: str = ""


#: CAM_t0(x): the CAM of the true class on each clean test image
TRUE_CAM = Stage[torch.Tensor]("cam-true")
#: the group-wise promotion/suppression, per measurement and variant: ``PSE.at("isolated", "pgd", "targeted")``
PSE = FieldsStage("pse", kind=PSEResult)
#: CAM_t(x'): the CAM of the pre-specified class t on each adversarial image, per variant
TARGET_CAM = Stage[torch.Tensor]("cam-target")
#: (N,5) energy shares of the random-sign control, per variant
CONTROL = Stage[torch.Tensor]("pse/control")
#: confusion matrices of the primary typing against other pixel groups, per variant
STABILITY = Stage[dict[str, torch.Tensor]]("stability")
#: clean logits of the training images the units are ranked on
TRAIN_LOGITS = Stage[torch.Tensor]("units/train/clean")
#: unit change over the successful attacks of training images, per variant
TRAIN_UNITS = FieldsStage("units/train", kind=UnitSums)
#: masking curve of one test batch, per variant
MASKING = Stage[dict[str, torch.Tensor]]("masking")
#: counts of the adaptive attack on the masked model: ``ADAPTIVE.at("pgd", "targeted", "top-8")`` or ``.at("unmasked")``
ADAPTIVE = Stage[dict[str, int]]("adaptive")
#: unit change under the dissection attack on the test images
DISSECTION_UNITS = FieldsStage("dissection/units", kind=UnitSums)
#: the dissection of the unit layer on the test images (once per run)
DISSECTION = FieldsStage("dissection/result", per="run", kind=DissectionResult)


def clean_logits(ctx: Context, b: int) -> torch.Tensor:
    """The clean logits of test batch ``b``, with its CAM_t0(x) computed and cached on the way."""
    true_cam(ctx, b)
    return ctx.clean(b).logits


def cached_cam(ctx: Context, stage: Stage[torch.Tensor], b: int, images: Callable[[], torch.Tensor],
               classes: torch.Tensor) -> torch.Tensor:
    """The CAM of ``images()`` for ``classes`` in batch ``b``, cached as ``stage`` (the images made only if missing)."""
    return stage.get(ctx.rundir, lambda: importance_map(ctx.cam, ctx.model, images(), target=classes.to(ctx.device),
                                                        batch_size=len(classes)).cpu(), b)


def true_cam(ctx: Context, b: int) -> torch.Tensor:
    """CAM_t0(x) of test batch ``b`` (cached)."""
    return cached_cam(ctx, TRUE_CAM, b, lambda: ctx.batch(ctx.slices[b])[0], ctx.data.labels[ctx.slices[b]])


def measure_pse(ctx: Context, variant: tuple[str, str], b: int, result: AttackResult, t: torch.Tensor,
                how: str = "isolated") -> PSEResult:
    """Promotion/suppression per group towards the pre-specified ``t`` (the post-hoc class as the secondary
    target), measured ``how`` (isolated or leave-one-out), on the CPU (cached)."""
    cfg = ctx.config

    def compute() -> PSEResult:
        x, y, _ = ctx.batch(ctx.slices[b])
        pse = promotion_suppression(ctx.model, x, result.x_adv.to(ctx.device), y, t.to(ctx.device), block=cfg.block,
                                    variant=how, secondary_target=adversarial_class(result).to(ctx.device),
                                    **measure_settings(cfg, x))
        on_cpu: dict[str, Any] = {k: v.cpu() if isinstance(v, torch.Tensor) else v for k, v in pse_to_dict(pse).items()}
        return PSEResult(**on_cpu)

    return PSE.at(how, *variant).get(ctx.rundir, compute, b)


def target_cam(ctx: Context, variant: tuple[str, str], b: int, result: AttackResult, t: torch.Tensor) -> torch.Tensor:
    """CAM_t(x') of test batch ``b`` under the variant's attack (cached)."""
    return cached_cam(ctx, TARGET_CAM.at(*variant), b, lambda: result.x_adv.to(ctx.device), t)


def control_batch(ctx: Context, variant: tuple[str, str], b: int, result: AttackResult, pse: PSEResult,
                  ok: torch.Tensor) -> torch.Tensor:
    """(N,5) energy shares of the random-sign control of the batch's successful perturbations, NaN rows for the
    other images (cached). Each image's draws are keyed by its global sample id, so its control does not depend on
    the batch or on which other images succeeded."""
    cfg = ctx.config

    def compute() -> torch.Tensor:
        out = torch.full((len(ok), len(SHARE_NAMES)), math.nan, dtype=torch.float64)
        keep = ok.nonzero().squeeze(1)
        if len(keep):
            x, _, ids = ctx.batch(ctx.slices[b])
            index = keep.to(ctx.device)
            out[keep] = control_shares(ctx.model, x[index], result.x_adv.to(ctx.device)[index], select_pse(pse, keep),
                                       ids[keep], cfg.seed, cfg.control_draws,
                                       batch_size=measure_settings(cfg, x)["batch_size"], block=cfg.block)
        return out

    return CONTROL.at(*variant).get(ctx.rundir, compute, b)


def stability_batch(ctx: Context, variant: tuple[str, str], b: int, result: AttackResult, t: torch.Tensor,
                    pse: PSEResult, loo: PSEResult, ok: torch.Tensor) -> dict[str, torch.Tensor]:
    """Confusion matrices of the primary typing against the other choices, on the batch's successful images.

    kappa and leave-one-out: group by group over every successful image; other pixel groups: pixel by pixel
    (perturbed pixels) over those of the first ``stability_images`` test images (one PSE pass each, cached).
    """
    cfg = ctx.config
    out = {f"kappa={k:g}": confusion(pse.types[ok], retype(pse, kappa=k).types[ok]) for k in cfg.stability_kappas}
    out["leave-one-out"] = confusion(pse.types[ok], loo.types[ok])
    sl = ctx.slices[b]
    keep = (ok & (torch.arange(sl.start, sl.stop) < cfg.stability_images)).nonzero().squeeze(1)
    if not cfg.stability_groups:
        return out
    sides = {spec: group_spec(spec) for spec in cfg.stability_groups if group_spec(spec) or superpixels_available()}

    def compute() -> dict[str, torch.Tensor]:
        if not len(keep):
            return {spec: torch.zeros(len(TYPE_NAMES), len(TYPE_NAMES), dtype=torch.int64) for spec in sides}
        x, y, _ = ctx.batch(sl)
        on = keep.to(ctx.device)
        return group_confusions(ctx.model, x[on], result.x_adv.to(ctx.device)[on], y[on], t.to(ctx.device)[on],
                                select_pse(pse, keep), sides, cfg.superpixels, **measure_settings(cfg, x))

    return {**out, **STABILITY.at(*variant).get(ctx.rundir, compute, b)}


@dataclass
class VariantBatch:
    """What one test batch gives a variant: its rows, its successful images' PSE and CAMs, stability counts."""

    rows: list[dict[str, Any]]
    kept: PSEResult
    cams: dict[str, torch.Tensor]
    stability: dict[str, torch.Tensor]


def variant_batch(ctx: Context, variant: tuple[str, str], attack: Attack, targets: torch.Tensor,
                  runner: torch.Tensor, b: int, sl: slice) -> VariantBatch:
    """Attack, PSE (isolated and leave-one-out), control, CAMs and stability counts of one test batch."""
    name, mode = variant
    result = ctx.attack(ATTACK.at(*variant), attack, b, target=targets[sl] if mode == "targeted" else None)
    y, ids = ctx.data.labels[sl], ctx.data.ids[sl]
    pred = ctx.clean(b).pred
    ok = (pred == y) & result.success
    t = prespecified_target(result, runner[sl])
    pse, loo = measure_pse(ctx, variant, b, result, t), measure_pse(ctx, variant, b, result, t, "leave-one-out")
    control = control_batch(ctx, variant, b, result, pse, ok)
    keep = ok.nonzero().squeeze(1)
    cams = {"true": true_cam(ctx, b), "target": target_cam(ctx, variant, b, result, t), "x": ctx.data.images(sl),
            "x_adv": result.x_adv, "ids": ids}
    rows = pse_rows(ids, y, pred, result, pse, loo, ok, control, attack=name, targeted=mode == "targeted",
                    variant=variant_name(*variant))
    return VariantBatch(rows, select_pse(pse, keep), {k: v[keep] for k, v in cams.items()},
                        stability_batch(ctx, variant, b, result, t, pse, loo, ok))


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
        return TRAIN_LOGITS.get(ctx.rundir, compute, b)

    z = torch.cat(ctx.each_batch(logits, desc="train: clean logits", slices=slices))
    return TrainSplit(data, slices, choose_targets(data.labels, z.shape[1], cfg.target_mode, cfg.seed, z),
                      shared_splits(cfg.dataset))


def unit_change(ctx: Context, stage: FieldsStage[UnitSums], attack: Attack, data: Any, desc: str,
                slices: list[slice] | None = None, targets: torch.Tensor | None = None) -> UnitSums:
    """Unit change summed over the successful attacks (``targets``: targeted) of every batch of ``data``, cached
    per batch: on the training images it ranks the units, on the test images it is the dissection's sensitivity."""

    def part(b: int, sl: slice) -> UnitSums:
        def compute() -> UnitSums:
            x, y = data.images(sl).to(ctx.device), data.labels[sl].to(ctx.device)
            t = None if targets is None else targets[sl].to(ctx.device)
            return attacked_unit_sums(ctx.model, ctx.layer, ctx.units, attack, x, y, data.ids[sl], t)
        return stage.get(ctx.rundir, compute, b)

    return UnitSums.total(ctx.each_batch(part, desc=desc, slices=slices), ctx.units)


def masking_batch(ctx: Context, variant: tuple[str, str], attack: Attack, targets: torch.Tensor,
                  ranked: torch.Tensor, b: int, sl: slice) -> dict[str, torch.Tensor]:
    """Masking curve on one test batch on its cached adversarial images (the random draws are the same in every
    batch)."""
    cfg = ctx.config

    def compute() -> dict[str, torch.Tensor]:
        result = ctx.attack(ATTACK.at(*variant), attack, b, target=targets[sl] if variant[1] == "targeted" else None)
        x, y, _ = ctx.batch(sl)
        curve = masking_curve(ctx.model, ctx.layer, ranked, x, y, result.x_adv.to(ctx.device),
                              n_random=cfg.mask_random, seed=cfg.seed, batch_size=len(x))
        return {f.name: getattr(curve, f.name) for f in fields(curve)}

    return MASKING.at(*variant).get(ctx.rundir, compute, b)


def adaptive_attack(ctx: Context, stage: Stage[dict[str, int]], units: torch.Tensor) -> MaskedAccuracy:
    """Clean and robust accuracy of the model with ``units`` masked, the adaptive attack run on it, over the
    first ``adaptive_n`` test images (counts cached per batch)."""

    def counts(b: int, sl: slice) -> dict[str, int]:
        return stage.get(ctx.rundir, lambda: masked_attack_counts(
            ctx.model, ctx.layer, units, adaptive_attack_of(ctx.model, ctx.config), *ctx.batch(sl)), b)

    slices = list(batch_slices(min(ctx.config.adaptive_n, len(ctx.data)), ctx.config.batch_size))
    parts = ctx.each_batch(counts, desc=f"{stage.name}: adaptive attack", slices=slices)
    n = sum(p["images"] for p in parts)
    return MaskedAccuracy(len(units), sum(p["clean_correct"] for p in parts) / n,
                          sum(p["robust_correct"] for p in parts) / n, n)


def process_variant(ctx: Context, variant: tuple[str, str], targets: torch.Tensor, runner: torch.Tensor,
                    train: TrainSplit) -> VariantRun:
    """Attack, PSE, CAMs and typing stability on the test images; units ranked on the training images, then
    the masking curve and an adaptive attack on the test images; the image-level test."""
    cfg = ctx.config
    name = variant_name(*variant)
    attack = cfg.budgeted_attack(variant[0], ctx.model)
    parts = ctx.each_batch(lambda b, sl: variant_batch(ctx, variant, attack, targets, runner, b, sl),
                           desc=f"{name}: attack, PSE, CAM")
    rows = [r for part in parts for r in part.rows]
    cams = {k: torch.cat([part.cams[k] for part in parts])[: cfg.permutation_images] for k in parts[0].cams}
    kept = select_pse(cat_pse([part.kept for part in parts]), torch.arange(len(cams["ids"])))
    total = unit_change(ctx, TRAIN_UNITS.at(*variant), attack, train.data, f"{name}: units on training images",
                        train.slices, train.targets if variant[1] == "targeted" else None)
    change = total.change()
    ranked = rank_sensitive_units(change, cfg.rank_by) if total.images else torch.arange(ctx.units)
    curves = ctx.each_batch(lambda b, sl: masking_batch(ctx, variant, attack, targets, ranked, b, sl),
                            desc=f"{name}: masking curve")
    curve = combine_curves(curves, [sl.stop - sl.start for sl in ctx.slices])
    k = adaptive_k(curve)
    adaptive = Adaptive(adaptive_attack(ctx, ADAPTIVE.at(*variant, f"top-{k}"), ranked[:k]),
                        adaptive_attack(ctx, ADAPTIVE.at("unmasked"), ranked[:0]),
                        float(curve["robust_acc"][curve["ks"].tolist().index(k)]),
                        f"{adaptive_description(cfg)}, run on the masked model")
    cam_test = image_level(cfg, kept, cams, rows)
    ranking = RankingSet("train", len(train.data), total.images,
                         int(torch.isin(train.data.ids, ctx.data.ids).sum()) if train.shared else 0)
    shown = torch.arange(min(cfg.figure_images, len(kept.types)))
    examples = {k: v[: len(shown)] for k, v in cams.items()}
    return VariantRun(name, rows, cam_test, change.mean_abs, ranked, curve, ranking, adaptive,
                      summed_agreements([part.stability for part in parts]), examples,
                      select_pse(kept, shown) if len(shown) else None)


def image_level(config: PSEConfig, kept: PSEResult, cams: dict[str, torch.Tensor],
                rows: list[dict[str, Any]]) -> PSECamResult | None:
    """pse_vs_cam on the kept successful images; writes their per-image overlap shares into ``rows``.

    The CAM regions break ties at the cut by each image's global sample id, so an image's region does not depend
    on the batch size or on which images were kept. Every null of the engine's hierarchy is computed (the
    object-conditioned one when the images' foreground share is informative, as in spatial); ``baseline`` is the
    primary.
    """
    ids = cams["ids"]
    test = None
    if len(ids) >= 2:  # a permutation of one image is no baseline
        share = composition(cams["x"].detach().cpu()) if "x" in cams else None  # spatial's rule (colocation)
        test = pse_vs_cam(kept, cams["true"], cams["target"], config.top_fraction, config.permutations, config.seed,
                          weight=config.cam_weight, strata=kept.true_class, sample_ids=ids,
                          composition=share if share is not None and informative(share) else None,
                          primary_null=config.baseline)
    cam_columns(rows, test, ids)
    return test


def run_dissection(ctx: Context) -> DissectionFindings | None:
    """Dissect the analysed model's unit layer on the test images and correlate it with relative sensitivity under
    the untargeted ``dissection_attack``; never-active units left out. Without concept masks, why not instead (no
    other model is dissected); None when switched off."""
    cfg = ctx.config
    if not cfg.dissection:
        return None
    concepts, source = concept_masks(cfg.concepts, cfg.dataset, ctx.data)
    if not concepts:
        return DissectionFindings(dissected=False, dataset=cfg.dataset, layer=ctx.layer, reason=(
            f"{cfg.dataset} has no concept masks, so the analysed model cannot be dissected; pass concepts=FILE "
            "(docs/experiments/pse.md) to dissect it. No other model is dissected in its place."))
    attack = cfg.budgeted_attack(cfg.dissection_attack, ctx.model)
    sums = unit_change(ctx, DISSECTION_UNITS, attack, ctx.data, "dissection: unit change")
    result = DISSECTION.get(ctx.rundir, lambda: dissect(ctx.model, ctx.layer, ctx.data, concepts,
                                                        quantile=cfg.dissection_quantile, batch_size=cfg.batch_size))
    change = sums.change()
    active, rho, p = relative_correlation(change, result, cfg.correlation_permutations, cfg.seed)
    return DissectionFindings(
        dissected=True, dataset=cfg.dataset, layer=ctx.layer, concepts=list(result.concept_names),
        concept_source=source, images=len(ctx.data), successful=sums.images, units_included=int(active.sum()),
        units_never_active=int((~active).sum()), spearman_rho=rho, p_value=p,
        mean_best_iou=float(result.best_iou[active].mean()) if active.any() else math.nan,
        best_concepts=result.best_names, best_iou=result.best_iou.tolist(),
        relative_sensitivity=change.relative.tolist(), active=active.tolist())
