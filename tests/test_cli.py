"""Tests for the advspatial command: listing, errors as one line with exit 2, help."""

from __future__ import annotations

import subprocess
import sys

import pytest

from helpers import run_cli

from conftest import needs_fashion_mnist


def test_list_shows_every_registry(capsys) -> None:
    code, out, _ = run_cli(capsys, "list")
    assert code == 0
    for heading in ("datasets:", "models:", "attacks:", "experiments:", "training-modes:"):
        assert heading in out
    assert "fashion-mnist" in out and "smallcnn" in out


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["run", "--n", "0"], "n=0 is out of range"),
        (["run", "--dataset", "nope"], "unknown dataset 'nope'"),
        (["evaluate", "--model", "missing.pt"], "no such file"),
        (["train", "--epochs", "0"], "epochs=0 is out of range"),
        (["run", "--resume", "/nonexistent/dir"], "no config.yaml"),
    ],
)
def test_user_errors_are_one_line_exit_2(capsys, args: list[str], fragment: str) -> None:
    code, _, err = run_cli(capsys, *args)
    assert code == 2
    assert fragment in err
    assert len(err.strip().splitlines()) == 1
    assert "Traceback" not in err


def test_run_help_lists_settings_with_defaults(capsys) -> None:
    code, out, _ = run_cli(capsys, "run", "--help")
    assert code == 0
    for option in ("--n", "--seed", "--device", "--out", "--resume", "--quick", "--config"):
        assert option in out
    assert "default" in out


def test_console_script_entry_point() -> None:
    proc = subprocess.run([sys.executable, "-m", "advspatial.cli", "--help"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and "advspatial" in proc.stdout


@needs_fashion_mnist
def test_maps_command_gates_the_roi_and_prints_verdicts(lenet_weights, tmp_path, capsys) -> None:
    """``advspatial maps``: the RoI's faithfulness gate, the claims with their verdicts, and a report."""
    import json

    from advspatial.regions.inference import VERDICTS

    out = tmp_path / "maps"
    code, printed, err = run_cli(capsys, "maps", "--model", str(lenet_weights), "--arch", "lenet5", "--attack", "pgd",
                                 "--n", "40", "--batch-size", "20", "--permutations", "300", "--gate-n", "40",
                                 "--out", str(out))
    assert code == 0, err
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["roi"]["method"] == "hirescam"
    assert "faithfulness gate" in printed and metrics["faithfulness"]["hirescam"]["reason"]
    assert all(c["verdict"] in VERDICTS and c["verdict"] in printed for c in metrics["claims"])
    assert sum(c["primary"] for c in metrics["claims"]) == 1
    html = (out / "report.html").read_text()
    assert "Region of Importance (RoI)" in html and "Faithfulness gate" in html


FACTORY = '''
from advspatial.models import build_model


def lenet():
    return build_model("lenet5")
'''


def test_torchscript_is_refused_before_any_work_by_layer_experiments(tmp_path, capsys) -> None:
    """A TorchScript model cannot give Grad-CAM its layer: one line, exit 2, nothing written."""
    import torch

    from advspatial.models import build_model

    scripted = tmp_path / "m.pt"
    torch.jit.save(torch.jit.trace(build_model("lenet5").eval(), torch.rand(1, 1, 28, 28)), str(scripted))
    for experiment in ("spatial", "perceptual", "pse", "propagation"):
        out = tmp_path / experiment
        code, _, err = run_cli(capsys, "run", experiment, "--model", str(scripted), "--out", str(out))
        assert code == 2, experiment
        assert "TorchScript" in err and "FILE.py:factory" in err and len(err.strip().splitlines()) == 1
        assert not out.exists()


@needs_fashion_mnist
def test_factory_model_runs_spatial_quick_and_torchscript_runs_baseline(lenet_weights, tmp_path, capsys) -> None:
    """The common case: a model defined in Python plus a state dict, through the whole default experiment."""
    import json

    import torch

    factory = tmp_path / "my_models.py"
    factory.write_text(FACTORY)
    out = tmp_path / "spatial"
    code, printed, err = run_cli(capsys, "run", "spatial", "--quick", "--model", f"{factory}:lenet", "--weights",
                                 str(lenet_weights), "--attacks", "pgd,deepfool", "--no-sweep-adaptive",
                                 "--no-progress", "--out", str(out))
    assert code == 0, err
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["clean_accuracy"] > 0.5  # the weights were loaded: an untrained LeNet is at chance
    subset = (out / "subset.csv").read_text().splitlines()
    assert subset[0] == "index,label" and len(subset) == 1 + 24
    assert len({line.split(",")[1] for line in subset[1:]}) == 10  # stratified: every class is there
    # TorchScript is fine where only forward passes are needed
    from advspatial.models import load_model

    scripted = tmp_path / "m.pt"
    model = load_model(f"{factory}:lenet", weights=str(lenet_weights))
    torch.jit.save(torch.jit.trace(model, torch.rand(1, 1, 28, 28)), str(scripted))
    code, printed, err = run_cli(capsys, "run", "baseline", "--model", str(scripted), "--n", "40", "--no-progress",
                                 "--out", str(tmp_path / "baseline"))
    assert code == 0, err
    assert "clean accuracy" in printed


def test_attack_with_a_cam_mask_refuses_torchscript(tmp_path, capsys) -> None:
    import torch

    from advspatial.models import build_model

    scripted = tmp_path / "m.pt"
    torch.jit.save(torch.jit.trace(build_model("lenet5").eval(), torch.rand(1, 1, 28, 28)), str(scripted))
    code, _, err = run_cli(capsys, "attack", "--dataset", "synthetic-shapes", "--model", str(scripted), "--mask", "roi",
                           "--n", "4")
    assert code == 2 and "TorchScript" in err and len(err.strip().splitlines()) == 1
