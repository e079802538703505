"""An ``n`` beyond the images a run has: one warning line, and the run's records say the n it used."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from helpers import self_labelled_tiny_cnn

import advspatial


def _baseline(tmp_path: Path, **settings: object) -> Path:
    model, images, labels = self_labelled_tiny_cnn(20)
    out = tmp_path / "run"
    advspatial.run("baseline", model=model, data=(images, labels), out=str(out), progress=False, **settings)
    return out


def test_an_n_beyond_the_images_warns_once_and_records_the_n_used(tmp_path: Path,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    out = _baseline(tmp_path, n=200)
    warnings = [line for line in capsys.readouterr().err.splitlines() if "warning: n=" in line]
    assert len(warnings) == 1 and "n=200 but" in warnings[0] and "has 20 test images" in warnings[0], warnings
    assert warnings[0].endswith("the run uses n=20")
    assert yaml.safe_load((out / "config.yaml").read_text())["n"] == 20
    assert json.loads((out / "run.json").read_text())["config"]["n"] == 20
    assert len((out / "subset.csv").read_text().splitlines()) == 1 + 20


def test_the_default_n_on_fewer_images_is_fitted_without_a_warning(tmp_path: Path,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    out = _baseline(tmp_path)
    assert "warning: n=" not in capsys.readouterr().err
    assert yaml.safe_load((out / "config.yaml").read_text())["n"] == 20


def test_an_n_within_the_images_is_kept(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = _baseline(tmp_path, n=8)
    assert "warning: n=" not in capsys.readouterr().err
    assert yaml.safe_load((out / "config.yaml").read_text())["n"] == 8
