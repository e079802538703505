"""The ``pse`` experiment's ``run`` (registered here): the stages in order, then claims, findings and figures (the
runner renders the report)."""

from __future__ import annotations

import torch

from ...errors import ModelError
from ...models.tokens import is_transformer
from ...rundir import RunDir
from ..context import prepare_context
from ..measurement.gate import gate_stage
from ..measurement.roi import resolve_importance
from ..registry import register_experiment
from ..results import RunFindings
from ..measurement.roi import Roi
from .claims import judged_claims
from .config import PSEConfig
from .cost import pair_seconds
from .figures import draw_figures
from .findings import PSEFindings, build_findings
from .report import render
from .stages import Context, clean_logits, process_variant, run_dissection, train_split, true_cam
from .targets import choose_targets, runner_up
from .units import cam_layer_name, count_units


@register_experiment("pse", PSEConfig,
                     "Promotion-suppression effect: group types of perturbations, CAM overlap, "
                     "unit sensitivity, unit masking and dissection",
                     findings=PSEFindings, render=render,
                     contract={"n": 8, "batch_size": 4, "attacks": ["pgd"], "permutations": 10, "mask_random": 1,
                               "unit_train_n": 8, "stability_images": 4, "adaptive_n": 4,
                               "correlation_permutations": 20},
                     priced_apart=pair_seconds)
def run_pse(config: PSEConfig, rundir: RunDir) -> RunFindings:
    """Clean pass, CAMs and gate, targets, each attack variant, the dissection; then claims, findings and figures."""
    ctx = pse_context(config, rundir)
    logits = torch.cat(ctx.each_batch(lambda b, sl: clean_logits(ctx, b), desc="clean: logits, CAM"))
    # the CAM explainer's gate on the run's own cached CAM_t0(x), at the experiment's top fraction and PGD budget
    gate = gate_stage(ctx, ctx.cam, fraction=config.top_fraction, eps=config.eps, target="true",
                      maps=lambda b: true_cam(ctx, b))
    targets = choose_targets(ctx.data.labels, logits.shape[1], config.target_mode, config.seed, logits)
    runner = runner_up(logits, ctx.data.labels)
    train = train_split(ctx)
    runs = [process_variant(ctx, (a, m), targets, runner, train) for a in config.attacks for m in config.modes]
    dissection = run_dissection(ctx)
    rows = [row for run in runs for row in run.rows]
    with rundir.passes.phase("statistics"):
        claims = judged_claims(config, {run.name: run.cam_test for run in runs}, rows, gate)
        findings = build_findings(runs, claims, gate, Roi.judged(ctx.cam, ctx.cam_reason, gate), n=len(ctx.data),
                                  layer=ctx.layer, units=ctx.units, noise_floor=config.noise_floor,
                                  dissection=dissection)
    with rundir.passes.phase("figures"):
        draw_figures(rundir.figures, config, findings, runs, ctx.data.class_names)
    return RunFindings(findings, rows)


def pse_context(config: PSEConfig, rundir: RunDir) -> Context:
    """The shared context with the unit layer and the CAM explainer resolved once (``auto``: by the head type)."""
    base = prepare_context(config, rundir)
    probe = base.data.images(slice(0, 1)).to(base.device)
    if not config.unit_layer and is_transformer(base.model, probe):
        raise ModelError("pse takes its units from the channels of a CNN's last feature map, and a vision transformer "
                         "has none (its blocks carry tokens); name a 4-D layer with --unit-layer (e.g. its patch "
                         "embedding) or use a CNN")
    layer = cam_layer_name(base.model, probe, config.unit_layer)
    cam, reason = resolve_importance(config.cam, base.model, probe)
    return base.derive(Context, layer=layer, units=count_units(base.model, layer, probe), cam=cam, cam_reason=reason)
