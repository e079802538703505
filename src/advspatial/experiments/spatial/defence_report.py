"""The defence's part of the spatial report: the adaptive verdicts, the convergence panel, the trade-off,
the non-adaptive tables and the clean cost (rendering only, from ``metrics["adaptive"]`` and the
per-attack defence columns)."""

from __future__ import annotations

import math
from typing import Any

from ...regions.claims import NOT_INTERPRETABLE_ROI, sentence_case
from ...report.html import Figure, Section, Table
from ...report.verdicts import fmt, fmt_p, interval
from .context import Context
from .figures import plot_convergence, plot_defence_sweep, plot_tradeoff


def defence_headline(metrics: dict[str, Any]) -> str:
    """One sentence on the defence for the top of the report: its verdict and the numbers behind it."""
    ad = metrics["adaptive"]
    main = ad["settings"]["main"]
    helps = [row["label"] for row in ad["settings"].values() if row["verdict"] == "helps"]
    return (f"Defence: the main neutralization defence {main['verdict']} (adaptive accuracy "
            f"{wilson(main['adaptive:worst'])} vs {wilson(ad['undefended']['white-box'])} undefended white-box and "
            f"{wilson(main['control'])} for its matched control; attack "
            f"{'converged' if ad['convergence']['converged'] else 'NOT converged'}). "
            + (f"Configurations that help by the rule: {', '.join(helps)}." if helps else
               "No configuration of the sweep helps by the rule."))


def wilson(acc: dict[str, Any] | None) -> str:
    """'0.123 [0.100, 0.150]' from an accuracy dict (``value``, ``low``, ``high``)."""
    if not acc or acc.get("value") is None or math.isnan(acc["value"]):
        return "-"
    return f"{acc['value']:.3f} [{acc['low']:.3f}, {acc['high']:.3f}]"


def paired_text(comparison: dict[str, Any]) -> str:
    """'Δ [CI], p_adj' of a paired accuracy comparison."""
    p = comparison.get("p_adjusted", comparison["p"])
    return f"{interval(comparison['delta'])}, p_adj {fmt_p(p)}"


def defence_section(ctx: Context, metrics: dict[str, Any]) -> Section:
    """The defence: adaptive verdicts first, then the convergence panel, the trade-off, and the non-adaptive tables."""
    cfg = ctx.config
    ad = metrics["adaptive"]
    main = ad["settings"]["main"]
    conv = ad["convergence"]
    budget = ad["budget"]
    paragraphs = [
        f"Verdict of the main defence ({main['label']}): {main['verdict']}. Under the adaptive ensemble (APGD-CE, "
        f"APGD-DLR, Square; {budget['restarts']} restarts x {budget['steps']} iterations, {budget['queries']} queries; "
        f"through the identity-BPDA and the local gradient, worst case per image) its accuracy is "
        f"{wilson(main['adaptive:worst'])} on the first {ad['images']} images, against {wilson(ad['undefended']['white-box'])} "
        f"for the undefended model under the same attack (white-box) and {wilson(main['control'])} for its matched "
        f"random control attacked the same way (EOT {budget['eot_iter']}, scored over {budget['draws']} fresh draws).",
        "Rule: " + ad["rule"],
        f"Convergence ({conv['rule']}): {'converged' if conv['converged'] else 'NOT converged'} on {conv['n']} images "
        f"(gap to more iterations {fmt(conv['steps_gap'])}, to more restarts {fmt(conv['restarts_gap'])}); accuracy at "
        f"the largest eps ({conv['largest_eps']}) {'reaches 0' if conv['reaches_zero'] else 'does NOT reach 0 (suspect gradient masking)'}. "
        "Only the main defence's curve is measured; the other configurations use the same budget and are marked "
        "'not checked'.",
    ]
    tables = [adaptive_table(ad), roi_table(ad), baseline_table(ad), nonadaptive_table(ctx, metrics), clean_table(metrics)]
    notes = ["Transfer numbers (examples made on one model, scored on another) are labelled 'transfer' and are never "
             "a robustness number. The clean-restore diagnostic (the region's clean pixels put back) shows what the "
             "region holds; it is not a bound.",
             f"Controls: as many pixels as the neutralized region, drawn outside the RoI (the defence never touches "
             f"it), matched on {cfg.control_match}, {cfg.control_draws} draws per image keyed by the global image id "
             "(accuracies are means over draws, ± the SD across draws)."]
    if budget.get("eot_early_stop"):
        notes.append("The randomized controls were attacked with EOT early stop (an image stops once every pass of a "
                     "step is fooled): cheaper but weaker, so a control can look more robust than it is. The rule "
                     "therefore never calls a defence 'worse than its control' from this run; --eval full attacks "
                     "the controls at full strength.")
    if metrics.get("defence_interpretation", "interpretable") != "interpretable":
        notes.append(f"{sentence_case(NOT_INTERPRETABLE_ROI)}: the defence spares the RoI, so what it neutralizes is "
                     "defined by an explainer that does not mark what the model uses.")
    figures = defence_figures(ctx, metrics)
    return Section("Defence", paragraphs, tables=tables, notes=notes, figures=figures, anchor="defence")


