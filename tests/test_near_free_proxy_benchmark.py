"""benchmarks/near_free_proxy.py: its classifier costs next to nothing at both sizes, and the script runs an
experiment end to end on an image folder with the device's path forced and prints the run's ledger."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from advspatial import host_syncs
from helpers import load_script

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "near_free_proxy.py"
near_free_proxy = load_script(SCRIPT, "near_free_proxy")


@pytest.mark.parametrize("size", [32, 224])
def test_the_classifier_is_a_few_thousand_weights_to_a_logit_per_class(size: int) -> None:
    model = near_free_proxy.near_free_classifier(size, 10)
    assert model(torch.rand(2, 3, size, size)).shape == (2, 10)
    assert sum(p.numel() for p in model.parameters()) < 10_000  # ResNet-20: 0.27 M


def test_the_script_runs_an_experiment_on_the_device_path_and_prints_its_ledger(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    rng = np.random.default_rng(0)
    for c in range(2):
        (tmp_path / "images" / f"class{c}").mkdir(parents=True)
        for i in range(20):
            pixels = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8) // (1 + c)  # class 1 darker
            Image.fromarray(pixels).save(tmp_path / "images" / f"class{c}" / f"{i}.png")
    monkeypatch.setattr(host_syncs, "DEVICE_PATH_ON_CPU", False)  # the script sets it; restored after the test
    monkeypatch.setattr(sys, "argv", ["near_free_proxy.py", "--images", str(tmp_path / "images"), "--n", "8",
                                      "--train", "16", "--experiment", "maps", "--quick", "--batch-size", "4",
                                      "--out", str(tmp_path / "run"), "--output", str(tmp_path / "proxy.json")])
    threads = torch.get_num_threads()
    try:
        near_free_proxy.main()
    finally:
        torch.set_num_threads(threads)  # the script sets its own
    out = capsys.readouterr().out
    assert "near-free classifier: accuracy" in out and "maps, n = 8:" in out
    assert "(run)" in out and (tmp_path / "run" / "metrics.json").is_file()
    assert host_syncs.DEVICE_PATH_ON_CPU
    written = json.loads((tmp_path / "proxy.json").read_text())
    assert written["device_path"] and written["ledger"]["(run)"]["calls"] > 0
    config = (tmp_path / "run" / "config.yaml").read_text()
    assert written["batch_size"] == 4 and "batch_size: 4" in config
    assert "reuse_model_work: false" in config  # each run compared makes its model-only stages


def test_the_script_stops_a_run_as_the_stage_it_names_begins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    """``--until attack``: the gates and the stages before them run and are kept, nothing of the attacks."""
    rng = np.random.default_rng(1)
    for c in range(2):
        (tmp_path / "images" / f"class{c}").mkdir(parents=True)
        for i in range(20):
            Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8) // (1 + c)).save(
                tmp_path / "images" / f"class{c}" / f"{i}.png")
    monkeypatch.setattr(host_syncs, "DEVICE_PATH_ON_CPU", False)
    monkeypatch.setattr(sys, "argv", ["near_free_proxy.py", "--images", str(tmp_path / "images"), "--n", "8",
                                      "--train", "16", "--experiment", "maps", "--quick", "--until", "attack",
                                      "--out", str(tmp_path / "run")])
    threads = torch.get_num_threads()
    try:
        near_free_proxy.main()
    finally:
        torch.set_num_threads(threads)
    out = capsys.readouterr().out
    assert "stopped as stage attack/" in out and "(run)" in out
    stages = tmp_path / "run" / "stages"
    assert any(stages.glob("gate/**/*.pt")) and not any(stages.glob("attack/**/*.pt"))
    assert not (tmp_path / "run" / "metrics.json").exists()


def test_a_missing_folder_is_skipped_with_its_reason(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "argv", ["near_free_proxy.py", "--images", str(tmp_path / "absent")])
    with pytest.raises(SystemExit, match="skipped: no image folder"):
        near_free_proxy.main()


@pytest.mark.parametrize("device_stacking", [False, True])
def test_roads_solves_and_steps_are_counted_and_a_devices_stacking_makes_one_solve_of_the_regions(
        device_stacking: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    """``--device-stacking``: the CPU stacks a batch's ROAD regions as a device does (one solve, not one a region),
    counted with the solver's steps; the setting a CPU keeps comes back after the block."""
    from advspatial import stacked_runs
    from advspatial.faithfulness import deletion

    monkeypatch.setattr(host_syncs, "DEVICE_PATH_ON_CPU", True)
    x = torch.rand(3, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    regions = [torch.zeros(3, 16, 16, dtype=torch.bool) for _ in range(4)]
    for k, region in enumerate(regions):
        region[:, 2 + k:8 + k, 3:9 + k] = True
    ids = torch.arange(3)
    road = deletion.make_deletion_fill("road", {}, x, 0, ids)
    kept = stacked_runs.CPU_STACK_ELEMENTS
    with near_free_proxy.road_counted(device_stacking) as counts:
        assert (stacked_runs.CPU_STACK_ELEMENTS == stacked_runs.STACK_ELEMENTS) is device_stacking
        fills = list(deletion.filled_images(road, x, regions))
    assert stacked_runs.CPU_STACK_ELEMENTS == kept
    assert len(fills) == 4 and counts["road_solves"] == (1 if device_stacking else 4)
    assert counts["road_steps"] >= counts["road_solves"]  # each solve makes at least one step
