"""The defence's statistics and verdicts (METHODS.md §2): per-image outcomes into accuracies with Wilson CIs,
paired comparisons (McNemar / sign-flip p, bootstrap CI of Δ accuracy), Holm across each table, and one
verdict per configuration by one fixed rule (:data:`DEFENCE_RULE`)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from ...defence.adaptive import AdaptiveBudget
from ...defence.convergence import CurveGrid, convergence_rule
from ...statistics.accuracy import accuracy, paired_accuracy
from ...statistics.estimates import bootstrap_mean_ci
from ...statistics.verdicts import holm
from ..maps.stages import Context
from .metrics import Adaptive
from .stages import AdaptiveOutcomes, DefenceSetting, SweepColumns, budget_of, curve_grid, settings

#: the fixed rule behind every defence verdict (printed in the report)
DEFENCE_RULE = ("A configuration 'helps' only when (1) its accuracy minus its random control's (the control attacked "
                "with EOT at full strength) has a 95% CI above 0 and a Holm-adjusted p below the significance level, "
                "and (2) its accuracy minus the undefended model's white-box accuracy (same attack, same budget) does "
                "too. It is 'worse than undefended' when that CI lies below 0 with an adjusted p below the level, "
                "'worse than its control' likewise, and otherwise it 'does not help'. Every verdict rests on the "
                "convergence curves of the attacks it compares, measured on the same images with the same attack: "
                "the attack on the defence must be converged (more iterations and restarts lower it by at most one "
                "image or 1 point) and reach 0 at the largest eps (else 'not converged': the classic sign of "
                "gradient masking), the control's and the white-box attack's curves must be flat too, and a "
                "randomized component must be attacked at full EOT strength (else 'not checked', naming what "
                "failed). 'Worse than undefended' needs only the white-box curve: a weaker attack on the defence "
                "can only understate it. A configuration not attacked adaptively is 'not evaluated adaptively' "
                "(--eval full attacks every one).")

#: the pre-declared harm claim: the attack confined to the RoI the defence spares, defended vs undefended (paired)
HARM_RULE = ("The defence 'makes the model more vulnerable inside the RoI' when, with the attack confined to the clean "
             "image's RoI (which the defence never neutralizes), the defended model's white-box accuracy minus the "
             "undefended model's has a 95% CI below 0 and a Holm-adjusted p (in the table's family) below the "
             "level, the undefended attack's convergence curve being flat (a weaker attack on the defended model "
             "can only understate the harm).")

VERDICT_WORDS = ("helps", "does not help", "worse than its control", "worse than undefended", "not converged",
                 "not checked", "not evaluated adaptively", "not interpretable", "insufficient data")
HARM_WORDS = ("makes the model more vulnerable inside the RoI", "no harm shown inside the RoI", "not checked",
              "insufficient data")
#: the label of a randomized component's number when its EOT was weak (``--quick``): never plotted nor tested
WEAK_EOT = "upper bound (weak EOT)"
#: the label of a baseline whose clean accuracy is not above chance (its Wilson/bootstrap CI reaches 1/K): it has no
#: clean accuracy left to trade for robustness, so its point says nothing in the trade-off plot (kept out of it).
#: Seen on the CIFAR-10 ResNet-20 under Fashion-MNIST's noise sd 0.2: clean accuracy 0 of 50, robust 0 of 50.
AT_CHANCE = "clean accuracy at chance: no trade-off to show"


def summarize_adaptive(ctx: Context, outcomes: AdaptiveOutcomes, roi_faithful: bool,
                       with_prior: bool) -> Adaptive:
    """Accuracies with Wilson CIs, convergence per component, paired comparisons, Holm across the table (and the
    harm claim), and one verdict each."""
    cfg = ctx.config
    budget, grid = budget_of(ctx), curve_grid(ctx)
    undefended = outcomes.undefended
    conv = lambda component, randomized=False: component_convergence(  # noqa: E731
        component, budget, grid, cfg.eps_linf, randomized)
    white = conv(undefended["white-box"])
    rows = {s: setting_row(ctx, s, outcomes.settings.get(s), undefended, conv) for s in settings(ctx, with_prior)}
    main = next(o for s, o in outcomes.settings.items() if s.role == "main")
    harm = harm_comparison(ctx, main, undefended, conv)
    adjust_family(rows, harm)
    for row in rows.values():
        row["verdict"], row["why"] = defence_verdict(row, roi_faithful, cfg.significance, white)
    harm["verdict"] = harm_verdict(harm, cfg.significance)
    return Adaptive(
        images=int(undefended["clean"].numel()),
        budget=budget.as_dict(),
        rule=DEFENCE_RULE,
        undefended={"clean": accuracy(undefended["clean"]).as_dict(),
                    "white-box": accuracy(worst(undefended["white-box"])).as_dict(),
                    "roi:white-box": accuracy(worst(undefended["roi"])).as_dict(),
                    "convergence": white},
        settings=rows,
        harm=harm,
        roi_restricted={
            "defended (white-box, worst gradient)": accuracy(worst(main["roi"])).as_dict(),
            "undefended (white-box)": accuracy(worst(undefended["roi"])).as_dict(),
            "transfer: made on the defence, scored undefended": accuracy(main["roi_transfer"]).as_dict(),
            "transfer: made on the undefended model, scored defended": accuracy(undefended["roi_transfer"]).as_dict(),
        },
        transfer={
            "made on the defence, scored undefended": accuracy(main["transfer"]).as_dict(),
            "made on the undefended model, scored defended": accuracy(undefended["transfer"]).as_dict(),
        },
        baselines={(t, s): baseline_row(t, o, conv, budget, chance=1.0 / ctx.data.num_classes)
                   for (t, s), o in outcomes.baselines.items()},
        convergence=rows[DefenceSetting("main", cfg.fraction, cfg.fill)]["convergence"]["defended"],
    )


def worst(component: dict[str, Any]) -> torch.Tensor:
    """A component's per-image result of the whole adaptive attack (its worst case over the gradients)."""
    return component["correct"]["worst"]


