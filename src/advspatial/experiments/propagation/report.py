"""The report of experiment ``propagation``: verdicts, setup, propagation per se, attacks, propagation maps, the
random controls, locality and limits, rendered from the metrics, the claims and each k's summary that the stages
computed."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch

from ...regions.verdicts import sesoi_text
from ...regions.claims import Claim
from ...report.html import Figure, Section, Table
from ...report.verdicts import fmt, verdict_legend, verdict_table, what_this_run_shows
from .claims import CONTROL_NULLS, PER_SE_STATISTIC, PER_SE_ZERO_NULL, PM_STATISTICS
from .figures import plot_control_differences, plot_depth_curves, plot_locality, plot_per_se, plot_propagation_strip
from .stages import Context, KSummary


def fmt_rate(entry: Mapping[str, float]) -> str:
    """``rate [low, high]`` of a :func:`~advspatial.experiments.propagation.metrics.rate_with_ci` dict."""
    if not entry["trials"]:
        return "-"
    return f"{entry['rate']:.3f} [{entry['ci_low']:.3f}, {entry['ci_high']:.3f}]"


def build_sections(ctx: Context, summaries: list[KSummary], metrics: dict[str, Any],
                   claims: Sequence[Claim] = ()) -> list[Section]:
    """The report's sections, in order."""
    return [verdict_section(ctx, metrics, claims), setup_section(ctx, metrics), per_se_section(ctx, metrics, claims),
            attacks_section(ctx, metrics),
            propagation_section(ctx, summaries, metrics), control_section(ctx, metrics, claims),
            locality_section(ctx, metrics, claims), limits_section(ctx, metrics)]


def verdict_section(ctx: Context, metrics: dict[str, Any], claims: Sequence[Claim]) -> Section:
    """The top of the report: one row per primary claim (Holm), the sentences they imply, the rules."""
    cfg = ctx.config
    primary = [c for c in claims if c.primary]
    paragraphs = what_this_run_shows(primary) or [
        "No claim could be tested."]
    notes = [verdict_legend(),
             "Primary family (Holm): propagation per se -- the peak PMmax at the last recorded layer of a random "
             "one-pixel change (random position, random corner colour; no attack involved), per image, against 0 and "
             f"against {cfg.reach_fraction:g} of the layer's largest clean activation; and per k, the success share "
             f"of the attack's colour moved by r = {min(cfg.radii)} minus that of context-matched random placements. "
             "Every effect is a per-image mean (paired difference) with a 95% bootstrap CI over images, p a two-sided "
             "sign-flip test of the mean; the per-se rows of the other layers, the attack against random changes of "
             "the same |Δ| at every layer and the other locality rows are the secondary family "
             f"(Benjamini-Hochberg, sections below). Significance level {cfg.significance}; "
             f"{sesoi_text(cfg.sesoi)}; n >= 30 images."]
    tables = [verdict_table(primary, "Verdicts: one row per pre-declared primary claim")] if primary else []
    return Section("Verdicts", paragraphs, tables=tables, notes=notes, anchor="verdicts")


