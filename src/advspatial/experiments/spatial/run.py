"""The spatial experiment as registered (``advspatial run spatial``): the RoI/RoA measurement (the ``maps``
package's stages and claims) with the neutralization defence (:mod:`.stages`, :mod:`.claims`), then the report."""

from __future__ import annotations

from typing import Any

from ...rundir import RunDir
from ..maps.claims import measure, run_gates
from ..maps.stages import measurement_context, process_attack
from ..registry import register_experiment
from ..results import ExperimentResult
from . import report
from .claims import summarize_adaptive, sweep_summary
from .config import SpatialConfig
from .metrics import build_metrics
from .stages import DefenceColumns, adaptive_stage, aggregate_sweep, class_prior, deployable_defences


@register_experiment("spatial", SpatialConfig,
                     "RoI vs RoA: where attacks act vs where the model looks, and the neutralization defence",
                     contract={"n": 8, "batch_size": 4, "onepixel_n": 4, "prior_n": 8, "figure_images": 2,
                               "attacks": ["fgsm", "onepixel"], "defence_attack": "fgsm", "adaptive_n": 4,
                               "panel": ["gradcam"], "baselines": ["blur"], "gate_n": 8, "randomization_images": 2})
def run_spatial(config: SpatialConfig, rundir: RunDir) -> ExperimentResult:
    """Clean maps, the gates, the prior, every attack with its maps and defence columns, the sweep, the adaptive
    evaluation with its convergence curves; then metrics, claims and verdicts; then the report."""
    ctx = measurement_context(config, rundir)
    ctx.each_batch(lambda b, sl: ctx.importance_of(b), desc="clean: importance maps", then=lambda *_: None)
    gates = run_gates(ctx)
    prior = class_prior(ctx)
    rows: list[dict[str, Any]] = []
    defence = DefenceColumns(ctx, deployable_defences(ctx, prior))
    summaries = [process_attack(ctx, name, rows, extra=defence) for name in config.attacks]
    sweep = aggregate_sweep(ctx)
    outcomes = adaptive_stage(ctx, prior)
    metrics = build_metrics(ctx, summaries, rows, defence)
    metrics["sweep"] = {f"{tag}|{f:g}|{fill}": cell for (tag, f, fill), cell in sweep_summary(ctx, sweep).items()}
    claims = measure(ctx, summaries, metrics, gates)
    metrics["adaptive"] = summarize_adaptive(ctx, outcomes, metrics["roi"]["faithful"], prior is not None)
    sections = report.build_sections(ctx, summaries, metrics, claims)
    return ExperimentResult(metrics, rows, report.summary_table(metrics), sections)
