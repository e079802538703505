"""The spatial experiment's metrics: the measurement's per attack (:mod:`..maps.metrics`) with the non-adaptive
defence's paired comparisons, clean cost and the spread of its controls' draws; the sweep and the adaptive summary
(:mod:`.claims`)."""

from __future__ import annotations

from typing import Any

from ..maps.metrics import attack_metrics
from ..maps.stages import AttackSummary, Context
from ..results import mean_of
from .claims import draw_spread, nonadaptive_comparisons
from .stages import DefenceColumns


def build_metrics(ctx: Context, summaries: list[AttackSummary], rows: list[dict[str, Any]],
                  defence: DefenceColumns) -> dict[str, Any]:
    """The non-adaptive metrics: per attack, the clean cost, paired defence comparisons, the controls' spread."""
    cfg = ctx.config
    first = [r for r in rows if r["attack"] == cfg.attacks[0]]
    attacks = {s.name: attack_metrics(rows, s.name, s.kinds()) for s in summaries}
    for s in summaries:
        attacks[s.name]["control_draws"] = draw_spread(defence.draws[s.name])
    comparisons = nonadaptive_comparisons(rows, list(cfg.attacks), cfg.seed)
    return {
        "n": len(ctx.data),
        "clean_accuracy": mean_of([float(r["correct"]) for r in first]),
        "nonadaptive": {f"{name}|{tag}": c for (name, tag), c in comparisons.items()},
        "clean_cost": {k: v for k, v in attacks[cfg.attacks[0]]["defence"].items() if k.endswith("_clean")},
        "attacks": attacks,
        "defence_attack": cfg.defence_attack,
    }
