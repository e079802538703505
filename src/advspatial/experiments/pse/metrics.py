"""The metrics of ``pse`` (``metrics.json``): computed from the per-image rows and the variants' summaries."""

from __future__ import annotations

import math
from typing import Any

from ...analysis.pse import TYPE_NAMES
from ...analysis.pse_control import CONTROL, SHARE_NAMES
from ..results import mean_of
from .context import Context
from .dissection import DissectionSummary
from .rows import CAM_KEYS
from .stages import VariantSummary
from .units import adaptive_description

#: the label of the unit-masking accuracies until an attack adapts to the masked model
NO_ADAPTIVE_ATTACK = "no adaptive attack yet"
MASKING_LABEL = (f"{NO_ADAPTIVE_ATTACK}: the adversarial images were crafted against the unmasked model, so these "
                 "accuracies are not robustness")


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
    out["typing"] = typing_metrics(ok, out)
    return out


def _ratio(part: float, whole: float) -> float:
    """``part / whole``; NaN where ``whole`` is 0 or either is not finite."""
    return part / whole if whole != 0 and math.isfinite(whole) and math.isfinite(part) else math.nan


def typing_metrics(ok: list[dict[str, Any]], out: dict[str, Any]) -> dict[str, Any]:
    """What the typing explains, over the successful images ``ok``: the mean energy share of each type and of the
    untyped groups (denominator: the whole perturbation's energy) with those of the random-sign control; the untyped
    share by count (pooled over images) and by energy; and the additivity gap, the isolated and leave-one-out sums
    of the group effects as fractions of the whole-δ effect (ratios of the means in ``out``)."""
    return {
        "energy_shares": {name: mean_of([r[f"energy:{name}"] for r in ok]) for name in SHARE_NAMES},
        "control_energy_shares": {name: mean_of([r[f"control:energy:{name}"] for r in ok]) for name in SHARE_NAMES},
        "control": f"{CONTROL}: every element of delta with an independent random sign (same per-group energy and "
                   "place), typed with the attack's absolute noise floor",
        "untyped_share": {"by_count": _ratio(out["untyped_groups"], out["perturbed_groups"]),
                          "by_energy": mean_of([r["energy:untyped"] for r in ok])},
        "additivity": {
            "s_total": out["mean_s_total"], "s_isolated_sum": out["mean_s_groups_sum"],
            "s_leave_one_out_sum": out["mean_loo_s_groups_sum"], "p_total": out["mean_p_total"],
            "p_isolated_sum": out["mean_p_groups_sum"], "p_leave_one_out_sum": out["mean_loo_p_groups_sum"],
            "s_isolated_over_total": _ratio(out["mean_s_groups_sum"], out["mean_s_total"]),
            "s_leave_one_out_over_total": _ratio(out["mean_loo_s_groups_sum"], out["mean_s_total"]),
            "p_isolated_over_total": _ratio(out["mean_p_groups_sum"], out["mean_p_total"]),
            "p_leave_one_out_over_total": _ratio(out["mean_loo_p_groups_sum"], out["mean_p_total"]),
        },
    }


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
    """``metrics.json`` without the gate and the claims (:func:`.claims.measure` adds them): the run, each
    variant's metrics from its rows with its CAM test, units, masking, adaptive attack and stability, the dissection."""
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
