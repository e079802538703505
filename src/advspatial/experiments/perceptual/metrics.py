"""The perceptual experiment's metrics, computed from the per-image rows only (so the two always agree)."""

from __future__ import annotations

import math
from typing import Any

from ..results import mean_of
from .calibration import Calibration
from .config import ATTACKS, STATS


def attack_metrics(rows: list[dict[str, Any]], name: str) -> dict[str, Any]:
    """Summary of one attack, computed from its per-image rows only (so the two always agree)."""
    group = [r for r in rows if r["attack"] == name]
    correct = [r for r in group if r["correct"]]
    ok = [r for r in correct if r["success"]]
    return {
        "images": len(group),
        "clean_accuracy": mean_of([float(r["correct"]) for r in group]),
        "fooling_rate": mean_of([float(r["success"]) for r in correct]),
        "adversarial_accuracy": mean_of([float(r["adv_pred"] == r["label"]) for r in group]),
        "successful": len(ok),
        "mean_ssim": mean_of([r["ssim"] for r in group]),
        "mean_ssim_window": mean_of([r.get("ssim_window", math.nan) for r in group]),
        "mean_ssim_successful": mean_of([r["ssim"] for r in ok]),
        "geometry_mean_ssim": mean_of([r.get("geometry_ssim", math.nan) for r in ok]),
        "mean_l2": mean_of([r["l2"] for r in ok]),
        "mean_linf": mean_of([r["linf"] for r in ok]),
        "maps": {s: mean_of([r[s] for r in ok]) for s in STATS},
        "geometry_energy_in_cam": mean_of([r.get("geometry_energy_in_cam", math.nan) for r in ok]),
    }


def build_metrics(rows: list[dict[str, Any]], calibration: Calibration) -> dict[str, Any]:
    attacks = {name: attack_metrics(rows, name) for name in ATTACKS}
    return {
        "n": attacks["ssim-ball"]["images"],
        "clean_accuracy": attacks["ssim-ball"]["clean_accuracy"],
        "calibration": calibration.as_dict(),
        "pgd_eps": calibration.eps,
        "ssim_gap": attacks["pgd"]["mean_ssim"] - attacks["ssim-ball"]["mean_ssim"],
        "attacks": attacks,
    }
