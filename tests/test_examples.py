"""Every script in examples/ runs, at a tiny size: a copied example works.

Each script is run as ``python examples/NAME.py ARGS`` would run it (``__main__``, its own argument parser), with
arguments that make it tiny: a dozen images, the ``--quick`` smoke-test settings, a tiny model file
(``FILE.py:build``) instead of a model trained on first use, and a generated image folder. What each prints is
checked, and the files it says it wrote exist.
"""

from __future__ import annotations

import runpy
import sys
from pathlib import Path

import pytest
import torch
from helpers import SMALL_RUN, documentation_namespace

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
SHARED = ROOT.parent / "shared" / "data"
CLASSES = ("circle", "square", "stripe")

#: a tiny model file for --model / --models: 3x32x32 images in [0,1], one output per class of the generated folder
TINY_MODEL = f"""
import torch
from torch import nn


def build() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.ReLU(), nn.Conv2d(6, 8, 3, padding=1), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, {len(CLASSES)}))
"""


def run_example(name: str, *args: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """``python examples/NAME ARGS``, in this process."""
    monkeypatch.setattr(sys, "argv", [str(EXAMPLES / name), *args])
    runpy.run_path(str(EXAMPLES / name), run_name="__main__")


@pytest.fixture
def image_folder(tmp_path: Path) -> Path:
    """train/ and test/ with one sub-folder per class of 32x32 PNGs: a bright patch whose place depends on the class,
    on noise (16 training and 8 test images per class)."""
    from PIL import Image

    generator = torch.Generator().manual_seed(0)
    root = tmp_path / "images"
    for split, count in (("train", 16), ("test", 8)):
        for k, name in enumerate(CLASSES):
            (root / split / name).mkdir(parents=True)
            for i in range(count):
                image = torch.rand(32, 32, 3, generator=generator) * 0.4
                image[4 + 8 * k : 12 + 8 * k, 8:24] += 0.6
                pixels = (image.clamp(0, 1) * 255).to(torch.uint8).numpy()
                Image.fromarray(pixels).save(root / split / name / f"{i}.png")
    return root


@pytest.fixture
def tiny_model_file(tmp_path: Path) -> Path:
    path = tmp_path / "tiny_model.py"
    path.write_text(TINY_MODEL)
    return path


def test_every_example_is_run_here() -> None:
    tested = {"own_model_and_folder.py", "analyze_torchattacks.py", "two_model_study.py", "defence_resnet20.py",
              "read_a_run.py"}
    assert {p.name for p in EXAMPLES.glob("*.py")} == tested


def test_own_model_and_folder(image_folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                              capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "own"
    run_example("own_model_and_folder.py", str(image_folder), "--epochs", "1", "--n", "12", "--quick",
                "--out", str(out), monkeypatch=monkeypatch)
    assert f"report: {out / 'report.html'}" in capsys.readouterr().out
    assert (out / "report.html").is_file() and (out / "per_image.csv").is_file()


def test_analyze_torchattacks(image_folder: Path, tiny_model_file: Path, tmp_path: Path,
                              monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("torchattacks", reason="torchattacks is a test dependency (pip install torchattacks)")
    out = tmp_path / "analyze"
    run_example("analyze_torchattacks.py", "--model", f"{tiny_model_file}:build", "--dataset",
                f"imagefolder:{image_folder}", "--n", "12", "--quick", "--out", str(out), monkeypatch=monkeypatch)
    assert f"report: {out / 'report.html'}" in capsys.readouterr().out
    assert "torchattacks PGD" in (out / "config.yaml").read_text()


def test_two_model_study(image_folder: Path, tiny_model_file: Path, tmp_path: Path,
                         monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    other = tmp_path / "other_model.py"
    other.write_text(TINY_MODEL.replace("manual_seed(0)", "manual_seed(1)"))
    out = tmp_path / "study"
    run_example("two_model_study.py", "--models", f"{tiny_model_file}:build,{other}:build", "--dataset",
                f"imagefolder:{image_folder}", "--n", "12", "--quick", "--out", str(out), monkeypatch=monkeypatch)
    printed = capsys.readouterr().out
    assert "study of 2 models" in printed and f"report: {out / 'report.html'}" in printed
    assert (out / "models" / "tiny_model" / "report.html").is_file() and (out / "models" / "other_model").is_dir()


@pytest.mark.skipif(not (SHARED / "cifar10-resnet").is_dir() or not (SHARED / "cifar10-test-jpeg").is_dir(),
                    reason="needs ../shared/data (the pretrained ResNet-20 weights and the CIFAR-10 test JPEGs)")
def test_defence_on_the_pretrained_resnet20(monkeypatch: pytest.MonkeyPatch,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    weights = next((SHARED / "cifar10-resnet").glob("resnet20-*.th"))
    run_example("defence_resnet20.py", "--images", str(SHARED / "cifar10-test-jpeg"), "--weights", str(weights),
                "--n", "4", "--steps", "3", monkeypatch=monkeypatch)
    printed = capsys.readouterr().out
    for row in ("undefended, white-box", "defence, adaptive", "random control, adaptive (EOT)"):
        assert f"robust accuracy, {row}: " in printed


@pytest.fixture
def finished_run(tmp_path: Path) -> Path:
    """A finished quick maps run of the documentation's tiny model."""
    import advspatial

    names = documentation_namespace()
    run = advspatial.run("maps", model=names["model"], data=(names["images"], names["labels"]), attacks=["fgsm"],
                         n=SMALL_RUN["n"], quick=True, progress=False, out=str(tmp_path / "run"))
    return run.rundir


def test_read_a_run(finished_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                    capsys: pytest.CaptureFixture[str]) -> None:
    import json

    claims = json.loads((finished_run / "metrics.json").read_text())["claims"]
    plot = tmp_path / "mine.png"
    run_example("read_a_run.py", str(finished_run), "--out", str(plot), monkeypatch=monkeypatch)
    printed = capsys.readouterr().out
    assert f"{len(claims)} claims" in printed and f"plot: {plot}" in printed
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_read_a_run_writes_its_plot_in_the_current_directory_not_the_run(
        finished_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    here = tmp_path / "here"
    here.mkdir()
    monkeypatch.chdir(here)
    before = sorted(p.name for p in finished_run.rglob("*"))
    run_example("read_a_run.py", str(finished_run), monkeypatch=monkeypatch)
    assert "plot: run-energy.png" in capsys.readouterr().out
    assert (here / "run-energy.png").is_file()
    assert sorted(p.name for p in finished_run.rglob("*")) == before


def damaged_copies(run: Path, root: Path) -> dict[str, Path]:
    """Directories that are not a finished run of their own, each named by what is wrong with it."""
    import json
    import shutil

    cases = {"missing": root / "nothing-here", "study": root / "study", "unfinished": root / "unfinished",
             "nested": root / "nested", "another run's findings": root / "other"}
    cases["study"].mkdir()
    (cases["study"] / "study.yaml").write_text("models: [a, b]\n")
    for name in ("unfinished", "nested", "another run's findings"):
        shutil.copytree(run, cases[name])
    (cases["unfinished"] / "metrics.json").unlink()
    (cases["nested"] / "metrics.json").write_text("[" * 100_000)
    record = json.loads((run / "run.json").read_text())
    record["config"]["seed"] = int(record["config"]["seed"]) + 1  # the record of a run with other settings
    (cases["another run's findings"] / "run.json").write_text(json.dumps(record))
    return cases


def test_read_a_run_refuses_what_is_not_a_finished_run_in_one_line(
        finished_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    for case, directory in damaged_copies(finished_run, tmp_path).items():
        with pytest.raises(SystemExit) as info:
            run_example("read_a_run.py", str(directory), "--out", str(tmp_path / "x.png"), monkeypatch=monkeypatch)
        err = capsys.readouterr().err
        assert info.value.code == 2, case
        assert err.startswith("read_a_run.py: error: ") and len(err.strip().splitlines()) == 1, (case, err)
        assert not (tmp_path / "x.png").exists(), case


@pytest.mark.parametrize("name, args", [
    ("own_model_and_folder.py", ["/nonexistent/images", "--epochs", "1", "--n", "4", "--quick", "--out", "OUT"]),
    ("two_model_study.py", ["--models", "nosuchmodel,other", "--n", "4", "--quick", "--out", "OUT"]),
    ("analyze_torchattacks.py", ["--dataset", "imagefolder:/nonexistent/images", "--n", "4", "--out", "OUT"]),
    ("defence_resnet20.py", ["--images", "/nonexistent/images", "--weights", "/nonexistent/w.th", "--n", "2"]),
])
def test_an_example_ends_in_one_line_on_bad_input(name: str, args: list[str], tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    if name == "analyze_torchattacks.py":
        pytest.importorskip("torchattacks", reason="torchattacks is a test dependency (pip install torchattacks)")
    with pytest.raises(SystemExit) as info:
        run_example(name, *[str(tmp_path / "out") if a == "OUT" else a for a in args], monkeypatch=monkeypatch)
    err = capsys.readouterr().err
    assert info.value.code == 2
    assert err.startswith(f"{name}: error: ") and len(err.strip().splitlines()) == 1, err


def test_split_imagefolder_ends_in_one_line_on_bad_input(tmp_path: Path, image_folder: Path,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    split = runpy.run_path(str(ROOT / "scripts" / "split_imagefolder.py"))["main"]
    a_file = tmp_path / "a-file"
    a_file.write_text("x")
    for source, target in ((tmp_path / "missing", tmp_path / "t1"), (a_file, tmp_path / "t2"),
                           (image_folder / "test", a_file)):
        assert split([str(source), str(target)]) == 2
        err = capsys.readouterr().err
        assert err.startswith("split_imagefolder.py: error: ") and len(err.strip().splitlines()) == 1, err
    assert split([str(image_folder / "test"), str(tmp_path / "split"), "--every", "4"]) == 0
    assert len(list((tmp_path / "split" / "test").rglob("*.png"))) == 3 * 2


def test_analyze_torchattacks_draws_every_class(image_folder: Path, tiny_model_file: Path, tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """The first images of a class folder are all of one class: the example draws the same number per class."""
    pytest.importorskip("torchattacks", reason="torchattacks is a test dependency (pip install torchattacks)")
    out = tmp_path / "analyze"
    run_example("analyze_torchattacks.py", "--model", f"{tiny_model_file}:build", "--dataset",
                f"imagefolder:{image_folder}", "--n", "6", "--quick", "--out", str(out), monkeypatch=monkeypatch)
    labels = [line.split(",")[1] for line in (out / "subset.csv").read_text().splitlines()[1:]]
    assert sorted(labels) == ["0", "0", "1", "1", "2", "2"]


def test_the_example_warns_when_one_class_dominates(capsys: pytest.CaptureFixture[str]) -> None:
    warn = runpy.run_path(str(EXAMPLES / "analyze_torchattacks.py"))["warn_if_one_class_dominates"]
    warn(torch.tensor([0, 1, 2, 0]))
    assert capsys.readouterr().err == ""
    warn(torch.tensor([0, 0, 0, 1]))
    assert "class 0 holds 3 of the 4 images" in capsys.readouterr().err
