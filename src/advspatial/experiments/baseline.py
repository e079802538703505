"""Experiment ``baseline``: load (or train and cache) the model and report its clean accuracy."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import torch

from ..statistics.accuracy import accuracy as accuracy_with_interval
from ..report.html import Section, Table
from ..rundir import RunDir
from .context import ExperimentContext, prepare_context
from .findings import Findings
from .registry import register_experiment
from .results import Rendered, RunFindings
from .settings import ExperimentConfig


@dataclass
class BaselineConfig(ExperimentConfig):
    """Only the common settings."""

    #: only forward passes: a TorchScript model is fine
    LAYER_ACCESS: ClassVar[str] = ""


@dataclass
class BaselineFindings(Findings):
    """The clean accuracy on ``n`` images with its 95% Wilson interval (``[low, high]``)."""

    clean_accuracy: float
    clean_accuracy_ci: list[float]
    n: int


def render(config: BaselineConfig, findings: BaselineFindings, figures: Path) -> Rendered:
    """The summary line and the one report section of a baseline run."""
    low, high = findings.clean_accuracy_ci
    interval = f"[{low:.3f}, {high:.3f}]"
    section = Section("Setup", [f"{config.model} on {config.dataset} ({config.subset} subset of {findings.n} "
                                f"test images, seed {config.seed})."],
                      tables=[Table("Accuracy", ["images", "accuracy", "95% Wilson CI"],
                                    [[findings.n, findings.clean_accuracy, interval]])])
    return Rendered(f"clean accuracy {findings.clean_accuracy:.4f} {interval} on {findings.n} images", [section])


@register_experiment("baseline", BaselineConfig, "clean accuracy of the model on the test images",
                     findings=BaselineFindings, render=render, contract={"n": 30, "batch_size": 8})
def run_baseline(config: BaselineConfig, rundir: RunDir) -> RunFindings:
    ctx = prepare_context(config, rundir)
    correct = torch.cat(ctx.each_batch(lambda b, sl: correct_of(ctx, b, sl), desc="clean predictions"))
    with rundir.passes.phase("statistics"):
        share = accuracy_with_interval(correct.numpy().astype(float))
    rows = [{"index": int(ctx.data.ids[i]), "label": int(ctx.data.labels[i]), "correct": bool(correct[i])}
            for i in range(len(ctx.data))]
    findings = BaselineFindings(share.value, [share.low, share.high], len(ctx.data))
    return RunFindings(findings, rows)


def correct_of(ctx: ExperimentContext[BaselineConfig], b: int, sl: slice) -> torch.Tensor:
    """Whether each image of batch ``b`` is classified correctly (the shared clean pass)."""
    return ctx.clean(b).correct(ctx.data.labels[sl])
