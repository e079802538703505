"""The per-variant stages of ``pse`` on the test images, each cached per batch in the run directory.

Clean logits and ``CAM_t0(x)``; per attack variant the attack, the group-wise
promotion/suppression towards the pre-specified t (isolated and leave-one-out)
with ``CAM_t(x')``, the typing's random-sign control, the typing's stability, the unit stages (:mod:`.units`)
and the image-level test of where the group types fall relative to the CAMs;
and the faithfulness gate of the CAM explainer on the cached ``CAM_t0(x)``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, cast

import torch

from ...analysis.pse import (
    TYPE_NAMES, PSECamResult, PSEResult, cat_pse, group_type_map, promotion_suppression, pse_to_dict, pse_vs_cam,
    retype, select_pse,
)
from ...analysis.pse_control import SHARE_NAMES, control_shares
from ...analysis.pse_stability import agreement_from_confusion, confusion, superpixel_labels, superpixels_available
from ...analysis.units import UnitChange, rank_sensitive_units
from ...attacks import Attack, AttackResult
from ...maps import importance_map
from ...runtime import scaled_batch
from ..colocation import composition, informative
from ..gate import gate_stage
from .config import group_spec
from .context import Context, build_attack
from .rows import CAM_KEYS, batch_rows
from .targets import adversarial_class, batch_target, prespecified_target, variant_name
from .units import TrainSplit, UnitSums, adaptive_attack, adaptive_k, combine_curves, masking_batch, units_batch


def clean_batch(ctx: Context, b: int) -> dict[str, torch.Tensor]:
    """Clean logits and CAM of the true class, CAM_t0(x) (cached)."""

    def compute() -> dict[str, torch.Tensor]:
        x, y, _ = ctx.batch(ctx.slices[b])
        with torch.no_grad():
            logits = ctx.model(x)
        cam = importance_map(ctx.cam, ctx.model, x, target=y, batch_size=len(x))
        return {"logits": logits.cpu(), "cam_true": cam.cpu()}

    return ctx.rundir.cached(f"clean/batch-{b:05d}", compute)


def attack_batch(ctx: Context, variant: str, attack: Attack, b: int, target: torch.Tensor | None) -> AttackResult:
    """The variant's attack on one test batch, with per-sample seeds (cached)."""

    def compute() -> dict[str, Any]:
        x, y, ids = ctx.batch(ctx.slices[b])
        t = None if target is None else target.to(ctx.device)
        result = attack.run(x, y, target=t, sample_ids=ids).to("cpu")
        return {k: getattr(result, k) for k in result.__dataclass_fields__}

    return AttackResult(**ctx.rundir.cached(f"attack/{variant}/batch-{b:05d}", compute))


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


def control_batch(ctx: Context, variant: str, b: int, result: AttackResult, pse: PSEResult,
                  ok: torch.Tensor) -> torch.Tensor:
    """(N,5) energy shares of the random-sign control of the batch's successful perturbations, NaN rows for the
    other images (cached; :mod:`advspatial.analysis.pse_control`). Each image's draws are keyed by its global
    sample id, so its control does not depend on the batch or on which other images succeeded."""
    cfg = ctx.config

    def compute() -> torch.Tensor:
        out = torch.full((len(ok), len(SHARE_NAMES)), math.nan, dtype=torch.float64)
        keep = ok.nonzero().squeeze(1)
        if len(keep):
            x, _, ids = ctx.batch(ctx.slices[b])
            index = keep.to(ctx.device)
            out[keep] = control_shares(ctx.model, x[index], result.x_adv.to(ctx.device)[index], select_pse(pse, keep),
                                       ids[keep], cfg.seed, cfg.control_draws,
                                       batch_size=scaled_batch(cfg.pair_batch, *x.shape[2:]))
        return out

    return ctx.rundir.cached(f"pse/control/{variant}/batch-{b:05d}", compute)


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


def run_gate(ctx: Context) -> dict[str, Any]:
    """The faithfulness gate of the CAM explainer on the run's own cached CAM_t0(x) (true class, clean image).

    Deletion and the restricted attack use the experiment's top fraction and its
    PGD L-inf budget ``eps``.
    """
    cfg = ctx.config
    return gate_stage(ctx, ctx.cam, fraction=cfg.top_fraction, eps=cfg.eps, target="true",
                      maps=lambda b: clean_batch(ctx, b)["cam_true"])


@dataclass
class VariantSummary:
    """What the report needs of one attack variant beyond the per-image rows."""

    name: str
    attack: str
    mode: str
    units: UnitChange
    ranked: torch.Tensor
    curve: dict[str, torch.Tensor]
    cam_test: PSECamResult | None
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
    assert cam_target is not None  # the isolated measurement stores CAM_t(x')
    loo, _ = pse_batch(ctx, variant, b, result, t, "leave-one-out")
    control = control_batch(ctx, variant, b, result, pse, ok)
    keep = ok.nonzero().squeeze(1)
    cams = {"true": clean["cam_true"], "target": cam_target, "x": data.images(sl), "x_adv": result.x_adv, "ids": ids}
    return {"rows": batch_rows(attack_name, mode, ids, y, clean["logits"].argmax(1), result, pse, loo, ok, control),
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


def image_composition(images: torch.Tensor | None) -> torch.Tensor | None:
    """(N,) foreground share of the kept images for the object-conditioned null, or None where it cannot match
    partners (spatial's rule: :func:`advspatial.experiments.colocation.informative`)."""
    if images is None or len(images) == 0:
        return None
    share = composition(images.detach().cpu())
    return share if informative(share) else None


def stability_summary(parts: list[dict[str, torch.Tensor]]) -> dict[str, Any]:
    """Agreement and Cohen's kappa of each comparison, from the batches' confusion matrices added up."""
    names = list(dict.fromkeys(k for part in parts for k in part))
    # each sum is a tensor: every name comes from some part
    return {name: agreement_from_confusion(cast(torch.Tensor, sum(part[name] for part in parts if name in part)))
            .as_dict() for name in names}


def image_level(ctx: Context, variant: str, kept: PSEResult, cams: dict[str, torch.Tensor],
                variant_rows: list[dict[str, Any]]) -> PSECamResult | None:
    """pse_vs_cam on the kept successful images; writes their per-image overlap shares into the rows.

    The CAM regions break ties at the cut by each image's global sample id, so an
    image's region does not depend on the batch size or on which images were kept.
    Every null of the engine's hierarchy is computed (the object-conditioned one when
    the images' foreground share is informative, as in spatial); ``baseline`` is the primary.
    """
    cfg = ctx.config
    ids = cams["ids"]
    test = None
    if len(ids) >= 2:  # a permutation of one image is no baseline
        test = pse_vs_cam(kept, cams["true"], cams["target"], cfg.top_fraction,
                          cfg.permutations, cfg.seed, weight=cfg.cam_weight, strata=kept.true_class, sample_ids=ids,
                          composition=image_composition(cams.get("x")), primary_null=cfg.baseline)
    by_index = {int(i): k for k, i in enumerate(ids)} if test is not None else {}
    for row in variant_rows:
        k = by_index.get(row["index"])
        row["in_cam_test"] = k is not None
        for key in CAM_KEYS:
            for t, name in enumerate(TYPE_NAMES):
                row[f"{key}:{name}"] = float(getattr(test, key).per_image[k, t]) if k is not None else math.nan
    return test
