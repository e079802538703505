"""benchmarks/ledger.py: a run stopped before its metrics.json is read from its stage files' headers, to the same
counts the finished run's ledger gives for the same stages."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn

from advspatial.rundir import RunDir
from helpers import load_script

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "ledger.py"
ledger_benchmark = load_script(SCRIPT, "ledger_benchmark")


def _run_with_stages(path: Path) -> RunDir:
    """A run directory with three stages of two families computed through a watched model."""
    rundir, model = RunDir(path), nn.Linear(4, 2)
    rundir.passes.watch(model)
    with torch.no_grad():
        for key, rows in (("attack/pgd/batch-00000", 3), ("attack/pgd/batch-00001", 5), ("roi/batch-00000", 2)):
            rundir.cached(key, lambda rows=rows: model(torch.rand(rows, 4)))
    return rundir


def test_a_run_without_metrics_is_read_from_its_stage_headers(tmp_path: Path) -> None:
    _run_with_stages(tmp_path / "cut")
    passes = ledger_benchmark.ledger(tmp_path / "cut")
    assert passes["forward"] == 10 and passes["calls"] == 3 and passes["rounds"] == 3
    assert {name: count["forward"] for name, count in passes["stages"].items()} == {"attack/pgd": 8, "roi": 2}
    groups = ledger_benchmark.grouped(passes, 1)
    assert groups["attack"].forward == 8 and groups["(run)"].forward == 10


def test_the_stage_headers_give_the_finished_runs_counts(tmp_path: Path) -> None:
    rundir = _run_with_stages(tmp_path / "done")
    (tmp_path / "done" / "metrics.json").write_text(json.dumps({"model_passes": rundir.passes.summary()}))
    finished = ledger_benchmark.ledger(tmp_path / "done")
    from_headers = ledger_benchmark.stage_ledger(tmp_path / "done")
    for name in ("forward", "backward", "calls", "rounds", "syncs"):
        assert from_headers[name] == finished[name]
    for stage, count in finished["stages"].items():
        assert from_headers["stages"][stage]["forward"] == count["forward"]


def test_the_json_is_written_when_the_reader_of_the_table_stops_early(tmp_path: Path) -> None:
    """``ledger.py RUN --output FILE | head`` (how a lease keeps a run's ledger): the file must not depend on the
    table being read to its end."""
    import subprocess
    import sys

    _run_with_stages(tmp_path / "cut")
    out = tmp_path / "ledger.json"
    command = [sys.executable, str(SCRIPT), str(tmp_path / "cut"), "--depth", "1", "--output", str(out)]
    reader = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    assert reader.stdout is not None
    reader.stdout.close()  # the reader stops before the first line
    reader.wait(timeout=60)
    assert json.loads(out.read_text())[str(tmp_path / "cut")]["attack"]["passes"] == 8


def test_the_time_outside_the_stages_is_listed_by_phase_apart_from_the_runs_total(tmp_path: Path) -> None:
    rundir = _run_with_stages(tmp_path / "done")
    with rundir.passes.phase("statistics"):
        rundir.cached("attack/pgd/batch-00002", lambda: torch.zeros(1))  # a stage inside: not the phase's
    (tmp_path / "done" / "metrics.json").write_text(json.dumps({"model_passes": rundir.passes.summary()}))
    groups = ledger_benchmark.table([tmp_path / "done"], 1)[str(tmp_path / "done")]
    assert "(outside) statistics" in groups
    assert groups["(outside) statistics"]["passes"] == 0 and groups["(run)"]["passes"] == 10
