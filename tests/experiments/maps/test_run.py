"""The ``maps`` experiment as registered (experiments/maps/run.py, findings.py, report.py): a run's metrics.json
reads back as its findings (:class:`MapsFindings`) and the summary renders from them alone, each attack's success
first."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from conftest import TinyCNN
from helpers import synthetic_images

import advspatial
from advspatial.api import RunResult
from advspatial.experiments.findings import RUN_KEYS
from advspatial.experiments.maps import MapsFindings
from advspatial.experiments.maps.report import render


@pytest.fixture(scope="module")
def finished(tmp_path_factory: pytest.TempPathFactory) -> RunResult:
    """A finished smoke-test maps run of two attacks on an untrained TinyCNN and synthetic images."""
    out = tmp_path_factory.mktemp("maps") / "run"
    torch.manual_seed(0)
    return advspatial.run("maps", model=TinyCNN(num_classes=4).eval(), data=synthetic_images(24, seed=2),
                          out=str(out), quick=True, n=24, attacks=["fgsm", "pgd"], panel=[], gate_n=8,
                          randomization_images=2, progress=False)


def test_metrics_json_reads_back_as_the_findings_it_serializes(finished: RunResult) -> None:
    metrics = json.loads((finished.rundir / "metrics.json").read_text())
    findings = MapsFindings.from_metrics(metrics)
    written = {k: v for k, v in metrics.items() if k not in RUN_KEYS}
    assert json.dumps(findings.to_metrics()) == json.dumps(written)
    assert list(findings.attacks) == ["fgsm", "pgd"] and findings.n == 24


def test_the_summary_renders_from_the_findings_each_attacks_success_first(finished: RunResult,
                                                                          tmp_path: Path) -> None:
    findings = MapsFindings.from_metrics(json.loads((finished.rundir / "metrics.json").read_text()))
    rendered = render(finished.config, findings, tmp_path)
    lines = rendered.summary.splitlines()
    for line, (name, outcome) in zip(lines, findings.attacks.items(), strict=False):
        assert line == (f"{name} on {outcome.images} images: success rate {outcome.success_rate:.3f}, "
                        f"{outcome.successful} successful attacks analysed")
    assert len(lines) > len(findings.attacks) and rendered.summary in finished.summary


def test_a_second_run_on_the_same_model_and_images_reads_the_model_only_stages_back(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The gate's randomization checks, budget, control maps and columns depend only on the model, the images and a
    few settings: a run with other attacks reads them from the model cache, with the same gate record, and its
    report says so."""
    monkeypatch.setenv("ADVSPATIAL_MODEL_WORK", str(tmp_path / "model-work"))

    def run(name: str, attacks: list[str], **options: object) -> dict:
        torch.manual_seed(0)
        result = advspatial.run("maps", model=TinyCNN(num_classes=4).eval(), data=synthetic_images(24, seed=2),
                                out=str(tmp_path / name), quick=True, n=24, attacks=attacks, panel=[], gate_n=8,
                                randomization_images=2, progress=False, **options)
        return json.loads((result.rundir / "metrics.json").read_text()) | {"report": (
            result.rundir / "report.html").read_text()}

    first, again = run("first", ["fgsm", "pgd"]), run("again", ["fgsm"])
    reused = again["model_passes"]["reused_stages"]
    assert {"gate/hirescam/randomization", "gate/hirescam/mprt", "gate/control/maps"} <= set(reused), reused
    assert any(k.startswith("gate/budget/") for k in reused) and any(k.startswith("gate/hirescam/f") for k in reused)
    assert "reused_stages" not in first["model_passes"]
    assert first["faithfulness"] == again["faithfulness"]
    assert "read from the model cache" in again["report"] and "read from the model cache" not in first["report"]
    off = run("off", ["fgsm"], reuse_model_work=False)
    assert "reused_stages" not in off["model_passes"] and off["faithfulness"] == first["faithfulness"]
