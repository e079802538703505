"""The spatial experiment as registered (``advspatial run spatial``): the RoI/RoA measurement
(:func:`~advspatial.experiments.measurement.run.measure`) with the neutralization defence's columns of every attack
batch, then the defence's own stages (:mod:`.stages`, :mod:`.claims`), the findings (:mod:`.findings`) and the figures
(:mod:`.figures`); the runner renders the report from the findings (:mod:`.report`)."""

from __future__ import annotations

from ...rundir import RunDir
from ..measurement.gate import RANDOMIZATION_CHECKS
from ..measurement.onepixel_cost import onepixel_seconds
from ..measurement.run import ATTACK_STEPS, Measurement, measure
from ..registry import register_experiment
from ..results import RunFindings
from .claims import (
    HARM_WORDS, MASKING_SUSPECTED, VERDICT_WORDS, draw_spread, nonadaptive_comparisons, summarize_adaptive,
    sweep_summary,
)
from .config import SpatialConfig
from .figures import draw_defence_figures
from .findings import NonAdaptive, SpatialAttackOutcome, SpatialFindings, Sweep
from .records import AdaptiveOutcomes
from .report import render
from .stages import DefenceColumns, SweepColumns, adaptive_stage, aggregate_sweep, defence_columns

#: the stages whose images a setting caps (the registry's ``sized_by``, what the forecast follows): the adaptive
#: evaluation and its baselines on the first ``adaptive_n`` images, the one-pixel attack's on ``onepixel_n``
SIZED_STAGES = {r"^(adaptive|baselines)/": "adaptive_n", r"^(attack|defence|maps)/onepixel(/|$)": "onepixel_n",
                **RANDOMIZATION_CHECKS}


@register_experiment("spatial", SpatialConfig,
                     "RoI vs RoA: where attacks act vs where the model looks, and the neutralization defence",
                     findings=SpatialFindings, render=render,
                     contract={"n": 8, "batch_size": 4, "onepixel_n": 4, "prior_n": 8, "figure_images": 2,
                               "attacks": ["fgsm", "onepixel"], "defence_attack": "fgsm", "adaptive_n": 4,
                               "panel": ["gradcam"], "baselines": ["blur"], "gate_n": 8, "randomization_images": 2},
                     sized_by=SIZED_STAGES, steps_by=ATTACK_STEPS, priced_apart=onepixel_seconds,
                     verdict_words=(*VERDICT_WORDS, *HARM_WORDS, MASKING_SUSPECTED))
def run_spatial(config: SpatialConfig, rundir: RunDir) -> RunFindings:
    """The measurement with the defence's columns (clean maps, the gates, the prior, every attack with its maps and
    defence columns, the claims and the figures); then the sweep, the adaptive evaluation with its convergence
    curves, the findings with the defence's verdicts, and its figures."""
    measured = measure(config, rundir, extra=defence_columns)
    defence = measured.extra
    assert isinstance(defence, DefenceColumns)  # what defence_columns made
    sweep = aggregate_sweep(measured.context)
    outcomes = adaptive_stage(measured.context, defence.prior)
    with rundir.passes.phase("statistics"):
        findings = spatial_findings(measured, defence, sweep, outcomes)
    with rundir.passes.phase("figures"):
        draw_defence_figures(config, findings, rundir.figures)
    return RunFindings(findings, measured.rows)


def spatial_findings(measured: Measurement[SpatialConfig], defence: DefenceColumns, sweep: SweepColumns,
                     outcomes: AdaptiveOutcomes) -> SpatialFindings:
    """The findings: per attack its outcome with its controls' spread, the non-adaptive comparisons and the clean
    cost, the sweep, the measurement's claims, then the adaptive summary with its verdicts."""
    ctx = measured.context
    cfg = ctx.config
    attacks = {name: SpatialAttackOutcome(**vars(o), control_draws=draw_spread(defence.draws[name]))
               for name, o in measured.outcomes.attacks.items()}
    nonadaptive = NonAdaptive(nonadaptive_comparisons(measured.rows, list(cfg.attacks), cfg.seed))
    clean_cost = {k: v for k, v in attacks[cfg.attacks[0]].defence.items() if k.endswith("_clean")}
    cells = Sweep(sweep_summary(ctx, sweep))
    adaptive = summarize_adaptive(ctx, outcomes, measured.parts.roi.usable, defence.prior is not None)
    return SpatialFindings.measured({"n": measured.outcomes.n, "clean_accuracy": measured.outcomes.clean_accuracy,
                                     "nonadaptive": nonadaptive, "clean_cost": clean_cost, "attacks": attacks,
                                     "defence_attack": cfg.defence_attack, "sweep": cells},
                                    measured.parts, adaptive=adaptive)
