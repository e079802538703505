"""Cost of the default ``advspatial run localized-training``: training apart, evaluation with models cached.

    .venv/bin/python benchmarks/bench_localized.py                   # fresh cache: train all, then re-run cached
    .venv/bin/python benchmarks/bench_localized.py --cache ~/.cache/advspatial   # models already trained there
    .venv/bin/python benchmarks/bench_localized.py --threads 1       # e.g. on a machine shared with other jobs

The default run compares 5 models (natural, PGD, mixed PGD, localized, random-mask localized) x 3
training seeds. The goal is on the run *with models cached*: <= 10 minutes on 2 CPU cores;
training is stated separately. So the benchmark runs the experiment twice on the same model cache:

1. *training run* (skipped when ``--cache`` already holds every model): trains what the cache lacks,
   then evaluates; its ``train/*`` stage timings are the training cost;
2. *cached run*: the same settings into a fresh run directory, every model loaded from the cache: its
   wall time is the measured cost, checked against the goal.

Reported per run: wall seconds, the experiment's stage timings (training, gates, evaluation per model,
report), the load average before and after (the machine may be shared: then the times are upper bounds),
and the accuracies. Results go to ``benchmarks/results/localized.json``. Not a test.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results" / "localized.json"
GOAL_SECONDS = 10 * 60


def run_once(args: argparse.Namespace, out: Path) -> dict[str, Any]:
    """One run of the experiment into ``out``; its wall time, stage timings, load and accuracies."""
    from advspatial.experiments import get_experiment, resolve_config, run_experiment

    overrides: dict[str, object] = {"out": str(out), "progress": args.progress}
    for name in ("n", "train_epochs", "training_seeds", "ensemble_n"):
        if getattr(args, name) is not None:
            overrides[name] = getattr(args, name)
    config = resolve_config(get_experiment("localized-training"), None, overrides, quick=False)
    load_before = os.getloadavg()
    started = time.perf_counter()
    result, _ = run_experiment("localized-training", config)
    wall = time.perf_counter() - started
    timings = result.metrics["timings"]
    return {
        "wall_seconds": round(wall, 1),
        "training_seconds": round(sum(v for k, v in timings.items() if k.startswith("train/")), 1),
        "evaluation_seconds": round(sum(v for k, v in timings.items() if k.startswith("evaluate/")), 1),
        "gate_seconds": round(sum(v for k, v in timings.items() if k.startswith("gate/")), 1),
        "stage_seconds": timings,
        "load_average_before": [round(v, 2) for v in load_before],
        "load_average_after": [round(v, 2) for v in os.getloadavg()],
        "n": result.metrics["n"],
        "accuracy": {m: {k: v for k, v in values.items() if k.endswith("_accuracy")}
                     for m, values in result.metrics["models"].items()},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache", type=Path, default=None,
                        help="model cache to use (default: a fresh temporary one, so every model is trained)")
    parser.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0: torch's default)")
    parser.add_argument("--n", type=int, default=None, help="test images (default: the experiment's default)")
    parser.add_argument("--train-epochs", type=int, default=None, help="epochs of every model")
    parser.add_argument("--training-seeds", type=int, default=None, help="training seeds per model")
    parser.add_argument("--ensemble-n", type=int, default=None, help="images of the ensemble attacks")
    parser.add_argument("--progress", action="store_true", help="show progress bars")
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-localized-") as tmp:
        os.environ["ADVSPATIAL_CACHE"] = str(args.cache or Path(tmp) / "cache")
        import torch

        if args.threads:
            torch.set_num_threads(args.threads)
        import advspatial.experiments.localized  # noqa: F401  (registers the experiment)

        training = run_once(args, Path(tmp) / "training-run")
        cached = run_once(args, Path(tmp) / "cached-run")
    result = {
        "goal_seconds": GOAL_SECONDS,
        "cached_run_within_goal": cached["wall_seconds"] <= GOAL_SECONDS,
        "training_run": training,
        "cached_run": cached,
        "cache": "given" if args.cache else "fresh",
        "settings": {"n": args.n, "train_epochs": args.train_epochs, "training_seeds": args.training_seeds,
                     "ensemble_n": args.ensemble_n, "threads": torch.get_num_threads()},
        "cpus": os.cpu_count(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=2))
    summary = {"cached_run_within_goal": result["cached_run_within_goal"],
               **{f"{name}_{key}": run[key] for name, run in (("training_run", training), ("cached_run", cached))
                  for key in ("wall_seconds", "training_seconds", "gate_seconds", "evaluation_seconds",
                              "load_average_before", "load_average_after")}}
    print(json.dumps(summary, indent=2))
    print(f"wrote {args.output}", file=sys.stderr)


if __name__ == "__main__":
    main()
