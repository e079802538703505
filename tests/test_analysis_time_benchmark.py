"""benchmarks/analysis_time.py: completing a copy of a finished run redoes its analysis alone and gives its results."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import needs_fashion_mnist
from helpers import load_script, run_cli

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "analysis_time.py"
analysis_time = load_script(SCRIPT, "analysis_time_benchmark")


#: an untrained LeNet-5: a model that needs no training
LENET = """
import torch

from advspatial.models import build_model


def lenet():
    torch.manual_seed(0)
    return build_model("lenet5")
"""


@needs_fashion_mnist
def test_a_finished_runs_analysis_is_timed_with_the_same_results(tmp_path: Path, capsys) -> None:
    factory, run = tmp_path / "nets.py", tmp_path / "run"
    factory.write_text(LENET)
    code, _, err = run_cli(capsys, "run", "baseline", "--model", f"{factory}:lenet", "--n", "10",
                           "--no-progress", "--out", str(run))
    assert code == 0, err
    result = analysis_time.main([str(run), "--repeats", "1", "--profile", "--output", str(tmp_path / "t.json")])
    (repeat,) = result["repeats"]
    assert repeat["same_results"] and repeat["wall_s"] > 0 and repeat["run_wall_s"] is not None
    assert any("run_experiment" in name for _, name in result["top_functions"])
    assert json.loads((tmp_path / "t.json").read_text())["repeats"] == result["repeats"]


def test_a_changed_result_is_told_apart(tmp_path: Path) -> None:
    for name, rows in (("a", "id,x\n0,1\n"), ("b", "id,x\n0,2\n")):
        (tmp_path / name).mkdir()
        (tmp_path / name / "per_image.csv").write_text(rows)
        (tmp_path / name / "metrics.json").write_text(json.dumps({"n": 1, "wall_seconds": len(rows)}))
    assert not analysis_time.same_results(tmp_path / "a", tmp_path / "b")
    (tmp_path / "b" / "per_image.csv").write_text("id,x\n0,1\n")
    assert analysis_time.same_results(tmp_path / "a", tmp_path / "b")  # the times may differ


def test_an_unfinished_run_is_refused(tmp_path: Path) -> None:
    with pytest.raises(SystemExit):
        analysis_time.main([str(tmp_path)])
