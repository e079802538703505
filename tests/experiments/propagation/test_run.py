"""An end-to-end CI-sized run of the propagation experiment on Fashion-MNIST, with resume."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import pytest
from conftest import needs_fashion_mnist
from helpers import ReportParser, assert_smoke_test, saved_trained_model, without_timings

from advspatial.experiments.propagation.claims import CONTROL_NULLS, MATCHED_NULL
from advspatial.experiments.propagation.config import PropagationConfig
from advspatial.experiments.propagation.findings import PropagationFindings
from advspatial.experiments.propagation.report import render
from advspatial.experiments.running import run_experiment
from advspatial.experiments.smoke import unmark_tree, would_read
from advspatial.statistics.accuracy import wilson_interval


def _wilson(successes: int, trials: int) -> tuple[float, float]:
    share = wilson_interval(successes, trials)
    return share.low, share.high


# -- end to end --------------------------------------------------------------------------------

@pytest.fixture(scope="session")
def briefly_trained_smallcnn(tmp_path_factory) -> Path:
    """A smallcnn trained for a few seconds (weak, so one-pixel attacks succeed often), saved as a state dict."""
    return saved_trained_model(tmp_path_factory.mktemp("model"), "smallcnn", 640, epochs=1, batch=32, lr=3e-3)


def _read_rows(path: Path) -> list[dict]:
    def value(text: str):
        if text in ("True", "False"):
            return text == "True"
        try:
            return int(text)
        except ValueError:
            try:
                return float(text)
            except ValueError:
                return text

    with path.open() as f:
        return [{k: value(v) for k, v in row.items()} for row in csv.DictReader(f)]


@pytest.mark.slow
@needs_fashion_mnist
def test_quick_run_end_to_end_with_resume(tmp_path, briefly_trained_smallcnn):
    config = PropagationConfig(**{**PropagationConfig.QUICK, "n": 16, "batch_size": 8, "smoke_test": True},
                                    model=str(briefly_trained_smallcnn), arch="smallcnn",
                                    out=str(tmp_path / "run"), progress=False, device="cpu")
    config.validate()
    result, rundir = run_experiment("propagation", config)
    out = rundir.path
    for name in ("config.yaml", "metrics.json", "per_image.csv", "report.html"):
        assert (out / name).is_file()
    metrics = json.loads((out / "metrics.json").read_text())
    rows = _read_rows(out / "per_image.csv")
    assert len(rows) == config.n * len(config.pixels_list)

    # every metric recomputed from the rows
    for k in config.pixels_list:
        group = [r for r in rows if r["k"] == k]
        correct = [r for r in group if r["correct"]]
        ok = [r for r in correct if r["analysed"]]
        m = metrics["k"][str(k)]
        assert m["success"]["successes"] == len(ok) and m["success"]["trials"] == len(correct)
        assert [m["success"]["ci_low"], m["success"]["ci_high"]] == pytest.approx(_wilson(len(ok), len(correct)))
        for r in ok:
            assert r["success"] and r["label"] != r["adv_pred"] and r["original_fooled"] is True
            assert len(str(r["pixels"]).split()) == k and 1 <= r["l0"] <= k
        for radius in config.radii:
            trials = sum(r[f"ring{radius}_n"] for r in ok)
            fooled = sum(r[f"ring{radius}_fooled"] for r in ok)
            assert m["locality"][f"r{radius}"]["trials"] == trials
            assert m["locality"][f"r{radius}"]["successes"] == fooled
        assert m["locality"]["random"]["trials"] == config.n_random * len(ok)
        if ok:
            assert [d["relative_depth"] for d in m["depth"]] == pytest.approx(
                [(i + 1) / len(m["depth"]) for i in range(len(m["depth"]))])
            assert m["depth"] and m["depth"][-1]["max_pm_max"] == pytest.approx(max(r["pm_peak_last"] for r in ok))
            assert all(0 <= d["spread"] <= 1 for d in m["depth"])
    assert any(metrics["k"][str(k)]["success"]["successes"] for k in config.pixels_list), "no attack succeeded"

    # verdict rows: propagation per se at the last layer (vs 0 and vs the fraction) and, per k, r = min(radii) vs the
    # matched control are primary; the attack vs both propagation controls is secondary
    from advspatial.statistics.verdicts import VERDICTS

    claims = metrics["claims"]
    primary = [c for c in claims if c["primary"]]
    assert len(primary) == 2 + len(config.pixels_list)
    assert all(would_read(c["verdict"]) in VERDICTS for c in claims)
    per_se = [c for c in primary if c["subject"] == "random one-pixel change"]
    first_k = [r for r in rows if r["k"] == config.pixels_list[0]]
    assert len(per_se) == 2 and all(c["effect"]["n"] == config.n for c in per_se)
    assert per_se[0]["effect"]["mean"] == pytest.approx(sum(r["random_peak_last"] for r in first_k) / config.n)
    layers = metrics["per_se"]["layers"]
    assert layers[-1]["relative_depth"] == 1.0 and layers[-1]["ratio"]["mean"] == pytest.approx(per_se[0]["observed"])
    assert [d["depth"] for d in layers] == list(range(len(layers)))
    for k in config.pixels_list:
        mine = [c for c in primary if c["subject"] == f"{k}-pixel attack"]
        assert [c["null"] for c in mine] == [MATCHED_NULL]
        ok = [r for r in rows if r["k"] == k and r["correct"] and r["analysed"]]
        loc = mine[0]
        assert loc["effect"]["n"] <= len(ok)
        last = next(c for c in claims if c["subject"] == f"{k}-pixel attack" and c["null"] == CONTROL_NULLS["position"]
                    and c["statistic"].startswith("peak PMmax @ ") and c["statistic"].endswith(layers[-1]["layer"]))
        assert not last["primary"]
        pos = last
        paired = [r for r in ok if r["control_position_peak_last"] != ""]
        assert pos["effect"]["n"] == len(paired)
        if paired:  # the last layer's peaks in the rows are the ones the claim compares
            diff = [r["pm_peak_last"] - r["control_position_peak_last"] for r in paired]
            assert pos["effect"]["mean"] == pytest.approx(sum(diff) / len(diff), rel=1e-5, abs=1e-7)
        if len(ok) < 30:
            assert all(would_read(c["verdict"]) == "insufficient data" for c in mine)

    # the report: every section and every figure embedded
    parser = ReportParser()
    parser.feed((out / "report.html").read_text())
    for section in ("verdicts", "setup", "per-se", "attacks", "propagation", "control", "locality", "limits"):
        assert section in parser.sections
    html = (out / "report.html").read_text()
    assert html.index('id="verdicts"') < html.index('id="setup"')  # the verdicts come first
    assert "context-matched random placement" in html and "cluster-bootstrap" in html
    figures = sorted(p.name for p in (out / "figures").glob("*.png"))
    assert {"depth-curves.png", "locality.png", "mean-propagation.png", "per-se.png"} <= set(figures)
    assert len(parser.images) == len(figures) and all(s.startswith("data:image/png;base64,") for s in parser.images)
    assert "success" in result.summary and "propagation per se" in result.summary
    assert "context-matched random placement" in result.summary
    assert_smoke_test(out, result.summary)  # the quick settings decide nothing, and the run says so
    # the report renders from the config and the findings alone: a figure is shown only where its file is
    findings = PropagationFindings.from_metrics(unmark_tree(metrics))
    shown = [f.path.name for s in render(config, findings, out / "figures").sections for f in s.figures]
    assert sorted(shown) == figures
    assert not any(s.figures for s in render(config, findings, tmp_path / "no-figures").sections)

    # an interrupted run resumes to identical results
    csv_text = (out / "per_image.csv").read_text()
    stages = out / "stages"
    (stages / "attack" / f"k{config.pixels_list[-1]}" / "batch-00001.pt").unlink()
    (stages / "propagation" / f"k{config.pixels_list[-1]}" / "batch-00001.pt").unlink()
    (stages / "random" / "batch-00000.pt").unlink()
    shutil.rmtree(stages / "locality" / f"k{config.pixels_list[-1]}")
    resumed, _ = run_experiment("propagation", config, resume=True)
    assert_smoke_test(out, resumed.summary)
    again = json.loads((out / "metrics.json").read_text())
    assert without_timings(again) == without_timings(metrics)
    assert (out / "per_image.csv").read_text() == csv_text
