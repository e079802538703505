"""The main job's cost: wall time of the default ``advspatial run`` with the model cached, the share
of that time spent in model forward/backward passes, the time of each stage (the faithfulness
gates, the explainer panel, the statistics engine, ...), and peak memory against n.

    .venv/bin/python benchmarks/bench_spatial.py            # default run (profiled) + memory check
    .venv/bin/python benchmarks/bench_spatial.py --skip-memory
    .venv/bin/python benchmarks/bench_spatial.py --plain-only   # the README's figure: the run as a user starts it

Forward/backward share: the run is profiled with cProfile; the share is the cumulative
time inside the model's top-level ``forward`` plus ``torch.autograd.grad`` /
``Tensor.backward`` (which contain the backward passes), over the total. Nested calls
are counted once by cProfile's cumulative time, so the sum does not double count a
forward inside a backward-free region, but a forward called inside an autograd call
would be counted twice: there is none in advspatial (graphs are built, then
differentiated).

Memory: peak RSS (ru_maxrss of a child process) of ``advspatial run`` with
``--n 1000`` and ``--n 10000`` with lighter settings (:data:`LIGHT_SETTINGS`: every
stage runs, each cheaply) so the check takes minutes, not an hour; the design goal is
ratio <= 1.3 (streaming batches).
Results go to benchmarks/results/spatial.json.
"""

from __future__ import annotations

import argparse
import cProfile
import json
import os
import pstats
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"
#: the memory check's lighter settings: every stage of the run, each kept cheap
LIGHT_SETTINGS = ["--attacks", "fgsm,pgd", "--defence-attack", "fgsm", "--steps", "5", "--permutations", "50",
                  "--fractions", "0.2", "--fills", "zero", "--prior-n", "200", "--adaptive-steps", "2",
                  "--adaptive-restarts", "1", "--adaptive-queries", "20", "--adaptive-n", "20",
                  "--eot-iter", "2", "--convergence-eot", "1,2,4", "--convergence-steps", "1,2,4",
                  "--convergence-restarts", "1,2",
                  "--baselines", "blur", "--contribution-steps", "4"]


def profile_default_run(out: Path) -> dict[str, float]:
    from advspatial.cli import main as cli_main
    from advspatial.model_cache import get_or_train
    from advspatial.training import TrainConfig

    get_or_train(TrainConfig(), progress=False)  # cached model: training is not part of the measurement
    profiler = cProfile.Profile()
    start, cpu_start = time.perf_counter(), os.times()
    profiler.enable()
    try:
        cli_main(["run", "--no-progress", "--out", str(out)])
    except SystemExit as exc:
        if exc.code:
            raise
    profiler.disable()
    wall = time.perf_counter() - start
    cpu_end = os.times()
    cpu = (cpu_end.user - cpu_start.user) + (cpu_end.system - cpu_start.system)
    stats = pstats.Stats(profiler)
    model_time = 0.0
    for (filename, _, name), (_, _, _, cumulative, _) in stats.stats.items():  # type: ignore[attr-defined]
        is_model_forward = name == "forward" and filename.endswith("models/architectures.py")
        is_backward = name in ("grad", "backward") and "torch/autograd/__init__.py" in filename
        if is_model_forward or is_backward:
            model_time += cumulative
    stages = {label: 0.0 for label in STAGES.values()}
    for (filename, _, name), (_, _, _, cumulative, _) in stats.stats.items():  # type: ignore[attr-defined]
        label = STAGES.get(("/".join(Path(filename).parts[-2:]), name))
        if label:
            stages[label] += cumulative
    return {"wall_seconds": round(wall, 1), "cpu_seconds": round(cpu, 1),
            "forward_backward_seconds": round(model_time, 1),
            "forward_backward_share": round(model_time / wall, 3),
            "stage_seconds": {k: round(v, 1) for k, v in stages.items()}}


#: stages whose cumulative time (under cProfile) the benchmark reports: (file, function) -> label
STAGES = {
    ("measurement/gate.py", "run_gates"): "faithfulness gates (every panel explainer)",
    ("measurement/stages.py", "panel_maps"): "panel explainer maps (first use)",
    ("measurement/claims.py", "infer"): "statistics engine, claims and verdicts",
    ("measurement/stages.py", "process_attack"): "attacks, maps, defence per attack",
    ("spatial/stages.py", "aggregate_sweep"): "defence sweep (non-adaptive)",
    ("spatial/stages.py", "adaptive_stage"): "adaptive evaluation (main defence, control, baselines, references)",
    ("defence/convergence.py", "convergence_curves"): "convergence curves (inside the adaptive evaluation)",
    ("spatial/report.py", "render"): "report figures and tables",
}


def plain_default_run(out: Path) -> dict[str, object]:
    """The figure the README states: the default run as a user starts it (a child ``advspatial run``, no
    profiler), its wall time, CPU seconds (user, system) and peak RSS, with the commit measured."""
    import resource

    from advspatial.model_cache import get_or_train
    from advspatial.training import TrainConfig

    get_or_train(TrainConfig(), progress=False)  # cached model: training is not part of the measurement
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "advspatial", "run", "--no-progress", "--out", str(out)], check=True,
                   capture_output=True)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                            cwd=Path(__file__).resolve().parent).stdout.strip()
    return {"wall_seconds": round(wall, 1), "user_seconds": round(after.ru_utime - before.ru_utime, 1),
            "system_seconds": round(after.ru_stime - before.ru_stime, 1), "peak_rss_mb": round(after.ru_maxrss / 1024),
            "commit": commit, "goal_seconds": 300}


def peak_rss_mb(n: int, out: Path) -> float:
    """Peak RSS of one ``advspatial run`` child process (MiB)."""
    code = ("import resource, sys; from advspatial.cli import main\n"
            "try:\n    main(sys.argv[1:])\nexcept SystemExit as e:\n    assert not e.code, e.code\n"
            "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)")
    args = [sys.executable, "-c", code, "run", "--no-progress", "--out", str(out), "--n", str(n),
            *LIGHT_SETTINGS]
    proc = subprocess.run(args, capture_output=True, text=True, check=True)
    return int(proc.stdout.strip().splitlines()[-1]) / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--skip-memory", action="store_true")
    parser.add_argument("--memory-only", action="store_true", help="keep the stored default-run figures")
    parser.add_argument("--plain-only", action="store_true",
                        help="only the unprofiled default run (the README's figure); keep the other stored figures")
    args = parser.parse_args()
    previous = json.loads((RESULTS / "spatial.json").read_text()) if (RESULTS / "spatial.json").is_file() else {}
    result: dict[str, object] = {**previous, "cpus": os.cpu_count(), "load_average_1min_start": os.getloadavg()[0]}
    with tempfile.TemporaryDirectory() as tmp:
        if args.plain_only:
            result["plain_default_run"] = plain_default_run(Path(tmp) / "plain")
            args.skip_memory = True
        elif args.memory_only and "default_run" in previous:
            result["default_run"] = previous["default_run"]
        else:
            result["default_run"] = profile_default_run(Path(tmp) / "default")
        print(json.dumps(result.get("plain_default_run" if args.plain_only else "default_run")), flush=True)
        if not args.skip_memory:
            small = peak_rss_mb(1000, Path(tmp) / "n1000")
            large = peak_rss_mb(10000, Path(tmp) / "n10000")
            result["memory"] = {"peak_rss_mb_n1000": round(small, 1), "peak_rss_mb_n10000": round(large, 1),
                                "ratio": round(large / small, 3), "settings": " ".join(LIGHT_SETTINGS)}
    result["load_average_1min_end"] = os.getloadavg()[0]
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "spatial.json").write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
