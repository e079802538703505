"""``advspatial report DIR`` re-renders only what its run computed: metrics.json stamped with the run's identity
and checked against its findings' declared types and ranges, config.yaml against run.json, figures only from
regular files inside the run directory; anything else is one line, and the report already there is kept."""

from __future__ import annotations

import base64
import json
import shutil
from pathlib import Path
from typing import Any

import pytest
import torch
from conftest import TinyCNN
from helpers import OUTSIDE_SECRET, plant_outside_figures, run_cli, synthetic_images

import advspatial
from advspatial.experiments.results import findings_checksum

@pytest.fixture(scope="module")
def finished(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished smoke-test maps run of an untrained TinyCNN on synthetic images."""
    out = tmp_path_factory.mktemp("running") / "run"
    torch.manual_seed(0)
    advspatial.run("maps", model=TinyCNN(num_classes=4).eval(), data=synthetic_images(24, seed=2), out=str(out),
                   quick=True, n=24, attacks=["pgd"], panel=[], gate_n=8, randomization_images=2, progress=False)
    return out


def edit_metrics(out: Path, edit: Any, restamp: bool = True) -> None:
    """``edit`` metrics.json; ``restamp``: with its findings checksum made anew, as a file written by hand to pass
    that check would have it (so that what is refused is the edited value itself)."""
    metrics = json.loads((out / "metrics.json").read_text())
    edit(metrics)
    if restamp and isinstance(metrics.get("run"), dict):
        metrics["run"]["findings"] = findings_checksum(metrics)
    (out / "metrics.json").write_text(json.dumps(metrics))


def rename_attack(metrics: dict[str, Any], name: str) -> None:
    metrics["attacks"][name] = metrics["attacks"].pop("pgd")


DAMAGES: dict[str, Any] = {
    "an accuracy of 7": lambda m: m.__setitem__("clean_accuracy", 7),
    "a success rate of 2": lambda m: m["attacks"]["pgd"].__setitem__("success_rate", 2.0),
    "a negative count": lambda m: m.__setitem__("n", -3),
    "an infinite count": lambda m: m["attacks"]["pgd"].__setitem__("images", float("inf")),
    "a count of 2.5": lambda m: m.__setitem__("n", 2.5),
    "a count as text": lambda m: m.__setitem__("n", "24"),
    "a verdict's p of 7": lambda m: m["claims"][0].__setitem__("p", 7.0),
    "a flag as text": lambda m: m["roi"].__setitem__("faithful", "yes"),
    "another run's metrics.json": lambda m: m["run"].__setitem__("id", "0" * 16),
    "a summary edited since the run": lambda m: m["roi"].__setitem__("why", "edited"),
    "an older version's metrics.json": lambda m: m.pop("run"),
    "an attack named ../../../../x": lambda m: rename_attack(m, "../../../../x"),
}


@pytest.mark.parametrize("damage", [*DAMAGES, "deep metrics.json", "an edited config.yaml", "run.json of spatial",
                                    "a figure linked from outside", "figures/ linked from outside",
                                    "metrics.json linked from outside"])
def test_report_of_a_damaged_or_foreign_run_is_one_line_and_keeps_its_report(
        finished: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], damage: str) -> None:
    """Each re-rendered whatever metrics.json held (an accuracy of 7, a count of -3 or infinity, another run's
    findings) with exit 0, embedded a file from outside the run, or ended in a traceback (RecursionError)."""
    out = tmp_path / "run"
    shutil.copytree(finished, out, symlinks=True)
    if damage in DAMAGES:
        edit_metrics(out, DAMAGES[damage], restamp=damage != "a summary edited since the run")
        (out / "figures" / "regions-..").mkdir()  # so that figures/regions-../../../../x.png, the figure of an
        (tmp_path / "x.png").write_bytes(OUTSIDE_SECRET)  # attack named ../../../../x, is the file beside the run
    elif damage == "deep metrics.json":
        (out / "metrics.json").write_text("[" * 100_000 + "]" * 100_000)
    elif damage == "an edited config.yaml":
        (out / "config.yaml").write_text((out / "config.yaml").read_text().replace("\nseed: 0\n", "\nseed: 5\n"))
    elif damage == "run.json of spatial":
        record = json.loads((out / "run.json").read_text())
        (out / "run.json").write_text(json.dumps({**record, "experiment": "spatial"}))
    elif damage in ("a figure linked from outside", "figures/ linked from outside"):
        plant_outside_figures(out, tmp_path, "figure" if damage.startswith("a figure") else "folder")
    elif damage == "metrics.json linked from outside":
        shutil.move(out / "metrics.json", tmp_path / "metrics.json")
        (out / "metrics.json").symlink_to(tmp_path / "metrics.json")
    before = (out / "report.html").read_bytes()
    code, _, err = run_cli(capsys, "report", str(out))
    assert code == 2 and len(err.strip().splitlines()) == 1 and err.startswith("advspatial: error: "), err
    assert (out / "report.html").read_bytes() == before
    assert base64.b64encode(OUTSIDE_SECRET).decode()[:24] not in before.decode()


def test_report_of_an_intact_run_is_the_same_report(finished: Path, capsys: pytest.CaptureFixture[str]) -> None:
    before = (finished / "report.html").read_bytes()
    metrics = json.loads((finished / "metrics.json").read_text())
    assert set(metrics["run"]) == {"id", "experiment", "stage_format", "findings"}
    assert metrics["run"]["experiment"] == "maps"
    code, _, err = run_cli(capsys, "report", str(finished))
    assert code == 0, err
    assert (finished / "report.html").read_bytes() == before



def test_a_run_keeps_what_it_said_it_would_cost_beside_what_it_took(tmp_path: Path, finished: Path,
                                                                     capsys: pytest.CaptureFixture[str]) -> None:
    """A run that states its cost before its first stage keeps that forecast in metrics.json and its report says it
    beside the time the run took, re-rendered from the run's files alone; a smoke test says nothing and keeps none."""
    from advspatial.experiments.propagation.config import PropagationConfig

    out = tmp_path / "run"
    torch.manual_seed(0)
    settings = {**PropagationConfig.QUICK, "n": 8, "batch_size": 4}
    advspatial.run("propagation", model=TinyCNN(num_classes=4).eval(), data=synthetic_images(8, seed=2),
                   out=str(out), progress=True, **settings)
    said = next(line for line in capsys.readouterr().err.splitlines() if line.startswith("advspatial: propagation"))
    metrics = json.loads((out / "metrics.json").read_text())
    forecast = metrics["forecast"]
    assert said.endswith(forecast["sentence"]) and forecast["seconds"] > 0
    assert set(forecast) == {"seconds", "dominant", "dominant_share", "sentence"}
    report = (out / "report.html").read_text()
    ratio = metrics["wall_seconds"] / forecast["seconds"]
    assert "Before its first stage the run said: " in report and f"{ratio:.2f} times the" in report
    before = (out / "report.html").read_bytes()
    code, _, err = run_cli(capsys, "report", str(out))
    assert code == 0, err
    assert (out / "report.html").read_bytes() == before
    assert "forecast" not in json.loads((finished / "metrics.json").read_text())  # a smoke test: no forecast
    assert "Before its first stage" not in (finished / "report.html").read_text()


def test_a_run_from_python_keeps_freed_memory_as_the_command_line_does(tmp_path: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """``advspatial.run`` sets the allocator to keep freed memory before its first stage (the command line sets it
    at start-up), so that a run and its price probe cost the same from Python as from the command line."""
    from advspatial.experiments import running

    calls: list[bool] = []

    def kept() -> bool:
        calls.append((tmp_path / "run" / "stages").exists())
        return True

    monkeypatch.setattr(running, "keep_freed_memory", kept)
    advspatial.run("maps", model=TinyCNN(num_classes=4).eval(), data=synthetic_images(8, seed=2),
                   out=str(tmp_path / "run"), quick=True, n=8, attacks=["pgd"], panel=[], gate_n=8,
                   randomization_images=2, progress=False)
    assert calls == [False]  # once, before the run directory held any stage
    assert (tmp_path / "run" / "metrics.json").exists()
