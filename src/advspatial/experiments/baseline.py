"""Experiment ``baseline``: load (or train and cache) the model and report its clean accuracy."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from ..report.html import Section, Table
from ..rundir import RunDir
from .context import ExperimentContext, prepare_context
from .registry import register_experiment
from .results import ExperimentResult
from .settings import ExperimentConfig


@dataclass
class BaselineConfig(ExperimentConfig):
    """Only the common settings."""

    #: only forward passes: a TorchScript model is fine
    LAYER_ACCESS: ClassVar[str] = ""


@register_experiment("baseline", BaselineConfig, "clean accuracy of the model on the test images")
def run_baseline(config: BaselineConfig, rundir: RunDir) -> ExperimentResult:
    from ..regions.inference import accuracy as accuracy_with_interval

    ctx = prepare_context(config, rundir)
    correct = torch.cat(ctx.each_batch(lambda b, sl: _correct(ctx, b, sl), desc="clean predictions"))
    share = accuracy_with_interval(correct.numpy().astype(float))
    rows = [{"index": int(ctx.data.ids[i]), "label": int(ctx.data.labels[i]), "correct": bool(correct[i])}
            for i in range(len(ctx.data))]
    metrics = {"clean_accuracy": share.value, "clean_accuracy_ci": [share.low, share.high], "n": len(ctx.data)}
    interval = f"[{share.low:.3f}, {share.high:.3f}]"
    section = Section("Setup", [f"{config.model} on {config.dataset} ({config.subset} subset of {len(ctx.data)} "
                                f"test images, seed {config.seed})."],
                      tables=[Table("Accuracy", ["images", "accuracy", "95% Wilson CI"],
                                    [[len(ctx.data), share.value, interval]])])
    return ExperimentResult(metrics, rows, f"clean accuracy {share.value:.4f} {interval} on {len(ctx.data)} images",
                            [section])


def _correct(ctx: ExperimentContext, b: int, sl: slice) -> torch.Tensor:
    """Whether each image of batch ``b`` is classified correctly (cached)."""

    def compute() -> torch.Tensor:
        x, y, _ = ctx.batch(sl)
        with torch.inference_mode():
            return (ctx.model(x).argmax(1) == y).cpu()

    return ctx.rundir.cached(f"predictions/batch-{b:05d}", compute)