def adaptive_table(ad: dict[str, Any]) -> Table:
    rows = []
    for key, row in ad["settings"].items():
        converged = "not checked" if row["converged"] is None else ("yes" if row["converged"] else "NO")
        rows.append([row["label"], wilson(row["clean"]), wilson(row["adaptive:identity"]), wilson(row["adaptive:local"]),
                     wilson(row["adaptive:worst"]), wilson(row["control"]), paired_text(row["vs_control"]),
                     paired_text(row["vs_undefended"]), converged, row["verdict"]])
    return Table(f"Adaptive evaluation of every configuration (first {ad['images']} images; undefended white-box "
                 f"accuracy {wilson(ad['undefended']['white-box'])}, clean {wilson(ad['undefended']['clean'])}; "
                 "accuracies with Wilson 95% CIs, Δ with paired bootstrap CIs, Holm across the table)",
                 ["configuration", "clean", "adaptive: identity-BPDA", "adaptive: local gradient", "adaptive: worst",
                  "control (adaptive, EOT)", "Δ vs control", "Δ vs undefended white-box", "converged", "verdict"], rows)


def roi_table(ad: dict[str, Any]) -> Table:
    r = ad["roi_restricted"]
    rows = [[k, wilson(v)] for k, v in r.items() if k != "defended vs undefended"]
    rows.append(["defended − undefended (both white-box)", paired_text(r["defended vs undefended"])])
    rows += [[f"whole image, transfer: {k}", wilson(v)] for k, v in ad["transfer"].items()]
    return Table("The ensemble confined to the clean image's RoI (which the defence never neutralizes), and transfer",
                 ["attack", "accuracy [Wilson 95% CI] or Δ"], rows)


def baseline_table(ad: dict[str, Any]) -> Table:
    rows = [[key.replace("|", " "), wilson(b["clean"]), wilson(b["robust"])] for key, b in ad["baselines"].items()]
    return Table("Trivial input transforms under the same adaptive attack (the baselines of the trade-off plot)",
                 ["baseline (strength)", "clean accuracy", "adaptive robust accuracy"], rows)


def nonadaptive_table(ctx: Context, metrics: dict[str, Any]) -> Table:
    rows = []
    for name, m in metrics["attacks"].items():
        d, spread = m["defence"], m.get("control_draws", {})
        for tag in ("gradient", "prior"):
            key = f"{name}|{tag}"
            if key not in metrics["nonadaptive"]:
                continue
            cmp = metrics["nonadaptive"][key]
            control = spread.get(f"{tag}:pred_control_adv", {})
            rows.append([name, tag, fmt(d.get(f"{tag}:adv", math.nan)), fmt(d.get(f"{tag}:defended_adv", math.nan)),
                         f"{fmt(control.get('mean', math.nan))} ± {fmt(control.get('sd', math.nan))}",
                         paired_text(cmp["vs_control"]), paired_text(cmp["vs_undefended"]),
                         fmt(d.get(f"{tag}:oracle_adv", math.nan)), fmt(d.get(f"{tag}:oracle_control_adv", math.nan)),
                         fmt(d.get(f"{tag}:clean_restore_adv", math.nan))])
    cfg = ctx.config
    return Table(f"Non-adaptive attacker: the run's attacks, made on the undefended model, scored on the defence "
                 f"(fill {cfg.fill}, fraction {cfg.fraction}; all n images; Holm across the table)",
                 ["attack", "defence", "undefended", "defended", "control (mean ± SD over draws)", "Δ vs control",
                  "Δ vs undefended", "oracle (true delta)", "oracle control (in RoA)", "clean-restore diagnostic"], rows)


def clean_table(metrics: dict[str, Any]) -> Table:
    cost = metrics["clean_cost"]
    return Table("Clean cost: accuracy on clean images with the deployable defence on (all n images)",
                 ["defence", "defended", "matched control (mean over draws)", "undefended"],
                 [[tag, fmt(cost.get(f"{tag}:defended_clean", math.nan)), fmt(cost.get(f"{tag}:control_clean", math.nan)),
                   fmt(metrics["clean_accuracy"])] for tag in ("gradient", "prior") if f"{tag}:defended_clean" in cost])


def defence_figures(ctx: Context, metrics: dict[str, Any]) -> list[Figure]:
    cfg = ctx.config
    ad, figures_dir = metrics["adaptive"], ctx.rundir.figures
    main_attack = metrics["attacks"][cfg.defence_attack]["defence"]
    sweep = plot_defence_sweep(metrics["sweep"], cfg.fractions, cfg.fills, figures_dir / "defence-sweep.png",
                               undefended_adv=main_attack.get("gradient:adv", math.nan),
                               clean_accuracy=metrics["clean_accuracy"], attack_name=cfg.defence_attack)
    conv = ad["convergence"]
    convergence = plot_convergence(conv["accuracy"], figures_dir / "defence-convergence.png",
                                   budget_steps=ad["budget"]["steps"], budget_restarts=ad["budget"]["restarts"],
                                   eps=cfg.eps_linf, converged=conv["converged"])
    points = {row["label"]: {"clean": row["clean"]["value"], "robust": row["adaptive:worst"]["value"]}
              for row in ad["settings"].values()}
    baselines = {k: {"clean": b["clean"]["value"], "robust": b["robust"]["value"]} for k, b in ad["baselines"].items()}
    tradeoff = plot_tradeoff(points, baselines, figures_dir / "defence-tradeoff.png",
                             undefended_clean=ad["undefended"]["clean"]["value"],
                             undefended_robust=ad["undefended"]["white-box"]["value"])
    return [Figure(convergence, "Convergence panel: robust accuracy of the main defence vs APGD iterations, restarts "
                                "and eps (worst of the identity-BPDA and local gradients)."),
            Figure(tradeoff, "Clean accuracy vs adaptive robust accuracy for every configuration and the trivial "
                             "transforms (global blur, Gaussian noise, JPEG-style quantization) on the same images."),
            Figure(sweep, "Non-adaptive sweep over the neutralized fraction and the fill; dashed: matched control.")]

