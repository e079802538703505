"""Experiment ``pse``: the promotion–suppression effect (METHODS.md §5).

Which pixel groups of an adversarial perturbation push the true class down
(suppression), which push a pre-specified class t up (promotion), where those
groups lie relative to the class activation maps, which units of a layer the
attack moves, what masking those units does, and whether the sensitive units
are the interpretable ones (network dissection of the analysed model).

Stages, each streamed batch by batch through ``ctx.each_batch`` (so that a
``torchrun`` launch shares them) and saved in the run directory so that
``--resume`` completes an interrupted run with identical numbers:

1. clean logits, predictions and ``CAM_t0(x)`` (the true class) of every image;
   attack targets (seeded random class != label, least-likely or next class)
   and the clean runner-up class, the pre-specified t of untargeted attacks;
2. per attack variant (CW-L2 / PGD, untargeted / targeted): the attack with
   per-sample seeds; the group-wise promotion/suppression towards t (exact by
   default, 2x2 blocks) measured isolated (δ_G on x) and leave-one-out (δ_G
   removed from x'), groups under the noise floor left untyped, the post-hoc
   class argmax f(x') as a secondary view; ``CAM_t(x')``; the typing's
   stability across kappa, the measurement and the pixel groups (4x4, SLIC);
3. the units ranked on attacks of *training* images, then the masking curve on
   the test images (against random units) and an attack run on the masked model (PGD, or the ensemble);
4. the faithfulness gate of the CAM explainer (:func:`.gate.gate_stage`) on the
   run's own cached ``CAM_t0(x)``: every CAM-dependent result is read only if it passes;
5. image level: ``pse_vs_cam`` on the first ``permutation_images`` successful
   images of each variant, against the exact partner null of the inference
   engine; each (CAM, group type) share becomes a pre-declared claim, the
   primary ones corrected by Holm, the rest by Benjamini-Hochberg, each given a
   verdict word (:mod:`advspatial.regions.claims`);
6. dissection of the analysed model on its test images with concept masks that
   are not its labels (the dataset's own, or a user file), correlated with the
   units' relative sensitivity under ``dissection_attack``; never-active units
   left out; without concept masks the report says so and dissects nothing.

"Successful" images are those the model classifies correctly *and* the attack
fools (targeted: the prediction is the target): only there does the
perturbation explain a decision change. Metrics are computed from the
per-image rows, so the two always agree.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..analysis.dissection import DissectionResult, dissect, sensitivity_vs_interpretability
from ..analysis.pse import METHODS as PSE_METHODS
from ..analysis.pse import (TYPE_NAMES, PSEResult, group_type_map, promotion_suppression, pse_vs_cam, retype,
                            secondary_view)
from ..analysis.pse_stability import agreement_from_confusion, confusion, superpixel_labels, superpixels_available
from ..analysis.units import (RANK_BY, UnitChange, mask_units, masking_curve, rank_sensitive_units,
                              unit_activation_change)
from ..attacks import Attack, AttackResult, make_attack
from ..errors import ConfigError, check_range, unknown_name
from ..maps import declared_cam_layer, find_feature_layer, importance_map, list_importance_methods
from ..regions import dilate
from ..regions.claims import NOT_INTERPRETABLE_ROI, Claim, claim_from, judge, sentence_case
from ..report.html import Figure, Section, Table
from ..report.verdicts import (
    gate_tables,
    plot_forest,
    verdict_legend,
    verdict_table,
    what_this_run_shows,
)
from ..runtime import RunDir, batch_slices, load_torch_file, make_generator, scaled_batch
from .base import (ExperimentContext, ExperimentResult, mean_of, prepare_context, register_experiment, setting,
                   shared_splits, train_images)
from .gate import GatedConfig, gate_rule, gate_stage, resolve_importance, roi_label

MODES = ("untargeted", "targeted")
TARGET_MODES = ("random", "least-likely", "next")
BASELINES = ("same-class", "any-class")
ADAPTIVE_ATTACKS = ("pgd", "autoattack")
CAM_KEYS = ("true_cam", "target_cam")
CAM_LABELS = {"true_cam": "CAM_t0(x)", "target_cam": "CAM_t(x')"}
CAM_REGIONS = {"true_cam": "the true-class CAM region", "target_cam": "the CAM region of t on x'"}
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
         "pre-specified class t (a targeted attack's target, else the clean runner-up) on the adversarial image "
         "x'. Region of Attack (RoA): the pixels the attacker's perturbation acts through, here its pixel groups, "
         "typed by what each does on its own: suppression (lowers the true-class logit), promotion (raises the "
         "logit of t), balanced or opposing; untyped when "
         "both effects are under the noise floor.")


@dataclass
class PSEConfig(GatedConfig):
    """Settings of the promotion–suppression experiment (METHODS §5); every one is a CLI option."""

    n: int = setting(100, "number of test images (the first n; 100 keeps the default run near 5 minutes on 2 "
                          "cores; raise it for power)")
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
    noise_floor: float = setting(0.01, "a group is typed only when |s_G| or |p_G| exceeds this fraction of its "
                                       "image's total effect |s| + |p|; the others are counted as untyped")
    stability_kappas: list[float] = setting([1.5, 3.0], "other kappas the typing is compared with (stability)")
    stability_groups: list[str] = setting(["4x4", "superpixels"], "other pixel groups the typing is compared "
                                          "with: BxB blocks, or superpixels (SLIC; needs scikit-image)")
    stability_images: int = setting(100, "the first test images whose successful attacks enter the comparison "
                                         "of pixel groups (each group choice costs one more PSE pass)")
    superpixels: int = setting(50, "SLIC superpixels per image (stability_groups 'superpixels')")
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
    unit_train_n: int = setting(50, "training images (class-stratified) attacked to rank the units; the masking "
                                     "curve is then measured on the test images")
    mask_random: int = setting(5, "random-unit draws per k of the masking control")
    adaptive_n: int = setting(100, "test images (the first) attacked on the masked model (adaptive check)")
    adaptive_attack: str = setting("pgd", "attack run on the masked model: pgd (eps, steps) or autoattack (the "
                                          "APGD-CE/APGD-DLR/Square ensemble of the defence evaluation, 1 restart "
                                          "of steps iterations, adaptive_queries Square queries)")
    adaptive_queries: int = setting(1000, "Square queries per image when adaptive_attack is autoattack")
    dissection: bool = setting(True, "dissect the analysed model with concept masks that are not its labels "
                                     "(skipped, and said so, when its data has none)")
    concepts: str = setting("", "concept masks of the test split for dissection: a .pt or .npz file of named "
                                "(N,H,W) bool masks (docs/experiments/pse.md); '' = the dataset's own, if any")
    dissection_attack: str = setting("pgd", "untargeted attack measuring unit sensitivity for the dissection")
    dissection_quantile: float = setting(0.995, "activation quantile of a unit's region (0.995 = top 0.5%)")
    correlation_permutations: int = setting(1000, "permutations of the sensitivity-interpretability p-value")
    figure_images: int = setting(4, "example images per attack variant")

    PRESET_FIELDS = {"eps_linf": "eps", "steps": "steps", "cw_steps": "cw_steps", "cw_search_steps": "cw_search_steps",
                     "pse_block": "block", "batch_size": "batch_size", "image_size": "image_size"}
    LAYER_ACCESS = "class activation maps and unit analyses read layers through forward hooks"
    QUICK = {"n": 24, "batch_size": 12, "steps": 5, "cw_steps": 10, "cw_search_steps": 2, "permutations": 200,
             "mask_random": 2, "unit_train_n": 24, "stability_images": 12, "adaptive_n": 12,
             "correlation_permutations": 100, "figure_images": 2,
             "gate_n": 24, "gate_steps": 5, "randomization_images": 4}

    def validate(self) -> None:
        super().validate()
        from ..attacks import list_attacks

        known = list_attacks()
        if not self.attacks:
            raise ConfigError("attacks must name at least one attack")
        for name in [*self.attacks, self.dissection_attack, "pgd"]:
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
                                   ("baseline", self.baseline, BASELINES), ("rank_by", self.rank_by, RANK_BY),
                                   ("adaptive_attack", self.adaptive_attack, ADAPTIVE_ATTACKS)):
            if value not in valid:
                raise unknown_name(name, value, valid)
        if self.cam not in list_importance_methods():
            raise unknown_name("importance method", self.cam, list_importance_methods())
        for spec in self.stability_groups:
            group_spec(spec)
        for k in self.stability_kappas:
            check_range("stability_kappas", k, 1)
        check_range("noise_floor", self.noise_floor, 0, 1)
        check_range("eps", self.eps, 0, 1)
        check_range("kappa", self.kappa, 1)
        check_range("top_fraction", self.top_fraction, 0, 1, low_inclusive=False)
        check_range("dissection_quantile", self.dissection_quantile, 0, 1, low_inclusive=False, high_inclusive=False)
        for name in ("steps", "cw_steps", "cw_search_steps", "block", "pair_batch", "permutations",
                     "permutation_images", "correlation_permutations", "superpixels", "unit_train_n",
                     "adaptive_n", "adaptive_queries"):
            check_range(name, getattr(self, name), 1)
        check_range("mask_random", self.mask_random, 0)
        check_range("figure_images", self.figure_images, 0)
        check_range("stability_images", self.stability_images, 0)


def group_spec(spec: str) -> int:
    """The block side of a stability group choice ``"BxB"``, or 0 for ``"superpixels"``; ConfigError otherwise."""
    if spec == "superpixels":
        return 0
    side, _, again = spec.partition("x")
    if not (side.isdigit() and side == again and int(side) >= 1):
        raise ConfigError(f"stability group {spec!r} is not valid; valid: BxB blocks (e.g. 4x4) or superpixels")
    return int(side)


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
    """The post-hoc class: the target of a targeted attack, else the prediction on x' (secondary view only)."""
    return result.target if result.target is not None else result.adv_pred


