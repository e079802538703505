"""Experiment ``pse``: the promotion–suppression effect (METHODS.md §5).

Which pixel groups of an adversarial perturbation push the true class down
(suppression), which push the adversarial class up (promotion), where those
groups lie relative to the class activation maps, which units of a layer the
attack moves, what masking those units does, and whether the sensitive units
are the interpretable ones (network dissection on a concept dataset).

Stages, each streamed batch by batch and saved in the run directory so that
``--resume`` completes an interrupted run with identical numbers:

1. clean logits, predictions and ``CAM_t0(x)`` (the true class) of every image;
   attack targets (seeded random class != label, least-likely or next class);
2. per attack variant (CW-L2 / PGD, untargeted / targeted): the attack with
   per-sample seeds, the group-wise promotion/suppression (exact by default,
   2x2 blocks), ``CAM_t(x')`` of the adversarial class, and the per-unit
   activation change of the chosen layer over the successful images;
3. the unit ranking of each variant, then the masking curve (clean and robust
   accuracy as more top-sensitive units are zeroed, against random units);
4. the faithfulness gate of the CAM explainer (:func:`.gate.gate_stage`) on the
   run's own cached ``CAM_t0(x)``: every CAM-dependent result is read only if it passes;
5. image level: ``pse_vs_cam`` on the first ``permutation_images`` successful
   images of each variant, against the exact partner null of the inference
   engine; each (CAM, group type) share becomes a pre-declared claim, the
   primary ones corrected by Holm, the rest by Benjamini-Hochberg, each given a
   verdict word (:mod:`advspatial.regions.claims`);
6. dissection: a model for the concept dataset (the main model when the
   datasets agree, else ``dissection_model`` trained/cached for it), attacked
   with ``dissection_attack`` to measure unit sensitivity, dissected, and the
   two correlated (Spearman, permutation p).

"Successful" images are those the model classifies correctly *and* the attack
fools (targeted: the prediction is the target): only there does the
perturbation explain a decision change. Metrics are computed from the
per-image rows, so the two always agree.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, fields
from typing import Any

import torch
from torch import nn
from ..progress import progress_bar

from ..analysis.dissection import DissectionResult, dissect, sensitivity_vs_interpretability
from ..analysis.pse import METHODS as PSE_METHODS
from ..analysis.pse import TYPE_NAMES, PSEResult, group_type_map, promotion_suppression, pse_vs_cam
from ..analysis.units import RANK_BY, UnitChange, masking_curve, rank_sensitive_units, unit_activation_change
from ..attacks import Attack, AttackResult, make_attack
from ..data import dataset_spec, load_dataset
from ..errors import ConfigError, check_range, unknown_name
from ..maps import declared_cam_layer, find_feature_layer, importance_map, list_importance_methods
from ..regions.claims import NOT_INTERPRETABLE_ROI, Claim, claim_from, judge, sentence_case
from ..report.html import Figure, Section, Table
from ..report.verdicts import (
    gate_tables,
    plot_forest,
    verdict_legend,
    verdict_table,
    what_this_run_shows,
)
from ..runtime import RunDir, batch_slices, make_generator, scaled_batch
from ..training import resolve_model
from .base import ExperimentContext, ExperimentResult, mean_of, prepare_context, register_experiment, setting
from .gate import GatedConfig, gate_rule, gate_stage, resolve_importance, roi_label

MODES = ("untargeted", "targeted")
TARGET_MODES = ("random", "least-likely", "next")
BASELINES = ("same-class", "any-class")
CAM_KEYS = ("true_cam", "target_cam")
CAM_LABELS = {"true_cam": "CAM_t0(x)", "target_cam": "CAM_t(x')"}
CAM_REGIONS = {"true_cam": "the true-class CAM region", "target_cam": "the adversarial-class CAM region"}
#: the primary claim of each CAM: the group type that acts on the CAM's own class
PRIMARY_TYPE = {"true_cam": "suppression", "target_cam": "promotion"}
#: the label of the unit-masking accuracies until an attack adapts to the masked model
NO_ADAPTIVE_ATTACK = "no adaptive attack yet"
MASKING_LABEL = (f"{NO_ADAPTIVE_ATTACK}: the adversarial images were crafted against the unmasked model, so these "
                 "accuracies are not robustness")
#: how the claims name the groups of each type
GROUP_NAMES = {"suppression": "suppression-dominated groups", "promotion": "promotion-dominated groups",
               "balanced": "balanced groups", "opposing": "opposing groups"}

TERMS = ("Region of Importance (RoI): the pixels the model looks at when it classifies, here the top fraction of a "
         "class activation map (CAM) - CAM_t0(x) of the true class t0 on the clean image x, CAM_t(x') of the "
         "adversarial class t on the adversarial image x'. Region of Attack (RoA): the pixels the attacker's "
         "perturbation acts through, here its pixel groups, typed by what each does on its own: suppression "
         "(lowers the true-class logit), promotion (raises the adversarial-class logit), balanced or opposing.")


@dataclass
class PSEConfig(GatedConfig):
    """Settings of the promotion–suppression experiment (METHODS §5); every one is a CLI option."""

    n: int = setting(200, "number of test images (the first n)")
    batch_size: int = setting(100, "images per batch (memory does not grow with n)")
    attacks: list[str] = setting(["cw-l2", "pgd"], "attacks to run (advspatial list attacks; need a targeted mode)")
    modes: list[str] = setting(["untargeted", "targeted"], "attack modes: untargeted, targeted")
    target_mode: str = setting("random", "target class of targeted attacks: random (seeded, != label), "
                                         "least-likely (lowest clean logit) or next ((label+1) mod K)")
    eps: float = setting(0.1, "L-inf budget of PGD (and of the dissection attack when it is PGD)")
    steps: int = setting(20, "PGD iterations")
    cw_steps: int = setting(50, "Adam steps per CW-L2 binary-search round")
    cw_search_steps: int = setting(4, "CW-L2 binary-search rounds over c")
    block: int = setting(2, "side of the square pixel groups G")
    pse_method: str = setting("exact", "exact (forward pass per group) or first_order (gradient x delta)")
    kappa: float = setting(2.0, "dominance factor of the group types (>= 1)")
    pair_batch: int = setting(2048, "(image, group) pairs per forward pass of the exact method, for 28x28 images; "
                                    "larger images get proportionally fewer (the same pixels per pass)")
    cam: str = setting("auto", "class activation map (the RoI): auto (Grad-CAM for a GAP+linear head, HiResCAM "
                               "for a flatten/FC head), cam (GAP nets) or any importance method (advspatial list maps)")
    top_fraction: float = setting(0.2, "top fraction of each CAM forming its region")
    cam_weight: str = setting("energy", "weight of a pixel in the CAM overlap: energy (sum_c delta^2) or pixels")
    baseline: str = setting("same-class", "permutation baseline: same-class or any-class re-pairing")
    permutations: int = setting(2000, "permutations of the image-level null (two-sided p; the smallest p is "
                                      "1/(B+1), so B must allow Holm across the primary claims)")
    permutation_images: int = setting(1000, "successful images per attack entering the image-level test")
    unit_layer: str = setting("", "layer whose channels are the units (default: the model's cam_layer)")
    rank_by: str = setting("mean_abs", "unit ranking: mean_abs, relative, signed, abs_signed")
    mask_random: int = setting(5, "random-unit draws per k of the masking control")
    dissection_dataset: str = setting("synthetic-shapes", "concept dataset for dissection ('' = skip dissection)")
    dissection_model: str = setting("smallcnn", "model for the concept dataset when it differs from dataset: "
                                                "registered arch (trained/cached) or model file")
    dissection_arch: str = setting("", "architecture of a state-dict dissection_model file")
    dissection_n: int = setting(200, "concept-dataset test images for dissection and sensitivity")
    dissection_attack: str = setting("pgd", "untargeted attack measuring unit sensitivity on the concept dataset")
    dissection_quantile: float = setting(0.995, "activation quantile of a unit's region (0.995 = top 0.5%)")
    correlation_permutations: int = setting(1000, "permutations of the sensitivity-interpretability p-value")
    figure_images: int = setting(4, "example images per attack variant")

    PRESET_FIELDS = {"eps_linf": "eps", "steps": "steps", "cw_steps": "cw_steps", "cw_search_steps": "cw_search_steps",
                     "pse_block": "block", "batch_size": "batch_size", "image_size": "image_size"}
    LAYER_ACCESS = "class activation maps and unit analyses read layers through forward hooks"
    QUICK = {"n": 24, "batch_size": 12, "steps": 5, "cw_steps": 10, "cw_search_steps": 2, "permutations": 200,
             "mask_random": 2, "dissection_n": 24, "correlation_permutations": 100, "figure_images": 2,
             "gate_n": 24, "gate_steps": 5, "randomization_images": 4}

    def validate(self) -> None:
        super().validate()
        from ..attacks import list_attacks

        known = list_attacks()
        if not self.attacks:
            raise ConfigError("attacks must name at least one attack")
        for name in [*self.attacks, self.dissection_attack]:
            if name not in known:
                raise unknown_name("attack", name, known)
        if not self.modes:
            raise ConfigError(f"modes must name at least one of {', '.join(MODES)}")
        for mode in self.modes:
            if mode not in MODES:
                raise unknown_name("mode", mode, MODES)
        if "targeted" in self.modes:
            for name in self.attacks:
                if not known[name].cls.supports_targeted:
                    raise ConfigError(f"attack {name!r} has no targeted mode; drop it or use modes=untargeted")
        for name, value, valid in (("target_mode", self.target_mode, TARGET_MODES),
                                   ("pse_method", self.pse_method, PSE_METHODS),
                                   ("cam_weight", self.cam_weight, ("energy", "pixels")),
                                   ("baseline", self.baseline, BASELINES), ("rank_by", self.rank_by, RANK_BY)):
            if value not in valid:
                raise unknown_name(name, value, valid)
        if self.cam not in list_importance_methods():
            raise unknown_name("importance method", self.cam, list_importance_methods())
        if self.dissection_dataset:
            dataset_spec(self.dissection_dataset)
        check_range("eps", self.eps, 0, 1)
        check_range("kappa", self.kappa, 1)
        check_range("top_fraction", self.top_fraction, 0, 1, low_inclusive=False)
        check_range("dissection_quantile", self.dissection_quantile, 0, 1, low_inclusive=False, high_inclusive=False)
        for name in ("steps", "cw_steps", "cw_search_steps", "block", "pair_batch", "permutations",
                     "permutation_images", "dissection_n", "correlation_permutations"):
            check_range(name, getattr(self, name), 1)
        check_range("mask_random", self.mask_random, 0)
        check_range("figure_images", self.figure_images, 0)


# -- small pure helpers (unit-tested) -----------------------------------------------------

def variant_name(attack: str, mode: str) -> str:
    """Key of an attack variant, e.g. ``"pgd/targeted"``."""
    return f"{attack}/{mode}"


def choose_targets(labels: torch.Tensor, num_classes: int, mode: str, seed: int,
                   clean_logits: torch.Tensor | None = None) -> torch.Tensor:
    """(N,) target classes, never the label.

    ``random``: ``(label + U{1..K-1}) mod K`` from one seeded draw over all N images
    (uniform over the other classes); ``least-likely``: the class with the lowest
    clean logit (needs ``clean_logits``; the label is excluded); ``next``: ``(label + 1) mod K``.
    """
    if num_classes < 2:
        raise ConfigError(f"targeted attacks need at least 2 classes, got {num_classes}")
    labels = labels.long()
    if mode == "random":
        offset = torch.randint(1, num_classes, labels.shape, generator=make_generator(seed))
        return (labels + offset) % num_classes
    if mode == "next":
        return (labels + 1) % num_classes
    if mode == "least-likely":
        if clean_logits is None or clean_logits.shape != (labels.shape[0], num_classes):
            raise ConfigError("target_mode least-likely needs the clean logits (N,K)")
        masked = clean_logits.clone().float()
        masked[torch.arange(len(labels)), labels] = math.inf
        return masked.argmin(1)
    raise unknown_name("target_mode", mode, TARGET_MODES)


def pse_to_dict(result: PSEResult) -> dict[str, Any]:
    """The fields of a :class:`PSEResult` as a dict (what the run directory caches)."""
    return {f.name: getattr(result, f.name) for f in fields(result)}


def select_pse(result: PSEResult, index: torch.Tensor) -> PSEResult:
    """The images ``index`` of a result (every per-image tensor indexed along dim 0)."""
    values = pse_to_dict(result)
    for key, value in values.items():
        if isinstance(value, torch.Tensor):
            values[key] = value[index.to(value.device)]
    return PSEResult(**values)


def cat_pse(results: Sequence[PSEResult]) -> PSEResult:
    """Concatenate the per-image tensors of results of one setting (same group count)."""
    if not results:
        raise ConfigError("cat_pse needs at least one result")
    values = pse_to_dict(results[0])
    for key, value in values.items():
        if isinstance(value, torch.Tensor):
            values[key] = torch.cat([getattr(r, key) for r in results])
    return PSEResult(**values)


@dataclass
class UnitSums:
    """Running sums of :class:`UnitChange` means, weighted by image counts (streams over batches)."""

    mean_abs: torch.Tensor
    signed_mean: torch.Tensor
    clean_mean_abs: torch.Tensor
    images: int

    @staticmethod
    def from_change(change: UnitChange | None, images: int, units: int) -> "UnitSums":
        if change is None or images == 0:
            zero = torch.zeros(units, dtype=torch.float64)
            return UnitSums(zero, zero.clone(), zero.clone(), 0)
        return UnitSums(change.mean_abs.double() * images, change.signed_mean.double() * images,
                        change.clean_mean_abs.double() * images, images)

    def __add__(self, other: "UnitSums") -> "UnitSums":
        return UnitSums(self.mean_abs + other.mean_abs, self.signed_mean + other.signed_mean,
                        self.clean_mean_abs + other.clean_mean_abs, self.images + other.images)

    def change(self) -> UnitChange:
        """The mean change over all images seen (NaN units when none were seen)."""
        d = self.images if self.images else math.nan
        return UnitChange((self.mean_abs / d).float(), (self.signed_mean / d).float(),
                          (self.clean_mean_abs / d).float())


def combine_curves(curves: Sequence[dict[str, torch.Tensor]], weights: Sequence[int]) -> dict[str, torch.Tensor]:
    """Image-weighted mean of per-batch masking curves (accuracies are means over images)."""
    total = float(sum(weights))
    out = {"ks": curves[0]["ks"]}
    for key in curves[0]:
        if key != "ks":
            out[key] = sum(c[key].double() * w for c, w in zip(curves, weights)) / total
    return out


def sensitive_units_in_batch(model: nn.Module, layer: str, x: torch.Tensor, x_adv: torch.Tensor,
                             keep: torch.Tensor, units: int) -> UnitSums:
    """Unit change of ``layer`` over the images ``keep`` (bool) of a batch, as weighted sums."""
    count = int(keep.sum())
    change = unit_activation_change(model, layer, x[keep], x_adv[keep]) if count else None
    return UnitSums.from_change(change, count, units)


def cam_layer_name(model: nn.Module, probe: torch.Tensor, layer: str = "") -> str:
    """``layer`` if given, else the model's declared ``cam_layer``, else the last 4-D feature layer."""
    return layer or declared_cam_layer(model) or find_feature_layer(model, probe)