def component_convergence(component: dict[str, Any], budget: AdaptiveBudget, grid: CurveGrid, eps: float,
                          randomized: bool) -> dict[str, Any]:
    """The curve of an adaptive component (its per-image ``curve`` points, as accuracies) and the rule's verdict."""
    accuracies = {point: float(v.double().mean()) for point, v in component["curve"].items()}
    n = int(worst(component).numel())
    return {"accuracy": accuracies, **convergence_rule(accuracies, n, budget, grid, eps, randomized=randomized)}


def setting_row(ctx: Context, s: DefenceSetting, o: dict[str, Any] | None, undefended: dict[str, Any],
                conv: Any) -> dict[str, Any]:
    """One configuration's row: its accuracies, convergence per component and paired comparisons (or, when it
    was not attacked adaptively, only what it is)."""
    cfg = ctx.config
    row: dict[str, Any] = {"label": s.label, "fraction": s.fraction, "fill": s.fill, "vulnerability": s.vulnerability,
                           "evaluated": o is not None}
    if o is None:
        return row
    row.update({
        "clean": accuracy(o["clean"]).as_dict(),
        **{f"adaptive:{g}": accuracy(o["defended"]["correct"][g]).as_dict() for g in ("identity", "local", "worst")},
        "control": share_summary(worst(o["control"])),
        "vs_control": paired_accuracy(worst(o["defended"]), worst(o["control"]), seed=cfg.seed).as_dict(),
        "vs_undefended": paired_accuracy(worst(o["defended"]), worst(undefended["white-box"]),
                                         seed=cfg.seed).as_dict(),
        "convergence": {"defended": conv(o["defended"]), "control": conv(o["control"], True)},
        "control_full_strength": budget_of(ctx).full_eot,
    })
    return row


def harm_comparison(ctx: Context, main: dict[str, Any], undefended: dict[str, Any], conv: Any) -> dict[str, Any]:
    """The pre-declared harm claim's comparison: RoI-confined white-box accuracy, defended minus undefended."""
    return {"claim": "makes the model more vulnerable inside the RoI", "rule": HARM_RULE,
            "comparison": paired_accuracy(worst(main["roi"]), worst(undefended["roi"]), seed=ctx.config.seed).as_dict(),
            "convergence": {"undefended": conv(undefended["roi"])}}


def baseline_row(transform: str, o: dict[str, Any], conv: Any, budget: AdaptiveBudget, *,
                 chance: float) -> dict[str, Any]:
    """A baseline's clean and robust accuracy, its convergence and the labels that keep it out of the plot: a
    randomized one attacked with weak EOT (:data:`WEAK_EOT`), one whose clean accuracy's CI reaches ``chance``
    (1/K; :data:`AT_CHANCE`)."""
    randomized = transform == "noise"
    row = {"clean": share_summary(o["clean"]), "robust": share_summary(worst(o["baseline"])),
           "convergence": conv(o["baseline"], randomized), "randomized": randomized}
    labels = [WEAK_EOT] if randomized and not budget.full_eot else []
    if row["clean"]["low"] <= chance:
        labels.append(AT_CHANCE)
    row["label"] = "; ".join(labels)
    return row


def share_summary(shares: torch.Tensor) -> dict[str, Any]:
    """Mean of per-image shares (a randomized defence over its draws); Wilson CI when they are all 0/1."""
    v = shares.double()
    if bool(((v == 0) | (v == 1)).all()):
        return accuracy(v).as_dict()
    est = bootstrap_mean_ci(v)
    return {"value": est.mean, "low": est.low, "high": est.high, "k": math.nan, "n": est.n}


