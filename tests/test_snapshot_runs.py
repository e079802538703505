"""scripts/snapshot_runs.py, the before/after check of a refactoring: what it calls the same must be the same."""

from __future__ import annotations

import json
import math
from pathlib import Path
from helpers import load_script

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "snapshot_runs.py"
snapshot_runs = load_script(SCRIPT, "snapshot_runs")


def write_run(folder: Path, metrics: dict, csv: str) -> Path:
    folder.mkdir(parents=True)
    (folder / "run.json").write_text("{}")
    (folder / "metrics.json").write_text(json.dumps(metrics))
    (folder / "per_image.csv").write_text(csv)
    return folder


def test_wall_times_and_the_forecast_are_left_out_and_nothing_else() -> None:
    value = {"wall_seconds": 3.0, "timings": {"a": 1.0}, "n": 5, "nested": [{"elapsed": 2, "p": 0.1}],
             "forecast": {"seconds": 3.5, "sentence": "about 1 minute", "dominant_share": 0.5}}
    assert snapshot_runs.comparable(value) == {"n": 5, "nested": [{"p": 0.1}]}


def test_differences_name_the_path_and_nan_equals_nan() -> None:
    assert snapshot_runs.differences({"a": [1, math.nan]}, {"a": [1, math.nan]}) == []
    found = snapshot_runs.differences({"a": {"b": 1, "c": 2}}, {"a": {"b": 1.5}, "d": 0})
    assert "/a/b: 1 before, 1.5 after" in found
    assert "/a/c: only before" in found and "/d: only after" in found
    assert snapshot_runs.differences([1, 2], [1]) == [": length 2 before, 1 after"]


def test_compare_snapshots_finds_a_changed_csv_byte_and_a_changed_number(tmp_path: Path) -> None:
    before, after = tmp_path / "before", tmp_path / "after"
    write_run(before / "default" / "same", {"n": 1, "wall_seconds": 1}, "a\n1\n")
    write_run(after / "default" / "same", {"n": 1, "wall_seconds": 9}, "a\n1\n")
    write_run(before / "default" / "csv", {"n": 1}, "a\n1.0\n")
    write_run(after / "default" / "csv", {"n": 1}, "a\n1\n")
    write_run(before / "default" / "metric", {"n": 1}, "a\n1\n")
    write_run(after / "default" / "metric", {"n": 2}, "a\n1\n")
    write_run(before / "default" / "gone", {"n": 1}, "a\n1\n")
    assert snapshot_runs.compare_run(before / "default" / "same", after / "default" / "same") == []
    assert snapshot_runs.compare_run(before / "default" / "csv", after / "default" / "csv") == [
        "per_image.csv: bytes differ"]
    assert snapshot_runs.compare_run(before / "default" / "metric", after / "default" / "metric") == [
        "metrics.json/n: 1 before, 2 after"]
    assert snapshot_runs.compare_snapshots(before, after) == 3


def test_paths_inside_the_snapshot_compare_as_relative(tmp_path: Path) -> None:
    before, after = tmp_path / "before", tmp_path / "after"
    write_run(before / "s" / "r", {"checkpoint": f"{before}/s/r/model.pt"}, "")
    write_run(after / "s" / "r", {"checkpoint": f"{after}/s/r/model.pt"}, "")
    write_run(before / "s" / "q", {"checkpoint": f"{before}/s/q/model.pt"}, "")
    write_run(after / "s" / "q", {"checkpoint": f"{after}/s/q/other.pt"}, "")
    assert snapshot_runs.compare_snapshots(before, after) == 1


def test_the_run_checksums_are_left_out_and_the_settings_compared_instead(tmp_path: Path) -> None:
    before, after = tmp_path / "before", tmp_path / "after"
    run = {"run": {"id": "aa", "experiment": "maps", "findings": "bb"}, "n": 1}
    write_run(before / "s" / "r", run, "")
    write_run(after / "s" / "r", {**run, "run": {"id": "cc", "experiment": "maps", "findings": "dd"}}, "")
    (before / "s" / "r" / "config.yaml").write_text(f"out: {before}/s/r\nn: 8\n")
    (after / "s" / "r" / "config.yaml").write_text(f"out: {after}/s/r\nn: 8\n")
    assert snapshot_runs.compare_run(before / "s" / "r", after / "s" / "r", (before, after)) == []
    (after / "s" / "r" / "config.yaml").write_text(f"out: {after}/s/r\nn: 9\n")
    assert snapshot_runs.compare_run(before / "s" / "r", after / "s" / "r", (before, after)) == [
        "config.yaml/n: 8 before, 9 after"]
    write_run(after / "s" / "q", {**run, "run": {"id": "aa", "experiment": "pse", "findings": "bb"}}, "")
    assert snapshot_runs.compare_run(before / "s" / "r", after / "s" / "q") == [
        "metrics.json/run/experiment: 'maps' before, 'pse' after", "config.yaml: missing after"]