def count_units(model: nn.Module, layer: str, probe: torch.Tensor) -> int:
    """Channels of ``layer``'s output (one probe forward pass)."""
    change = unit_activation_change(model, layer, probe, probe)
    return len(change)


# -- the run ---------------------------------------------------------------------------

@dataclass
class Context(ExperimentContext):
    """The common context plus the unit layer, its number of units, and the CAM explainer this run resolved."""

    layer: str = ""
    units: int = 0
    cam: str = ""
    cam_reason: str = ""


def build_attack(name: str, model: nn.Module, config: PSEConfig) -> Attack:
    """The attack ``name`` with the experiment's budgets."""
    eps, steps = config.eps, config.steps
    params: dict[str, dict[str, Any]] = {
        "fgsm": {"eps": eps},
        "pgd": {"eps": eps, "alpha": "auto", "steps": steps},
        "bim": {"eps": eps, "alpha": "auto", "steps": steps},
        "cw-l2": {"steps": config.cw_steps, "binary_search_steps": config.cw_search_steps},
    }
    return make_attack(name, model, seed=config.seed, **params.get(name, {}))


def clean_batch(ctx: Context, b: int) -> dict[str, torch.Tensor]:
    """Clean logits and CAM of the true class, CAM_t0(x) (cached)."""

    def compute() -> dict[str, torch.Tensor]:
        x, y, _ = ctx.batch(ctx.slices[b])
        with torch.no_grad():
            logits = ctx.model(x)
        cam = importance_map(ctx.cam, ctx.model, x, target=y, batch_size=len(x))
        return {"logits": logits.cpu(), "cam_true": cam.cpu()}

    return ctx.rundir.cached(f"clean/batch-{b:05d}", compute)  # type: ignore[return-value]


