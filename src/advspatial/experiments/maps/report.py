"""The report of the RoI/RoA measurement: verdicts first, the gate, setup, where the attacks act, the overlap
against the nulls, limits; and the printed summaries (the spatial experiment adds its attacks table and defence).

Rendering only: every number comes from the metrics, the claims and the attack summaries computed by the
stages (:mod:`.stages`, :mod:`.claims`, :mod:`.metrics`).
"""

from __future__ import annotations

import math
from typing import Any

import torch

from ...regions.verdicts import sesoi_text
from ...regions import segregate
from ...regions.claims import NOT_INTERPRETABLE_ROI, Claim, sentence_case
from ...report.figures import plot_class_mean_maps, plot_region_grid
from ...report.html import Figure, Section, Table
from ...report.sections import explainer_verdict, faithfulness_section
from ...report.verdicts import fmt, fmt_p, forest_figures, interval, verdict_legend, verdict_table, what_this_run_shows
from ..gate import gate_rule
from .stages import PARTS, AttackSummary, Context

STAT_LABELS = {
    "iou": "IoU(RoI, RoA)", "dice": "Dice", "energy_in_roi": "attack energy in RoI",
    "pointing_game": "pointing game", "spearman": "Spearman(I, A)", "pearson": "Pearson(I, A)",
}

TERMS = ("Region of Importance (RoI): the pixels the model looks at when it classifies, the top fraction of an "
         "importance map. Region of Attack (RoA): the pixels the attacker's perturbation acts through, the top "
         "fraction of an attack map.")

GRADIENT_FREE = ("occlusion", "cam")


def measurement_sections(ctx: Context, summaries: list[AttackSummary], metrics: dict[str, Any],
                         claims: list[Claim], headline: tuple[str, ...] = ()) -> list[Section]:
    """The sections of the measurement (before the limits; the spatial experiment adds its attacks table and
    defence); ``headline``: more sentences for the top of the report (the defence's)."""
    return [
        verdict_section(ctx, summaries, metrics, claims, headline),
        gate_section(ctx, metrics),
        setup_section(ctx, metrics),
        where_section(ctx, summaries, metrics),
        overlap_section(ctx, claims),
    ]


def verdict_section(ctx: Context, summaries: list[AttackSummary], metrics: dict[str, Any],
                    claims: list[Claim], headline: tuple[str, ...] = ()) -> Section:
    """The top of the report: one row per primary claim, what the run shows, a forest plot per attack."""
    cfg = ctx.config
    primary = [c for c in claims if c.primary]
    paragraphs = [TERMS, "What this run shows:"] + what_this_run_shows(claims) + content_sentences(metrics)
    paragraphs += headline
    if not metrics["roi"]["faithful"]:
        label = metrics["roi"].get("interpretation") or NOT_INTERPRETABLE_ROI   # names what the RoI did not beat
        paragraphs.insert(1, f"{sentence_case(label)} ({metrics['roi']['method']}): every RoI-dependent "
                             "result below (co-location, the defence, which spares the RoI) is not evidence about the "
                             "model. The sensitivity panel shows what other explainers give.")
    notes = [verdict_legend() + f" Primary endpoint: {STAT_LABELS['energy_in_roi']} beyond image content -- per "
             "image, the excess over the same-class null of the model's RoI minus that of each model-free reference "
             "RoI of the same size (class and dataset layout, centre, intensity, edges); supported only when every "
             "difference is above 0 (an intersection-union test: the row shows the weakest difference and the "
             "largest p); Holm across attacks; every other row (the plain excess over the same-class null, the "
             f"references' own co-location) Benjamini-Hochberg; significance level {cfg.significance}; "
             f"{sesoi_text(cfg.sesoi)}; n >= 30 (smaller claims are not judged and enter no family)."]
    figures = forest_figures(claims, ctx.rundir.figures / "forest.png",
                             "Observed minus each null, per-image mean with 95% bootstrap CI",
                             "Forest plot: the primary statistic against each null (uniform placement, any class, "
                             "same class, same class and composition). Grey: a gate failed.")
    panel = [c for c in claims if ": " in c.subject and "RoI, top" in c.subject]
    tables = [verdict_table(primary, "Verdicts: one row per pre-declared claim")]
    if panel:
        tables.append(panel_table(panel))
    for method, twin in ctx.panel_duplicates.items():
        notes.append(f"{method} is left out of the panel: its maps equal {twin}'s up to scale on this model.")
    return Section("Verdicts", paragraphs, tables=tables, figures=figures, notes=notes, anchor="verdicts")