def runner_up(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """(N,) the clean runner-up class: the highest clean logit other than the label's (pre-specified t)."""
    masked = logits.clone().float()
    masked[torch.arange(len(labels)), labels.long()] = -math.inf
    return masked.argmax(1)


def prespecified_target(result: AttackResult, runner: torch.Tensor) -> torch.Tensor:
    """t fixed before the attack is seen: a targeted attack's target, else the clean runner-up class."""
    return result.target if result.target is not None else runner


def pse_batch(ctx: Context, variant: str, b: int, result: AttackResult, t: torch.Tensor,
              how: str = "isolated") -> tuple[PSEResult, torch.Tensor | None]:
    """Promotion/suppression per group towards the pre-specified ``t`` (the post-hoc class as the secondary
    target), measured ``how`` (isolated or leave-one-out); with CAM_t(x') for the isolated one (cached)."""
    cfg = ctx.config

    def compute() -> dict[str, Any]:
        x, y, _ = ctx.batch(ctx.slices[b])
        x_adv = result.x_adv.to(ctx.device)
        pse = promotion_suppression(ctx.model, x, x_adv, y, t.to(ctx.device), block=cfg.block, method=cfg.pse_method,
                                    kappa=cfg.kappa, batch_size=scaled_batch(cfg.pair_batch, *x.shape[2:]),
                                    variant=how, noise_floor=cfg.noise_floor,
                                    secondary_target=adversarial_class(result).to(ctx.device))
        values = {k: (v.cpu() if isinstance(v, torch.Tensor) else v) for k, v in pse_to_dict(pse).items()}
        if how == "isolated":
            values["cam_target"] = importance_map(ctx.cam, ctx.model, x_adv, target=t.to(ctx.device),
                                                  batch_size=len(x)).cpu()
        return values

    values = dict(ctx.rundir.cached(f"pse/{how}/{variant}/batch-{b:05d}", compute))
    values["type_names"] = tuple(values["type_names"])
    cam = values.pop("cam_target", None)
    return PSEResult(**values), cam


def stability_batch(ctx: Context, variant: str, b: int, result: AttackResult, t: torch.Tensor, pse: PSEResult,
                    loo: PSEResult, ok: torch.Tensor) -> dict[str, torch.Tensor]:
    """Confusion matrices of the primary typing against the other choices, on the batch's successful images.

    kappa and leave-one-out: group by group over every successful image; other pixel
    groups: pixel by pixel (perturbed pixels) over those of the first
    ``stability_images`` test images (one PSE pass each, cached).
    """
    cfg = ctx.config
    out = {f"kappa={k:g}": confusion(pse.types[ok], retype(pse, kappa=k).types[ok]) for k in cfg.stability_kappas}
    out["leave-one-out"] = confusion(pse.types[ok], loo.types[ok])
    sl = ctx.slices[b]
    keep = ok & (torch.arange(sl.start, sl.stop) < cfg.stability_images)
    if not cfg.stability_groups:
        return out

    def compute() -> dict[str, torch.Tensor]:
        if not keep.any():
            return {spec: torch.zeros(len(TYPE_NAMES), len(TYPE_NAMES), dtype=torch.int64)
                    for spec in cfg.stability_groups if group_spec(spec) or superpixels_available()}
        x, y, _ = ctx.batch(sl)
        chosen = select_pse(pse, keep.nonzero().squeeze(1))
        index = keep.nonzero().squeeze(1).to(ctx.device)
        xs, xa, ys, ts = x[index], result.x_adv.to(ctx.device)[index], y[index], t.to(ctx.device)[index]
        primary, perturbed = group_type_map(chosen), chosen.pixel_energy > 0
        counts = {}
        for spec in cfg.stability_groups:
            side = group_spec(spec)
            if side == 0 and not superpixels_available():
                continue
            groups = superpixel_labels(xs, cfg.superpixels).to(ctx.device) if side == 0 else None
            other = promotion_suppression(ctx.model, xs, xa, ys, ts, groups=groups, block=max(side, 1),
                                          method=cfg.pse_method, kappa=cfg.kappa, noise_floor=cfg.noise_floor,
                                          batch_size=scaled_batch(cfg.pair_batch, *x.shape[2:]))
            counts[spec] = confusion(primary, group_type_map(other).cpu(), perturbed)
        return counts

    out.update(ctx.rundir.cached(f"stability/{variant}/batch-{b:05d}", compute))
    return out


def units_batch(ctx: Context, train: "TrainSplit", variant: str, attack: Attack, mode: str, b: int,
                sl: slice) -> UnitSums:
    """Unit change over the successful attacks of one batch of *training* images (cached): the ranking set."""

    def compute() -> dict[str, Any]:
        x, y = train.data.images(sl).to(ctx.device), train.data.labels[sl].to(ctx.device)
        t = train.targets[sl].to(ctx.device) if mode == "targeted" else None
        result = attack.run(x, y, target=t, sample_ids=train.data.ids[sl])
        ok = (result.clean_pred == y) & result.success
        sums = sensitive_units_in_batch(ctx.model, ctx.layer, x, result.x_adv, ok, ctx.units)
        return {k: getattr(sums, k) for k in ("mean_abs", "signed_mean", "clean_mean_abs", "images")}

    return UnitSums(**ctx.rundir.cached(f"units/train/{variant}/batch-{b:05d}", compute))


def masking_batch(ctx: Context, variant: str, b: int, result: AttackResult, ranked: torch.Tensor) -> dict[str, torch.Tensor]:
    """Masking curve on one batch of test images (all its images; the random draws are the same in every batch)."""
    cfg = ctx.config

    def compute() -> dict[str, torch.Tensor]:
        x, y, _ = ctx.batch(ctx.slices[b])
        curve = masking_curve(ctx.model, ctx.layer, ranked, x, y, result.x_adv.to(ctx.device),
                              n_random=cfg.mask_random, seed=cfg.seed, batch_size=len(x))
        return {k: getattr(curve, k) for k in curve.__dataclass_fields__}

    return ctx.rundir.cached(f"masking/{variant}/batch-{b:05d}", compute)  # type: ignore[return-value]


def adaptive_batch(ctx: Context, name: str, units: torch.Tensor, b: int, sl: slice) -> dict[str, int]:
    """PGD run against the model with ``units`` masked (an adaptive attack on the masked model), on one test batch:
    counts of clean-correct and still-correct images (cached)."""
    cfg = ctx.config

    def compute() -> dict[str, int]:
        x, y, ids = ctx.batch(sl)
        with mask_units(ctx.model, ctx.layer, units):
            result = adaptive_attack_of(ctx.model, cfg).run(x, y, sample_ids=ids)
        return {"images": len(y), "clean_correct": int((result.clean_pred == y).sum()),
                "robust_correct": int((result.adv_pred == y).sum())}

    return ctx.rundir.cached(f"adaptive/{name}/batch-{b:05d}", compute)  # type: ignore[return-value]


def adaptive_attack_of(model: nn.Module, config: PSEConfig) -> Attack:
    """The attack run on the masked model: PGD at the experiment's budget, or the registered ensemble."""
    if config.adaptive_attack == "autoattack":
        return make_attack("autoattack", model, eps=config.eps, steps=config.steps, n_restarts=1,
                           n_queries=config.adaptive_queries, seed=config.seed)
    return build_attack("pgd", model, config)


def adaptive_description(config: PSEConfig) -> str:
    """How the report names the adaptive attack."""
    if config.adaptive_attack == "autoattack":
        return (f"the APGD-CE/APGD-DLR/Square ensemble (L-inf eps {config.eps}, {config.steps} steps, "
                f"{config.adaptive_queries} queries)")
    return f"PGD (L-inf eps {config.eps}, {config.steps} steps)"


def adaptive_k(curve: dict[str, torch.Tensor]) -> int:
    """The k the masking curve is most favourable to (highest fixed-x' accuracy over 0 < k < all units; ties:
    the smallest k): the one an adaptive attack must test."""
    ks, acc = curve["ks"].tolist(), curve["robust_acc"].tolist()
    inner = [(a, -k) for k, a in zip(ks, acc) if 0 < k < ks[-1]] or [(a, -k) for k, a in zip(ks, acc) if k > 0]
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
    stability: dict[str, Any]
    adaptive: dict[str, Any]
    ranking: dict[str, Any]


def variant_batch(ctx: Context, attack_name: str, mode: str, attack: Attack, targets: torch.Tensor,
                  runner: torch.Tensor, b: int, sl: slice) -> dict[str, Any]:
    """Everything one test batch gives a variant: rows, the successful images' PSE and CAMs, stability counts."""
    variant = variant_name(attack_name, mode)
    data = ctx.data
    result = attack_batch(ctx, variant, attack, b, batch_target(targets, mode, sl))
    clean = clean_batch(ctx, b)
    y, ids = data.labels[sl], data.ids[sl]
    ok = (clean["logits"].argmax(1) == y) & result.success
    t = prespecified_target(result, runner[sl])
    pse, cam_target = pse_batch(ctx, variant, b, result, t)
    loo, _ = pse_batch(ctx, variant, b, result, t, "leave-one-out")
    keep = ok.nonzero().squeeze(1)
    cams = {"true": clean["cam_true"], "target": cam_target, "x": data.images(sl), "x_adv": result.x_adv, "ids": ids}
    return {"rows": batch_rows(attack_name, mode, ids, y, clean["logits"].argmax(1), result, pse, loo, ok),
            "kept": select_pse(pse, keep), "cams": {k: v[keep] for k, v in cams.items()},
            "stability": stability_batch(ctx, variant, b, result, t, pse, loo, ok)}


def process_variant(ctx: Context, attack_name: str, mode: str, targets: torch.Tensor, runner: torch.Tensor,
                    train: TrainSplit, rows: list[dict[str, Any]]) -> VariantSummary:
    """Attack, PSE, CAMs and typing stability on the test images; units ranked on the training images, then
    the masking curve and an adaptive attack on the test images; appends the variant's per-image rows."""
    cfg = ctx.config
    variant = variant_name(attack_name, mode)
    attack = build_attack(attack_name, ctx.model, cfg)
    parts = ctx.each_batch(lambda b, sl: variant_batch(ctx, attack_name, mode, attack, targets, runner, b, sl),
                           desc=f"{variant}: attack, PSE, CAM")
    variant_rows = [r for part in parts for r in part["rows"]]
    cams = {k: torch.cat([part["cams"][k] for part in parts])[: cfg.permutation_images] for k in parts[0]["cams"]}
    kept = select_pse(cat_pse([part["kept"] for part in parts]), torch.arange(len(cams["ids"])))
    stability = stability_summary([part["stability"] for part in parts])
    sums = ctx.each_batch(lambda b, sl: units_batch(ctx, train, variant, attack, mode, b, sl),
                          desc=f"{variant}: units on training images", slices=train.slices)
    total = sum(sums, UnitSums.from_change(None, 0, ctx.units))
    change = total.change()
    ranked = rank_sensitive_units(change, cfg.rank_by) if total.images else torch.arange(ctx.units)
    curves = ctx.each_batch(lambda b, sl: masking_batch(ctx, variant, b, attack_batch(
        ctx, variant, attack, b, batch_target(targets, mode, sl)), ranked), desc=f"{variant}: masking curve")
    curve = combine_curves(curves, [sl.stop - sl.start for sl in ctx.slices])
    k = adaptive_k(curve)
    adaptive = {"masked": adaptive_attack(ctx, f"{variant}/top-{k}", ranked[:k]),
                "unmasked": adaptive_attack(ctx, "unmasked", ranked[:0]),
                "fixed_robust_acc": float(curve["robust_acc"][curve["ks"].tolist().index(k)])}
    cam_test = image_level(ctx, variant, kept, cams, variant_rows)
    rows.extend(variant_rows)
    examples = {key: v[: cfg.figure_images] for key, v in cams.items()}
    if len(examples["ids"]):
        chosen = select_pse(kept, torch.arange(len(examples["ids"])))
        examples["types"] = group_type_map(chosen)
        examples["target_class"] = chosen.target_class
        examples["true_class"] = chosen.true_class
    ranking = {"split": "train", "images": len(train.data), "successful": total.images,
               "test_ids_among_them": int(torch.isin(train.data.ids, ctx.data.ids).sum()) if train.shared else 0}
    return VariantSummary(variant, attack_name, mode, change, ranked, curve, cam_test, examples, stability,
                          adaptive, ranking)


def stability_summary(parts: list[dict[str, torch.Tensor]]) -> dict[str, Any]:
    """Agreement and Cohen's kappa of each comparison, from the batches' confusion matrices added up."""
    names = list(dict.fromkeys(k for part in parts for k in part))
    return {name: agreement_from_confusion(sum(part[name] for part in parts if name in part)).as_dict()
            for name in names}


def image_level(ctx: Context, variant: str, kept: PSEResult, cams: dict[str, torch.Tensor],
                variant_rows: list[dict[str, Any]]) -> Any:
    """pse_vs_cam on the kept successful images; writes their per-image overlap shares into the rows.

    The CAM regions break ties at the cut by each image's global sample id, so an
    image's region does not depend on the batch size or on which images were kept.
    """
    cfg = ctx.config
    ids = cams["ids"]
    test = None
    if len(ids) >= 2:  # a permutation of one image is no baseline
        strata = kept.true_class if cfg.baseline == "same-class" else None
        test = pse_vs_cam(kept, cams["true"], cams["target"], cfg.top_fraction,
                          cfg.permutations, cfg.seed, weight=cfg.cam_weight, strata=strata, sample_ids=ids)
    by_index = {int(i): k for k, i in enumerate(ids)} if test is not None else {}
    for row in variant_rows:
        k = by_index.get(row["index"])
        row["in_cam_test"] = k is not None
        for key in CAM_KEYS:
            for t, name in enumerate(TYPE_NAMES):
                row[f"{key}:{name}"] = float(getattr(test, key).per_image[k, t]) if k is not None else math.nan
    return test


def type_columns(prefix: str, pse: PSEResult) -> dict[str, torch.Tensor]:
    """Per-image share and group count of each type, keyed ``{prefix}share:{type}`` / ``{prefix}groups:{type}``."""
    out: dict[str, torch.Tensor] = {}
    for t, name in enumerate(TYPE_NAMES):
        out[f"{prefix}share:{name}"] = pse.shares[:, t]
        out[f"{prefix}groups:{name}"] = (pse.types == t).sum(1)
    return out


def type_name_list(pse: PSEResult) -> list[str]:
    """The dominant type of each image by name ('none' when no group is typed)."""
    return ["none" if int(c) < 0 else TYPE_NAMES[int(c)] for c in pse.perturbation_type]


def batch_rows(attack: str, mode: str, ids: torch.Tensor, y: torch.Tensor, pred: torch.Tensor,
               result: AttackResult, pse: PSEResult, loo: PSEResult, ok: torch.Tensor) -> list[dict[str, Any]]:
    """One row per image of a batch: attack outcome, perturbation type and shares (pre-specified t, isolated;
    leave-one-out; post-hoc t as the secondary view), totals and untyped groups."""
    posthoc = secondary_view(pse)
    active = pse.energy > 0
    columns: dict[str, torch.Tensor] = {
        "index": ids, "label": y, "clean_pred": pred, "correct": pred == y,
        "target": pse.target_class, "posthoc_target": adversarial_class(result), "adv_pred": result.adv_pred,
        "success": result.success, "successful": ok, "l2": result.l2, "linf": result.linf,
        "groups_perturbed": active.sum(1), "groups_untyped": pse.untyped, "loo:groups_untyped": loo.untyped,
        "s_total": pse.s_total, "p_total": pse.p_total,
        "s_groups_sum": pse.s.sum(1), "p_groups_sum": pse.p.sum(1),
        "loo:s_groups_sum": loo.s.sum(1), "loo:p_groups_sum": loo.p.sum(1),
        **type_columns("", pse), **type_columns("loo:", loo), **type_columns("posthoc:", posthoc),
    }
    lists = {k: v.tolist() for k, v in columns.items()}
    names = {"perturbation_type": type_name_list(pse), "loo:perturbation_type": type_name_list(loo),
             "posthoc:perturbation_type": type_name_list(posthoc)}
    return [{"attack": attack, "targeted": mode == "targeted", "variant": variant_name(attack, mode),
             **{k: lists[k][i] for k in columns}, **{k: v[i] for k, v in names.items()}} for i in range(len(ids))]


# -- dissection ------------------------------------------------------------------------

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
        raw = load_torch_file(file, f"concepts file {path}", "save a dict of (N,H,W) bool tensors")  # type: ignore
        if not isinstance(raw, dict):
            raise ConfigError(f"concepts file {path!r} must hold a dict name -> (N,H,W) bool masks")
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
        result = attack.run(x, y, sample_ids=ids)
        ok = (result.clean_pred == y) & result.success
        s = sensitive_units_in_batch(ctx.model, ctx.layer, x, result.x_adv, ok, ctx.units)
        return {k: getattr(s, k) for k in ("mean_abs", "signed_mean", "clean_mean_abs", "images")}

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
        "reached_target": mean_of([float(r["adv_pred"] == r["target"]) for r in ok]),
        "untyped_groups": sum(r["groups_untyped"] for r in ok),
        "perturbed_groups": sum(r["groups_perturbed"] for r in ok),
        "loo_untyped_groups": sum(r["loo:groups_untyped"] for r in ok),
        "mean_s_total": mean_of([r["s_total"] for r in ok]),
        "mean_p_total": mean_of([r["p_total"] for r in ok]),
        "mean_s_groups_sum": mean_of([r["s_groups_sum"] for r in ok]),
        "mean_p_groups_sum": mean_of([r["p_groups_sum"] for r in ok]),
        "mean_loo_s_groups_sum": mean_of([r["loo:s_groups_sum"] for r in ok]),
        "mean_loo_p_groups_sum": mean_of([r["loo:p_groups_sum"] for r in ok]),
        "cam_test_images": len(tested),
    }
    for prefix, key in (("", ""), ("loo:", "_loo"), ("posthoc:", "_posthoc")):
        out[f"type_fractions{key}"] = {name: mean_of([float(r[f"{prefix}perturbation_type"] == name) for r in ok])
                                       for name in TYPE_NAMES}
        out[f"mean_shares{key}"] = {name: mean_of([r[f"{prefix}share:{name}"] for r in ok]) for name in TYPE_NAMES}
    for key in CAM_KEYS:
        out[f"{key}_observed"] = {name: mean_of([r[f"{key}:{name}"] for r in tested]) for name in TYPE_NAMES}
    return out


