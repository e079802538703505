"""The defence's statistics and verdicts (METHODS.md §2): per-image outcomes into accuracies with Wilson CIs,
paired comparisons (McNemar / sign-flip p, bootstrap CI of Δ accuracy), Holm across each table, and one
verdict per configuration by one fixed rule (:data:`DEFENCE_RULE`)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from ...regions.inference import accuracy, bootstrap_mean_ci, holm, paired_accuracy
from .adaptive import budget_of
from .context import Context
from .defence import settings


#: the fixed rule behind every defence verdict (printed in the report)
DEFENCE_RULE = ("A configuration 'helps' only when, under the converged adaptive attack, (1) its accuracy minus its "
                "random control's (attacked the same way, with EOT) has a 95% CI above 0 and a Holm-adjusted p below "
                "the significance level, and (2) its accuracy minus the undefended model's white-box accuracy (same "
                "attack, same budget) does too. Otherwise it 'does not help'; it is 'worse than undefended' when "
                "that CI lies below 0 with an adjusted p below the level, and 'worse than its control' likewise, "
                "but only when the control was attacked at full strength (no EOT early stop: a weaker attack on "
                "the control can make a defence look worse, never better).")


VERDICT_WORDS = ("helps", "does not help", "worse than its control", "worse than undefended",
                 "not converged", "not interpretable", "insufficient data")


def summarize_adaptive(ctx: Context, outcomes: dict[str, dict[str, torch.Tensor]], convergence: dict[str, Any],
                       roi_faithful: bool, with_prior: bool) -> dict[str, Any]:
    """Accuracies with Wilson CIs, paired comparisons, Holm across configurations, and one verdict each."""
    cfg = ctx.config
    undefended = outcomes["undefended"]
    rows: dict[str, dict[str, Any]] = {}
    for s in settings(ctx, with_prior):
        o = outcomes[s.key]
        rows[s.key] = {
            "label": s.label, "fraction": s.fraction, "fill": s.fill, "vulnerability": s.vulnerability,
            "clean": accuracy(o["clean:defended"]).as_dict(),
            **{f"adaptive:{g}": accuracy(o[f"defended:{g}"]).as_dict() for g in ("identity", "local", "worst")},
            "control": share_summary(o["control:worst"]),
            "vs_control": paired_accuracy(o["defended:worst"], o["control:worst"], seed=cfg.seed).as_dict(),
            "vs_undefended": paired_accuracy(o["defended:worst"], undefended["white-box"], seed=cfg.seed).as_dict(),
            "converged": convergence["converged"] if s.key == "main" else None,
            "control_full_strength": not cfg.eot_early_stop,
        }
    adjust_family(rows)
    for key, row in rows.items():
        row["verdict"] = defence_verdict(row, roi_faithful, cfg.significance)
    main = outcomes["main"]
    return {
        "images": int(undefended["clean"].numel()),
        "budget": budget_of(ctx).as_dict(),
        "rule": DEFENCE_RULE,
        "undefended": {"clean": accuracy(undefended["clean"]).as_dict(),
                       "white-box": accuracy(undefended["white-box"]).as_dict(),
                       "roi:white-box": accuracy(undefended["roi:white-box"]).as_dict()},
        "settings": rows,
        "roi_restricted": {
            "defended (white-box, worst gradient)": accuracy(main["roi:defended:worst"]).as_dict(),
            "undefended (white-box)": accuracy(undefended["roi:white-box"]).as_dict(),
            "transfer: made on the defence, scored undefended": accuracy(main["roi:transfer:undefended"]).as_dict(),
            "transfer: made on the undefended model, scored defended": accuracy(undefended["roi:transfer:defended"]).as_dict(),
            "defended vs undefended": paired_accuracy(main["roi:defended:worst"], undefended["roi:white-box"],
                                                      seed=cfg.seed).as_dict(),
        },
        "transfer": {
            "made on the defence, scored undefended": accuracy(main["transfer:undefended"]).as_dict(),
            "made on the undefended model, scored defended": accuracy(undefended["transfer:defended"]).as_dict(),
        },
        "baselines": {key.removeprefix("baseline|"): {"clean": share_summary(o["clean"]), "robust": share_summary(o["robust"])}
                      for key, o in outcomes.items() if key.startswith("baseline|")},
        "convergence": convergence,
    }


def share_summary(shares: torch.Tensor) -> dict[str, Any]:
    """Mean of per-image shares (a randomized defence over its draws); Wilson CI when they are all 0/1."""
    v = shares.double()
    if bool(((v == 0) | (v == 1)).all()):
        return accuracy(v).as_dict()
    est = bootstrap_mean_ci(v)
    return {"value": est.mean, "low": est.low, "high": est.high, "k": math.nan, "n": est.n}


def adjust_family(rows: dict[str, dict[str, Any]]) -> None:
    """Holm across every row's two comparisons (vs control, vs undefended): one family per table."""
    entries = [(key, which) for key in rows for which in ("vs_control", "vs_undefended")]
    adjusted = holm(np.array([rows[k][w]["p"] for k, w in entries], dtype=float)) if entries else []
    for (key, which), p_adj in zip(entries, adjusted):
        rows[key][which]["p_adjusted"] = float(p_adj)


