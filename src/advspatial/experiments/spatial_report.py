"""Figures, report sections and the printed summary of the spatial experiment."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import torch

from ..regions import segregate
from ..report.defence_plots import plot_defence_sweep
from ..report.figures import plot_class_mean_maps, plot_permutation_histograms, plot_region_grid
from ..report.html import Figure, Section, Table

if TYPE_CHECKING:
    from .spatial import AttackSummary, Context

STAT_LABELS = {
    "iou": "IoU(RoI, RoA)", "dice": "Dice", "energy_in_roi": "attack energy in RoI",
    "pointing_game": "pointing game", "spearman": "Spearman(I, A)", "pearson": "Pearson(I, A)",
}


def fmt(value: float, digits: int = 3) -> str:
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.{digits}f}"


def build_sections(ctx: "Context", summaries: list["AttackSummary"], metrics: dict[str, Any],
                   permutation: dict[str, dict[str, Any]], rows: list[dict[str, Any]]) -> list[Section]:
    return [
        setup_section(ctx, metrics),
        attacks_section(metrics),
        where_section(ctx, summaries, metrics),
        overlap_section(ctx, summaries, permutation),
        defence_section(ctx, metrics),
        limits_section(ctx, metrics),
    ]


def setup_section(ctx: "Context", metrics: dict[str, Any]) -> Section:
    cfg = ctx.config
    return Section("Setup", [
        f"Model {cfg.model} on the first {metrics['n']} {cfg.dataset} test images; clean accuracy "
        f"{fmt(metrics['clean_accuracy'])}. Seed {cfg.seed}; device {ctx.device}.",
        f"RoI: {cfg.importance} of the predicted class on the clean image. RoA: the {cfg.attack_map} map of the "
        f"perturbation (plus magnitude for L2/L0 attacks). Both regions are the top {cfg.fraction:.0%} of their "
        "map (only strictly positive pixels; ties at the cut broken by a seeded random order).",
        "Statistics are over images the model classifies correctly and the attack fools (successful attacks).",
    ])


def attacks_section(metrics: dict[str, Any]) -> Section:
    rows = []
    for name, m in metrics["attacks"].items():
        rows.append([name, m["images"], fmt(m["success_rate"]), fmt(m["adversarial_accuracy"]), m["successful"],
                     fmt(m["mean_l0"], 1), fmt(m["mean_l2"]), fmt(m["mean_linf"])])
    table = Table("Attacks (success rate on correctly classified images; norms over successful attacks)",
                  ["attack", "images", "success rate", "adversarial accuracy", "successful", "mean L0 (px)",
                   "mean L2", "mean Linf"], rows)
    return Section("Attacks", tables=[table])


def where_section(ctx: "Context", summaries: list["AttackSummary"], metrics: dict[str, Any]) -> Section:
    cfg = ctx.config
    figures, part_rows = [], []
    for s in summaries:
        for kind, stats in metrics["attacks"][s.name]["maps"].items():
            part_rows.append([s.name, kind] + [fmt(stats[p]) for p in ("both", "roi_only", "roa_only", "neither")]
                             + [fmt(stats.get("completeness_error_median", math.nan), 4)])
        if s.examples.get("labels") and sum(len(t) for t in s.examples["labels"]):
            ex = {k: torch.cat(v) for k, v in s.examples.items()}
            names = [ctx.data.class_names[int(c)] for c in ex["labels"]]
            path = plot_region_grid(ex["x_adv"], ex["importance"], ex["attack"], segregate(ex["roi"], ex["roa"]),
                                    ctx.rundir.figures / f"regions-{s.name}.png", row_labels=names,
                                    importance_name=cfg.importance, attack_name=list(s.perm_inputs)[0],
                                    title=f"{s.name}: where the model looks (RoI) and where the attack acts (RoA)",
                                    region_rule=f"top {cfg.fraction:.0%} of each map", max_rows=cfg.figure_images)
            figures.append(Figure(path, f"{s.name}: adversarial image, {cfg.importance} (RoI), "
                                        f"{list(s.perm_inputs)[0]} map (RoA) and the four-part partition."))
    main = next((s for s in summaries if s.name == cfg.defence_attack), summaries[0])
    kind = list(main.perm_inputs)[0]
    for key, label in (("roi", f"{cfg.importance} (RoI side)"), (kind, f"{kind} map of {main.name} (RoA side)")):
        acc = main.mean_maps[key]
        if int(acc.counts.sum()) == 0:
            continue
        path = plot_class_mean_maps(acc.means(), list(ctx.data.class_names), ctx.rundir.figures / f"class-mean-{key}.png",
                                    counts=acc.counts, title=f"Per-class mean {label}, successful attacks")
        figures.append(Figure(path, f"Per-class mean {label} over successfully attacked images."))
    table = Table("Four-part segregation (mean share of the image) and completeness error of the contribution map",
                  ["attack", "attack map", "both", "roi_only", "roa_only", "neither", "completeness err. (median)"],
                  part_rows)
    notes = ["For L-inf attacks the magnitude map is nearly flat (|delta| = eps almost everywhere); that is why "
             "the contribution map is the default RoA for them."]
    return Section("Where the attacks act", tables=[table], figures=figures, notes=notes, anchor="where-they-act")


def overlap_section(ctx: "Context", summaries: list["AttackSummary"], permutation: dict[str, dict[str, Any]]) -> Section:
    cfg = ctx.config
    rows, figures = [], []
    for s in summaries:
        for key, results in permutation.get(s.name, {}).items():
            kind, scope = key.split("|")
            if scope != "same-class":
                continue
            other = permutation[s.name][f"{kind}|any-class"]
            for stat, r in results.items():
                rows.append([s.name, kind, STAT_LABELS[stat], fmt(r.observed_mean),
                             f"{fmt(r.baseline_mean)} ± {fmt(r.baseline_std)}", fmt(r.p_value, 4),
                             fmt(other[stat].baseline_mean), fmt(other[stat].p_value, 4)])
            if kind == list(s.perm_inputs)[0]:
                path = plot_permutation_histograms(results, ctx.rundir.figures / f"baseline-{s.name}.png",
                                                   title=f"{s.name} ({kind} map): observed RoI/RoA pairs vs "
                                                         "images re-paired within their class")
                figures.append(Figure(path, f"{s.name}: each statistic for the true image pairs vs random "
                                            "same-class re-pairings; p-value one-sided (overlap above chance)."))
    table = Table(f"Overlap of RoI and RoA vs the permutation baseline ({cfg.permutations} permutations)",
                  ["attack", "attack map", "statistic", "observed", "same-class baseline", "p (same class)",
                   "any-class baseline", "p (any class)"], rows)
    return Section("Overlap vs baseline", ["Co-location is claimed only where the observed value beats "
                                           "the baseline of randomly re-paired images (small p)."],
                   tables=[table], figures=figures, anchor="overlap-vs-baseline")


def defence_section(ctx: "Context", metrics: dict[str, Any]) -> Section:
    cfg = ctx.config
    columns = [("gradient:adv", "undefended"), ("gradient:defended_adv", "deployable (gradient)"),
               ("gradient:random_adv", "its random control"), ("prior:defended_adv", "deployable (class prior)"),
               ("prior:random_adv", "its random control"), ("gradient:oracle_adv", "oracle (true delta)"),
               ("gradient:oracle_random_adv", "oracle control (random in RoA)"),
               ("gradient:upper_bound_adv", "upper bound (clean pixels back)")]
    rows = []
    for name, m in metrics["attacks"].items():
        d = m["defence"]
        rows.append([name] + [fmt(d.get(key, math.nan)) for key, _ in columns])
    table = Table(f"Accuracy on each attack's images under the defence (fill {cfg.fill}, fraction {cfg.fraction})",
                  ["attack"] + [label for _, label in columns], rows)
    cost = metrics["clean_cost"]
    clean_table = Table("Clean cost: accuracy on clean images with the deployable defence on",
                        ["defence", "defended", "random control of equal size", "undefended"],
                        [[tag, fmt(cost.get(f"{tag}:defended_clean", math.nan)),
                          fmt(cost.get(f"{tag}:random_clean", math.nan)), fmt(metrics["clean_accuracy"])]
                         for tag in ("gradient", "prior") if f"{tag}:defended_clean" in cost])
    ad = metrics["adaptive"]
    adaptive = Table(f"Adaptive attacks against the deployable defence (L-inf eps {cfg.eps_linf}, {cfg.adaptive_steps} steps)",
                     ["attack", "accuracy of the defended model", "accuracy of the undefended model"],
                     [["BPDA-PGD through the defence (straight-through mask)", fmt(ad["bpda:defended"]),
                       fmt(ad["bpda:undefended"])],
                      ["PGD restricted to the clean image's RoI", fmt(ad["roi:defended"]), fmt(ad["roi:undefended"])]])
    main = metrics["attacks"][cfg.defence_attack]
    d = main["defence"]
    verdict = ("beats" if d["gradient:defended_adv"] > d["gradient:random_adv"] else "does not beat")
    paragraphs = [
        f"On {cfg.defence_attack}, the deployable defence (accuracy {fmt(d['gradient:defended_adv'])}) {verdict} its "
        f"random-region control ({fmt(d['gradient:random_adv'])}); undefended accuracy is {fmt(d['gradient:adv'])}. "
        f"Against the adaptive BPDA attack the defended model keeps {fmt(ad['bpda:defended'])}.",
        "A defence number counts only where it beats its control of equally many random pixels, and only next to its "
        "adaptive-attack number: a non-adaptive gain that the adaptive attack removes is no robustness.",
    ]
    figure = plot_defence_sweep(metrics["sweep"], cfg.fractions, cfg.fills, ctx.rundir.figures / "defence-sweep.png",
                                undefended_adv=d["gradient:adv"], clean_accuracy=metrics["clean_accuracy"],
                                attack_name=cfg.defence_attack)
    return Section("Defence", paragraphs, tables=[table, clean_table, adaptive],
                   figures=[Figure(figure, "Sweep over the neutralized fraction and the fill; dashed: random control.")],
                   anchor="defence")


def limits_section(ctx: "Context", metrics: dict[str, Any]) -> Section:
    cfg = ctx.config
    return Section("Limits of the method", [
        "Maps are explanations, not ground truth: Grad-CAM on a 7x7 feature map is coarse, and the RoA depends on "
        "the attack map chosen (contribution, magnitude, gradient answer different questions).",
        f"Regions are the top {cfg.fraction:.0%} of each map; other fractions change IoU mechanically. The permutation "
        "baseline controls for that, which is why only observed-vs-baseline differences are interpreted.",
        "The oracle defence needs the clean image and is an analysis tool, not a defence. The deployable defence is "
        "evaluated against adaptive attacks; its non-adaptive numbers alone overstate it.",
        f"One-pixel attacks run on the first {min(cfg.onepixel_n, metrics['n'])} images with a reduced DE budget "
        f"(population {cfg.onepixel_popsize}, {cfg.onepixel_steps} generations; the literature uses 400 and 75); "
        "on 28x28 grey images they rarely succeed, so their statistics rest on few images.",
    ], anchor="limits")


def summary_table(metrics: dict[str, Any]) -> str:
    """The summary printed at the end of ``advspatial run``."""
    header = (f"{'attack':<10} {'success':>8} {'L2':>7} {'Linf':>6} {'IoU':>6} {'E_in_RoI':>9} "
              f"{'undef':>6} {'defended':>9} {'random':>7} {'oracle':>7}")
    lines = [f"clean accuracy {metrics['clean_accuracy']:.4f} on {metrics['n']} images", header, "-" * len(header)]
    for name, m in metrics["attacks"].items():
        first = next(iter(m["maps"].values()))
        d = m["defence"]
        lines.append(f"{name:<10} {fmt(m['success_rate']):>8} {fmt(m['mean_l2']):>7} {fmt(m['mean_linf']):>6} "
                     f"{fmt(first['iou']):>6} {fmt(first['energy_in_roi']):>9} {fmt(d.get('gradient:adv', math.nan)):>6} "
                     f"{fmt(d.get('gradient:defended_adv', math.nan)):>9} {fmt(d.get('gradient:random_adv', math.nan)):>7} "
                     f"{fmt(d.get('gradient:oracle_adv', math.nan)):>7}")
    ad = metrics["adaptive"]
    lines.append(f"adaptive vs deployable defence: BPDA-PGD accuracy {fmt(ad['bpda:defended'])}, "
                 f"RoI-restricted PGD accuracy {fmt(ad['roi:defended'])}")
    return "\n".join(lines)