def dissection_metrics(d: DissectionSummary) -> dict[str, Any]:
    """What metrics.json records of the dissection (or why there is none)."""
    if not d.dissected:
        return {"dissected": False, "dataset": d.dataset, "layer": d.layer, "reason": d.reason}
    assert d.result is not None and d.sensitivity is not None and d.active is not None
    return {
        "dissected": True, "dataset": d.dataset, "model": "the analysed model", "layer": d.layer,
        "concepts": list(d.result.concept_names), "concept_source": d.concept_source,
        "images": d.images, "successful": d.successful,
        "units_included": int(d.active.sum()), "units_never_active": int((~d.active).sum()),
        "sensitivity": "relative: mean |A(x') - A(x)| / mean |A(x)| over successful attacks",
        "spearman_rho": d.rho, "p_value": d.p_value,
        "mean_best_iou": float(d.result.best_iou[d.active].mean()) if d.active.any() else math.nan,
        "best_concepts": d.result.best_names, "best_iou": d.result.best_iou.tolist(),
        "relative_sensitivity": d.sensitivity.tolist(), "active": d.active.tolist(),
    }


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
        m["units_ranked_on"] = s.ranking
        m["adaptive"] = {**s.adaptive, "attack": f"{adaptive_description(ctx.config)}, run on the masked model"}
        m["stability"] = s.stability
        metrics["variants"][s.name] = m
    metrics["noise_floor"] = ctx.config.noise_floor
    if dissection is not None:
        metrics["dissection"] = dissection_metrics(dissection)
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
        stability_section(ctx, metrics),
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
    tables = [verdict_table(primary, "Verdicts: one row per pre-declared primary claim"), controls_table(metrics)]
    return Section("Verdicts", paragraphs, tables=tables, figures=figures, notes=notes, anchor="verdicts")