def attack_batch(ctx: Context, variant: str, attack: Attack, b: int, target: torch.Tensor | None) -> AttackResult:
    def compute() -> dict[str, Any]:
        x, y, ids = ctx.batch(ctx.slices[b])
        t = None if target is None else target.to(ctx.device)
        result = attack.run(x, y, target=t, sample_ids=ids).to("cpu")
        return {k: getattr(result, k) for k in result.__dataclass_fields__}

    return AttackResult(**ctx.rundir.cached(f"attack/{variant}/batch-{b:05d}", compute))


def batch_target(targets: torch.Tensor, mode: str, sl: slice) -> torch.Tensor | None:
    """The batch's target classes for a targeted variant, None for an untargeted one."""
    return targets[sl] if mode == "targeted" else None


def adversarial_class(result: AttackResult) -> torch.Tensor:
    """t: the target of a targeted attack, else the prediction on x'."""
    return result.target if result.target is not None else result.adv_pred


def pse_batch(ctx: Context, variant: str, b: int, result: AttackResult) -> tuple[PSEResult, torch.Tensor]:
    """Promotion/suppression per group, and CAM_t(x') of the adversarial class (cached together)."""
    cfg = ctx.config

    def compute() -> dict[str, Any]:
        x, y, _ = ctx.batch(ctx.slices[b])
        x_adv, t = result.x_adv.to(ctx.device), adversarial_class(result).to(ctx.device)
        pse = promotion_suppression(ctx.model, x, x_adv, y, t, block=cfg.block, method=cfg.pse_method,
                                    kappa=cfg.kappa, batch_size=scaled_batch(cfg.pair_batch, *x.shape[2:]))
        values = {k: (v.cpu() if isinstance(v, torch.Tensor) else v) for k, v in pse_to_dict(pse).items()}
        values["cam_target"] = importance_map(ctx.cam, ctx.model, x_adv, target=t, batch_size=len(x)).cpu()
        return values

    values = dict(ctx.rundir.cached(f"pse/{variant}/batch-{b:05d}", compute))
    values["type_names"] = tuple(values["type_names"])
    cam = values.pop("cam_target")
    return PSEResult(**values), cam


def units_batch(ctx: Context, variant: str, b: int, result: AttackResult, ok: torch.Tensor) -> UnitSums:
    def compute() -> dict[str, Any]:
        x, _, _ = ctx.batch(ctx.slices[b])
        sums = sensitive_units_in_batch(ctx.model, ctx.layer, x, result.x_adv.to(ctx.device), ok.to(ctx.device),
                                        ctx.units)
        return {k: getattr(sums, k) for k in ("mean_abs", "signed_mean", "clean_mean_abs", "images")}

    return UnitSums(**ctx.rundir.cached(f"units/{variant}/batch-{b:05d}", compute))


def masking_batch(ctx: Context, variant: str, b: int, result: AttackResult, ranked: torch.Tensor) -> dict[str, torch.Tensor]:
    """Masking curve on one batch (all its images; the random draws are the same in every batch)."""
    cfg = ctx.config

    def compute() -> dict[str, torch.Tensor]:
        x, y, _ = ctx.batch(ctx.slices[b])
        curve = masking_curve(ctx.model, ctx.layer, ranked, x, y, result.x_adv.to(ctx.device),
                              n_random=cfg.mask_random, seed=cfg.seed, batch_size=len(x))
        return {k: getattr(curve, k) for k in curve.__dataclass_fields__}

    return ctx.rundir.cached(f"masking/{variant}/batch-{b:05d}", compute)  # type: ignore[return-value]


@dataclass
class VariantSummary:
    """What the report needs of one attack variant beyond the per-image rows."""

    name: str
    attack: str
    mode: str
    units: UnitChange
    ranked: torch.Tensor
    curve: dict[str, torch.Tensor]
    cam_test: Any  # PSECamResult or None
    examples: dict[str, torch.Tensor]


