"""The time a finished run spends outside its stages: its analysis (claims, nulls, gates' summaries), figures and
report, measured by completing a copy of the run whose stages are all saved.

Why: on a GPU a large run's stages take little time and what follows them is host work that grows with n (on an
H200, ResNet-20 `spatial` at n = 2,000 spent 91.5 of its 187.7 s outside every stage). ``advspatial run --resume``
on a copy of a finished run reads every stage back and redoes only that work, so its time is the analysis' own,
on any machine. Each repeat resumes a fresh copy in this process (the package imported once before the first);
``--profile`` also lists the package's functions with the most cumulative time (cProfile, one more repeat).
Checks that the copy's ``per_image.csv`` and ``metrics.json`` (apart from times and passes) equal the run's own.
Not a test. Example (the figures of benchmarks/README.md, "the analysis of a finished run")::

    advspatial run --n 2000 --out runs/fm-2000
    python benchmarks/analysis_time.py runs/fm-2000 --repeats 2 --profile
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import io
import json
import pstats
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

def resume_copy(run: Path, work: Path, profile: Path | None = None) -> dict[str, Any]:
    """Complete a copy of ``run`` under ``work``: its process wall and CPU seconds, the run's own wall seconds and
    whether its results equal the run's."""
    from advspatial.cli import main

    copy = work / "copy"
    shutil.rmtree(copy, ignore_errors=True)
    shutil.copytree(run, copy)
    profiler = cProfile.Profile() if profile is not None else None
    wall, cpu = time.perf_counter(), time.process_time()
    try:
        if profiler is not None:
            profiler.enable()
        with contextlib.redirect_stdout(io.StringIO()):  # the run's summary: not this script's figures
            main(["run", "--resume", str(copy), "--no-progress"])
    except SystemExit as done:
        if done.code:
            raise RuntimeError(f"advspatial run --resume {copy} exited with {done.code}") from done
    finally:
        if profiler is not None:
            profiler.disable()
            profiler.dump_stats(str(profile))
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    metrics = json.loads((copy / "metrics.json").read_text())
    return {"wall_s": round(wall, 2), "cpu_s": round(cpu, 2), "run_wall_s": metrics.get("wall_seconds"),
            "same_results": same_results(run, copy)}


def same_results(run: Path, copy: Path) -> bool:
    """Whether ``copy`` holds ``run``'s per-image rows and findings (metrics.json but the keys a run adds beside its
    findings, :data:`~advspatial.experiments.findings.RUN_KEYS`: its times, passes and stamp)."""
    from advspatial.experiments.findings import RUN_KEYS

    if (run / "per_image.csv").read_bytes() != (copy / "per_image.csv").read_bytes():
        return False
    mine, theirs = (json.loads((d / "metrics.json").read_text()) for d in (run, copy))
    return all(mine.get(k) == theirs.get(k) for k in set(mine) | set(theirs) if k not in RUN_KEYS)


def top_functions(profile: Path, count: int = 15) -> list[tuple[float, str]]:
    """The package's ``count`` functions with the most cumulative seconds in ``profile``."""
    stats = pstats.Stats(str(profile)).stats  # type: ignore[attr-defined]
    rows = [(entry[3], f"{where.split('advspatial/')[-1]}:{line}({name})")
            for (where, line, name), entry in stats.items() if "advspatial/" in where]
    return sorted(rows, reverse=True)[:count]


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run", type=Path, help="a finished run directory")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--profile", action="store_true", help="one more repeat under cProfile")
    parser.add_argument("--output", type=Path, default=None, help="write the figures as JSON here")
    args = parser.parse_args(argv)
    if not (args.run / "metrics.json").is_file():
        parser.error(f"{args.run} is not a finished run (no metrics.json)")
    import advspatial.experiments  # noqa: F401  (imported before the first timing)

    result: dict[str, Any] = {"run": str(args.run)}
    with tempfile.TemporaryDirectory() as tmp:
        result["repeats"] = [resume_copy(args.run, Path(tmp)) for _ in range(args.repeats)]
        for k, rep in enumerate(result["repeats"]):
            print(f"repeat {k + 1}: {rep['wall_s']} s wall, {rep['cpu_s']} CPU-s, the run's own "
                  f"{rep['run_wall_s']} s, same results: {rep['same_results']}")
        if args.profile:
            profile = Path(tmp) / "analysis.prof"
            resume_copy(args.run, Path(tmp), profile)
            result["top_functions"] = top_functions(profile)
            for seconds, name in result["top_functions"]:
                print(f"{seconds:8.2f} s  {name}")
    if args.output is not None:
        args.output.write_text(json.dumps(result, indent=1) + "\n")
    return result


if __name__ == "__main__":
    main()