def controls_table(metrics: dict[str, Any]) -> Table:
    """The controls of each variant at a glance: pre-specified target, noise floor, leave-one-out agreement,
    the adaptive attack on the masked model, and the dissection's status."""
    d = metrics.get("dissection")
    dissection = ("skipped" if d is None else
                  f"rho {fmt(d['spearman_rho'])} (p {fmt(d['p_value'], 4)})" if d["dissected"] else "not dissectable")
    rows = []
    for v, m in metrics["variants"].items():
        a = m["adaptive"]
        loo = m["stability"].get("leave-one-out", {})
        rows.append([v, fmt(m["reached_target"]), f"{m['untyped_groups']} / {m['perturbed_groups']}",
                     fmt(loo.get("kappa")), f"top-{a['masked']['k']}: {fmt(a['fixed_robust_acc'])} -> "
                     f"{fmt(a['masked']['robust_acc'])} (unmasked {fmt(a['unmasked']['robust_acc'])})", dissection])
    return Table("Controls: reached the pre-specified t; groups under the noise floor (untyped / perturbed); "
                 "Cohen's kappa of isolated vs leave-one-out typing; masking accuracy on fixed x' -> attacked on "
                 "the masked model (not a robustness claim); dissection of the analysed model",
                 ["variant", "reached t", "untyped groups", "kappa (leave-one-out)", "masking: fixed -> adaptive",
                  "dissection"], rows)


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
        "other than the label. The class t whose promotion is measured is fixed before the attack is seen: the "
        "target of a targeted attack, the clean runner-up class (highest clean logit after the label's) of an "
        "untargeted one; the class an untargeted attack happens to reach (post-hoc argmax of x') is a labelled "
        "secondary view only, since it won because it was promoted most.",
        f"For a pixel group G ({cfg.block}x{cfg.block} blocks), suppression s_G = z_t0(x) - z_t0(x + delta_G) and "
        f"promotion p_G = z_t(x + delta_G) - z_t(x), where delta_G keeps only G's part of the perturbation "
        f"({cfg.pse_method} evaluation). A group is typed only when |s_G| or |p_G| exceeds the noise floor, "
        f"{cfg.noise_floor:g} x (|s| + |p|) of its whole perturbation (the others are counted as untyped); then it "
        f"is suppression-dominated if s+ > {cfg.kappa} p+, promotion-dominated if p+ > {cfg.kappa} s+, opposing if "
        "both positive parts are 0, else balanced. The leave-one-out variant removes G's part from x' instead "
        "(s_G = z_t0(x' - delta_G) - z_t0(x'), p_G = z_t(x') - z_t(x' - delta_G)): the group's marginal effect "
        "given the others.",
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
                                   f"{ctx.cam} of the true class on x and of t on x'."
                                   + ("" if faithful else " " + not_interpretable_text(metrics))))
    views = (("", "pre-specified t, isolated (primary)"), ("_loo", "pre-specified t, leave-one-out"),
             ("_posthoc", "post-hoc t = argmax f(x') (secondary view, biased towards promotion)"))
    rows = [[v, label] + [fmt(m[f"type_fractions{key}"][t]) for t in TYPE_NAMES]
            + [fmt(m[f"mean_shares{key}"][t]) for t in TYPE_NAMES]
            for v, m in variants.items() for key, label in views]
    table = Table("Perturbation typing over successful attacks",
                  ["variant", "view"] + [f"dominant: {t}" for t in TYPE_NAMES]
                  + [f"energy share: {t}" for t in TYPE_NAMES], rows)
    sums = Table("Additivity and the noise floor (successful attacks)",
                 ["variant", "reached t", "s (whole delta)", "sum of s_G", "sum of s_G (leave-one-out)",
                  "p (whole delta)", "sum of p_G", "sum of p_G (leave-one-out)", "untyped groups",
                  "untyped (leave-one-out)"],
                 [[v, fmt(m["reached_target"]), fmt(m["mean_s_total"]), fmt(m["mean_s_groups_sum"]),
                   fmt(m["mean_loo_s_groups_sum"]), fmt(m["mean_p_total"]), fmt(m["mean_p_groups_sum"]),
                   fmt(m["mean_loo_p_groups_sum"]), f"{m['untyped_groups']} of {m['perturbed_groups']}",
                   f"{m['loo_untyped_groups']} of {m['perturbed_groups']}"] for v, m in variants.items()])
    return Section("Perturbation types", [
        "Each perturbation is typed by the energy-weighted shares of its typed groups' types. The primary view "
        "measures promotion of the pre-specified t; the post-hoc view (t = the class the attack reached) is "
        "shown for comparison only: that class won because it was promoted most, so its promotion shares are "
        "biased upwards. 'reached t': share of successful attacks whose prediction is the pre-specified t.",
        "The whole-delta s and p next to the sums over groups show how far the effect is additive over groups "
        "(equal for a linear model, for both the isolated and the leave-one-out sums).",
    ], tables=[table, sums], figures=figures, anchor="perturbation-types")


