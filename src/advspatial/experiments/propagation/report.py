"""The report of experiment ``propagation``: verdicts, setup, propagation per se, attacks, propagation maps, the
random controls, locality and limits, rendered from the config and the findings alone (with the figures the run drew,
:mod:`.figures`), so ``advspatial report DIR`` renders a finished run again."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from ...statistics.estimates import interval_text
from ...statistics.verdicts import sesoi_text
from ...report.html import Figure, Section, Table
from ...report.sections import drawn_figure
from ...report.verdicts import fmt, verdict_legend, verdict_table, what_this_run_shows
from ..results import Rendered
from .claims import CONTROL_NULLS, PER_SE_STATISTIC, PER_SE_ZERO_NULL, PM_STATISTICS
from .config import PropagationConfig
from .figures import CONTROL_DIFFERENCES, DEPTH_CURVES, LOCALITY, MEAN_PROPAGATION, PER_SE, strip_name
from .findings import PooledRate, PropagationFindings, WilsonRate


#: a figure of the run, by file name and caption: a list of the one Figure when the run drew it, else empty
FigureOf = Callable[[str, str], list[Figure]]


def render(config: PropagationConfig, findings: PropagationFindings, figures: Path) -> Rendered:
    """The printed summary and the report's sections, in order; a figure is shown when the run drew it."""

    def figure(name: str, caption: str) -> list[Figure]:
        return drawn_figure(figures, name, caption)

    sections = [verdict_section(config, findings), setup_section(config, findings),
                per_se_section(config, findings, figure), attacks_section(config, findings),
                propagation_section(config, findings, figure), control_section(config, findings, figure),
                locality_section(config, findings, figure), limits_section(findings)]
    return Rendered(summary_table(findings), sections)


def fmt_rate(entry: WilsonRate | PooledRate) -> str:
    """``rate [low, high]`` of a rate with its interval ("-" without a trial)."""
    if not entry.trials:
        return "-"
    return f"{entry.rate:.3f} [{entry.ci_low:.3f}, {entry.ci_high:.3f}]"


def verdict_section(cfg: PropagationConfig, findings: PropagationFindings) -> Section:
    """The top of the report: one row per primary claim (Holm), the sentences they imply, the rules."""
    primary = [c for c in findings.claims if c.primary]
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


def control_section(cfg: PropagationConfig, findings: PropagationFindings, figure: FigureOf) -> Section:
    """Propagation against the random same-|Δ| change, per layer (secondary family), and the control's reach."""
    rows = [[k, CONTROL_NULLS[mode], f"{c.available} of {c.attacks}", fmt_rate(c.fooled)]
            for k, m in findings.k.items() for mode, c in m.controls.items()]
    availability = Table("Controls available (a change of the attack pixel's |Δ| fits in [0,1] there) and how "
                         "often the random control itself fools the model (Wilson 95% interval: one per image)",
                         ["k", "control", "successful attacks with a control", "control fools the model"], rows)
    layer_claims = [c for c in findings.claims if c.statistic.startswith(tuple(PM_STATISTICS.values()))]
    tables = [availability]
    figures = figure(CONTROL_DIFFERENCES, "Per layer: the attack's peak PMmax minus the control's, per image (mean "
                                          "and 95% bootstrap CI over images). Above 0: the attack moves the layer "
                                          "more than a random pixel change of the same size.")
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
        f"spread: share of positions with PMmax > {cfg.threshold:g}) is evidence about the attack only "
        "where attack minus control is positive with its CI above 0.",
        "In grey images a pixel has only two values at distance |Δ|, one of them the attack's, so control (b) is "
        "the mirrored change x - Δ; where that leaves [0, 1] (e.g. a pixel moved from 0 towards 1 by more than its "
        "value), control (b) is unavailable and the image is left out of (b) and counted above.",
    ], tables=tables, figures=figures, anchor="control")


