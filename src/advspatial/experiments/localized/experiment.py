"""The run of experiment ``localized-training``: the models, their gates and evaluations, the metrics from the rows,
the claims, the report."""

from __future__ import annotations

import time
from typing import Any

import torch

from ...rundir import RunDir
from ...runtime import pick_device
from ..context import test_images
from ..registry import register_experiment
from ..results import ExperimentResult
from .claims import measure
from .config import EXAMPLE_MODES, MODES, LocalizedConfig, finetunes
from .metrics import build_metrics
from .models import Start, finetune_models, resolve_methods, train_models
from .report import ReportContext, build_sections, summary_table
from .stages import ModelEvaluation, evaluate_model, example_images, finetune_facts, model_rows, other_seeds, run_gates


@register_experiment("localized-training", LocalizedConfig,
                     "localized (background-only) attacks vs natural, PGD and localized adversarial training",
                     contract={"n": 8, "batch_size": 4})
def run_localized(config: LocalizedConfig, rundir: RunDir) -> ExperimentResult:
    device = pick_device(config.device)
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
    methods = resolve_methods(config, models, data)
    gates = run_gates(config, rundir, models, data, device, methods, timings)
    rows: list[dict[str, Any]] = []
    evaluations: dict[str, ModelEvaluation] = {}
    for mode in MODES:
        evaluations[mode] = evaluate_model(mode, models[mode], config, data, rundir, methods[mode]["method"])
        timings[f"evaluate/{mode}"] = evaluations[mode].seconds
        rows.extend(model_rows(mode, data, evaluations[mode]))
    seeds = other_seeds(config, rundir, data, device, methods, timings, rows)
    metrics = build_metrics(config, len(data), rows, trained)
    claims = measure(config, data, evaluations, gates, methods, metrics, seeds)
    if start is not None:
        metrics["finetune"] = finetune_facts(config, rundir, data, start, trained, device, timings)
    started = time.perf_counter()
    examples = {mode: example_images(config, data, models[mode], evaluations[mode]) for mode in EXAMPLE_MODES}
    sections = build_sections(ReportContext(config, rundir, data, evaluations, metrics, claims, examples))
    timings["report"] = round(time.perf_counter() - started, 2)
    metrics["timings"] = timings
    return ExperimentResult(metrics, rows, summary_table(config, metrics, claims), sections)