def process_variant(ctx: Context, attack_name: str, mode: str, targets: torch.Tensor,
                    rows: list[dict[str, Any]]) -> VariantSummary:
    """Attack, PSE, CAMs, unit change and masking for one variant; appends its per-image rows."""
    cfg, data = ctx.config, ctx.data
    variant = variant_name(attack_name, mode)
    attack = build_attack(attack_name, ctx.model, cfg)
    kept: list[PSEResult] = []
    cams: dict[str, list[torch.Tensor]] = {"true": [], "target": [], "x": [], "x_adv": [], "ids": []}
    sums = UnitSums.from_change(None, 0, ctx.units)
    variant_rows: list[dict[str, Any]] = []
    for b, sl in enumerate(progress_bar(ctx.slices, desc=f"{variant}: attack, PSE, CAM, units", disable=not cfg.progress,
                                unit="batch")):
        result = attack_batch(ctx, variant, attack, b, batch_target(targets, mode, sl))
        clean = clean_batch(ctx, b)
        y, ids = data.labels[sl], data.ids[sl]
        ok = (clean["logits"].argmax(1) == y) & result.success
        pse, cam_target = pse_batch(ctx, variant, b, result)
        sums = sums + units_batch(ctx, variant, b, result, ok)
        room = max(cfg.permutation_images - sum(len(i) for i in cams["ids"]), 0)
        keep = ok.nonzero().squeeze(1)[:room]
        kept.append(select_pse(pse, keep))
        for key, value in (("true", clean["cam_true"]), ("target", cam_target),
                           ("x", data.images(sl)), ("x_adv", result.x_adv), ("ids", ids)):
            cams[key].append(value[keep])
        variant_rows.extend(batch_rows(attack_name, mode, ids, y, clean["logits"].argmax(1), result, pse, ok))
    change = sums.change()
    ranked = rank_sensitive_units(change, cfg.rank_by) if sums.images else torch.arange(ctx.units)
    curves = [masking_batch(ctx, variant, b, attack_batch(ctx, variant, attack, b, batch_target(targets, mode, sl)),
                            ranked) for b, sl in enumerate(ctx.slices)]
    curve = combine_curves(curves, [sl.stop - sl.start for sl in ctx.slices])
    cam_test = image_level(ctx, variant, kept, cams, variant_rows)
    rows.extend(variant_rows)
    examples = {k: torch.cat(v)[: cfg.figure_images] for k, v in cams.items()}
    if len(examples["ids"]):
        chosen = select_pse(cat_pse(kept), torch.arange(len(examples["ids"])))
        examples["types"] = group_type_map(chosen)
        examples["target_class"] = chosen.target_class
        examples["true_class"] = chosen.true_class
    return VariantSummary(variant, attack_name, mode, change, ranked, curve, cam_test, examples)


def image_level(ctx: Context, variant: str, kept: list[PSEResult], cams: dict[str, list[torch.Tensor]],
                variant_rows: list[dict[str, Any]]) -> Any:
    """pse_vs_cam on the kept successful images; writes their per-image overlap shares into the rows.

    The CAM regions break ties at the cut by each image's global sample id, so an
    image's region does not depend on the batch size or on which images were kept.
    """
    cfg = ctx.config
    ids = torch.cat(cams["ids"])
    test = None
    if len(ids) >= 2:  # a permutation of one image is no baseline
        pse = cat_pse(kept)
        strata = pse.true_class if cfg.baseline == "same-class" else None
        test = pse_vs_cam(pse, torch.cat(cams["true"]), torch.cat(cams["target"]), cfg.top_fraction,
                          cfg.permutations, cfg.seed, weight=cfg.cam_weight, strata=strata, sample_ids=ids)
    by_index = {int(i): k for k, i in enumerate(ids)} if test is not None else {}
    for row in variant_rows:
        k = by_index.get(row["index"])
        row["in_cam_test"] = k is not None
        for key in CAM_KEYS:
            for t, name in enumerate(TYPE_NAMES):
                row[f"{key}:{name}"] = float(getattr(test, key).per_image[k, t]) if k is not None else math.nan
    return test


def batch_rows(attack: str, mode: str, ids: torch.Tensor, y: torch.Tensor, pred: torch.Tensor,
               result: AttackResult, pse: PSEResult, ok: torch.Tensor) -> list[dict[str, Any]]:
    """One row per image of a batch: attack outcome, perturbation type and shares, totals."""
    active = pse.energy > 0
    columns: dict[str, torch.Tensor] = {
        "index": ids, "label": y, "clean_pred": pred, "correct": pred == y,
        "target": adversarial_class(result), "adv_pred": result.adv_pred, "success": result.success,
        "successful": ok, "l2": result.l2, "linf": result.linf,
        "groups_perturbed": active.sum(1),
        "s_total": pse.s_total, "p_total": pse.p_total,
        "s_groups_sum": pse.s.sum(1), "p_groups_sum": pse.p.sum(1),
    }
    for t, name in enumerate(TYPE_NAMES):
        columns[f"share:{name}"] = pse.shares[:, t]
        columns[f"groups:{name}"] = (pse.types == t).sum(1)
    lists = {k: v.tolist() for k, v in columns.items()}
    type_names = ["none" if int(c) < 0 else TYPE_NAMES[int(c)] for c in pse.perturbation_type]
    return [{"attack": attack, "targeted": mode == "targeted", "variant": variant_name(attack, mode),
             **{k: lists[k][i] for k in columns}, "perturbation_type": type_names[i]} for i in range(len(ids))]


# -- dissection ------------------------------------------------------------------------

@dataclass
class DissectionSummary:
    dataset: str
    model: str
    layer: str
    images: int
    successful: int
    sensitivity: torch.Tensor
    result: DissectionResult
    rho: float
    p_value: float


def dissection_model(config: PSEConfig, main: nn.Module, device: torch.device) -> tuple[nn.Module, str]:
    """The main model when it was trained on the concept dataset, else ``dissection_model`` for it."""
    if config.dissection_dataset == config.dataset:
        return main, config.model
    model = resolve_model(config.dissection_dataset, config.dissection_model, arch=config.dissection_arch or None,
                          seed=config.model_seed, device=device, progress=config.progress)
    return model.eval(), config.dissection_model


