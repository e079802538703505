"""The spatial experiment as registered (``advspatial run spatial``): the RoI/RoA measurement (the ``maps``
package's stages, claims and figures) with the neutralization defence (:mod:`.stages`, :mod:`.claims`), then the
findings (:mod:`.metrics`), the figures (:mod:`.figures`) and the report rendered from them (:mod:`.report`)."""

from __future__ import annotations

from typing import Any

from ...faithfulness.record import GateResult
from ...rundir import RunDir
from ..maps.claims import measure, run_gates
from ..maps.figures import draw_figures
from ..maps.metrics import attack_outcomes
from ..maps.stages import AttackSummary, Context, measurement_context, process_attack
from ..registry import register_experiment
from ..results import ExperimentResult
from .claims import draw_spread, nonadaptive_comparisons, summarize_adaptive, sweep_summary
from .config import SpatialConfig
from .figures import draw_defence_figures
from .metrics import NonAdaptive, SpatialAttackOutcome, SpatialFindings, Sweep
from .records import AdaptiveOutcomes
from .report import render
from .stages import DefenceColumns, SweepColumns, adaptive_stage, aggregate_sweep, class_prior, deployable_defences


@register_experiment("spatial", SpatialConfig,
                     "RoI vs RoA: where attacks act vs where the model looks, and the neutralization defence",
                     findings=SpatialFindings, render=render,
                     contract={"n": 8, "batch_size": 4, "onepixel_n": 4, "prior_n": 8, "figure_images": 2,
                               "attacks": ["fgsm", "onepixel"], "defence_attack": "fgsm", "adaptive_n": 4,
                               "panel": ["gradcam"], "baselines": ["blur"], "gate_n": 8, "randomization_images": 2})
def run_spatial(config: SpatialConfig, rundir: RunDir) -> ExperimentResult:
    """Clean maps, the gates, the prior, every attack with its maps and defence columns, the sweep, the adaptive
    evaluation with its convergence curves; then the findings with their claims and verdicts, the figures and the
    report."""
    ctx = measurement_context(config, rundir)
    ctx.each_batch(lambda b, sl: ctx.importance_of(b), desc="clean: importance maps", then=lambda *_: None)
    gates = run_gates(ctx)
    prior = class_prior(ctx)
    rows: list[dict[str, Any]] = []
    defence = DefenceColumns(ctx, deployable_defences(ctx, prior))
    summaries = [process_attack(ctx, name, rows, extra=defence) for name in config.attacks]
    sweep = aggregate_sweep(ctx)
    outcomes = adaptive_stage(ctx, prior)
    findings = spatial_findings(ctx, summaries, rows, defence, gates, sweep, outcomes, prior is not None)
    draw_figures(ctx, summaries, findings.claims)
    draw_defence_figures(config, findings, rundir.figures)
    return ExperimentResult.of(findings, rows, render(config, findings, rundir.figures))


def spatial_findings(ctx: Context, summaries: list[AttackSummary], rows: list[dict[str, Any]],
                     defence: DefenceColumns, gates: dict[str, GateResult], sweep: SweepColumns,
                     outcomes: AdaptiveOutcomes, with_prior: bool) -> SpatialFindings:
    """The findings: per attack its outcome with its controls' spread, the non-adaptive comparisons and the clean
    cost, the sweep, the measurement's claims, then the adaptive summary with its verdicts."""
    cfg = ctx.config
    head = attack_outcomes(ctx, summaries, rows)
    attacks = {name: SpatialAttackOutcome(**vars(o), control_draws=draw_spread(defence.draws[name]))
               for name, o in head["attacks"].items()}
    nonadaptive = NonAdaptive(nonadaptive_comparisons(rows, list(cfg.attacks), cfg.seed))
    clean_cost = {k: v for k, v in attacks[cfg.attacks[0]].defence.items() if k.endswith("_clean")}
    cells = Sweep(sweep_summary(ctx, sweep))
    measured = measure(ctx, summaries, dict(attacks), gates)
    adaptive = summarize_adaptive(ctx, outcomes, measured.roi.usable, with_prior)
    return SpatialFindings.measured({"n": head["n"], "clean_accuracy": head["clean_accuracy"],
                                     "nonadaptive": nonadaptive, "clean_cost": clean_cost, "attacks": attacks,
                                     "defence_attack": cfg.defence_attack, "sweep": cells},
                                    measured, adaptive=adaptive)
