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
