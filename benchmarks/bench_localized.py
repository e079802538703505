"""Cost of the default ``advspatial run localized``, training of all three models included.

    .venv/bin/python benchmarks/bench_localized.py                 # default run, fresh model cache
    .venv/bin/python benchmarks/bench_localized.py --threads 1     # e.g. on a machine shared with other jobs
    .venv/bin/python benchmarks/bench_localized.py --n 200 --train-epochs 1   # a shorter look

The run uses a fresh, temporary ``ADVSPATIAL_CACHE`` so that the natural, PGD and
localized models are all trained inside the measurement. Reported: wall time per
stage (training of each model, evaluation of each model: the three PGD attacks
and the Grad-CAM shift, the report) and in total, the machine's load average
before and after, and the accuracies the run produced. Goal: total <= 15
minutes on 2 CPU cores. Results go to benchmarks/results/localized.json.
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

RESULTS = Path(__file__).resolve().parent / "results" / "localized.json"
GOAL_SECONDS = 15 * 60


def run(args: argparse.Namespace, cache: Path, out: Path) -> dict[str, object]:
    """One default run of the experiment with the model cache at ``cache``; returns its metrics."""
    os.environ["ADVSPATIAL_CACHE"] = str(cache)
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    import advspatial.experiments.localized  # noqa: F401  (registers the experiment)
    from advspatial.experiments import get_experiment, resolve_config, run_experiment

    overrides: dict[str, object] = {"out": str(out), "progress": args.progress}
    if args.n is not None:
        overrides["n"] = args.n
    if args.train_epochs is not None:
        overrides["train_epochs"] = args.train_epochs
    config = resolve_config(get_experiment("localized-training"), None, overrides, quick=False)
    result, _ = run_experiment("localized-training", config)
    print(result.summary)
    return result.metrics


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0: torch's default)")
    parser.add_argument("--n", type=int, default=None, help="test images (default: the experiment's default)")
    parser.add_argument("--train-epochs", type=int, default=None, help="epochs of the adversarial models")
    parser.add_argument("--progress", action="store_true", help="show progress bars")
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args()
    load_before = os.getloadavg()
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench-localized-") as tmp:
        metrics = run(args, Path(tmp) / "cache", Path(tmp) / "run")
    total = time.perf_counter() - started
    import torch

    timings = metrics["timings"]
    result = {
        "total_seconds": round(total, 1),
        "goal_seconds": GOAL_SECONDS,
        "within_goal": total <= GOAL_SECONDS,
        "stage_seconds": timings,
        "experiment_wall_seconds": metrics.get("wall_seconds"),
        "accuracy": {m: {k: v for k, v in values.items() if k.endswith("_accuracy")}
                     for m, values in metrics["models"].items()},  # type: ignore[union-attr]
        "n": metrics["n"],
        "settings": {"n": args.n, "train_epochs": args.train_epochs, "threads": torch.get_num_threads()},
        "cpus": os.cpu_count(),
        "load_average_before": [round(v, 2) for v in load_before],
        "load_average_after": [round(v, 2) for v in os.getloadavg()],
        "torch": torch.__version__,
        "python": platform.python_version(),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=2))
    print(json.dumps({k: result[k] for k in ("total_seconds", "within_goal", "stage_seconds",
                                             "load_average_before", "load_average_after")}, indent=2))
    print(f"wrote {args.output}", file=sys.stderr)


if __name__ == "__main__":
    main()