def stability_section(ctx: Context, metrics: dict[str, Any]) -> Section:
    """How much the typing depends on kappa, on the pixel groups and on isolated vs leave-one-out measurement."""
    cfg = ctx.config
    rows = [[v, name, st["n"], fmt(st["agreement"]), fmt(st["kappa"])]
            for v, m in metrics["variants"].items() for name, st in m["stability"].items()]
    notes = []
    if "superpixels" in cfg.stability_groups and not superpixels_available():
        notes.append("Superpixels were left out: scikit-image is not installed (pip install scikit-image).")
    return Section("Typing stability", [
        f"The primary typing ({cfg.block}x{cfg.block} blocks, kappa {cfg.kappa:g}, isolated, noise floor "
        f"{cfg.noise_floor:g}) against each other choice: agreement fraction and Cohen's kappa (1 = the same "
        "types, 0 = chance level) over the elements both type. kappa=... and leave-one-out: group by group over "
        "all successful attacks; other pixel groups: pixel by pixel over the perturbed pixels of the successful "
        f"attacks among the first {cfg.stability_images} test images.",
        "Low agreement means a type is a property of the analysis choices more than of the perturbation.",
    ], tables=[Table("Typing agreement with the primary typing", ["variant", "compared with", "n",
                                                                  "agreement", "Cohen's kappa"], rows)],
        notes=notes, anchor="typing-stability")


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
        f"class on the clean image, CAM_t(x') of the pre-specified class t on the adversarial image. For each "
        f"type the "
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
    adaptive_rows = []
    for v, m in metrics["variants"].items():
        a = m["adaptive"]
        adaptive_rows.append([v, a["masked"]["k"], fmt(a["masked"]["clean_acc"]), fmt(a["fixed_robust_acc"]),
                              fmt(a["masked"]["robust_acc"]), fmt(a["unmasked"]["robust_acc"])])
    ranking = next(iter(metrics["variants"].values()))["units_ranked_on"]
    return Section("Unit level", [
        f"Units are the {ctx.units} channels of layer {ctx.layer}. Sensitivity of a unit: mean |A(x') - A(x)| over "
        f"positions and successful attacks on {ranking['images']} training images (class-stratified, never the "
        f"test images); units ranked by {cfg.rank_by}. The masking curve is then measured on the {metrics['n']} "
        "test images, so the ranking is not fitted to the images it is evaluated on.",
        "The masking curve zeroes the k most sensitive units and measures accuracy on the clean images and on the "
        f"fixed adversarial images; the control masks k random units ({cfg.mask_random} draws).",
        "Adaptive check: at the k where the curve looks best for masking (highest accuracy on the fixed adversarial "
        f"images), {adaptive_description(cfg)} is run on the masked model itself, on the first "
        f"{min(cfg.adaptive_n, metrics['n'])} test images.",
    ], notes=[f"Masking as a defence - {MASKING_LABEL}. Only the adaptive column attacks the masked model"
              + ("; it is one PGD, not the ensemble of the defence evaluation (adaptive_attack=autoattack), so it "
                 "bounds robustness from above too" if cfg.adaptive_attack == "pgd" else "")
              + ": masking is not a robustness claim."],
        tables=[Table("Adaptive attack on the masked model (accuracy on the test images)",
                      ["variant", "k masked", "clean (masked)", "fixed x' (not robustness)",
                       "attacked on the masked model", "attacked, no masking"], adaptive_rows),
                Table("Most sensitive units per variant (most sensitive first)", ["variant", "units"], top_rows),
                Table("Masking curve: accuracy with k units zeroed (adversarial columns: no adaptive attack yet, not "
                      "robustness)", ["variant", "k", "clean (top-k)", "adversarial (top-k)", "clean (random k)",
                                      "adversarial (random k)"], mask_rows, folded=True)],
        figures=[Figure(p1, "Per-unit activation change under each attack variant (training images)."),
                 Figure(p2, "Clean and adversarial accuracy as more of the most sensitive units are masked "
                            "(solid) vs as many random units (dashed).")],
        anchor="unit-level")