def per_se_section(cfg: PropagationConfig, findings: PropagationFindings, figure: FigureOf) -> Section:
    """Propagation per se: every layer's ratio of a random pixel's peak change to its largest clean activation,
    against relative depth, and the per-layer claims (the last layer's primary)."""
    per_se = findings.per_se
    verdicts: dict[tuple[str, str], str] = {}
    for c in findings.claims:
        if c.statistic.startswith(PER_SE_STATISTIC + " @ "):
            verdicts[(c.statistic.split(" @ ", 1)[1], "zero" if c.null == PER_SE_ZERO_NULL else "fraction")] = c.verdict
    rows = [[d.depth, f"{d.relative_depth:.3f}", d.layer,
             f"{fmt(d.ratio.mean, 4)} [{fmt(d.ratio.low, 4)}, {fmt(d.ratio.high, 4)}]",
             fmt(d.share_above_fraction), verdicts.get((d.layer, "zero"), "-"),
             verdicts.get((d.layer, "fraction"), "-")] for d in per_se.layers]
    table = Table(f"Per layer: peak |ΔF| / max F(x) of a random one-pixel change (mean [95% bootstrap CI over "
                  f"{per_se.images} images]; last layer primary, the rest BH)",
                  ["depth", "relative depth", "layer", "ratio", f"share of images > {cfg.reach_fraction:g}",
                   "verdict vs 0", f"verdict vs {cfg.reach_fraction:g}"], rows, folded=len(rows) > 12)
    figures = figure(PER_SE, "Per layer, against relative depth (the same axis for a ResNet-20 and a "
                             "ResNet-56): the random pixel's peak change over the layer's largest clean "
                             "activation, mean and 95% CI over images; dashed: the claim's bar.")
    return Section("Propagation per se", [
        "The source's claim is that a one-pixel change propagates to the last layer at all, even in deep networks, "
        "to values close to the layer's largest activation. It is tested without the attack, whose pixel is "
        f"selected for its effect on the logits: each image gets {per_se.draws} random one-pixel changes, a "
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


def setup_section(cfg: PropagationConfig, findings: PropagationFindings) -> Section:
    """The model, the images, the attacks' budget and the recorded layers (those with a propagation map)."""
    budget, layers = findings.budget, [d.layer for d in findings.per_se.layers]
    return Section("Setup", [
        f"Model {cfg.model} on the first {findings.n} {cfg.dataset} test images; clean accuracy "
        f"{fmt(findings.clean_accuracy)}. Seed {cfg.seed}.",
        f"k-pixel attacks by differential evolution for k in {cfg.pixels_list}: population {budget.popsize}, "
        f"{budget.maxiter} generations, at most {budget.max_queries_per_image} model queries per image "
        "(the one-pixel attack paper uses 400 and 75). An attack stops as soon as a candidate fools the model.",
        f"Propagation maps are recorded at {len(layers)} layers (forward order = depth): " + ", ".join(layers) + ".",
        "Propagation per se uses every image; everything else below is over the analysed attacks: images the model "
        "classifies correctly and the attack fools.",
    ])


def attacks_section(cfg: PropagationConfig, findings: PropagationFindings) -> Section:
    """Each k's attack success on the correctly classified images."""
    rows = [[k, m.correct, m.success.successes, fmt(m.success.rate), f"[{fmt(m.success.ci_low)}, "
             f"{fmt(m.success.ci_high)}]", fmt(m.median_queries, 0), fmt(m.mean_l0, 2)] for k, m in findings.k.items()]
    table = Table("Attack success on correctly classified images (Wilson 95% interval)",
                  ["k (pixels)", "correct images", "successful attacks", "success rate", "95% CI",
                   "median queries (successful)", "mean changed pixels"], rows)
    first = next(iter(findings.k.values()))
    return Section("Attacks", [
        f"With k = {cfg.pixels_list[0]} the attack fools the model on {fmt(first.success.rate)} of the "
        "correctly classified images; larger k give the propagation and locality analyses more successful attacks "
        "to rest on.",
    ], tables=[table])


def propagation_section(cfg: PropagationConfig, findings: PropagationFindings, figure: FigureOf) -> Section:
    """The mean propagation maps, one layer strip of examples per k, the depth curves and their table."""
    figures = figure(MEAN_PROPAGATION, "Each row: one k. First column: how often each position carried an attack "
                                       "pixel. Then the PMmax map averaged over all successful attacks, layer by "
                                       "layer (deeper to the right).")
    for k in findings.k:
        figures += figure(strip_name(k), f"k = {k}: adversarial images (attacked pixels circled; true -> adversarial "
                                         "class) and the PMmax map of each layer.")
    figures += figure(DEPTH_CURVES, "Mean and largest PMmax and the spread per layer (x: forward order).")
    table = depth_table(findings)
    paragraphs = ["PMmax of a layer = the largest change over its channels at each position, divided by the "
                  "largest activation of that layer on the clean image (1.0 = as large as the largest original "
                  "activation). Spread = share of positions where PMmax exceeds "
                  f"{cfg.threshold:g}: how much of the layer's map the change reaches."]
    if not any(m.depth for m in findings.k.values()):
        paragraphs.append("No attack succeeded, so there are no propagation maps to show.")
    return Section("Propagation", paragraphs, tables=[table] if table.rows else [], figures=figures)


def depth_table(findings: PropagationFindings) -> Table:
    """Per layer, each k's mean and largest PMmax and spread (the k with successful attacks)."""
    ks = [k for k, m in findings.k.items() if m.depth]
    columns = ["depth", "relative depth", "layer", "size"]
    for k in ks:
        columns += [f"k={k} mean PMmax", f"k={k} max PMmax", f"k={k} spread"]
    rows = []
    if ks:
        for i, first in enumerate(findings.k[ks[0]].depth):
            row: list[Any] = [first.depth, f"{first.relative_depth:.3f}", first.layer, f"{first.height}x{first.width}"]
            for k in ks:
                d = findings.k[k].depth[i]
                row += [fmt(d.mean_pm_max, 4), fmt(d.max_pm_max), fmt(d.spread)]
            rows.append(row)
    return Table("Propagation per layer (successful attacks)", columns, rows)


def locality_section(cfg: PropagationConfig, findings: PropagationFindings, figure: FigureOf) -> Section:
    """The success of the attack's colours moved by r, against the context-matched and the uniform controls."""
    rows = [[k, m.locality.original.trials, fmt_rate(m.locality.original),
             *(fmt_rate(m.locality.rings[r]) for r in cfg.radii), *(fmt_rate(m.locality.matched[r]) for r in cfg.radii),
             fmt_rate(m.locality.random)] for k, m in findings.k.items()]
    table = Table("Share of placements that fool the model (pooled rate [95% cluster-bootstrap CI over images])",
                  ["k", "successful attacks", "original (r = 0)", *(f"r = {r}" for r in cfg.radii),
                   *(f"matched to r = {r}" for r in cfg.radii),
                   f"uniform random ({cfg.n_random} per attack; secondary)"], rows)
    balance_rows = [[k, which, *(fmt(c.ring.get(r)) for r in cfg.radii), *(fmt(c.matched.get(r)) for r in cfg.radii),
                     fmt(c.random)] for k, m in findings.k.items() for which in ("edge", "intensity")
                    if (c := m.context.get(which)) is not None]
    balance = Table("Context balance: mean local edge strength / intensity of the placements (mean over images)",
                    ["k", "context", *(f"ring r = {r}" for r in cfg.radii), *(f"matched r = {r}" for r in cfg.radii),
                     "uniform"], balance_rows)
    figures = figure(LOCALITY, "Success of the attack's colours moved by r pixels (all 8r positions at "
                               "Chebyshev distance r; bars: cluster-bootstrap 95% CIs over images) vs the same "
                               "colours at uniformly random positions (band; the secondary view — the primary "
                               "control is context-matched, see the tables).")
    loc_claims = [c for c in findings.claims if c.statistic.startswith("success share")]
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


def limits_section(findings: PropagationFindings) -> Section:
    """What the run cannot tell."""
    budget = findings.budget
    return Section("Limits", [
        f"The DE budget (population {budget.popsize}, {budget.maxiter} generations) is below the literature's "
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


def summary_table(findings: PropagationFindings) -> str:
    """The summary printed at the end of ``advspatial run propagation``."""
    radii = list(next(iter(findings.k.values())).locality.rings)
    header = (f"{'k':>3} {'correct':>7} {'fooled':>6} {'success [95% CI]':>22} {'med.q':>6} {'PMmax last':>10} "
              + " ".join(f"{'r=' + str(r):>6}" for r in radii) + f" {'matched':>7} {'random':>7}")
    budget = findings.budget
    lines = [f"clean accuracy {findings.clean_accuracy:.4f} on {findings.n} images; DE population "
             f"{budget.popsize}, {budget.maxiter} generations", header, "-" * len(header)]
    for k, m in findings.k.items():
        s, loc = m.success, m.locality
        lines.append(f"{k:>3} {m.correct:>7} {s.successes:>6} "
                     f"{fmt(s.rate):>6} [{fmt(s.ci_low)}, {fmt(s.ci_high)}] {fmt(m.median_queries, 0):>6} "
                     f"{fmt(m.max_pm_last_layer):>10} " + " ".join(f"{fmt(loc.rings[r].rate):>6}" for r in radii)
                     + f" {fmt(loc.matched[radii[0]].rate) if radii else '-':>7}"
                     + f" {fmt(loc.random.rate):>7}")
    lines.append("success: share of correctly classified images fooled; r=..: share of moved placements that fool; "
                 "matched: context-matched control of the smallest r; random: uniform control; "
                 "PMmax last: largest PMmax at the last recorded layer")
    per_se = findings.per_se
    if per_se.layers:
        last = per_se.layers[-1]
        r = last.ratio
        lines.append(f"propagation per se ({per_se.draws} random pixels per image, n = {r.n}): last layer "
                     f"{last.layer} peak |ΔF| / max F(x) = {fmt(r.mean, 4)} [{fmt(r.low, 4)}, {fmt(r.high, 4)}]")
    for c in findings.claims:
        if c.primary:
            e = c.effect
            lines.append(f"{c.subject}: {c.statistic} vs {c.null}: {interval_text(e.mean, e.low, e.high)} "
                         f"(n = {e.n}) -> {c.verdict}")
    return "\n".join(lines)
