"""Experiment ``baseline``: train (or load from cache) the model and report its clean accuracy."""

from __future__ import annotations

from dataclasses import dataclass

from ..data import load_dataset
from ..report.html import Section, Table
from ..runtime import RunDir, pick_device
from ..training import TrainConfig, get_or_train
from .base import ExperimentConfig, ExperimentResult, register_experiment


@dataclass
class BaselineConfig(ExperimentConfig):
    """Only the common settings."""


@register_experiment("baseline", BaselineConfig, "clean accuracy of the (cached) default model")
def run_baseline(config: BaselineConfig, rundir: RunDir) -> ExperimentResult:
    device = pick_device(config.device)
    trained = get_or_train(TrainConfig(dataset=config.dataset, arch=config.model, seed=config.model_seed), device, config.progress)
    data = load_dataset(config.dataset, "test").head(config.n)
    correct = rundir.cached("predictions", lambda: _predictions(trained.model, data, config.batch_size))
    accuracy = float(correct.float().mean())
    rows = [{"index": i, "label": int(data.labels[i]), "correct": bool(correct[i])} for i in range(len(data))]
    metrics = {"clean_accuracy": accuracy, "n": len(data), "model_test_accuracy": trained.metadata["test_accuracy"],
               "train_seconds": trained.metadata["train_seconds"]}
    section = Section("Setup", [f"{config.model} on {config.dataset}; checkpoint {trained.path}."],
                      tables=[Table("Accuracy", ["set", "images", "accuracy"], [["first n test images", len(data), accuracy]])])
    return ExperimentResult(metrics, rows, f"clean accuracy {accuracy:.4f} on {len(data)} images", [section])


def _predictions(model, data, batch_size):  # type: ignore[no-untyped-def]
    import torch

    from ..runtime import model_device

    out = []
    with torch.inference_mode():
        for x, y, _ in data.batches(batch_size):
            out.append(model(x.to(model_device(model))).argmax(1).cpu() == y)
    return torch.cat(out)
