"""Tests for the advspatial command: listing, errors as one line with exit 2, help."""

from __future__ import annotations

import subprocess
import sys

import pytest
from conftest import CNN_ARCH, needs_fashion_mnist
from helpers import run_cli


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
    proc = subprocess.run([sys.executable, "-m", "advspatial.cli", "--help"], capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0 and "advspatial" in proc.stdout


@needs_fashion_mnist
def test_maps_command_gates_the_roi_and_prints_verdicts(cnn_weights, tmp_path, capsys) -> None:
    """``advspatial maps``: the RoI's faithfulness gate, the claims with their verdicts, and a report."""
    import json

    from advspatial.statistics.verdicts import VERDICTS

    out = tmp_path / "maps"
    code, printed, err = run_cli(capsys, "maps", "--model", str(cnn_weights), "--arch", CNN_ARCH, "--attack", "pgd",
                                 "--n", "40", "--batch-size", "20", "--permutations", "300", "--gate-n", "40",
                                 "--out", str(out))
    assert code == 0, err
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["roi"]["method"] == "hirescam"
    assert "faithfulness gate" in printed and metrics["faithfulness"]["hirescam"]["reason"]
    assert all(c["verdict"] in VERDICTS and c["verdict"] in printed for c in metrics["claims"])
    assert sum(c["primary"] for c in metrics["claims"]) == 1
    primary = next(c for c in metrics["claims"] if c["primary"])
    lines = printed.splitlines()
    at = lines.index(f"Primary claim, Holm across attacks: {primary['claim']}")  # named as a claim, on its own line
    assert lines[at + 1].startswith(f"  {primary['subject']}: ") and primary["claim"] not in lines[at + 1]
    html = (out / "report.html").read_text()
    assert "Region of Importance (RoI)" in html and "Faithfulness gate" in html
    # the run's facts, as `advspatial run maps` keeps them: its time, its passes and their phases
    assert metrics["wall_seconds"] > 0 and metrics["cpu_seconds"] > 0
    assert {"statistics", "report"} <= set(metrics["model_passes"]["outside_stages"]["phase_seconds"])
    assert f"the run sent {metrics['model_passes']['forward']:,} images forward" in html


FACTORY = '''
from advspatial.models import build_model


def cnn():
    return build_model("smallcnn")
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
def test_factory_model_runs_spatial_quick_and_torchscript_runs_baseline(cnn_weights, tmp_path, capsys) -> None:
    """The common case: a model defined in Python plus a state dict, through the whole default experiment."""
    import json

    import torch

    factory = tmp_path / "my_models.py"
    factory.write_text(FACTORY)
    out = tmp_path / "spatial"
    code, printed, err = run_cli(capsys, "run", "spatial", "--quick", "--model", f"{factory}:cnn", "--weights",
                                 str(cnn_weights), "--attacks", "pgd,deepfool", "--no-sweep-adaptive",
                                 "--no-progress", "--out", str(out))
    assert code == 0, err
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["clean_accuracy"] > 0.5  # the weights were loaded: an untrained CNN is at chance
    subset = (out / "subset.csv").read_text().splitlines()
    assert subset[0] == "index,label" and len(subset) == 1 + 24
    assert len({line.split(",")[1] for line in subset[1:]}) == 10  # stratified: every class is there
    # TorchScript is fine where only forward passes are needed
    from advspatial.models import load_model

    scripted = tmp_path / "m.pt"
    model = load_model(f"{factory}:cnn", weights=str(cnn_weights))
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


LENET = '''
import torch

from advspatial.models import build_model


def lenet():
    torch.manual_seed(0)
    return build_model("lenet5")


def other():
    torch.manual_seed(1)
    return build_model("lenet5")


def colour():
    torch.manual_seed(0)
    return build_model("lenet5", in_channels=3, num_classes=5, input_size=32)
'''


@pytest.fixture
def lenet_factory(tmp_path):
    """A FILE.py holding two untrained LeNet-5 factories (lenet, other): models that need no training."""
    path = tmp_path / "nets.py"
    path.write_text(LENET)
    return path


def one_line_error(code: int, err: str, fragment: str) -> None:
    assert code == 2, err
    assert fragment in err, err
    assert len(err.strip().splitlines()) == 1, err
    assert "Traceback" not in err


@needs_fashion_mnist
def test_maps_never_reuses_results_made_with_other_settings(lenet_factory, tmp_path, capsys) -> None:
    """A second maps into the same --out with another model used to print the first model's results."""
    out = tmp_path / "maps"
    common = ["maps", "--n", "10", "--batch-size", "10", "--permutations", "50", "--gate-n", "10", "--out", str(out)]
    code, printed, err = run_cli(capsys, *common, "--model", f"{lenet_factory}:lenet")
    assert code == 0, err
    first = (out / "per_image.csv").read_text()
    code, again, err = run_cli(capsys, *common, "--model", f"{lenet_factory}:lenet")  # same settings: completes
    assert code == 0, err
    assert (out / "per_image.csv").read_text() == first
    code, _, err = run_cli(capsys, *common, "--model", f"{lenet_factory}:other")
    one_line_error(code, err, "other settings")
    assert (out / "per_image.csv").read_text() == first


@needs_fashion_mnist
def test_resume_refuses_an_edited_config_and_works_from_a_copy(lenet_factory, tmp_path, capsys) -> None:
    """Resume after editing config.yaml used to label old results with the new settings; a copied
    or moved run directory could not be resumed at all (7)."""
    import shutil

    out = tmp_path / "base"
    code, _, err = run_cli(capsys, "run", "baseline", "--model", f"{lenet_factory}:lenet", "--n", "10",
                           "--no-progress", "--out", str(out))
    assert code == 0, err
    reference = (out / "per_image.csv").read_text()
    copy = tmp_path / "moved" / "copy"
    shutil.copytree(out, copy)
    (copy / "metrics.json").unlink()
    (copy / "per_image.csv").unlink()
    code, _, err = run_cli(capsys, "run", "--resume", str(copy))
    assert code == 0, err
    assert (copy / "per_image.csv").read_text() == reference
    config = out / "config.yaml"
    config.write_text(config.read_text().replace("seed: 0", "seed: 1"))
    code, _, err = run_cli(capsys, "run", "--resume", str(out))
    one_line_error(code, err, "seed: 0 -> 1")
    code, _, err = run_cli(capsys, "run", "pse", "--resume", str(copy))
    one_line_error(code, err, "holds a run of baseline, not pse")


def test_resume_refuses_a_run_whose_stage_files_an_older_version_wrote(lenet_factory, tmp_path, capsys) -> None:
    """Stage files changed their names and saved forms with the stage API: a run directory written
    before (its run.json has no stage format, or another one) is refused in one line, not read as garbage."""
    import json

    out = tmp_path / "old"
    code, _, err = run_cli(capsys, "run", "baseline", "--model", f"{lenet_factory}:lenet", "--n", "10",
                           "--no-progress", "--out", str(out))
    assert code == 0, err
    record = json.loads((out / "run.json").read_text())
    del record["stage_format"]
    (out / "run.json").write_text(json.dumps(record))
    (out / "metrics.json").unlink()
    code, _, err = run_cli(capsys, "run", "--resume", str(out))
    one_line_error(code, err, "written by another advspatial version (stage files of format 1")


def test_a_run_that_fails_before_any_result_can_be_rerun_in_place(lenet_factory, tmp_path, capsys) -> None:
    """A run that failed early (here: a model that cannot take the images) left config.yaml behind, and the same
    command then asked for --resume, which repeated the failure."""
    out = tmp_path / "run"
    args = ["run", "baseline", "--dataset", "synthetic-shapes", "--n", "4", "--no-progress", "--out", str(out)]
    code, _, err = run_cli(capsys, *args, "--model", f"{lenet_factory}:lenet")
    one_line_error(code, err, "cannot take")
    assert (out / "config.yaml").is_file()
    code, _, err = run_cli(capsys, *args, "--model", f"{lenet_factory}:colour")
    assert code == 0, err


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["attack", "--eps", "nan", "--n", "2"], "eps=nan is not a finite number"),
        (["run", "--quick", "--fraction", "nan"], "fraction=nan is not a finite number"),
        (["run", "--quick", "--eps-linf", "nan"], "eps_linf=nan is not a finite number"),
        (["train", "--mode", "pgd", "--eps", "nan"], "eps=nan is not a finite number"),
        (["train", "--lr", "nan"], "lr=nan is not a finite number"),
        (["train", "--mode", "pgd", "--attack-steps", "0"], "attack_steps=0 is out of range"),
        (["run", "--quick", "--fills", ""], "fills and fractions must each name at least one value"),
        (["run", "--quick", "--seed", "100000000000000000000000"], "seed=100000000000000000000000 is out of range"),
        (["run", "spatal"], "unknown experiment 'spatal'; valid: "),
        (["run", "--resume", "x", "--n", "5"], "no config.yaml"),
    ],
)
def test_nan_and_late_checks_are_one_line_before_any_work(capsys, tmp_path, args: list[str], fragment: str) -> None:
    """NaN passed every range check; empty fills and huge seeds failed after the work."""
    out = ["--out", str(tmp_path / "r")] if args[0] == "run" and "--resume" not in args else []
    code, _, err = run_cli(capsys, *args, *out)
    one_line_error(code, err, fragment)
    assert not (tmp_path / "r").exists()


def test_resume_takes_no_other_settings(lenet_factory, tmp_path, capsys) -> None:
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "config.yaml").write_text("experiment: baseline\nn: 4\n")
    code, _, err = run_cli(capsys, "run", "--resume", str(tmp_path / "run"), "--n", "5")
    one_line_error(code, err, "drop --n")


def test_config_file_experiment_is_honoured_or_refused(tmp_path, capsys) -> None:
    """experiment: in a --config file was silently dropped and spatial ran."""
    config = tmp_path / "c.yaml"
    config.write_text("experiment: pse\nn: 0\n")
    code, _, err = run_cli(capsys, "run", "--config", str(config), "--out", str(tmp_path / "r"))
    one_line_error(code, err, "n=0 is out of range")  # pse's settings were resolved
    code, _, err = run_cli(capsys, "run", "baseline", "--config", str(config), "--out", str(tmp_path / "r"))
    one_line_error(code, err, "is for experiment pse, but the command runs baseline")
    binary = tmp_path / "b.yaml"
    binary.write_bytes(b"n: \xff\xfe\x00")
    code, _, err = run_cli(capsys, "run", "--config", str(binary), "--out", str(tmp_path / "r"))
    one_line_error(code, err, "not a UTF-8 text file")


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["attack", "--param", "eps=big"], "--param eps='big' is not valid; valid: a number"),
        (["attack", "--param", "seed=3"], "use --seed"),
        (["attack", "--param", "steps=1.5"], "--param steps=1.5 is not valid; valid: an integer"),
        (["attack", "--param", "random_start=maybe"], "valid: true or false"),
        (["attack", "--out", "/nonexistent/dir/x.pt"], "folder /nonexistent/dir does not exist"),
        (["attack", "--mask", "middle"], "mask 'middle' is neither a file nor one of"),
        (["attack", "--seed", "-1"], "seed=-1 is out of range"),
    ],
)
def test_attack_options_are_typed_and_checked_before_the_attack(capsys, args: list[str], fragment: str) -> None:
    """--param values were untyped (tracebacks, steps=1.5 ran as 1) and an unwritable --out was found only after
    the attack had run."""
    code, _, err = run_cli(capsys, *args, "--n", "2")
    one_line_error(code, err, fragment)


def test_file_system_faults_are_one_line(lenet_factory, tmp_path, capsys, monkeypatch) -> None:
    """--out that is a file, and a full disk while writing the results, were tracebacks."""
    import errno

    from advspatial.experiments import running

    afile = tmp_path / "afile"
    afile.write_text("keep")
    code, _, err = run_cli(capsys, "run", "--quick", "--out", str(afile))
    one_line_error(code, err, "is a file")
    assert afile.read_text() == "keep"

    def disk_full(*args, **kwargs):  # type: ignore[no-untyped-def]
        raise OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "r" / "metrics.json"))

    monkeypatch.setattr(running, "write_results", disk_full)
    code, _, err = run_cli(capsys, "run", "baseline", "--model", f"{lenet_factory}:lenet", "--n", "4",
                           "--no-progress", "--out", str(tmp_path / "r"))
    one_line_error(code, err, "No space left on device")


def test_a_two_class_folder_takes_a_two_class_state_dict(tmp_path, capsys) -> None:
    """A state dict for an imagefolder was always built with 10 classes, so a correct 2-class checkpoint could not
    be loaded; and a folder without train/ and test/ trains and tests on the same images without a word."""
    import torch
    from PIL import Image

    from advspatial.models import build_model

    for k, name in enumerate(("cat", "dog")):
        (tmp_path / "if" / name).mkdir(parents=True)
        for i in range(3):
            Image.new("RGB", (32, 32), (40 + 100 * k, 10 * i, 0)).save(tmp_path / "if" / name / f"{i}.png")
    torch.manual_seed(0)
    torch.save(build_model("lenet5", in_channels=3, num_classes=2, input_size=32).state_dict(), tmp_path / "m.pt")
    code, out, err = run_cli(capsys, "evaluate", "--dataset", f"imagefolder:{tmp_path / 'if'}", "--model",
                             str(tmp_path / "m.pt"), "--arch", "lenet5")
    assert code == 0, err
    assert "(6 images): accuracy" in out
    code, _, err = run_cli(capsys, "evaluate", "--model", "smallcnn", "--arch", "lenet5")
    one_line_error(code, err, "--arch applies to a state-dict --model file")


def test_training_on_a_folder_without_splits_says_so(tmp_path, capsys) -> None:
    from advspatial.training import note_shared_splits

    (tmp_path / "a").mkdir()
    note_shared_splits(f"imagefolder:{tmp_path}")
    assert "trained and tested on the same images" in capsys.readouterr().err
    (tmp_path / "train").mkdir()
    (tmp_path / "test").mkdir()
    note_shared_splits(f"imagefolder:{tmp_path}")
    assert capsys.readouterr().err == ""


def test_a_model_trained_on_first_use_is_never_trained_on_the_images_it_is_measured_on(tmp_path, capsys) -> None:
    """``--model smallcnn`` on images in a file trained the model on those very images, then measured it on them
    (exit 0, a report of a training-set model); a folder without train/ and test/ did the same."""
    import numpy as np
    from PIL import Image

    images = tmp_path / "imgs.npz"
    np.savez(images, images=np.random.default_rng(0).random((8, 1, 28, 28), dtype=np.float32),
             labels=np.arange(8) % 2)
    (tmp_path / "folder" / "a").mkdir(parents=True)
    Image.new("RGB", (32, 32)).save(tmp_path / "folder" / "a" / "0.png")
    for dataset in (f"arrays:{images}", f"imagefolder:{tmp_path / 'folder'}"):
        for command in (["evaluate"], ["run", "maps", "--quick", "--out", str(tmp_path / "run")]):
            code, _, err = run_cli(capsys, *command, "--dataset", dataset, "--model", "smallcnn")
            one_line_error(code, err, "would be trained on first use on the images it is then measured on")
            assert not (tmp_path / "run").exists()
    from advspatial.training import note_shared_splits

    note_shared_splits(f"arrays:{images}")  # ``advspatial train`` still trains there, and says so
    assert "trained and tested on the same images" in capsys.readouterr().err


def test_dependency_warnings_are_one_line_once_and_known_noise_is_dropped(capsys, monkeypatch) -> None:
    """Raw multi-line warnings with source paths reached stderr."""
    import warnings

    from advspatial.cli import listing

    def noisy() -> dict[str, str]:
        for _ in range(3):
            warnings.warn("first line\nsecond line", UserWarning, stacklevel=1)
        warnings.warn("`torch.jit.script` is deprecated. Please switch to torch.compile", DeprecationWarning,
                      stacklevel=1)
        return {"x": "y"}

    real = listing.registries
    monkeypatch.setattr(listing, "registries", lambda: {**real(), "datasets": noisy})
    code, out, err = run_cli(capsys, "list", "datasets")
    assert code == 0 and "x  y" in out
    assert err.splitlines() == ["advspatial: warning: UserWarning: first line; second line"]


def test_every_command_takes_progress_switches(capsys) -> None:
    """attack, maps, train and evaluate had no --no-progress."""
    for command in ("attack", "maps", "train", "evaluate"):
        code, out, _ = run_cli(capsys, command, "--help")
        assert code == 0 and "--progress / --no-progress" in out, command


def test_ctrl_c_during_a_run_says_how_to_resume(lenet_factory, tmp_path, capsys, monkeypatch) -> None:
    """Ctrl-C printed 'aborted' without the --resume hint."""
    from advspatial.experiments import running

    def interrupted(*args, **kwargs):  # type: ignore[no-untyped-def]
        raise KeyboardInterrupt

    monkeypatch.setattr(running, "write_results", interrupted)
    out = tmp_path / "r"
    code, _, err = run_cli(capsys, "run", "baseline", "--model", f"{lenet_factory}:lenet", "--n", "4",
                           "--no-progress", "--out", str(out))
    assert code == 130
    assert err.strip().splitlines()[-1] == f"advspatial: aborted; complete the run with: advspatial run --resume {out}"


def test_evaluate_checks_seeds_and_n_before_any_work(capsys) -> None:
    """A seed torch cannot take passed validation and failed (or trained a new model) later."""
    code, _, err = run_cli(capsys, "evaluate", "--seed", "100000000000000000000000")
    one_line_error(code, err, "seed=100000000000000000000000 is out of range")
    code, _, err = run_cli(capsys, "evaluate", "--model-seed", "-1")
    one_line_error(code, err, "model_seed=-1 is out of range")
    code, _, err = run_cli(capsys, "evaluate", "--n", "0")  # evaluated every image, against --n -3's [1, inf]
    one_line_error(code, err, "n=0 is out of range; valid: [1, inf]")


def test_train_options_are_the_train_config_fields(capsys) -> None:
    """`advspatial train` takes its options from TrainConfig, as `run` takes them from the experiments' configs:
    a field added to TrainConfig is an option."""
    import dataclasses

    from advspatial.training import TrainConfig

    code, out, _ = run_cli(capsys, "train", "--help")
    assert code == 0
    for f in dataclasses.fields(TrainConfig):
        flag = "--model" if f.name == "arch" else "--" + f.name.replace("_", "-")
        assert flag in out, flag
    assert "--force" in out and "--device" in out and "--no-progress" in out


NET = '''
import torch


class Net(torch.nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv = torch.nn.Conv2d(1, 4, 3)
        self.fc = torch.nn.Linear(4 * 13 * 13, 10)

    def forward(self, x):
        return self.fc(torch.max_pool2d(torch.relu(self.conv(x)), 2).flatten(1))


def net():
    return Net()
'''


def test_resume_refuses_changed_model_code_or_images(tmp_path, capsys) -> None:
    """A resume after editing the model's forward (same weights) or overwriting the images used to mix two runs
    with exit 0: only the weights and the settings were checked."""
    import torch

    factory = tmp_path / "net.py"
    factory.write_text(NET)
    images = tmp_path / "images.pt"
    torch.manual_seed(0)
    torch.save({"images": torch.rand(6, 1, 28, 28), "labels": torch.arange(6) % 3}, images)
    out = tmp_path / "run"
    code, _, err = run_cli(capsys, "run", "baseline", "--dataset", f"arrays:{images}", "--model", f"{factory}:net",
                           "--n", "6", "--batch-size", "3", "--no-progress", "--out", str(out))
    assert code == 0, err
    (out / "metrics.json").unlink()  # as if killed before the end
    factory.write_text(NET.replace("torch.max_pool2d(", "torch.nn.functional.avg_pool2d("))
    code, _, err = run_cli(capsys, "run", "--resume", str(out))
    one_line_error(code, err, "other model code")
    factory.write_text(NET)
    torch.save({"images": torch.rand(6, 1, 28, 28), "labels": torch.arange(6) % 3}, images)  # same size, new pixels
    code, _, err = run_cli(capsys, "run", "--resume", str(out))
    one_line_error(code, err, "other images")