def dissection_section(ctx: Context, dissection: DissectionSummary | None) -> Section:
    """Dissection of the analysed model, or the reason it could not be dissected."""
    from ..report.pse_figures import plot_dissection_scatter

    cfg = ctx.config
    if dissection is None:
        return Section("Dissection", ["Dissection was skipped (dissection=false)."], anchor="dissection")
    d = dissection
    if not d.dissected:
        return Section("Dissection", [f"Not dissected: {d.reason}"], anchor="dissection")
    assert d.result is not None and d.sensitivity is not None and d.active is not None
    active = d.active.nonzero().squeeze(1)
    names = [d.result.best_names[int(u)] for u in active]
    path = plot_dissection_scatter(d.sensitivity[active], d.result.best_iou[active], names,
                                   ctx.rundir.figures / "dissection.png", rho=d.rho, p_value=d.p_value,
                                   layer=d.layer, dataset=d.dataset)
    order = active[torch.argsort(d.sensitivity[active], descending=True, stable=True)[:10]]
    rows = [[int(u), fmt(float(d.sensitivity[u]), 4), d.result.best_names[int(u)], fmt(float(d.result.best_iou[u]))]
            for u in order]
    return Section("Dissection", [
        f"Network dissection of layer {d.layer} of the analysed model itself, on its {d.images} test images, with "
        f"concept masks from {d.concept_source}: {', '.join(d.result.concept_names)}. None of them is a class "
        "label, so a unit is not interpretable by construction. A unit's region is where its upsampled activation "
        f"exceeds its {cfg.dissection_quantile} quantile over the set; IoU with each concept is summed over the set.",
        f"Unit sensitivity, relative to the unit's own clean scale: mean |A(x') - A(x)| / mean |A(x)| under "
        f"untargeted {cfg.dissection_attack} over {d.successful} successful attacks. {int((~d.active).sum())} of "
        f"{len(d.active)} units were never active on these images (or had an empty region) and are left out. "
        f"Spearman correlation of relative sensitivity with the best IoU over the {len(active)} others: "
        f"rho = {fmt(d.rho)}, permutation p = {fmt(d.p_value, 4)} ({cfg.correlation_permutations} permutations).",
    ], tables=[Table("The 10 most sensitive active units and their best concept",
                     ["unit", "relative sensitivity", "best concept", "IoU"], rows)],
        figures=[Figure(path, "Each active unit: relative sensitivity to the attack vs its best dissection IoU.")],
        anchor="dissection")


