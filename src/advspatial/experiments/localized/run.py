"""The run of experiment ``localized-training``: the models, their gates and evaluations, the findings from the rows
and the claims, the figures (the runner renders the report)."""

from __future__ import annotations

from typing import Any

import torch

from ...rundir import RunDir
from ...runtime import pick_device
from ...statistics.claims import judge
from ...training import build_for
from ..context import load_checked_model, test_images
from ..forecast import announce, will_announce
from ..registry import register_experiment
from ..results import RunFindings
from .attacked_region import mask_uses_importance
from .claims import build_claims
from .config import MODES, LocalizedConfig, finetunes, train_config
from .cost import REPEATED_STAGES, SIZED_STAGES, training_seconds
from .figures import draw_figures
from .findings import LocalizedFindings, build_findings, read_importance
from .report import render
from .stages import (
    ModelEvaluation, Start, context_of, evaluate_model, finetune_facts, finetune_models, other_seeds,
    resolve_methods, run_gates, train_models,
)


@register_experiment("localized-training", LocalizedConfig,
                     "localized (background-only) attacks vs natural, PGD and localized adversarial training",
                     findings=LocalizedFindings, render=render,
                     contract={"n": 8, "batch_size": 4, "train_limit": 128},  # 128 training images: seconds a mode
                     priced_apart=training_seconds, sized_by=SIZED_STAGES, repeated_by=REPEATED_STAGES)
def run_localized(config: LocalizedConfig, rundir: RunDir) -> RunFindings:
    device = pick_device(config.device)
    announce_cost(config, rundir, device)
    torch.manual_seed(config.seed)
    timings: dict[str, float] = {}
    start: Start | None = None
    if finetunes(config):
        data = test_images(config, rundir)
        trained, start = finetune_models(config, rundir, data, device, timings)
        torch.manual_seed(config.seed)  # the same global stream after training as after loading cached models
    else:
        trained = train_models(config, device, timings)
        data = test_images(config, rundir)
    models = {m: t.model for m, t in trained.items()}
    for model in models.values():  # the evaluated models' passes (their training is not counted: advspatial.passes)
        rundir.passes.watch(model)
    rundir.passes.images = len(data)
    ctx = context_of(config, rundir, data, models["natural"])
    methods = resolve_methods(config, models, data)
    gates = run_gates(ctx, models, methods, timings)
    rows: list[dict[str, Any]] = []
    evaluations: dict[str, ModelEvaluation] = {}
    for mode in MODES:
        evaluations[mode] = evaluate_model(ctx, mode, models[mode], methods[mode]["method"])
        timings[f"evaluate/{mode}"] = evaluations[mode].seconds
        rows.extend(evaluations[mode].rows(mode, data.labels))
    seeds = other_seeds(ctx, methods, timings, rows)
    mask_gated = mask_uses_importance(config.mask, data)
    with rundir.passes.phase("statistics"):
        claims = judge(build_claims(config, data.labels, evaluations, gates, mask_gated, seeds), sesoi=config.sesoi,
                       alpha=config.significance)
        findings = build_findings(config, len(data), rows, trained, gates, read_importance(methods, gates),
                                  mask_gated, claims)
    if start is not None:
        findings.finetune = finetune_facts(ctx, start, trained, timings)
    findings.timings = timings
    with rundir.passes.phase("figures"):  # timed by the ledger, as every run's figures
        draw_figures(ctx, findings, models, evaluations)
    return RunFindings(findings, rows)


def announce_cost(config: LocalizedConfig, rundir: RunDir, device: torch.device) -> None:
    """The forecast before any model is trained (:func:`~advspatial.experiments.forecast.announce`, the training
    priced apart: :mod:`.cost`) on the first test images, with the start model (fine-tuning) or the architecture
    built untrained (from scratch; training checks that both splits have one image shape); nothing for a resumed
    run, which has less left to do. The global random stream is left as it was: the models' training and the images
    drawn after it follow it."""
    if rundir.has_results() or not will_announce("localized-training", config):
        return
    with torch.random.fork_rng(devices=[]):
        data = test_images(config)
        model = (load_checked_model(config, data, device) if finetunes(config)
                 else build_for(train_config(config, "natural"), data).to(device))
    said = announce("localized-training", config, model, data.head(config.batch_size).images().to(device))
    rundir.forecast = None if said is None else said.record()