def run_dissection(ctx: Context) -> DissectionSummary | None:
    """Unit sensitivity under ``dissection_attack`` and dissection IoU on the concept dataset, correlated."""
    cfg = ctx.config
    if not cfg.dissection_dataset:
        return None
    model, model_name = dissection_model(cfg, ctx.model, ctx.device)
    data = load_dataset(cfg.dissection_dataset, "test").head(cfg.dissection_n)
    if not data.concepts:
        raise ConfigError(f"dissection_dataset {cfg.dissection_dataset!r} has no concept masks; use a dataset with "
                          "concepts (synthetic-shapes) or dissection_dataset='' to skip dissection")
    layer = cam_layer_name(model, data.images(slice(0, 1)).to(ctx.device), cfg.unit_layer)
    units = count_units(model, layer, data.images(slice(0, 1)).to(ctx.device))
    attack = build_attack(cfg.dissection_attack, model, cfg)
    sums = UnitSums.from_change(None, 0, units)
    slices = list(batch_slices(len(data), cfg.batch_size))
    for b, sl in enumerate(progress_bar(slices, desc="dissection: attack, unit change", disable=not cfg.progress,
                                unit="batch")):

        def compute(sl: slice = sl) -> dict[str, Any]:
            x, y = data.images(sl).to(ctx.device), data.labels[sl].to(ctx.device)
            result = attack.run(x, y, sample_ids=data.ids[sl])
            ok = (result.clean_pred == y) & result.success
            s = sensitive_units_in_batch(model, layer, x, result.x_adv, ok, units)
            return {k: getattr(s, k) for k in ("mean_abs", "signed_mean", "clean_mean_abs", "images")}

        sums = sums + UnitSums(**ctx.rundir.cached(f"dissection/units/batch-{b:05d}", compute))

    def compute_dissection() -> dict[str, Any]:
        res = dissect(model, layer, data, quantile=cfg.dissection_quantile, batch_size=cfg.batch_size)
        return {f.name: getattr(res, f.name) for f in fields(res)}

    values = dict(ctx.rundir.cached("dissection/result", compute_dissection))
    values["concept_names"] = tuple(values["concept_names"])
    result = DissectionResult(**values)
    sensitivity = sums.change().mean_abs
    if sums.images and len(sensitivity) >= 3:
        corr = sensitivity_vs_interpretability(sensitivity, result.best_iou, cfg.correlation_permutations, cfg.seed)
        rho, p = corr.rho, corr.p_value
    else:
        rho, p = math.nan, math.nan
    return DissectionSummary(cfg.dissection_dataset, model_name, layer, len(data), sums.images, sensitivity,
                             result, rho, p)


# -- metrics from rows -----------------------------------------------------------------

def variant_metrics(rows: list[dict[str, Any]], variant: str) -> dict[str, Any]:
    """Summary of one attack variant, computed from its per-image rows only."""
    group = [r for r in rows if r["variant"] == variant]
    correct = [r for r in group if r["correct"]]
    ok = [r for r in group if r["successful"]]
    tested = [r for r in ok if r.get("in_cam_test")]
    out: dict[str, Any] = {
        "images": len(group),
        "clean_accuracy": mean_of([float(r["correct"]) for r in group]),
        "success_rate": mean_of([float(r["success"]) for r in correct]),
        "successful": len(ok),
        "mean_l2": mean_of([r["l2"] for r in ok]),
        "mean_linf": mean_of([r["linf"] for r in ok]),
        "type_fractions": {name: mean_of([float(r["perturbation_type"] == name) for r in ok]) for name in TYPE_NAMES},
        "mean_shares": {name: mean_of([r[f"share:{name}"] for r in ok]) for name in TYPE_NAMES},
        "mean_s_total": mean_of([r["s_total"] for r in ok]),
        "mean_p_total": mean_of([r["p_total"] for r in ok]),
        "mean_s_groups_sum": mean_of([r["s_groups_sum"] for r in ok]),
        "mean_p_groups_sum": mean_of([r["p_groups_sum"] for r in ok]),
        "cam_test_images": len(tested),
    }
    for key in CAM_KEYS:
        out[f"{key}_observed"] = {name: mean_of([r[f"{key}:{name}"] for r in tested]) for name in TYPE_NAMES}
    return out


def build_metrics(ctx: Context, summaries: list[VariantSummary], rows: list[dict[str, Any]],
                  dissection: DissectionSummary | None) -> dict[str, Any]:
    first = [r for r in rows if r["variant"] == summaries[0].name]
    metrics: dict[str, Any] = {
        "n": len(ctx.data),
        "clean_accuracy": mean_of([float(r["correct"]) for r in first]),
        "layer": ctx.layer,
        "units": ctx.units,
        "variants": {},
    }
    for s in summaries:
        m = variant_metrics(rows, s.name)
        m["cam_test"] = s.cam_test.as_dict() if s.cam_test is not None else None
        m["top_units"] = s.ranked[:10].tolist()
        m["masking"] = {k: v.tolist() for k, v in s.curve.items() if k in
                        ("ks", "clean_acc", "robust_acc", "random_clean_acc", "random_robust_acc")}
        m["masking"]["evaluation"] = MASKING_LABEL
        metrics["variants"][s.name] = m
    if dissection is not None:
        metrics["dissection"] = {
            "dataset": dissection.dataset, "model": dissection.model, "layer": dissection.layer,
            "images": dissection.images, "successful": dissection.successful,
            "spearman_rho": dissection.rho, "p_value": dissection.p_value,
            "mean_best_iou": float(dissection.result.best_iou.mean()),
            "best_concepts": dissection.result.best_names,
            "best_iou": dissection.result.best_iou.tolist(),
            "sensitivity": dissection.sensitivity.tolist(),
        }
    return metrics


# -- the faithfulness gate, claims and verdicts ------------------------------------------

def run_gate(ctx: Context) -> dict[str, Any]:
    """The faithfulness gate of the CAM explainer on the run's own cached CAM_t0(x) (true class, clean image).

    Deletion and the restricted attack use the experiment's top fraction and its
    PGD L-inf budget ``eps``.
    """
    cfg = ctx.config
    return gate_stage(ctx, ctx.cam, fraction=cfg.top_fraction, eps=cfg.eps, target="true",
                      maps=lambda b: clean_batch(ctx, b)["cam_true"])


def claim_text(key: str, type_name: str) -> str:
    """The claim of one (CAM, group type) share.

    E.g. "suppression-dominated groups fall in the true-class CAM region".
    """
    return f"{GROUP_NAMES[type_name]} fall in {CAM_REGIONS[key]}"


def cam_claims(variant: str, cam_test: Any, gates: dict[str, bool], null: str) -> list[Claim]:
    """One claim per (CAM, group type) from the engine's comparisons of a :class:`PSECamResult`.

    Primary: suppression in CAM_t0(x) and promotion in CAM_t(x') (the type that
    acts on the CAM's own class); the other six are secondary. ``null`` names the
    partner null (``same-class`` when the partners are the images of the same true
    class, the engine's "same-stratum").
    """
    out = []
    for key in CAM_KEYS:
        overlap = getattr(cam_test, key)
        for k, name in enumerate(TYPE_NAMES):
            claim = claim_from(overlap.comparisons[k], claim_text(key, name), variant, gates,
                               primary=name == PRIMARY_TYPE[key])
            claim.statistic = f"{name} share in {CAM_LABELS[key]}"
            claim.null = null
            out.append(claim)
    return out


def measure(ctx: Context, summaries: list[VariantSummary], metrics: dict[str, Any],
            gate: dict[str, Any]) -> list[Claim]:
    """Gate, claims, corrections and verdicts, written into ``metrics``; returns the judged claims.

    A failed gate makes every CAM-dependent result "not interpretable": the
    verdicts (through the claims' gate) and the labels in ``metrics``.
    """
    cfg = ctx.config
    label = roi_label(gate) or "interpretable"
    metrics["faithfulness"] = {ctx.cam: gate}
    metrics["roi"] = {"method": ctx.cam, "why": ctx.cam_reason, "faithful": bool(gate["passed"]),
                      "interpretation": label}
    metrics["cam_interpretation"] = label
    gates = {"RoI faithfulness": bool(gate["passed"])}
    claims: list[Claim] = []
    for s in summaries:
        m = metrics["variants"][s.name]
        m["cam_interpretation"] = label
        if s.cam_test is not None:
            m["cam_test"]["interpretation"] = label
            claims += cam_claims(s.name, s.cam_test, gates, cfg.baseline)
    judge(claims, sesoi=cfg.sesoi, alpha=cfg.significance)
    metrics["claims"] = [c.as_dict() for c in claims]
    return claims


