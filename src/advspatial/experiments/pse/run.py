"""The ``pse`` experiment's ``run``: the stages in order, then metrics, claims and report (registered here)."""

from __future__ import annotations

from typing import Any

import torch

from ...rundir import RunDir
from ..context import prepare_context
from ..gate import resolve_importance
from ..registry import register_experiment
from ..results import ExperimentResult
from .claims import measure
from .config import PSEConfig
from .context import Context
from .dissection import run_dissection
from .metrics import build_metrics
from .report import build_sections, summary_text
from .stages import clean_batch, process_variant, run_gate
from .targets import choose_targets, runner_up
from .units import cam_layer_name, count_units, train_split


@register_experiment("pse", PSEConfig,
                     "Promotion-suppression effect: group types of perturbations, CAM overlap, "
                     "unit sensitivity, unit masking and dissection",
                     contract={"n": 8, "batch_size": 4, "attacks": ["pgd"], "permutations": 10, "mask_random": 1,
                               "unit_train_n": 8, "stability_images": 4, "adaptive_n": 4,
                               "correlation_permutations": 20})
def run_pse(config: PSEConfig, rundir: RunDir) -> ExperimentResult:
    """Clean stage and gate, targets, each attack variant, the dissection; then metrics, claims and report."""
    ctx = pse_context(config, rundir)
    logits = torch.cat([c["logits"] for c in ctx.each_batch(lambda b, sl: clean_batch(ctx, b),
                                                             desc="clean: logits, CAM")])
    gate = run_gate(ctx)
    targets = choose_targets(ctx.data.labels, logits.shape[1], config.target_mode, config.seed, logits)
    runner = runner_up(logits, ctx.data.labels)
    train = train_split(ctx)
    rows: list[dict[str, Any]] = []
    summaries = [process_variant(ctx, a, m, targets, runner, train, rows) for a in config.attacks
                 for m in config.modes]
    dissection = run_dissection(ctx)
    metrics = build_metrics(ctx, summaries, rows, dissection)
    claims = measure(ctx, summaries, metrics, gate, rows)
    sections = build_sections(ctx, summaries, dissection, metrics, claims)
    return ExperimentResult(metrics, rows, summary_text(metrics), sections)


def pse_context(config: PSEConfig, rundir: RunDir) -> Context:
    """The shared context with the unit layer and the CAM explainer resolved once (``auto``: by the head type)."""
    base = prepare_context(config, rundir)
    probe = base.data.images(slice(0, 1)).to(base.device)
    layer = cam_layer_name(base.model, probe, config.unit_layer)
    cam, reason = resolve_importance(config.cam, base.model, probe)
    return base.derive(Context, layer=layer, units=count_units(base.model, layer, probe), cam=cam, cam_reason=reason)
