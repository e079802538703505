"""The spatial experiment as registered (``advspatial run spatial``), and the measurement alone
(:func:`maps_analysis`: the ``advspatial maps`` command and the ``analyze`` experiment).

Each runs the stages in order, computes the metrics and claims, then hands the computed values to the
report (:mod:`.report`), which renders them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import nn

from ...attacks import Attack
from ...data import ImageDataset
from ...rundir import RunDir
from ..registry import register_experiment
from ..results import ExperimentResult
from . import report
from .adaptive import adaptive_stage
from .config import MapsConfig, MeasurementConfig, SpatialConfig
from .context import roi_batch, spatial_context
from .defence import aggregate_sweep, class_prior, deployable_defences
from .defence_verdicts import summarize_adaptive, sweep_summary
from .maps_stage import process_attack
from .metrics import build_metrics, measurement_metrics
from .statistics import measure, run_gates


@register_experiment("spatial", SpatialConfig,
                     "RoI vs RoA: where attacks act vs where the model looks, and the neutralization defence",
                     contract={"n": 8, "batch_size": 4, "onepixel_n": 4, "prior_n": 8, "figure_images": 2,
                               "attacks": ["fgsm", "onepixel"], "defence_attack": "fgsm", "adaptive_n": 4,
                               "panel": ["gradcam"], "baselines": ["blur"], "gate_n": 8, "randomization_images": 2})
def run_spatial(config: SpatialConfig, rundir: RunDir) -> ExperimentResult:
    """Clean maps, the gates, the prior, every attack with its maps and defence columns, the sweep, the adaptive
    evaluation with its convergence curves; then metrics, claims and verdicts; then the report."""
    ctx = spatial_context(config, rundir)
    ctx.each_batch(lambda b, sl: roi_batch(ctx, b), desc="clean: predictions, importance maps", then=lambda *_: None)
    gates = run_gates(ctx)
    prior = class_prior(ctx)
    rows: list[dict[str, Any]] = []
    defences = deployable_defences(ctx, prior)
    summaries = [process_attack(ctx, name, defences, rows) for name in config.attacks]
    sweep = aggregate_sweep(ctx)
    outcomes = adaptive_stage(ctx, prior)
    metrics = build_metrics(ctx, summaries, rows)
    metrics["sweep"] = sweep_summary(ctx, sweep)
    claims = measure(ctx, summaries, metrics, gates)
    metrics["adaptive"] = summarize_adaptive(ctx, outcomes, metrics["roi"]["faithful"], prior is not None)
    sections = report.build_sections(ctx, summaries, metrics, claims)
    return ExperimentResult(metrics, rows, report.summary_table(metrics), sections)


@register_experiment("maps", MapsConfig,
                     "RoI vs RoA without the defence: maps, regions, the faithfulness gate, statistics and verdicts",
                     contract={"n": 8, "batch_size": 4, "onepixel_n": 4, "attacks": ["fgsm", "onepixel"],
                               "panel": ["gradcam"], "gate_n": 8, "randomization_images": 2, "figure_images": 2})
def run_maps(config: MapsConfig, rundir: RunDir) -> ExperimentResult:
    """The RoI/RoA measurement of every attack (also ``advspatial maps`` for one attack)."""
    rows, metrics, sections = maps_analysis(config, rundir)
    return ExperimentResult(metrics, rows, report.maps_summary(metrics), sections)


def maps_analysis(config: MeasurementConfig, rundir: RunDir, images: ImageDataset | None = None,
                  attacks: dict[str, Callable[[nn.Module], Attack]] | None = None,
                  ) -> tuple[list[dict[str, Any]], dict[str, Any], list[Any]]:
    """RoI/RoA maps, regions, the faithfulness gate, statistics and verdicts for ``config.attacks`` - no defence.

    Backs the ``advspatial maps`` command and the ``analyze`` experiment, which passes its own ``images``
    and, in ``attacks``, a maker ``model -> Attack`` per name (the examples made elsewhere) in place of the
    registered attack; returns (per-image rows, metrics, report sections).
    """
    ctx = spatial_context(config, rundir, images)
    gates = run_gates(ctx)
    rows: list[dict[str, Any]] = []
    makers = attacks or {}
    summaries = [process_attack(ctx, name, None, rows, makers[name](ctx.model) if name in makers else None)
                 for name in config.attacks]
    metrics = measurement_metrics(ctx, summaries, rows)
    claims = measure(ctx, summaries, metrics, gates)
    sections = report.measurement_sections(ctx, summaries, metrics, claims)
    return rows, metrics, [*sections, report.measurement_limits_section(ctx, metrics, external=bool(attacks))]