# -- report ----------------------------------------------------------------------------

def fmt(value: float | None, digits: int = 3) -> str:
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.{digits}f}"


def build_sections(ctx: Context, summaries: list[VariantSummary], dissection: DissectionSummary | None,
                   metrics: dict[str, Any], claims: list[Claim]) -> list[Section]:
    return [
        verdict_section(ctx, metrics, claims),
        gate_section(ctx, metrics),
        setup_section(ctx, metrics),
        types_section(ctx, summaries, metrics),
        image_section(ctx, metrics, claims),
        unit_section(ctx, summaries, metrics),
        dissection_section(ctx, dissection),
        limits_section(ctx, metrics),
    ]


def not_interpretable_text(metrics: dict[str, Any]) -> str:
    """The sentence every CAM-dependent part of the report carries when the gate failed ('' when it passed)."""
    if metrics["roi"]["faithful"]:
        return ""
    method = metrics["roi"]["method"]
    reason = metrics.get("faithfulness", {}).get(method, {}).get("reason", "")
    return (f"{sentence_case(NOT_INTERPRETABLE_ROI)} ({method}{'; ' + reason if reason else ''}): where the group "
            "types fall relative to the CAMs says nothing about what the model looks at.")


def verdict_section(ctx: Context, metrics: dict[str, Any], claims: list[Claim]) -> Section:
    """The top of the report: the terms, what this run shows (from the verdict words), the primary verdicts."""
    cfg = ctx.config
    primary = [c for c in claims if c.primary]
    paragraphs = [TERMS,
                  "Primary claims, declared before the run, one per CAM and attack variant: "
                  f"\"{claim_text('true_cam', PRIMARY_TYPE['true_cam'])}\" (the share of the suppression-dominated "
                  "groups' perturbation energy inside the top region of CAM_t0(x)) and "
                  f"\"{claim_text('target_cam', PRIMARY_TYPE['target_cam'])}\" (the same for promotion-dominated "
                  "groups and CAM_t(x')), each against the "
                  f"{cfg.baseline} null: the type map of an image paired with the CAM regions of the other images "
                  f"of its {'true class' if cfg.baseline == 'same-class' else 'set'}.",
                  "What this run shows:"]
    paragraphs += what_this_run_shows(claims)
    paragraphs += [f"{v}: no claim - {m['successful']} successful image(s), too few for the image-level test."
                   for v, m in metrics["variants"].items() if m.get("cam_test") is None]
    warning = not_interpretable_text(metrics)
    if warning:
        paragraphs.insert(1, warning)
    notes = [verdict_legend() + f" Holm across the {len(primary)} primary claims; the other (CAM, group type) "
             f"shares Benjamini-Hochberg (image-level section); significance level {cfg.significance}; smallest effect of interest "
             f"±{cfg.sesoi} (share of energy); n >= 30 images that have the type."]
    figures = []
    groups = {v: [c for c in claims if c.subject == v] for v in dict.fromkeys(c.subject for c in claims)}
    if groups:
        path = plot_forest(groups, ctx.rundir.figures / "forest.png",
                           title=f"Share of each group type's energy in the CAM region minus the {cfg.baseline} null "
                                 "(per-image mean, 95% bootstrap CI)")
        figures.append(Figure(path, "Forest plot per attack variant: each (CAM, group type) share against its null. "
                                    "Right of 0: the type falls in the CAM region more than chance. Grey: a gate "
                                    "failed, the row is not interpretable."))
    tables = [verdict_table(primary, "Verdicts: one row per pre-declared primary claim")]
    return Section("Verdicts", paragraphs, tables=tables, figures=figures, notes=notes, anchor="verdicts")


def gate_section(ctx: Context, metrics: dict[str, Any]) -> Section:
    """The faithfulness gate of the CAM explainer and the cascading model-randomization check."""
    cfg = ctx.config
    roi = metrics["roi"]
    gates = metrics["faithfulness"]
    gate = gates[roi["method"]]
    paragraphs = [
        f"CAM explainer: {roi['method']} ({roi['why']}). It is {'FAITHFUL' if roi['faithful'] else 'NOT faithful'} "
        f"by the gate below{'' if roi['faithful'] else ' (' + gate.get('reason', '') + ')'}.",
        gate_rule(cfg, min(cfg.gate_n, metrics["n"]), cfg.top_fraction, cfg.eps, "CAM_t0(x)")
        + " eps is the experiment's own PGD budget.",
        "The gate judges the explainer on clean images and the true class, exactly the cached CAM_t0(x) the "
        "image-level analysis uses. CAM_t(x') is the same explainer on the adversarial image and class; it is not "
        "gated separately and carries this gate's verdict.",
    ]
    tables = gate_tables(gates, per_class_of=[roi["method"]])
    return Section("Faithfulness gate", paragraphs, tables=tables, anchor="faithfulness")


def setup_section(ctx: Context, metrics: dict[str, Any]) -> Section:
    cfg = ctx.config
    table = Table("Attack variants (success rate on correctly classified images; norms over successful attacks)",
                  ["variant", "images", "success rate", "successful", "mean L2", "mean Linf"],
                  [[v, m["images"], fmt(m["success_rate"]), m["successful"], fmt(m["mean_l2"]), fmt(m["mean_linf"])]
                   for v, m in metrics["variants"].items()])
    return Section("Setup", [
        f"Model {cfg.model} on the first {metrics['n']} {cfg.dataset} test images; clean accuracy "
        f"{fmt(metrics['clean_accuracy'])}. Seed {cfg.seed}; device {ctx.device}.",
        f"Attacks: {', '.join(cfg.attacks)} ({', '.join(cfg.modes)}); PGD L-inf eps {cfg.eps}, {cfg.steps} steps; "
        f"CW-L2 {cfg.cw_search_steps} x {cfg.cw_steps} steps. Targeted attacks aim at a {cfg.target_mode} class "
        "other than the label; untargeted attacks are analysed towards the class they reach.",
        f"For a pixel group G ({cfg.block}x{cfg.block} blocks), suppression s_G = z_t0(x) - z_t0(x + delta_G) and "
        f"promotion p_G = z_t(x + delta_G) - z_t(x), where delta_G keeps only G's part of the perturbation "
        f"({cfg.pse_method} evaluation). A group is suppression-dominated if s+ > {cfg.kappa} p+, "
        f"promotion-dominated if p+ > {cfg.kappa} s+, opposing if both positive parts are 0, else balanced.",
        f"CAMs: {ctx.cam} ({ctx.cam_reason}); region = top {cfg.top_fraction:.0%} of each CAM (strictly positive "
        "pixels only, ties at the cut broken by an order seeded by the global sample id).",
        "Statistics are over images the model classifies correctly and the attack fools (targeted: reaches the "
        "target) - the successful attacks.",
    ], tables=[table])


