"""The measurement's figures, drawn at run time from the stage data into the run's ``figures/`` folder: per attack
its example images with their regions, the per-class region frequencies of the main attack, and the forest plot
of the claims. The report (:mod:`.sections`) shows a figure when its file is there."""

from __future__ import annotations

from pathlib import Path

import torch

from ...regions import segregate
from ...statistics.claims import Claim
from ...report.figures import OVERVIEW_FIGURE, plot_class_mean_maps, plot_region_grid, plot_region_strip
from ...report.verdicts import forest_groups, plot_forest
from .config import MeasurementConfig
from .stages import AttackSummary, Context

FOREST = "forest.png"
FOREST_TITLE = "Observed minus each null, per-image mean with 95% bootstrap CI"


def regions_file(attack: str) -> str:
    """The file name of an attack's regions figure."""
    return f"regions-{attack}.png"


def frequency_file(which: str) -> str:
    """The file name of a frequency figure: ``roi``, ``roa`` or ``difference``."""
    return f"frequency-{which}.png"


def main_summary(ctx: Context[MeasurementConfig], summaries: list[AttackSummary]) -> AttackSummary:
    """The attack whose examples feed the panel and the frequency figures (``defence_attack``, else the first)."""
    return next((s for s in summaries if s.name == ctx.config.defence_attack), summaries[0])


def draw_figures(ctx: Context[MeasurementConfig], summaries: list[AttackSummary], claims: list[Claim]) -> None:
    """Every figure of the measurement, into ``ctx.rundir.figures``."""
    figures = ctx.rundir.figures
    for s in summaries:
        draw_regions(ctx, s, figures / regions_file(s.name))
    draw_overview(ctx, main_summary(ctx, summaries), figures / OVERVIEW_FIGURE)
    draw_frequencies(ctx, main_summary(ctx, summaries), figures)
    groups = forest_groups(claims)
    if any(len(v) > 1 for v in groups.values()):  # a forest of single rows says nothing
        plot_forest(groups, figures / FOREST, title=FOREST_TITLE)


def draw_regions(ctx: Context[MeasurementConfig], s: AttackSummary, path: Path) -> None:
    """The attack's first successful images: adversarial image, RoI map, RoA map and the four-part partition."""
    cfg = ctx.config
    if not (s.examples.get("labels") and sum(len(t) for t in s.examples["labels"])):
        return
    ex = {k: torch.cat(v) for k, v in s.examples.items()}
    names = [ctx.data.class_names[int(c)] for c in ex["labels"]]
    plot_region_grid(ex["x_adv"], ex["importance"], ex["attack"], segregate(ex["roi"], ex["roa"]), path,
                     row_labels=names, importance_name=ctx.importance, attack_name=s.kinds()[0],
                     title=f"{s.name}: where the model looks (RoI) and where the attack acts (RoA)",
                     region_rule=f"top {cfg.fraction:.0%} of each map", max_rows=cfg.figure_images)


def draw_overview(ctx: Context[MeasurementConfig], s: AttackSummary, path: Path) -> None:
    """The figure the report opens with: the main attack's examples, one per class where the run has them, as
    image / RoI / RoA / regions columns (:func:`~advspatial.report.figures.plot_region_strip`)."""
    if not (s.examples.get("labels") and sum(len(t) for t in s.examples["labels"])):
        return
    ex = {k: torch.cat(v) for k, v in s.examples.items()}
    names = [ctx.data.class_names[int(c)] for c in ex["labels"]]
    plot_region_strip(ex["x_adv"], ex["importance"], ex["attack"], segregate(ex["roi"], ex["roa"]).codes(), path,
                      column_labels=names, importance_name=ctx.importance, attack_name=s.kinds()[0],
                      title=f"{s.name}: where the model looks (RoI) and where the attack acts (RoA), "
                            f"top {ctx.config.fraction:.0%} of each map")


#: with more classes than this (ImageNet's 1000), the frequency figures show only the classes with images
ALL_CLASS_PANELS = 20


def draw_frequencies(ctx: Context[MeasurementConfig], main: AttackSummary, figures: Path) -> None:
    """P(pixel in RoI | class), P(pixel in RoA | class) and their difference, over successful attacks."""
    kind = main.kinds()[0]
    roi, roa = main.frequency["roi"], main.frequency[kind]
    if int(roi.counts.sum()) == 0:
        return
    shown = shown_classes(roi.counts)
    names = [ctx.data.class_names[c] for c in shown]
    left_out = len(roi.counts) - len(shown)
    hidden = f" ({left_out} classes without images left out)" if left_out else ""
    for key, acc, label in (("roi", roi, frequency_title("roi", ctx.importance, kind, main.name)),
                            ("roa", roa, frequency_title("roa", ctx.importance, kind, main.name))):
        plot_class_mean_maps(acc.means()[shown], names, figures / frequency_file(key), counts=acc.counts[shown],
                             title=label + hidden, colorbar_label="share of images", vmin=0.0, vmax=1.0)
    plot_class_mean_maps((roa.means() - roi.means())[shown], names, figures / frequency_file("difference"),
                         counts=roi.counts[shown], title=f"P(RoA) - P(RoI) per class ({main.name}){hidden}",
                         colorbar_label="difference", vmin=-1.0, vmax=1.0, cmap="RdBu_r")


def shown_classes(counts: torch.Tensor) -> list[int]:
    """The classes a frequency figure shows: every class (an empty one says so) up to :data:`ALL_CLASS_PANELS`,
    else those with images (one panel per class of a 1000-class model would be a figure 200 rows tall)."""
    if len(counts) <= ALL_CLASS_PANELS:
        return list(range(len(counts)))
    return torch.nonzero(counts).flatten().tolist()


def frequency_title(which: str, importance: str, kind: str, attack: str) -> str:
    """The title (and caption start) of the RoI or RoA frequency figure."""
    if which == "roi":
        return f"P(pixel in RoI | class), {importance}"
    return f"P(pixel in RoA | class), {kind} map of {attack}"