def defence_verdict(row: dict[str, Any], roi_faithful: bool, alpha: float, min_n: int = 30) -> str:
    """One of :data:`VERDICT_WORDS` by :data:`DEFENCE_RULE`."""
    if not roi_faithful:
        return "not interpretable"
    if row["vs_control"]["delta"]["n"] < min_n:
        return "insufficient data"

    def above(c: dict[str, Any]) -> bool:
        return c["delta"]["low"] > 0 and c.get("p_adjusted", math.nan) < alpha

    def below(c: dict[str, Any]) -> bool:
        return c["delta"]["high"] < 0 and c.get("p_adjusted", math.nan) < alpha

    if below(row["vs_undefended"]):
        return "worse than undefended"
    if below(row["vs_control"]) and row.get("control_full_strength", True):
        return "worse than its control"
    if above(row["vs_control"]) and above(row["vs_undefended"]):
        return "helps" if row["converged"] else "not converged"
    return "does not help"


def nonadaptive_comparisons(rows: list[dict[str, Any]], attacks: list[str], seed: int) -> dict[str, Any]:
    """Per attack and deployable defence: defended vs its control and vs undefended, paired; Holm over the family."""
    out: dict[str, Any] = {}
    for name in attacks:
        group = [r for r in rows if r["attack"] == name]
        for tag in ("gradient", "prior"):
            if not group or f"{tag}:pred_defended_adv" not in group[0]:
                continue
            defended = [float(r[f"{tag}:pred_defended_adv"] == r["label"]) for r in group]
            control = [r[f"{tag}:correct_control_adv"] for r in group]
            undefended = [float(r["adv_pred"] == r["label"]) for r in group]
            out[f"{name}|{tag}"] = {"vs_control": paired_accuracy(defended, control, seed=seed).as_dict(),
                                    "vs_undefended": paired_accuracy(defended, undefended, seed=seed).as_dict()}
    adjust_family(out)
    return out


def spread(hits: torch.Tensor) -> dict[str, float]:
    """(N, draws) correctness of a control: accuracy of each draw over the images, as mean and SD across draws."""
    per_draw = hits.mean(0)
    return {"mean": float(per_draw.mean()), "sd": float(per_draw.std(unbiased=True)) if per_draw.numel() > 1 else 0.0,
            "draws": int(per_draw.numel())}


def draw_spread(draws: dict[str, list[torch.Tensor]]) -> dict[str, dict[str, float]]:
    """:func:`spread` of every control column, its batches concatenated."""
    return {key: spread(torch.cat(parts)) for key, parts in draws.items()}


def sweep_summary(ctx: Context, sweep: dict[str, torch.Tensor]) -> dict[str, Any]:
    """Per (adv|clean, fraction, fill): defended accuracy (Wilson), control mean ± SD over draws, paired Δ."""
    cfg = ctx.config
    out: dict[str, Any] = {}
    for tag in ("adv", "clean"):
        for f in cfg.fractions:
            for fill in cfg.fills:
                key = f"{tag}|{f:g}|{fill}"
                defended, control = sweep[f"{key}|defended"], sweep[f"{key}|control"]
                out[key] = {"defended": accuracy(defended).as_dict(), "control": spread(control),
                            "vs_control": paired_accuracy(defended, control.mean(1), seed=cfg.seed).as_dict()}
    return out