def types_section(ctx: Context, summaries: list[VariantSummary], metrics: dict[str, Any]) -> Section:
    from ..report.pse_figures import plot_pse_examples, plot_type_distribution

    cfg = ctx.config
    variants = metrics["variants"]
    faithful = metrics["roi"]["faithful"]
    fractions = {v: [m["type_fractions"][t] for t in TYPE_NAMES] for v, m in variants.items()}
    shares = {v: [m["mean_shares"][t] for t in TYPE_NAMES] for v, m in variants.items()}
    path = plot_type_distribution(fractions, shares, {v: m["successful"] for v, m in variants.items()},
                                  ctx.rundir.figures / "perturbation-types.png")
    figures = [Figure(path, "Left: share of successful perturbations whose energy is mostly in groups of each type. "
                            "Right: mean energy share of each type.")]
    for s in summaries:
        ex = s.examples
        if not len(ex["ids"]) or "types" not in ex:
            continue
        names = ctx.data.class_names
        out = plot_pse_examples(ex["x"], ex["x_adv"], ex["true"], ex["target"], ex["types"],
                                ctx.rundir.figures / f"examples-{s.name.replace('/', '-')}.png",
                                row_labels=[names[int(c)] for c in ex["true_class"]],
                                target_labels=[names[int(c)] for c in ex["target_class"]],
                                title=f"{s.name}: suppression and promotion groups over the class activation maps"
                                      + ("" if faithful else " (CAM not faithful: not interpretable)"),
                                top_fraction=cfg.top_fraction, cam_name=ctx.cam)
        figures.append(Figure(out, f"{s.name}: clean and adversarial image; the group types coloured over "
                                   f"{ctx.cam} of the true class on x and of the adversarial class on x'."
                                   + ("" if faithful else " " + not_interpretable_text(metrics))))
    rows = [[v] + [fmt(m["type_fractions"][t]) for t in TYPE_NAMES] + [fmt(m["mean_shares"][t]) for t in TYPE_NAMES]
            + [fmt(m["mean_s_total"]), fmt(m["mean_s_groups_sum"]), fmt(m["mean_p_total"]), fmt(m["mean_p_groups_sum"])]
            for v, m in variants.items()]
    table = Table("Perturbation typing over successful attacks",
                  ["variant"] + [f"dominant: {t}" for t in TYPE_NAMES] + [f"energy share: {t}" for t in TYPE_NAMES]
                  + ["s (whole delta)", "sum of s_G", "p (whole delta)", "sum of p_G"], rows)
    return Section("Perturbation types", [
        "Each perturbation is typed by the energy-weighted shares of its groups' types. The whole-delta s and p "
        "next to the sums over groups show how far the effect is additive over groups (equal for a linear model).",
    ], tables=[table], figures=figures, anchor="perturbation-types")


def image_section(ctx: Context, metrics: dict[str, Any], claims: list[Claim]) -> Section:
    """Every (CAM, group type) share against its null, with corrected p-values and verdicts (folded)."""
    cfg = ctx.config
    weight = "perturbation energy" if cfg.cam_weight == "energy" else "pixels"
    table = verdict_table(claims, f"Share of each type's {weight} inside the top {cfg.top_fraction:.0%} of the CAM, vs "
                                  f"the {cfg.baseline} null ({cfg.permutations} permutations; two-sided p; p_adj: Holm "
                                  "for the primary rows, Benjamini-Hochberg for the rest)", folded=True)
    notes = [not_interpretable_text(metrics)] if not metrics["roi"]["faithful"] else []
    return Section("Image level", [
        f"Where do the group types fall relative to what the model looks at? CAM_t0(x) is {ctx.cam} of the true "
        f"class on the clean image, CAM_t(x') of the adversarial class on the adversarial image. For each type the "
        f"statistic is the share of that type's {weight} inside the CAM's top region, averaged over the first "
        f"{cfg.permutation_images} successful images that have the type. Null: per image, the mean share over the "
        f"CAM regions of its partners ({cfg.baseline}: the other images of its "
        f"{'true class' if cfg.baseline == 'same-class' else 'set'}), exact; Δ is the mean per-image excess over it "
        "with a 95% bootstrap CI over images.",
        "Observed below the null means the type avoids the CAM region more than chance: a finding in its own right.",
    ], tables=[table], notes=notes, anchor="image-level")


def unit_section(ctx: Context, summaries: list[VariantSummary], metrics: dict[str, Any]) -> Section:
    from ..report.pse_figures import plot_masking_curves, plot_unit_sensitivity

    cfg = ctx.config
    sens = {s.name: s.units.mean_abs for s in summaries}
    p1 = plot_unit_sensitivity(sens, ctx.rundir.figures / "unit-sensitivity.png", layer=ctx.layer)
    p2 = plot_masking_curves({s.name: s.curve for s in summaries}, ctx.rundir.figures / "masking-curve.png",
                             layer=ctx.layer, units=ctx.units)
    top_rows = [[s.name, ", ".join(str(u) for u in s.ranked[:8].tolist())] for s in summaries]
    mask_rows = []
    for s in summaries:
        c = s.curve
        for i, k in enumerate(c["ks"].tolist()):
            mask_rows.append([s.name, int(k), fmt(float(c["clean_acc"][i])), fmt(float(c["robust_acc"][i])),
                              fmt(float(c["random_clean_acc"][i])), fmt(float(c["random_robust_acc"][i]))])
    return Section("Unit level", [
        f"Units are the {ctx.units} channels of layer {ctx.layer}. Sensitivity of a unit: mean |A(x') - A(x)| over "
        f"positions and successful images; units ranked by {cfg.rank_by}.",
        "The masking curve zeroes the k most sensitive units and measures accuracy on the clean images and on the "
        f"fixed adversarial images; the control masks k random units ({cfg.mask_random} draws).",
    ], notes=[f"Masking as a defence - {MASKING_LABEL}. An attacker who knows which units are masked attacks the "
              "masked model directly, so a gain here is an upper bound on the defence's worth."],
        tables=[Table("Most sensitive units per variant (most sensitive first)", ["variant", "units"], top_rows),
                Table("Masking curve: accuracy with k units zeroed (adversarial columns: no adaptive attack yet, not "
                      "robustness)", ["variant", "k", "clean (top-k)", "adversarial (top-k)", "clean (random k)",
                                      "adversarial (random k)"], mask_rows, folded=True)],
        figures=[Figure(p1, "Per-unit activation change under each attack variant."),
                 Figure(p2, "Clean and adversarial accuracy as more of the most sensitive units are masked "
                            "(solid) vs as many random units (dashed).")],
        anchor="unit-level")


