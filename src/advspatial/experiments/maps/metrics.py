"""The RoI/RoA measurement's metrics, computed from the per-image rows only (so the two always agree):
per attack the outcome, the norms, the map statistics and the accuracies of any defence columns."""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

from ..results import mean_of
from .stages import PARTS, AttackSummary, Context

STATS = ("iou", "dice", "energy_in_roi", "pointing_game", "spearman", "pearson")


def iter_group(rows: list[dict[str, Any]], attack: str) -> Iterator[dict[str, Any]]:
    return (r for r in rows if r["attack"] == attack)


def attack_metrics(rows: list[dict[str, Any]], name: str, kinds: list[str]) -> dict[str, Any]:
    """Summary of one attack, computed from its per-image rows only (so the two always agree)."""
    group = list(iter_group(rows, name))
    correct = [r for r in group if r["correct"]]
    ok = [r for r in correct if r["success"]]
    out: dict[str, Any] = {
        "images": len(group),
        "clean_accuracy": mean_of([float(r["correct"]) for r in group]),
        "success_rate": mean_of([float(r["success"]) for r in correct]),
        "adversarial_accuracy": mean_of([float(r["adv_pred"] == r["label"]) for r in group]),
        "successful": len(ok),
        "mean_l0": mean_of([float(r["l0"]) for r in ok]),
        "mean_l2": mean_of([r["l2"] for r in ok]),
        "mean_linf": mean_of([r["linf"] for r in ok]),
        "maps": {},
    }
    for kind in kinds:
        complete = [r for r in ok if not r.get(f"{kind}:flagged", False)]  # flagged maps enter no statistic
        stats = {s: mean_of([r[f"{kind}:{s}"] for r in complete]) for s in (*STATS, *PARTS)}
        if f"{kind}:completeness_error" in group[0]:
            errors = sorted(e for r in ok if (e := r[f"{kind}:completeness_error"]) == e)
            stats["completeness_error_median"] = errors[len(errors) // 2] if errors else math.nan
            stats["completeness_error_max"] = errors[-1] if errors else math.nan
            stats["flagged_share"] = mean_of([float(r[f"{kind}:flagged"]) for r in ok])
        out["maps"][kind] = stats
    out["defence"] = defence_metrics(group)
    for kind in kinds:
        out["maps"][kind]["empty_roi_share"] = mean_of([float(r[f"{kind}:roi_pixels"] == 0) for r in ok])
    return out


def defence_metrics(group: list[dict[str, Any]]) -> dict[str, float]:
    """Accuracy of every defence column over all images of the attack (incl. those it did not fool).

    ``tag:pred_X`` columns are predicted classes; ``tag:correct_X`` columns are a
    control's share of correct draws per image (its accuracy is their mean).
    """
    out = {}
    for key in (group[0] if group else {}):
        if ":pred_" in key:
            out[key.replace(":pred_", ":")] = mean_of([float(r[key] == r["label"]) for r in group])
        elif ":correct_" in key:
            out[key.replace(":correct_", ":")] = mean_of([float(r[key]) for r in group])
    return out


def measurement_metrics(ctx: Context, summaries: list[AttackSummary], rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The metrics of the measurement alone (no defence): the ``maps`` command and ``analyze``."""
    first = [r for r in rows if r["attack"] == ctx.config.attacks[0]]
    return {"n": len(ctx.data), "clean_accuracy": mean_of([float(r["correct"]) for r in first]),
            "attacks": {s.name: attack_metrics(rows, s.name, s.kinds()) for s in summaries}}
