"""The figures of experiment ``propagation``, drawn at run time into the run's ``figures/`` folder (the report then
shows the ones that exist, :mod:`.report`): propagation per se, the attack minus its random controls, the mean
propagation maps with the attack pixels' density, one layer strip of examples per k, the depth curves and the
locality rates. The drawing itself is :mod:`advspatial.report.propagation_figures`."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from ...statistics.claims import Claim
from ...report.propagation_figures import (
    plot_control_differences, plot_depth_curves, plot_locality, plot_per_se, plot_propagation_strip,
)
from ..findings import to_json
from .claims import PM_STATISTICS
from .metrics import PropagationFindings
from .stages import Context, KSummary

PER_SE = "per-se.png"
CONTROL_DIFFERENCES = "control-differences.png"
MEAN_PROPAGATION = "mean-propagation.png"
DEPTH_CURVES = "depth-curves.png"
LOCALITY = "locality.png"


def strip_name(k: int | str) -> str:
    """The file of the layer strip of the examples of k."""
    return f"strip-k{k}.png"


def draw_figures(ctx: Context, summaries: Sequence[KSummary], findings: PropagationFindings) -> None:
    """Every figure the run has data for, into ``ctx.rundir.figures``."""
    cfg, folder = ctx.config, ctx.rundir.figures
    if findings.per_se.layers:
        plot_per_se({cfg.model: to_json(findings.per_se.layers)}, cfg.reach_fraction, folder / PER_SE)
    differences = peak_differences(findings.claims)
    if differences:
        plot_control_differences(differences, folder / CONTROL_DIFFERENCES)
    with_maps = [s for s in summaries if s.totals.count]
    if with_maps:
        draw_mean_propagation(ctx, with_maps, folder / MEAN_PROPAGATION)
    for s in with_maps:
        draw_examples(ctx, s, folder / strip_name(s.k))
    if any(m.depth for m in findings.k.values()):
        plot_depth_curves({int(k): to_json(m.depth) for k, m in findings.k.items()}, folder / DEPTH_CURVES,
                          threshold=cfg.threshold)
    if any(m.locality.original.trials for m in findings.k.values()):
        plot_locality({int(k): m.locality.as_dict() for k, m in findings.k.items()}, cfg.radii, folder / LOCALITY)


def peak_differences(claims: Sequence[Claim]) -> dict[int, dict[str, list[dict[str, Any]]]]:
    """Per k and control, per layer the attack's peak PMmax minus the control's (the claims' effects); empty when no
    claim has data."""
    peaks = [c for c in claims if c.statistic.startswith(PM_STATISTICS["peak"] + " @ ")]
    if not any(c.effect.n for c in peaks):
        return {}
    differences: dict[int, dict[str, list[dict[str, Any]]]] = {}
    for c in peaks:
        differences.setdefault(int(c.subject.split("-")[0]), {}).setdefault(c.null, []).append(
            {"layer": c.statistic.split(" @ ", 1)[1], "mean": c.effect.mean, "low": c.effect.low,
             "high": c.effect.high})
    return differences


def position_density(pixels: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """(1,H,W) share of attack pixels at each position, divided by its maximum (zeros when there are none)."""
    counts = torch.zeros(height * width)
    if pixels.numel():
        counts += torch.bincount((pixels[..., 0] * width + pixels[..., 1]).reshape(-1), minlength=height * width)
    return (counts / counts.max().clamp(min=1)).view(1, height, width)


def draw_mean_propagation(ctx: Context, with_maps: Sequence[KSummary], path: Path) -> None:
    """One row per k: where its attack pixels were, then the PMmax map of each layer averaged over its attacks."""
    _, h, w = ctx.data.image_shape
    layers = with_maps[0].totals.layers
    means = {name: torch.stack([s.totals.mean_maps()[name].pm_max for s in with_maps]) for name in layers}
    density = torch.stack([position_density(s.pixels, h, w) for s in with_maps])
    plot_propagation_strip(density, means, path, row_labels=[f"k = {s.k} (n = {s.totals.count})" for s in with_maps],
                           title="Average propagation map per layer over all successful attacks",
                           first_column_title="where the attack pixels\nwere (density)", first_column_heat=True,
                           max_layers=ctx.config.strip_layers, depth_of={n: i for i, n in enumerate(layers)})


def draw_examples(ctx: Context, summary: KSummary, path: Path) -> None:
    """The layer strip of the first successful attacks of one k (none drawn without examples)."""
    ex = summary.examples
    if ex is None:
        return
    names = ctx.data.class_names
    labels = [f"#{int(i)}: {names[int(y)]}\n-> {names[int(p)]}"
              for i, y, p in zip(ex.index, ex.labels, ex.adv_pred, strict=True)]
    plot_propagation_strip(ex.x_adv, ex.maps, path, pixels=list(ex.pixels), row_labels=labels,
                           title=f"{summary.k}-pixel attacks: how far the change reaches in each layer",
                           max_layers=ctx.config.strip_layers, depth_of={n: i for i, n in enumerate(ex.maps)})
