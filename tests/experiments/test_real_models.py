"""The seeds' settings on the shared real data: a pretrained CIFAR-10 ResNet on the test JPEGs, through the CLI.

Skipped with a reason where ``../shared/data`` (beside the repository) is absent.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers import run_cli

SHARED = Path(__file__).resolve().parents[2].parent / "shared" / "data"
CIFAR_JPEG = SHARED / "cifar10-test-jpeg"
RESNET = SHARED / "cifar10-resnet"

needs_cifar = pytest.mark.skipif(not (CIFAR_JPEG.is_dir() and RESNET.is_dir()),
                                 reason=f"shared CIFAR-10 JPEGs / ResNet weights not found under {SHARED}")


@needs_cifar
def test_resnet20_on_200_stratified_jpegs(tmp_path, capsys, monkeypatch) -> None:
    """Zoo weights found through $ADVSPATIAL_DATA (checksum checked); a class-stratified 200, 20 per class."""
    monkeypatch.setenv("ADVSPATIAL_DATA", str(SHARED))
    monkeypatch.setenv("ADVSPATIAL_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "baseline"
    code, printed, err = run_cli(capsys, "run", "baseline", "--dataset", f"imagefolder:{CIFAR_JPEG}", "--model",
                                 "cifar10-resnet20", "--n", "200", "--no-progress", "--out", str(out))
    assert code == 0, err
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["n"] == 200 and metrics["clean_accuracy"] > 0.7
    labels = [line.split(",")[1] for line in (out / "subset.csv").read_text().splitlines()[1:]]
    assert sorted(labels.count(str(k)) for k in range(10)) == [20] * 10
    import yaml

    config = yaml.safe_load((out / "config.yaml").read_text())
    assert config["preset"] == "cifar10" and config["subset"] == "stratified"


@needs_cifar
def test_resnet20_through_a_factory_file_equals_the_zoo_model(tmp_path, capsys, monkeypatch) -> None:
    """A user's own module (FILE.py:factory) with --weights gives the zoo model's predictions."""
    factory = tmp_path / "resnets.py"
    factory.write_text(
        "from advspatial.models import Normalized\n"
        "from advspatial.models.cifar_resnet import cifar_resnet\n\n"
        "def resnet20():\n"
        "    return Normalized(cifar_resnet(20), (0.485, 0.456, 0.406), (0.229, 0.224, 0.225))\n"
    )
    weights = RESNET / "resnet20-12fca82f.th"
    accuracies = []
    for model in (f"{factory}:resnet20", "cifar10-resnet20"):
        code, printed, err = run_cli(capsys, "evaluate", "--dataset", f"imagefolder:{CIFAR_JPEG}", "--model", model,
                                     "--weights", str(weights), "--n", "100")
        assert code == 0, err
        accuracies.append(float(printed.split("accuracy ")[1].split()[0]))
    assert accuracies[0] == accuracies[1] > 0.7