def gate_section(ctx: Context, metrics: dict[str, Any]) -> Section:
    """The faithfulness gate of every explainer the run used, and the model-randomization check."""
    cfg = ctx.config
    roi = metrics["roi"]
    return faithfulness_section([explainer_verdict("RoI explainer", roi["method"], roi["why"], roi["faithful"]),
                                 gate_rule(cfg, min(cfg.gate_n, metrics["n"]), cfg.fraction, cfg.eps_linf)],
                                metrics["faithfulness"], per_class_of=[roi["method"]])


def panel_table(panel: list[Claim]) -> Table:
    """Explainer-sensitivity panel: the primary statistic under each explainer and region fraction."""
    rows = []
    for c in panel:
        method = c.subject.split(": ", 1)[1].split(" RoI")[0]
        kind = "gradient-free" if method in GRADIENT_FREE else "gradient-based (partly circular with the RoA)"
        rows.append([c.subject, kind, fmt(c.observed), fmt(c.null_value), interval(c.effect), fmt(c.ratio, 2),
                     fmt_p(c.p_adjusted),
                     "passed" if all(c.gates.values()) else "FAILED", c.verdict])
    return Table("Explainer sensitivity: attack energy in RoI vs the same-class null under other explainers and "
                 "region fractions (a conclusion that changes sign across faithful explainers is explainer-dependent)",
                 ["RoI", "explainer kind", "observed", "same-class null", "Δ [95% CI]", "ratio", "p_adj (BH)",
                  "gates", "verdict"], rows)


def setup_section(ctx: Context, metrics: dict[str, Any]) -> Section:
    cfg = ctx.config
    return Section("Setup", [
        TERMS,
        f"Model {cfg.model} on the first {metrics['n']} {cfg.dataset} test images; clean accuracy "
        f"{fmt(metrics['clean_accuracy'])}. Seed {cfg.seed}; device {ctx.device}.",
        f"RoI: {ctx.importance} of the predicted class on the clean image ({ctx.importance_reason}). RoA: the "
        f"{cfg.attack_map} map of the perturbation ({cfg.contribution_part} part; magnitude added for L2 attacks). "
        f"Both regions are the top {cfg.fraction:.0%} of their map (only strictly positive pixels; ties at the cut "
        "broken by a seeded random order)"
        + (f", compared at the CAM layer's resolution {ctx.scale[0]}x{ctx.scale[1]} (both maps average-pooled)."
           if ctx.scale else ", at the input's resolution."),
        "Statistics are over images the model classifies correctly and the attack fools (successful attacks), "
        f"leaving out images whose contribution map stays outside the completeness tolerance "
        f"({cfg.completeness_tolerance:.0%}) after refinement.",
    ])


