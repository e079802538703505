"""Training time of the default model (smallcnn on Fashion-MNIST, 5 epochs) on this machine.

Trains into a fresh cache directory (nothing reused), prints the wall time and test
accuracy, and writes benchmarks/results/train.json. Goal: >= 90% test
accuracy in under 90 s on 2 cores.

    .venv/bin/python benchmarks/bench_train.py
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path

import torch

RESULTS = Path(__file__).resolve().parent / "results"


def main() -> None:
    with tempfile.TemporaryDirectory() as cache:
        os.environ["ADVSPATIAL_CACHE"] = cache
        from advspatial.model_cache import get_or_train
        from advspatial.training import TrainConfig

        start = time.perf_counter()
        trained = get_or_train(TrainConfig(), "cpu", progress=False)
        wall = time.perf_counter() - start
    result = {
        "model": "smallcnn", "dataset": "fashion-mnist", "epochs": trained.config.epochs,
        "wall_seconds": round(wall, 1), "train_seconds": trained.metadata["train_seconds"],
        "test_accuracy": trained.metadata["test_accuracy"], "threads": torch.get_num_threads(),
        "cpus": os.cpu_count(), "load_average_1min": os.getloadavg()[0],
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "train.json").write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