def control_section(ctx: Context, metrics: dict[str, Any], claims: Sequence[Claim]) -> Section:
    """Propagation against the random same-|Δ| change, per layer (secondary family), and the control's reach."""
    rows = []
    for k, m in metrics["k"].items():
        for mode, c in m.get("controls", {}).items():
            f = c["fooled"]
            rows.append([k, CONTROL_NULLS[mode], f"{c['available']} of {c['attacks']}",
                         fmt_rate(f) if f.get("trials") else "-"])
    availability = Table("Controls available (a change of the attack pixel's |Δ| fits in [0,1] there) and how "
                         "often the random control itself fools the model (Wilson 95% interval: one per image)",
                         ["k", "control", "successful attacks with a control", "control fools the model"], rows)
    layer_claims = [c for c in claims if c.statistic.startswith(tuple(PM_STATISTICS.values()))]
    tables = [availability]
    figures = []
    peaks = [c for c in layer_claims if c.statistic.startswith(PM_STATISTICS["peak"] + " @ ")]
    if any(c.effect.n for c in peaks):
        differences: dict[int, dict[str, list[dict[str, Any]]]] = {}
        for c in peaks:
            k = int(c.subject.split("-")[0])
            differences.setdefault(k, {}).setdefault(c.null, []).append(
                {"layer": c.statistic.split(" @ ", 1)[1], "mean": c.effect.mean, "low": c.effect.low,
                 "high": c.effect.high})
        path = plot_control_differences(differences, ctx.rundir.figures / "control-differences.png")
        figures.append(Figure(path, "Per layer: the attack's peak PMmax minus the control's, per image (mean and 95% "
                                    "bootstrap CI over images). Above 0: the attack moves the layer more than a "
                                    "random pixel change of the same size."))
    if layer_claims:
        tables.append(verdict_table(layer_claims, "Attack minus control per layer (per image, mean [95% bootstrap CI "
                                                  "over images]; all secondary, BH)",
                                    folded=True))
    return Section("The attack against a random pixel change (secondary)", [
        "A single changed pixel propagates to the last layer of any CNN whose receptive field covers the image, "
        "adversarial or not, and differential evolution selects the attack's pixel for its effect on the logits, "
        "so the attack beating a random pixel at the last layer is close to true by construction: these claims "
        "are secondary (the primary one is propagation per se, above). Each successful attack is paired with two "
        "random, non-adversarial changes of the "
        "same size |Δ| (L2 over channels, per changed pixel): (a) at a random position with a random colour "
        "direction, (b) at the attack's own position with a random colour direction. Both are drawn per image "
        "from the run's seed and the image's sample id. A per-layer statistic (peak PMmax: the largest change; "
        f"spread: share of positions with PMmax > {ctx.config.threshold:g}) is evidence about the attack only "
        "where attack minus control is positive with its CI above 0.",
        "In grey images a pixel has only two values at distance |Δ|, one of them the attack's, so control (b) is "
        "the mirrored change x - Δ; where that leaves [0, 1] (e.g. a pixel moved from 0 towards 1 by more than its "
        "value), control (b) is unavailable and the image is left out of (b) and counted above.",
    ], tables=tables, figures=figures, anchor="control")


def per_se_section(ctx: Context, metrics: dict[str, Any], claims: Sequence[Claim]) -> Section:
    """Propagation per se: every layer's ratio of a random pixel's peak change to its largest clean activation,
    against relative depth, and the per-layer claims (the last layer's primary)."""
    cfg, per_se = ctx.config, metrics["per_se"]
    verdicts: dict[tuple[str, str], str] = {}
    for c in claims:
        if c.statistic.startswith(PER_SE_STATISTIC + " @ "):
            verdicts[(c.statistic.split(" @ ", 1)[1], "zero" if c.null == PER_SE_ZERO_NULL else "fraction")] = c.verdict
    rows = [[d["depth"], f"{d['relative_depth']:.3f}", d["layer"],
             f"{fmt(d['ratio']['mean'], 4)} [{fmt(d['ratio']['low'], 4)}, {fmt(d['ratio']['high'], 4)}]",
             fmt(d["share_above_fraction"]), verdicts.get((d["layer"], "zero"), "-"),
             verdicts.get((d["layer"], "fraction"), "-")] for d in per_se["layers"]]
    table = Table(f"Per layer: peak |ΔF| / max F(x) of a random one-pixel change (mean [95% bootstrap CI over "
                  f"{per_se['images']} images]; last layer primary, the rest BH)",
                  ["depth", "relative depth", "layer", "ratio", f"share of images > {cfg.reach_fraction:g}",
                   "verdict vs 0", f"verdict vs {cfg.reach_fraction:g}"], rows, folded=len(rows) > 12)
    figures = []
    if per_se["layers"]:
        path = plot_per_se({cfg.model: per_se["layers"]}, cfg.reach_fraction, ctx.rundir.figures / "per-se.png")
        figures.append(Figure(path, "Per layer, against relative depth (the same axis for a ResNet-20 and a "
                                    "ResNet-56): the random pixel's peak change over the layer's largest clean "
                                    "activation, mean and 95% CI over images; dashed: the claim's bar."))
    return Section("Propagation per se", [
        "The source's claim is that a one-pixel change propagates to the last layer at all, even in deep networks, "
        "to values close to the layer's largest activation. It is tested without the attack, whose pixel is "
        f"selected for its effect on the logits: each image gets {per_se['draws']} random one-pixel changes, a "
        "uniformly random position set to a uniformly random corner of the colour cube (black, white, a primary: "
        "the colours a one-pixel attack's search most often ends on, drawn from the run's seed and the image's "
        "sample id, on every image, correctly classified or not). Per image and layer, the peak of |F(x') - F(x)| "
        "over channels and positions divided by the layer's largest activation on the clean image (the peak PMmax), "
        "averaged over the draws; the claims compare its mean over images with 0 (reaches the layer at all) and "
        f"with {cfg.reach_fraction:g} (the --reach-fraction setting: a tenth of the largest activation by default, "
        "far above float noise; the source's 'close to the maximum' would be nearer 0.5).",
        "Relative depth = (layer index + 1) / number of recorded layers, so the curves of networks of different "
        "depth (ResNet-20, ResNet-56) can be laid over each other from their metrics.json (per_se.layers).",
    ], tables=[table] if rows else [], figures=figures, anchor="per-se")