def adjust_family(rows: Mapping[Any, dict[str, Any]], harm: dict[str, Any] | None = None) -> None:
    """Holm across every evaluated row's two comparisons (vs control, vs undefended) and the harm claim: one
    family per table."""
    entries = [(rows[key][which]) for key in rows if rows[key].get("evaluated", True)
               for which in ("vs_control", "vs_undefended")]
    if harm is not None:
        entries.append(harm["comparison"])
    adjusted: np.ndarray | list[float] = holm(np.array([c["p"] for c in entries], dtype=float)) if entries else []
    for comparison, p_adj in zip(entries, adjusted, strict=True):
        comparison["p_adjusted"] = float(p_adj)


def above(c: dict[str, Any], alpha: float) -> bool:
    return c["delta"]["low"] > 0 and c.get("p_adjusted", math.nan) < alpha


def below(c: dict[str, Any], alpha: float) -> bool:
    return c["delta"]["high"] < 0 and c.get("p_adjusted", math.nan) < alpha


def unchecked(row: dict[str, Any], white: dict[str, Any]) -> list[str]:
    """What a configuration's verdict cannot rest on: components whose curve is not flat or whose EOT was weak."""
    conv = row["convergence"]
    missing = []
    if not row.get("control_full_strength", True):
        missing.append(f"the control's EOT was weak ({WEAK_EOT})")
    elif not conv["control"]["converged"]:
        missing.append(f"the control's EOT curve is not flat (gap {conv['control']['eot_gap']:.3g})")
    if not white["converged"]:
        missing.append("the white-box attack's curve is not flat")
    return missing


def defence_verdict(row: dict[str, Any], roi_faithful: bool, alpha: float, white: dict[str, Any],
                    min_n: int = 30) -> tuple[str, str]:
    """(one of :data:`VERDICT_WORDS`, why) by :data:`DEFENCE_RULE`."""
    if not roi_faithful:
        return "not interpretable", "the RoI failed the faithfulness gate"
    if not row.get("evaluated", True):
        return "not evaluated adaptively", "use --eval full"
    if row["vs_control"]["delta"]["n"] < min_n:
        return "insufficient data", f"n < {min_n}"
    if below(row["vs_undefended"], alpha) and white["converged"]:
        return "worse than undefended", ""
    defended = row["convergence"]["defended"]
    if not defended["converged"] or not defended["reaches_zero"]:
        why = [] if defended["converged"] else [f"more effort lowers it (iterations {defended['steps_gap']:+.3g}, "
                                                f"restarts {defended['restarts_gap']:+.3g})"]
        if not defended["reaches_zero"]:
            at_largest = defended["accuracy"].get(defended["largest_eps"], math.nan)
            why.append(f"accuracy at {defended['largest_eps']} is {at_largest:.3g}, "
                       "not 0 (suspect gradient masking)")
        return "not converged", "; ".join(why)
    missing = unchecked(row, white)
    if missing:
        return "not checked", "; ".join(missing)
    if below(row["vs_control"], alpha):
        return "worse than its control", ""
    if above(row["vs_control"], alpha) and above(row["vs_undefended"], alpha):
        return "helps", ""
    return "does not help", ""


def harm_verdict(harm: dict[str, Any], alpha: float, min_n: int = 30) -> str:
    """One of :data:`HARM_WORDS` by :data:`HARM_RULE`."""
    c = harm["comparison"]
    if c["delta"]["n"] < min_n:
        return "insufficient data"
    if below(c, alpha):
        return harm["claim"] if harm["convergence"]["undefended"]["converged"] else "not checked"
    return "no harm shown inside the RoI"


def nonadaptive_comparisons(rows: list[dict[str, Any]], attacks: list[str],
                            seed: int) -> dict[tuple[str, str], dict[str, Any]]:
    """Per (attack, deployable defence): defended vs its control and vs undefended, paired; Holm over the family."""
    out: dict[tuple[str, str], dict[str, Any]] = {}
    for name in attacks:
        group = [r for r in rows if r["attack"] == name]
        for tag in ("gradient", "prior"):
            if not group or f"{tag}:pred_defended_adv" not in group[0]:
                continue
            defended = [float(r[f"{tag}:pred_defended_adv"] == r["label"]) for r in group]
            control = [r[f"{tag}:correct_control_adv"] for r in group]
            undefended = [float(r["adv_pred"] == r["label"]) for r in group]
            out[name, tag] = {"vs_control": paired_accuracy(defended, control, seed=seed).as_dict(),
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


def sweep_summary(ctx: Context, sweep: SweepColumns) -> dict[tuple[str, float, str], dict[str, Any]]:
    """Per (adv|clean, fraction, fill): defended accuracy (Wilson), control mean ± SD over draws, paired Δ."""
    cfg = ctx.config
    out = {}
    for tag in ("adv", "clean"):
        for f in cfg.fractions:
            for fill in cfg.fills:
                defended, control = sweep[tag, f, fill]
                out[tag, f, fill] = {"defended": accuracy(defended).as_dict(), "control": spread(control),
                                     "vs_control": paired_accuracy(defended, control.mean(1), seed=cfg.seed).as_dict()}
    return out
