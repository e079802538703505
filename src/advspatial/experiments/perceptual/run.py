"""The perceptual experiment as registered (``advspatial run perceptual``): the stages in order (:mod:`.stages`),
the findings and claims (:mod:`.claims`) and the figures (:mod:`.figures`); the runner renders the report
(:mod:`.report`)."""

from __future__ import annotations

from ...rundir import RunDir
from ..measurement.gate import RANDOMIZATION_CHECKS
from ..registry import register_experiment
from ..results import RunFindings
from .claims import analyse, roi_of, run_gates
from .config import PerceptualConfig
from .figures import draw_figures
from .findings import PerceptualFindings
from .report import render
from .stages import calibrate, clean_pass, curves_pass, main_pass, perceptual_context, ssim_ball_pass


#: the stages whose work follows both attacks' gradient steps (the registry's ``steps_by``, what the forecast follows):
#: the attacks, the PGD budget's calibration, the SSIM ball's success-rate curve (the presets' 20, not the default 50)
ATTACK_STEPS = {r"^(attack|curve)/|^calibration$": ("steps",)}
#: the stages whose images a setting caps (the registry's ``sized_by``): the gate's randomization checks on the first
#: ``randomization_images``
SIZED_STAGES = RANDOMIZATION_CHECKS


@register_experiment("perceptual", PerceptualConfig,
                     "SSIM-ball attack vs L-inf PGD at matched mean SSIM; SSIM maps vs class activation maps",
                     findings=PerceptualFindings, render=render,
                     contract={"n": 8, "batch_size": 4, "calibration_n": 8, "figure_images": 2},
                     steps_by=ATTACK_STEPS, sized_by=SIZED_STAGES)
def run_perceptual(config: PerceptualConfig, rundir: RunDir) -> RunFindings:
    """Clean CAMs, the SSIM-ball attack, the PGD calibration, the curves, the gate, the main pass; then
    the findings and claims; then the figures."""
    ctx = perceptual_context(config, rundir)
    correct = clean_pass(ctx)
    calibration = calibrate(ctx, ssim_ball_pass(ctx))
    curves = curves_pass(ctx, calibration, correct)
    gates = run_gates(ctx, calibration.eps)
    main = main_pass(ctx, calibration.eps)
    with rundir.passes.phase("statistics"):
        roi = roi_of(ctx.method, ctx.importance_reason, gates)
        findings = analyse(config, roi, main.rows, calibration, curves, gates, main.stores)
    with rundir.passes.phase("figures"):
        draw_figures(rundir.figures, config, findings, main, ctx.data.class_names)
    return RunFindings(findings, main.rows)