def setup_section(ctx: Context, metrics: dict[str, Any]) -> Section:
    cfg, budget = ctx.config, metrics["budget"]
    return Section("Setup", [
        f"Model {cfg.model} on the first {metrics['n']} {cfg.dataset} test images; clean accuracy "
        f"{fmt(metrics['clean_accuracy'])}. Seed {cfg.seed}; device {ctx.device}.",
        f"k-pixel attacks by differential evolution for k in {cfg.pixels_list}: population {budget['popsize']}, "
        f"{budget['maxiter']} generations, at most {budget['max_queries_per_image']} model queries per image "
        "(the one-pixel attack paper uses 400 and 75). An attack stops as soon as a candidate fools the model.",
        f"Propagation maps are recorded at {len(ctx.layers)} layers (forward order = depth): "
        + ", ".join(ctx.layers) + ".",
        "Propagation per se uses every image; everything else below is over the analysed attacks: images the model "
        "classifies correctly and the attack fools.",
    ])


def attacks_section(ctx: Context, metrics: dict[str, Any]) -> Section:
    rows = []
    for k, m in metrics["k"].items():
        s = m["success"]
        rows.append([k, m["correct"], s["successes"], fmt(s["rate"]), f"[{fmt(s['ci_low'])}, {fmt(s['ci_high'])}]",
                     fmt(m["median_queries"], 0), fmt(m["mean_l0"], 2)])
    table = Table("Attack success on correctly classified images (Wilson 95% interval)",
                  ["k (pixels)", "correct images", "successful attacks", "success rate", "95% CI",
                   "median queries (successful)", "mean changed pixels"], rows)
    first = next(iter(metrics["k"].values()))
    return Section("Attacks", [
        f"With k = {ctx.config.pixels_list[0]} the attack fools the model on {fmt(first['success']['rate'])} of the "
        "correctly classified images. Changing one pixel of a 28x28 grey image rarely flips a well-trained "
        "classifier; larger k give the propagation and locality analyses more successful attacks to rest on.",
    ], tables=[table])