def dissection_section(ctx: Context, dissection: DissectionSummary | None) -> Section:
    from ..report.pse_figures import plot_dissection_scatter

    cfg = ctx.config
    if dissection is None:
        return Section("Dissection", ["Dissection was skipped (dissection_dataset is empty)."], anchor="dissection")
    d = dissection
    path = plot_dissection_scatter(d.sensitivity, d.result.best_iou, d.result.best_names,
                                   ctx.rundir.figures / "dissection.png", rho=d.rho, p_value=d.p_value,
                                   layer=d.layer, dataset=d.dataset)
    order = torch.argsort(d.sensitivity, descending=True, stable=True)[:10]
    rows = [[int(u), fmt(float(d.sensitivity[u]), 4), d.result.best_names[int(u)], fmt(float(d.result.best_iou[u]))]
            for u in order]
    same = cfg.dissection_dataset == cfg.dataset
    model_text = ("the main model" if same else
                  f"a separate model ({d.model}) for {d.dataset}, because dissection needs a model trained on the "
                  "concept dataset; its units are not those of the main model")
    return Section("Dissection", [
        f"Network dissection of layer {d.layer} of {model_text}, on {d.images} {d.dataset} test images with exact "
        f"concept masks. A unit's region is where its upsampled activation exceeds its {cfg.dissection_quantile} "
        "quantile over the set; IoU with each concept is summed over the set.",
        f"Unit sensitivity on this model: mean |A(x') - A(x)| under untargeted {cfg.dissection_attack} over "
        f"{d.successful} successful attacks. Spearman correlation of sensitivity with the best IoU: "
        f"rho = {fmt(d.rho)}, permutation p = {fmt(d.p_value, 4)} ({cfg.correlation_permutations} permutations).",
    ], tables=[Table("The 10 most sensitive units and their best concept", ["unit", "sensitivity", "best concept",
                                                                             "IoU"], rows)],
        figures=[Figure(path, "Each unit: sensitivity to the attack vs its best dissection IoU.")],
        anchor="dissection")


def limits_section(ctx: Context, metrics: dict[str, Any]) -> Section:
    cfg = ctx.config
    return Section("Limits", [
        f"Group effects are measured one group at a time ({cfg.block}x{cfg.block} blocks); interactions between "
        "groups are not attributed, so the sums over groups differ from the whole-perturbation s and p wherever the "
        "model is non-linear (see the typing table). The types depend on the choice of kappa and of the groups.",
        "For untargeted attacks t is whatever class the attack reached, so promotion is towards a class chosen by "
        "the attack; for failed attacks t = t0 and p = -s (those images are excluded from the statistics).",
        f"CAMs are explanations, not ground truth: {ctx.cam} on a coarse feature map. They are read only when the "
        "explainer passes the faithfulness gate, and only observed-vs-null differences are interpreted.",
        f"Unit masking is evaluated non-adaptively (fixed adversarial images; {NO_ADAPTIVE_ATTACK}): it is not a "
        "robustness claim.",
        "Dissection needs concept masks, which Fashion-MNIST lacks; unless the main dataset is the concept dataset, "
        "it is done on a different model, so the correlation describes that model's units.",
        f"Statistics rest on {metrics['n']} images; small success counts make the shares noisy.",
    ], anchor="limits")


def summary_text(metrics: dict[str, Any]) -> str:
    """The summary printed at the end of ``advspatial run``."""
    header = (f"{'variant':<18} {'success':>8} {'n_ok':>5} {'supp':>6} {'prom':>6} {'bal':>6} {'opp':>6} "
              f"{'S-in-CAMt0':>11} {'P-in-CAMt':>10} {'rob@top':>8} {'rob@rand':>9}")
    lines = [f"clean accuracy {fmt(metrics['clean_accuracy'], 4)} on {metrics['n']} images; units: "
             f"{metrics['units']} channels of {metrics['layer']}", header, "-" * len(header)]
    k_shown = "-"
    for v, m in metrics["variants"].items():
        frac, mask = m["type_fractions"], m["masking"]
        mid = len(mask["ks"]) // 2
        k_shown = str(mask["ks"][mid])
        lines.append(f"{v:<18} {fmt(m['success_rate']):>8} {m['successful']:>5} {fmt(frac['suppression']):>6} "
                     f"{fmt(frac['promotion']):>6} {fmt(frac['balanced']):>6} {fmt(frac['opposing']):>6} "
                     f"{fmt(m['true_cam_observed']['suppression']):>11} {fmt(m['target_cam_observed']['promotion']):>10} "
                     f"{fmt(mask['robust_acc'][mid]):>8} {fmt(mask['random_robust_acc'][mid]):>9}")
    lines.append("supp/prom/bal/opp: fraction of successful perturbations of each dominant type; S-in-CAMt0: share of "
                 "suppression energy in the top of CAM_t0(x); P-in-CAMt: promotion energy in CAM_t(x'); "
                 f"rob@top/rand: adversarial accuracy with k={k_shown} top-sensitive / random units masked "
                 "(no adaptive attack yet: not robustness)")
    roi = metrics.get("roi")
    if roi is not None:
        lines.append(f"CAM {roi['method']}: {'passed' if roi['faithful'] else 'FAILED'} the faithfulness gate"
                     + ("" if roi["faithful"] else
                        f"; S-in-CAMt0, P-in-CAMt and every CAM verdict: {roi['interpretation']}"))
    for c in metrics.get("claims", []):
        if c["primary"]:
            lines.append(f"  {c['subject']:<18} {c['statistic']:<30} -> {c['verdict']}")
    if "dissection" in metrics:
        d = metrics["dissection"]
        lines.append(f"dissection ({d['dataset']}, {d['layer']}): Spearman(sensitivity, best IoU) = "
                     f"{fmt(d['spearman_rho'])}, p = {fmt(d['p_value'], 4)}")
    return "\n".join(lines)


# -- the experiment --------------------------------------------------------------------

@register_experiment("pse", PSEConfig,
                     "Promotion-suppression effect: group types of perturbations, CAM overlap, "
                     "unit sensitivity, unit masking and dissection")
def run_pse(config: PSEConfig, rundir: RunDir) -> ExperimentResult:
    ctx = pse_context(config, rundir)
    logits = torch.cat([clean_batch(ctx, b)["logits"] for b in progress_bar(range(len(ctx.slices)), desc="clean: logits, CAM",
                                                                    disable=not config.progress, unit="batch")])
    gate = run_gate(ctx)
    targets = choose_targets(ctx.data.labels, logits.shape[1], config.target_mode, config.seed, logits)
    rows: list[dict[str, Any]] = []
    summaries = [process_variant(ctx, a, m, targets, rows) for a in config.attacks for m in config.modes]
    dissection = run_dissection(ctx)
    metrics = build_metrics(ctx, summaries, rows, dissection)
    claims = measure(ctx, summaries, metrics, gate)
    sections = build_sections(ctx, summaries, dissection, metrics, claims)
    return ExperimentResult(metrics, rows, summary_text(metrics), sections)


def pse_context(config: PSEConfig, rundir: RunDir) -> Context:
    """The shared context with the unit layer and the CAM explainer resolved once (``auto``: by the head type)."""
    base = prepare_context(config, rundir)
    probe = base.data.images(slice(0, 1)).to(base.device)
    layer = cam_layer_name(base.model, probe, config.unit_layer)
    cam, reason = resolve_importance(config.cam, base.model, probe)
    return base.derive(Context, layer=layer, units=count_units(base.model, layer, probe), cam=cam, cam_reason=reason)
