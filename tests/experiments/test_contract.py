"""The fast contract of every registered experiment, in one process on synthetic data.

Beside the slow torchrun contract (tests/test_distributed.py), every experiment runs here at its
registry line's tiny settings (``contract=``) on 4-class synthetic images (a bright square in one of four
quadrants) with a TinyCNN trained on them for a second, through :func:`advspatial.run`. Then:

* the run writes its files and its metrics are finite where they are numbers;
* an experiment with typed findings round-trips: ``metrics.json`` read back as its findings dataclass and
  serialized again is the same data (nothing the report uses lives outside the findings);
* ``advspatial report DIR`` re-renders the report from the run's files alone, byte for byte the same.

A newly registered experiment is covered by its registry line alone.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import pytest
import torch
from conftest import TinyCNN
from helpers import run_contract, synthetic_images
from torch import nn

from advspatial.experiments import experiments
from advspatial.experiments.findings import RUN_KEYS
from advspatial.experiments.running import rerender_report
from advspatial.experiments.smoke import mark_tree, unmark_tree

CLASSES = 4


@pytest.fixture(scope="module")
def synthetic_setting() -> dict[str, Any]:
    """The model, the test and the training images every experiment runs on here."""
    train = synthetic_images(400, seed=1)
    torch.manual_seed(0)
    model = TinyCNN(num_classes=CLASSES)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(60):
        index = torch.randint(0, len(train[1]), (32,))
        loss = nn.functional.cross_entropy(model(train[0][index]), train[1][index])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
    test = synthetic_images(40, seed=2)
    accuracy = float((model(test[0]).argmax(1) == test[1]).float().mean())
    assert accuracy > 0.9, f"the synthetic task is learnt (accuracy {accuracy:.2f})"
    return {"model": model, "data": test, "train_data": train}


def finite_numbers(value: Any) -> bool:
    """True when no number in ``value`` is infinite (NaN is a stated "undefined" and allowed)."""
    if isinstance(value, dict):
        return all(finite_numbers(v) for v in value.values())
    if isinstance(value, list):
        return all(finite_numbers(v) for v in value)
    return not (isinstance(value, float) and value in (float("inf"), float("-inf")))


def as_text(metrics: Any) -> str:
    """Metrics as sorted JSON text (NaN compares equal to NaN this way)."""
    return json.dumps(metrics, sort_keys=True)


@pytest.mark.parametrize("name", sorted(experiments()))
def test_experiment_contract_on_synthetic_data(name: str, synthetic_setting: dict[str, Any], tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / name
    run_contract(name, synthetic_setting, out)
    for file in ("config.yaml", "metrics.json", "per_image.csv", "report.html", "run.json"):
        assert (out / file).is_file(), f"{name} did not write {file}"
    metrics = json.loads((out / "metrics.json").read_text())
    assert finite_numbers(metrics)
    assert_passes_add_up(metrics["model_passes"], (out / "report.html").read_text())
    assert_phases_named(name, metrics["model_passes"])
    experiment = experiments()[name]
    findings = experiment.findings.from_metrics(unmark_tree(metrics))
    written = {k: v for k, v in metrics.items() if k not in RUN_KEYS}
    assert as_text(mark_tree(findings.to_metrics())) == as_text(written), (
        f"{name}: metrics.json does not round-trip through {experiment.findings.__name__}")
    report = (out / "report.html").read_text()
    rerender_report(out)
    assert (out / "report.html").read_text() == report, f"{name}: the re-rendered report differs"
    assert_plan_reads_the_run(out, report, capsys)


def assert_plan_reads_the_run(out: Path, report: str, capsys: pytest.CaptureFixture[str]) -> None:
    """``advspatial plan`` reads the finished run (exit 0) and lists what the report's last section lists."""
    from helpers import run_cli

    code, printed, err = run_cli(capsys, "plan", str(out))
    assert code == 0, err
    assert "What more data would decide" in report
    if "is decided: more images would not change" in report:
        assert printed.startswith("every gate comparison and claim of this run is decided")
    elif "makes no gate comparison and no claim" in report:  # the baseline: nothing to decide
        assert printed.startswith("this run makes no gate comparison and no claim")
    else:
        assert " undecided; images that would decide each at 80% power" in printed


def assert_passes_add_up(passes: dict[str, Any], report: str) -> None:
    """The run's model passes are its stages' and those outside stages, per image of its test images, and the
    report's setup section states them."""
    for kind in ("forward", "backward", "calls"):
        assert passes[kind] == sum(s[kind] for s in passes["stages"].values()) + passes["outside_stages"][kind]
    assert passes["forward"] > 0 and passes["complete"]
    assert passes["forward_per_image"] == round(passes["forward"] / passes["images"], 1)
    assert f"Model passes: the run sent {passes['forward']:,} images forward" in report


def assert_phases_named(name: str, passes: dict[str, Any]) -> None:
    """The run's time outside its stages is split into the phases every experiment has (the statistics and the
    report; the figures where it draws any), not left in "other"."""
    named = {"statistics", "report"} | ({"figures"} if name != "baseline" else set())
    phases = passes["outside_stages"]["phase_seconds"]
    assert named <= set(phases), f"{name} names no phase {sorted(named - set(phases))} of its time"


WITH_FIGURES = sorted(name for name, e in experiments().items()
                      if "figure_images" in {f.name for f in dataclasses.fields(e.config_cls)})


@pytest.mark.parametrize("name", WITH_FIGURES)
def test_no_example_images_draws_no_example_figure(name: str, synthetic_setting: dict[str, Any],
                                                   tmp_path: Path) -> None:
    """``figure_images=0`` is a valid setting: the run completes and its report embeds exactly the figures it drew
    (one ``<figure>`` per PNG in figures/, none for the example images)."""
    out = tmp_path / name
    run_contract(name, synthetic_setting, out, figure_images=0)
    report = (out / "report.html").read_text()
    assert report.count("<figure>") == len(list((out / "figures").glob("*.png")))


def test_report_of_a_damaged_run_is_one_line(synthetic_setting: dict[str, Any], tmp_path: Path, capsys) -> None:
    """``advspatial report`` on a metrics.json that lacks a part or holds a wrong type says so in one line naming
    the file (exit 2), never with a traceback."""
    from helpers import run_cli

    out = tmp_path / "baseline"
    run_contract("baseline", synthetic_setting, out)
    metrics = json.loads((out / "metrics.json").read_text())
    for damaged in ({**metrics, "clean_accuracy": "abc"}, {k: v for k, v in metrics.items() if k != "n"}):
        (out / "metrics.json").write_text(json.dumps(damaged))
        code, _, err = run_cli(capsys, "report", str(out))
        assert code == 2 and err.count("\n") == 1 and "metrics.json" in err, err