def position_density(pixels: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """(1,H,W) share of attack pixels at each position, divided by its maximum (zeros when there are none)."""
    counts = torch.zeros(height * width)
    if pixels.numel():
        counts += torch.bincount((pixels[..., 0] * width + pixels[..., 1]).reshape(-1), minlength=height * width)
    return (counts / counts.max().clamp(min=1)).view(1, height, width)


def propagation_section(ctx: Context, summaries: list[KSummary], metrics: dict[str, Any]) -> Section:
    cfg, figures = ctx.config, []
    with_maps = [s for s in summaries if s.totals.count]
    _, h, w = ctx.data.image_shape
    if with_maps:
        layers = with_maps[0].totals.layers
        means = {name: torch.stack([s.totals.mean_maps()[name].pm_max for s in with_maps]) for name in layers}
        density = torch.stack([position_density(s.pixels, h, w) for s in with_maps])
        path = plot_propagation_strip(
            density, means, ctx.rundir.figures / "mean-propagation.png",
            row_labels=[f"k = {s.k} (n = {s.totals.count})" for s in with_maps],
            title="Average propagation map per layer over all successful attacks",
            first_column_title="where the attack pixels\nwere (density)", first_column_heat=True,
            max_layers=cfg.strip_layers, depth_of={n: i for i, n in enumerate(layers)})
        figures.append(Figure(path, "Each row: one k. First column: how often each position carried an attack "
                                    "pixel. Then the PMmax map averaged over all successful attacks, layer by layer "
                                    "(deeper to the right)."))
    for s in with_maps:
        ex = s.examples
        names = ctx.data.class_names
        labels = [f"#{int(i)}: {names[int(y)]}\n-> {names[int(p)]}"
                  for i, y, p in zip(ex["index"], ex["labels"], ex["adv_pred"], strict=True)]
        path = plot_propagation_strip(
            ex["x_adv"], ex["maps"], ctx.rundir.figures / f"strip-k{s.k}.png", pixels=list(ex["pixels"]),
            row_labels=labels, title=f"{s.k}-pixel attacks: how far the change reaches in each layer",
            max_layers=cfg.strip_layers, depth_of={n: i for i, n in enumerate(ex["maps"])})
        figures.append(Figure(path, f"k = {s.k}: adversarial images (attacked pixels circled; true -> adversarial "
                                    "class) and the PMmax map of each layer."))
    if any(m["depth"] for m in metrics["k"].values()):
        path = plot_depth_curves({int(k): m["depth"] for k, m in metrics["k"].items()},
                                 ctx.rundir.figures / "depth-curves.png", threshold=cfg.threshold)
        figures.append(Figure(path, "Mean and largest PMmax and the spread per layer (x: forward order)."))
    table = depth_table(metrics)
    paragraphs = ["PMmax of a layer = the largest change over its channels at each position, divided by the "
                  "largest activation of that layer on the clean image (1.0 = as large as the largest original "
                  "activation). Spread = share of positions where PMmax exceeds "
                  f"{cfg.threshold:g}: how much of the layer's map the change reaches."]
    if not with_maps:
        paragraphs.append("No attack succeeded, so there are no propagation maps to show.")
    return Section("Propagation", paragraphs, tables=[table] if table.rows else [], figures=figures)


def depth_table(metrics: dict[str, Any]) -> Table:
    ks = [k for k, m in metrics["k"].items() if m["depth"]]
    columns = ["depth", "relative depth", "layer", "size"]
    for k in ks:
        columns += [f"k={k} mean PMmax", f"k={k} max PMmax", f"k={k} spread"]
    rows = []
    if ks:
        for i, first in enumerate(metrics["k"][ks[0]]["depth"]):
            row: list[Any] = [first["depth"], f"{first['relative_depth']:.3f}", first["layer"],
                              f"{first['height']}x{first['width']}"]
            for k in ks:
                d = metrics["k"][k]["depth"][i]
                row += [fmt(d["mean_pm_max"], 4), fmt(d["max_pm_max"]), fmt(d["spread"])]
            rows.append(row)
    return Table("Propagation per layer (successful attacks)", columns, rows)


def locality_section(ctx: Context, metrics: dict[str, Any], claims: Sequence[Claim] = ()) -> Section:
    cfg = ctx.config
    keys = ["original", *(f"r{r}" for r in cfg.radii)]
    rows = [[k, m["locality"]["original"]["trials"], *(fmt_rate(m["locality"][key]) for key in keys),
             *(fmt_rate(m["locality"][f"matched_r{r}"]) for r in cfg.radii), fmt_rate(m["locality"]["random"])]
            for k, m in metrics["k"].items()]
    table = Table("Share of placements that fool the model (pooled rate [95% cluster-bootstrap CI over images])",
                  ["k", "successful attacks", "original (r = 0)", *(f"r = {r}" for r in cfg.radii),
                   *(f"matched to r = {r}" for r in cfg.radii),
                   f"uniform random ({cfg.n_random} per attack; secondary)"], rows)
    balance_rows = []
    for k, m in metrics["k"].items():
        for which in ("edge", "intensity"):
            ctxm = m.get("context", {}).get(which)
            if ctxm:
                balance_rows.append([k, which, *(fmt(ctxm.get(f"ring_{r}")) for r in cfg.radii),
                                     *(fmt(ctxm.get(f"matched_{r}")) for r in cfg.radii), fmt(ctxm.get("random"))])
    balance = Table("Context balance: mean local edge strength / intensity of the placements (mean over images)",
                    ["k", "context", *(f"ring r = {r}" for r in cfg.radii), *(f"matched r = {r}" for r in cfg.radii),
                     "uniform"], balance_rows)
    figures = []
    if any(m["locality"]["original"]["trials"] for m in metrics["k"].values()):
        path = plot_locality({int(k): m["locality"] for k, m in metrics["k"].items()}, cfg.radii,
                             ctx.rundir.figures / "locality.png")
        figures.append(Figure(path, "Success of the attack's colours moved by r pixels (all 8r positions at "
                                    "Chebyshev distance r; bars: cluster-bootstrap 95% CIs over images) vs the same "
                                    "colours at uniformly random positions (band; the secondary view — the primary "
                                    "control is context-matched, see the tables)."))
    loc_claims = [c for c in claims if c.statistic.startswith("success share")]
    tables = [table, balance] if balance_rows else [table]
    if loc_claims:
        caption = (f"Ring minus control, per image (mean [95% bootstrap CI over images]); r = {min(cfg.radii)} vs "
                   "matched is primary, the rest BH")
        tables.append(verdict_table(loc_claims, caption, folded=True))
    return Section("Locality", [
        "For each successful attack, the same colours are written at every position at Chebyshev distance r of the "
        "attack's pixels (all k pixels moved together; the original pixels stay clean). The primary control draws, "
        f"for every such ring placement, {cfg.matched_draws} random placements in the same context stratum "
        f"(local edge strength in {cfg.edge_strata} x local intensity in {cfg.intensity_strata} per-image quantile "
        f"bins) farther than r = {max(cfg.radii)} from the attack: successful pixels tend to sit near object edges, "
        "and a uniform placement can land on flat background, so only the matched control separates \"nearby\" "
        "from \"the same kind of pixel\" (the balance table shows how close the matching came). The uniform "
        "control is kept as a secondary view. The placements of one image are not independent trials, so rates "
        "carry cluster-bootstrap CIs over images and the comparisons use per-image shares.",
    ], tables=tables, figures=figures)


def limits_section(ctx: Context, metrics: dict[str, Any]) -> Section:
    budget = metrics["budget"]
    return Section("Limits", [
        f"The DE budget (population {budget['popsize']}, {budget['maxiter']} generations) is below the literature's "
        "400 x 75 to keep the default run short on a CPU; success rates are lower bounds of what a larger search "
        "finds. Raise --popsize and --maxiter to approach the paper's budget.",
        "All statistics but propagation per se are conditioned on the attack succeeding: the successful images are "
        "a selected subset (often those near the decision boundary), not a random sample.",
        "Propagation per se draws corner colours, the largest changes a pixel can get; a random colour inside the "
        "cube would reach less far. Its ratio is per image (the layer's largest activation on that image), so a "
        "layer with one very large activation makes every change look small.",
        "Propagation maps are scaled by the largest clean activation of each layer; layers with a few large "
        "activations make every change look small. Averaged maps mix attacks at different positions, so the "
        "strip of single examples shows the spatial spread better than the average.",
        "Locality moves the k pixels together and keeps only placements inside the image; the uniform control "
        "can land near the original position by chance (the matched one cannot). Context is matched on two "
        "local image statistics only, not on what the model sees there.",
        "The propagation controls match |Δ| per pixel, not the direction in colour space; an adversarial colour is "
        "often an extreme (0 or 1), a random direction rarely is.",
    ], anchor="limits")


def summary_table(metrics: dict[str, Any]) -> str:
    """The summary printed at the end of ``advspatial run propagation``."""
    radii = [key for key in next(iter(metrics["k"].values()))["locality"] if key[0] == "r" and key[1:].isdigit()]
    header = (f"{'k':>3} {'correct':>7} {'fooled':>6} {'success [95% CI]':>22} {'med.q':>6} {'PMmax last':>10} "
              + " ".join(f"{'r=' + key[1:]:>6}" for key in radii) + f" {'matched':>7} {'random':>7}")
    budget = metrics["budget"]
    lines = [f"clean accuracy {metrics['clean_accuracy']:.4f} on {metrics['n']} images; DE population "
             f"{budget['popsize']}, {budget['maxiter']} generations", header, "-" * len(header)]
    for k, m in metrics["k"].items():
        s, loc = m["success"], m["locality"]
        lines.append(f"{k:>3} {m['correct']:>7} {s['successes']:>6} "
                     f"{fmt(s['rate']):>6} [{fmt(s['ci_low'])}, {fmt(s['ci_high'])}] {fmt(m['median_queries'], 0):>6} "
                     f"{fmt(m['max_pm_last_layer']):>10} " + " ".join(f"{fmt(loc[key]['rate']):>6}" for key in radii)
                     + f" {fmt(loc.get('matched_' + radii[0], {}).get('rate')) if radii else '-':>7}"
                     + f" {fmt(loc['random']['rate']):>7}")
    lines.append("success: share of correctly classified images fooled; r=..: share of moved placements that fool; "
                 "matched: context-matched control of the smallest r; random: uniform control; "
                 "PMmax last: largest PMmax at the last recorded layer")
    per_se = metrics.get("per_se", {})
    if per_se.get("layers"):
        last = per_se["layers"][-1]
        r = last["ratio"]
        lines.append(f"propagation per se ({per_se['draws']} random pixels per image, n = {r['n']}): last layer "
                     f"{last['layer']} peak |ΔF| / max F(x) = {fmt(r['mean'], 4)} [{fmt(r['low'], 4)}, "
                     f"{fmt(r['high'], 4)}]")
    for c in metrics.get("claims", []):
        if c["primary"]:
            e = c["effect"]
            lines.append(f"{c['subject']}: {c['statistic']} vs {c['null']}: {e['mean']:+.3f} "
                         f"[{e['low']:+.3f}, {e['high']:+.3f}] (n = {e['n']}) -> {c['verdict']}")
    return "\n".join(lines)