def where_section(ctx: Context, summaries: list[AttackSummary], metrics: dict[str, Any]) -> Section:
    cfg = ctx.config
    figures, part_rows = [], []
    for s in summaries:
        for kind, stats in metrics["attacks"][s.name]["maps"].items():
            part_rows.append([s.name, kind] + [fmt(stats[p]) for p in PARTS]
                             + [fmt(stats.get("completeness_error_median", math.nan), 4),
                                fmt(stats.get("completeness_error_max", math.nan), 4),
                                fmt(stats.get("flagged_share", math.nan))])
        kind = s.kinds()[0]
        if s.examples.get("labels") and sum(len(t) for t in s.examples["labels"]):
            ex = {k: torch.cat(v) for k, v in s.examples.items()}
            names = [ctx.data.class_names[int(c)] for c in ex["labels"]]
            path = plot_region_grid(ex["x_adv"], ex["importance"], ex["attack"], segregate(ex["roi"], ex["roa"]),
                                    ctx.rundir.figures / f"regions-{s.name}.png", row_labels=names,
                                    importance_name=ctx.importance, attack_name=kind,
                                    title=f"{s.name}: where the model looks (RoI) and where the attack acts (RoA)",
                                    region_rule=f"top {cfg.fraction:.0%} of each map", max_rows=cfg.figure_images)
            figures.append(Figure(path, f"{s.name}: adversarial image, {ctx.importance} (RoI), "
                                        f"{kind} map (RoA) and the four-part partition."))
    main = next((s for s in summaries if s.name == cfg.defence_attack), summaries[0])
    figures += frequency_figures(ctx, main)
    table = Table("Four-part segregation (mean share of the image) and completeness of the contribution map",
                  ["attack", "attack map", "both", "roi_only", "roa_only", "neither", "completeness err. (median)",
                   "completeness err. (max)", "share flagged (excluded)"], part_rows)
    notes = ["For L-inf attacks the magnitude map is nearly flat (|delta| = eps almost everywhere); that is why "
             "the contribution map is the default RoA for them."]
    return Section("Where the attacks act", tables=[table], figures=figures, notes=notes, anchor="where-they-act")


def frequency_figures(ctx: Context, main: AttackSummary) -> list[Figure]:
    """P(pixel in RoI | class), P(pixel in RoA | class) and their difference, over successful attacks."""
    kind = main.kinds()[0]
    roi, roa = main.frequency["roi"], main.frequency[kind]
    if int(roi.counts.sum()) == 0:
        return []
    names = list(ctx.data.class_names)
    out = []
    for key, acc, label in (("roi", roi, f"P(pixel in RoI | class), {ctx.importance}"),
                            ("roa", roa, f"P(pixel in RoA | class), {kind} map of {main.name}")):
        path = plot_class_mean_maps(acc.means(), names, ctx.rundir.figures / f"frequency-{key}.png", counts=acc.counts,
                                    title=label, colorbar_label="share of images", vmin=0.0, vmax=1.0)
        out.append(Figure(path, f"{label}: how often each pixel is in the region, per class."))
    diff = roa.means() - roi.means()
    path = plot_class_mean_maps(diff, names, ctx.rundir.figures / "frequency-difference.png", counts=roi.counts,
                                title=f"P(RoA) - P(RoI) per class ({main.name})", colorbar_label="difference",
                                vmin=-1.0, vmax=1.0, cmap="RdBu_r")
    out.append(Figure(path, "Red: pixels the attack uses more often than the model looks at them; blue: the reverse. "
                            "Class-level alignment or anti-alignment shows here before any statistic."))
    return out


def overlap_section(ctx: Context, claims: list[Claim]) -> Section:
    """Every statistic against every null (folded), with corrected p-values and verdicts."""
    cfg = ctx.config
    rest = [c for c in claims if not c.primary and "RoI, top" not in c.subject]
    table = verdict_table(rest, f"Every statistic vs every null ({cfg.permutations} permutations per pair-based "
                                "null; two-sided p; Benjamini-Hochberg)", folded=True)
    return Section("Overlap vs the nulls", [
        "Nulls, from the weakest to the most matched: uniform (regions placed independently at random, analytic), "
        "any-class (RoA paired with the RoI of any other image), same-class (of another image of the same class), "
        "object-conditioned (same class and same foreground-share stratum). Observed below a null means the attack "
        "avoids the RoI more than that null: anti-alignment, a finding in its own right, never hidden as p = 1.",
        "IoU and Dice are not computed for one-pixel attacks (degenerate for a one-pixel RoA): they get the exact "
        "'attacked pixel in RoI' test against per-image chance instead."],
        tables=[table], anchor="overlap-vs-baseline")


