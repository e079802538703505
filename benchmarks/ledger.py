"""What a finished run's ledger says a GPU would wait on: per stage group, calls, rounds, host synchronisations.

On a CPU a run costs its image-passes; on a GPU it costs its calls (a few ms each whatever the batch) and the host
reads between them. The run's own ledger (``metrics.json``'s ``model_passes``, :mod:`advspatial.passes`) counts,
per stage, forward and backward calls, rounds (forward calls a device could make as one), host synchronisations
outside the model, CPU seconds in total and inside the model, and elapsed seconds (on a GPU, where the host waits on
the device, the time that counts; 0 in runs of older code). This script groups the stages (the first one or
two parts of a stage key: ``adaptive/main``, ``gate/hirescam``, ``attack/pgd`` ...) and prints, per group and for
the run's stages: CPU-s, share, wall-s, image-passes, calls, rounds, mean images per round, syncs per call and
non-model CPU ms per call; then the run's time outside every stage (``(outside) statistics`` ...: the phases of
:meth:`advspatial.passes.PassLedger.phase`, this process's, times only; not in ``(run)``). Two run dirs print one after
the other (before / after). A run without metrics.json (stopped by a time limit, say a GPU lease's) is read from its
stage files' headers, which carry each finished stage's counts: its finished stages only, nothing outside them.
Counts are machine-independent; the times are this machine's. Not a test. Example::

    python benchmarks/ledger.py runs/before runs/after --depth 2 --output benchmarks/results/ledger.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from advspatial.passes import PassCount, PassLedger, call_rates
from advspatial.rundir import RunDir


def ledger(run: Path) -> dict[str, Any]:
    """``model_passes`` of ``run``'s metrics.json, or of its stage files when it has none (:func:`stage_ledger`; a
    SystemExit naming the file when neither holds a ledger with rounds)."""
    if not (run / "metrics.json").is_file():
        return stage_ledger(run)
    metrics = json.loads((run / "metrics.json").read_text())
    passes = metrics.get("model_passes")
    if not passes or "rounds" not in passes:
        raise SystemExit(f"{run / 'metrics.json'} holds no ledger with rounds (a run of older code)")
    return passes


def stage_ledger(run: Path) -> dict[str, Any]:
    """The ledger of a run that did not finish: per stage family, the counts in its stage files' headers (the
    finished stages; the run's totals are their sum)."""
    import torch

    stages = run / "stages"
    by_stage: dict[str, PassCount] = {}
    for path in sorted(stages.rglob("*.pt")):
        stored = torch.load(path, map_location="cpu", weights_only=False)
        header = stored.get(RunDir.STAGE_KEY) if isinstance(stored, dict) else None
        if isinstance(header, dict) and isinstance(header.get("passes"), dict):
            by_stage[str(path.relative_to(stages).with_suffix(""))] = PassCount.from_dict(header["passes"])
    if not by_stage:
        raise SystemExit(f"{run} has neither metrics.json nor stage files with counts")
    found = PassLedger(by_stage=by_stage)
    return {**found.total().as_dict(), "stages": {name: count.as_dict() for name, count in found.by_family().items()}}


def group_of(stage: str, depth: int) -> str:
    """The first ``depth`` parts of a stage key: ``gate/hirescam/mprt`` -> ``gate/hirescam`` at depth 2."""
    return "/".join(stage.split("/")[:depth])


def grouped(passes: dict[str, Any], depth: int) -> dict[str, PassCount]:
    """Per stage group, the summed counts and times (the run's total under ``(run)``)."""
    groups: dict[str, PassCount] = {}
    for stage, count in passes["stages"].items():
        groups.setdefault(group_of(stage, depth), PassCount()).add(PassCount.from_dict(count))
    groups["(run)"] = PassCount.from_dict(passes)
    for name, spent in ((passes.get("outside_stages") or {}).get("phase_seconds") or {}).items():
        groups[f"(outside) {name}"] = PassCount(cpu_seconds=float(spent["cpu_seconds"]),
                                                wall_seconds=float(spent["wall_seconds"]))
    return groups


def rates(count: PassCount, run_cpu: float) -> dict[str, float | None]:
    """The derived columns of one group (the per-call rates: the ledger's own :func:`advspatial.passes.call_rates`)."""
    derived = call_rates(count)
    non_model = derived["non_model_seconds_per_call"]
    return {"cpu_s": round(count.cpu_seconds, 1),
            "share": round(count.cpu_seconds / run_cpu, 3) if run_cpu else None,
            "wall_s": round(count.wall_seconds, 1),
            "passes": count.forward + count.backward, "calls": count.calls + count.backward_calls,
            "rounds": count.rounds, "images_per_round": derived["images_per_round"],
            "syncs_per_call": derived["syncs_per_call"],
            "non_model_ms_per_call": None if non_model is None else round(1000 * non_model, 2)}


def table(runs: list[Path], depth: int) -> dict[str, dict[str, dict[str, float | None]]]:
    """Per run (by path), per group, the derived columns."""
    out = {}
    for run in runs:
        groups = grouped(ledger(run), depth)
        run_cpu = groups["(run)"].cpu_seconds
        out[str(run)] = {name: rates(count, run_cpu) for name, count in groups.items()}
    return out


#: the columns :func:`print_table` prints, in order
COLUMNS = ("cpu_s", "share", "wall_s", "passes", "calls", "rounds", "images_per_round", "syncs_per_call",
           "non_model_ms_per_call")


def print_table(result: dict[str, dict[str, dict[str, float | None]]]) -> None:
    """:func:`table`'s result, per run a group a line, the costliest group first."""
    for run, groups in result.items():
        print(f"\n{run}")
        print(f"{'group':32s} " + " ".join(f"{c:>12s}" for c in COLUMNS))
        for name, row in sorted(groups.items(), key=lambda item: -(item[1]["cpu_s"] or 0)):
            print(f"{name:32s} " + " ".join(f"{'-' if row[c] is None else row[c]!s:>12s}" for c in COLUMNS))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", type=Path, help="finished run directories (one or two)")
    parser.add_argument("--depth", type=int, default=2, help="parts of a stage key that name its group")
    parser.add_argument("--output", type=Path, default=None, help="also write the table as JSON here")
    args = parser.parse_args()
    result = table(args.runs, args.depth)
    if args.output:  # first: a reader that stops early (``| head``) must not cost the file
        args.output.write_text(json.dumps(result, indent=2) + "\n")
    print_table(result)


if __name__ == "__main__":
    main()
