"""The perceptual experiment as registered (``advspatial run perceptual``): the stages in order, the metrics
and claims, then the report (:mod:`.report`), which renders the computed values."""

from __future__ import annotations

from typing import Any

import torch

from ...rundir import RunDir
from ..registry import register_experiment
from ..results import ExperimentResult
from . import report
from .calibration import calibrate
from .config import PerceptualConfig
from .curves import curves_stage
from .maps_stage import process_batches
from .metrics import build_metrics
from .stages import attack_stage, clean_batch, perceptual_context, ssim_attack
from .statistics import measure, run_gates


@register_experiment("perceptual", PerceptualConfig,
                     "SSIM-ball attack vs L-inf PGD at matched mean SSIM; SSIM maps vs class activation maps",
                     contract={"n": 8, "batch_size": 4, "calibration_n": 8, "figure_images": 2})
def run_perceptual(config: PerceptualConfig, rundir: RunDir) -> ExperimentResult:
    """Clean CAMs, the SSIM-ball attack, the PGD calibration, the curves, the gate, the main pass; then
    metrics, claims and verdicts; then the report."""
    ctx = perceptual_context(config, rundir)
    ctx.each_batch(lambda b, sl: clean_batch(ctx, b), desc="clean: predictions, CAM of the true class",
                   then=lambda *_: None)
    attack = ssim_attack(ctx.model, config)
    ball = ctx.each_batch(lambda b, sl: attack_stage(ctx, f"attack/ssim-ball/batch-{b:05d}", attack, sl)["ssim"],
                          desc="ssim-ball attack")
    calibration = calibrate(ctx, torch.cat(ball))
    curves = curves_stage(ctx, calibration)
    gates = run_gates(ctx, calibration.eps)
    rows: list[dict[str, Any]] = []
    stores, examples = process_batches(ctx, calibration.eps, rows)
    metrics = build_metrics(rows, calibration)
    metrics["curves"] = curves.points
    claims = measure(ctx, stores, metrics, gates, rows, curves)
    sections = report.build_sections(ctx, metrics, calibration, claims, stores, examples)
    return ExperimentResult(metrics, rows, report.summary_text(metrics), sections)
