"""``advspatial study`` on bad input: one line and exit 2, before any model is loaded or trained."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import needs_fashion_mnist
from helpers import run_cli


def one_line(code: int, err: str, fragment: str) -> None:
    assert code == 2, err
    assert fragment in err, err
    assert len(err.strip().splitlines()) == 1, err


@pytest.mark.parametrize(("args", "fragment"), [
    (["--models", "smallcnn"], "a study compares at least 2 models, got 1"),
    ([], "name the models to compare"),
    (["--models", "nosuch,smallcnn"], "model nosuch: unknown model 'nosuch'"),
    (["--models", "smallcnn,smallcnn"], "share the label 'smallcnn'"),
    (["--models", "smallcnn,lenet5", "--n", "0"], "n=0 is out of range"),
])
def test_bad_models_or_settings_are_one_line(capsys, tmp_path: Path, args: list[str], fragment: str) -> None:
    one_line(*run_cli(capsys, "study", *args, "--out", str(tmp_path / "s"))[::2], fragment)
    assert not (tmp_path / "s").exists()


def test_models_measured_differently_are_refused(capsys, tmp_path: Path) -> None:
    config = tmp_path / "study.yaml"
    config.write_text("models:\n  - {model: smallcnn, preset: mnist}\n  - lenet5\n")
    code, _, err = run_cli(capsys, "study", "--config", str(config), "--out", str(tmp_path / "s"))
    one_line(code, err, "models smallcnn and lenet5 would be measured differently (eps_linf")


def test_a_model_entry_with_an_unknown_key_is_one_line(capsys, tmp_path: Path) -> None:
    config = tmp_path / "study.yaml"
    config.write_text("models:\n  - {model: smallcnn, wieghts: x.pt}\n  - lenet5\n")
    code, _, err = run_cli(capsys, "study", "--config", str(config))
    one_line(code, err, "models[0] has unknown key(s) ['wieghts']")


def test_resume_needs_a_study_directory(capsys, tmp_path: Path) -> None:
    code, _, err = run_cli(capsys, "study", "--resume", str(tmp_path))
    one_line(code, err, "no study.yaml there")
    code, _, err = run_cli(capsys, "study", "--resume", str(tmp_path), "--models", "a,b")
    one_line(code, err, "--resume completes a study with its own models and settings")


def test_the_study_lists_in_help(capsys) -> None:
    code, out, _ = run_cli(capsys, "--help")
    assert code == 0 and "study" in out
    code, out, _ = run_cli(capsys, "study", "--help")
    assert code == 0 and "--models" in out and "--eps-linf" in out and "--weights" not in out


@pytest.mark.parametrize(("text", "fragment"), [
    ("models: 5\n", "models is 5 (int); valid: a list of model specs"),
    ("experiment: spatial\nmodels: [smallcnn, lenet5]\n", "experiment='spatial'; a study runs the maps measurement"),
    ("model: lenet5\nmodels: [smallcnn, lenet5]\n", "model is not a shared setting of a study"),
    ("out: elsewhere\nmodels: [smallcnn, lenet5]\n", "out is not a shared setting of a study; valid: --out"),
    ("n: abc\nmodels: [smallcnn, lenet5]\n", "n='abc' is not valid; valid: an integer"),
    ("n: true\nmodels: [smallcnn, lenet5]\n", "n=True is not valid; valid: an integer"),
    ("models:\n  - {model: smallcnn, batch_size: true}\n  - lenet5\n", "models[0]: batch_size=True is not valid"),
    ("models:\n  - {model: smallcnn, covariates: {clean_accuracy: 7}}\n  - lenet5\n",
     "'clean_accuracy' is measured by the study"),
    ("models:\n  - {model: smallcnn, covariates: {epochs: " + "9" * 400 + "}}\n  - lenet5\n",
     "models[0].covariates.epochs is too large"),
])
def test_a_study_yaml_line_that_would_be_ignored_or_crash_is_one_line(capsys, monkeypatch, tmp_path: Path,
                                                                      text: str, fragment: str) -> None:
    """``models: 5`` (TypeError), a covariate too large for a float (OverflowError), ``experiment: spatial`` (ran
    maps), a shared ``model:`` or ``out:`` (ignored, yet shown), ``n: abc`` beside ``--n`` (ignored),
    ``batch_size: true`` for one model (ran with 1) and a stated covariate named like a measured one (it replaced
    the measured clean accuracy) each ran on; now each is refused before any model is loaded."""
    def loaded(*args: object) -> None:
        raise AssertionError("the study went on to load its models")

    monkeypatch.setattr("advspatial.studies.run.preflight", loaded)
    config = tmp_path / "study.yaml"
    config.write_text(text)
    code, _, err = run_cli(capsys, "study", "--config", str(config), "--n", "8", "--out", str(tmp_path / "s"))
    one_line(code, err, fragment)


NET = """
import torch

from advspatial.models import build_model


def make():
    torch.manual_seed(SEED)
    return build_model("lenet5")
"""


@needs_fashion_mnist
def test_ctrl_c_during_a_study_says_how_to_resume(capsys, monkeypatch, tmp_path: Path) -> None:
    from advspatial.studies import run as study_run

    def interrupted(*args, **kwargs):  # type: ignore[no-untyped-def]
        raise KeyboardInterrupt

    for seed, name in enumerate(("a", "b")):  # two untrained LeNet-5s (labels a and b): no training
        (tmp_path / f"{name}.py").write_text(NET.replace("SEED", str(seed)))
    monkeypatch.setattr(study_run, "measure_model", interrupted)
    out = tmp_path / "s"
    code, _, err = run_cli(capsys, "study", "--models", f"{tmp_path / 'a.py'}:make,{tmp_path / 'b.py'}:make",
                           "--quick", "--n", "8",
                           "--attacks", "fgsm", "--no-progress", "--out", str(out))
    assert code == 130, err
    assert err.strip().splitlines()[-1] == ("advspatial: aborted; complete the study with: advspatial study "
                                            f"--resume {out}")