def limits_section(ctx: Context, metrics: dict[str, Any]) -> Section:
    cfg = ctx.config
    return Section("Limits", [
        f"Group effects are measured one group at a time ({cfg.block}x{cfg.block} blocks), alone on x and left out "
        "of x'; the sums over groups differ from the whole-perturbation s and p wherever the model is non-linear "
        "(see the additivity table), and the typing stability section shows how much the types depend on kappa, "
        "on the groups and on the measurement.",
        "For untargeted attacks t is the clean runner-up class, fixed in advance; an attack that reached another "
        "class still lowered the true class, but its promotion of t can be small. For failed attacks the "
        "images are excluded from the statistics.",
        f"CAMs are explanations, not ground truth: {ctx.cam} on a coarse feature map. They are read only when the "
        "explainer passes the faithfulness gate, and only observed-vs-null differences are interpreted.",
        f"Unit masking is evaluated on fixed adversarial images ({NO_ADAPTIVE_ATTACK}) plus one attack on the masked "
        "model: it is not a robustness claim.",
        "Dissection needs concept masks of the analysed model's own data; without them (e.g. Fashion-MNIST) the "
        "report says so and dissects nothing.",
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
    for v, m in metrics["variants"].items():
        a = m["adaptive"]
        lines.append(f"{v:<18} units ranked on {m['units_ranked_on']['images']} training images; masking top-"
                     f"{a['masked']['k']}: fixed-x' accuracy {fmt(a['fixed_robust_acc'])}, attacked on the masked "
                     f"model {fmt(a['masked']['robust_acc'])} (unmasked {fmt(a['unmasked']['robust_acc'])}); typing vs "
                     f"leave-one-out kappa {fmt(m['stability']['leave-one-out']['kappa'])}")
    lines.append("supp/prom/bal/opp: fraction of successful perturbations of each dominant type (pre-specified t); "
                 "S-in-CAMt0: share of "
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
        if d["dissected"]:
            lines.append(f"dissection (analysed model, {d['layer']}; {d['units_never_active']} never-active units "
                         f"left out): Spearman(relative sensitivity, best IoU) = {fmt(d['spearman_rho'])}, "
                         f"p = {fmt(d['p_value'], 4)}")
        else:
            lines.append(f"dissection: not done - {d['reason']}")
    return "\n".join(lines)


# -- the experiment --------------------------------------------------------------------

@register_experiment("pse", PSEConfig,
                     "Promotion-suppression effect: group types of perturbations, CAM overlap, "
                     "unit sensitivity, unit masking and dissection")
def run_pse(config: PSEConfig, rundir: RunDir) -> ExperimentResult:
    ctx = pse_context(config, rundir)
    logits = torch.cat([c["logits"] for c in ctx.each_batch(lambda b, sl: clean_batch(ctx, b),
                                                             desc="clean: logits, CAM")])
    gate = run_gate(ctx)
    targets = choose_targets(ctx.data.labels, logits.shape[1], config.target_mode, config.seed, logits)
    runner = runner_up(logits, ctx.data.labels)
    train = train_split(ctx)
    rows: list[dict[str, Any]] = []
    summaries = [process_variant(ctx, a, m, targets, runner, train, rows) for a in config.attacks
                 for m in config.modes]
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