def measurement_limits_section(ctx: Context, metrics: dict[str, Any], external: bool) -> Section:
    """The limits of the measurement alone (``maps``, ``analyze``); ``external``: the adversarial examples were
    made elsewhere (``analyze``)."""
    cfg = ctx.config
    # external examples (analyze) were made elsewhere, by whatever attack: our one-pixel budget never ran
    paragraphs = [*measurement_limits(cfg), *([] if external else onepixel_limits(cfg, metrics))]
    if external:
        paragraphs.append(
            "The adversarial examples were made elsewhere: how strong their attack was (its budget, its "
            "convergence) is the maker's to show; this report measures where the given perturbations act, not "
            "whether a stronger attack would act elsewhere.")
    else:
        paragraphs.append(
            "No defence is evaluated here: the overlap of RoI and RoA says where the attacks act, not that removing "
            "either region protects the model (`advspatial run spatial` evaluates that, with controls and adaptive "
            "attacks).")
    return Section("Limits of the method", paragraphs, anchor="limits")


def measurement_limits(cfg: Any) -> list[str]:
    """What every RoI-vs-RoA measurement rests on: faithful maps, the choice of attack map, the region fraction."""
    return [
        "Maps are explanations, not ground truth: an RoI is interpreted only when its explainer passes the "
        "faithfulness gate, and the RoA depends on the attack map chosen (contribution, magnitude, gradient answer "
        "different questions).",
        "Gradient-based RoIs (Grad-CAM, HiResCAM, saliency, IG) are partly circular with a gradient-based RoA (the "
        "contribution map integrates the same model's gradients); occlusion is the gradient-free reference.",
        f"Regions are the top {cfg.fraction:.0%} of each map; other fractions change IoU mechanically. The nulls "
        "control for that, which is why only observed-vs-null differences are interpreted (the panel shows other "
        "fractions).",
    ]


def onepixel_limits(cfg: Any, metrics: dict[str, Any]) -> list[str]:
    """The one-pixel attack's reduced budget, when it ran."""
    if "onepixel" not in metrics.get("attacks", {}):
        return []
    return [f"One-pixel attacks run on the first {min(cfg.onepixel_n, metrics['n'])} images with a reduced DE "
            f"budget (population {cfg.onepixel_popsize}, {cfg.onepixel_steps} generations; the literature uses 400 "
            "and 75); on 28x28 grey images they rarely succeed, so their statistics rest on few images."]


def content_sentences(metrics: dict[str, Any]) -> list[str]:
    """Per attack and RoA map, the plain sentence of the co-location beyond layout and image content."""
    return [f"{name} ({kind} RoA): {k['sentence']}" for name, by_kind in (metrics.get("content") or {}).items()
            for kind, k in by_kind.items()]


def maps_summary(metrics: dict[str, Any]) -> str:
    """The summary of the ``maps`` experiment: each attack's success, then the gate and every verdict."""
    lines = [f"{name} on {m['images']} images: success rate {m['success_rate']:.3f}, {m['successful']} successful "
             "attacks analysed" for name, m in metrics["attacks"].items()]
    return "\n".join([*lines, *claims_lines(metrics)])


def claims_lines(metrics: dict[str, Any]) -> list[str]:
    """The RoI's gate and every claim's verdict, one line each (printed by ``maps`` and ``analyze``)."""
    roi = metrics["roi"]
    gate = metrics["faithfulness"][roi["method"]]
    lines = [f"RoI {roi['method']}: faithfulness gate "
             f"{'passed' if gate['passed'] else 'FAILED (' + str(gate.get('reason', '')) + ')'}"]
    for c in metrics["claims"]:
        e = c["effect"]
        lines.append(f"  {'*' if c['primary'] else ' '} {c['subject']:<28} {c['statistic']:<14} vs {c['null']:<18} "
                     f"observed {c['observed']:.3f} null {c['null_value']:.3f} excess {e['mean']:+.3f} "
                     f"[{e['low']:+.3f}, {e['high']:+.3f}] p_adj {fmt_p(c['p_adjusted'])}  {c['verdict']}")
    lines.append("(* = primary endpoint)")
    return lines + content_sentences(metrics)
