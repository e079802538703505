"""End-to-end check of the perceptual experiment: a CI-sized run on Fashion-MNIST (verdicts, gate, report,
per-image rows, metrics recomputed from them, resume)."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import needs_fashion_mnist
from helpers import ReportParser, without_timings
from torch import nn

from advspatial.faithfulness.record import GateResult
from advspatial.statistics.claims import estimate_of
from advspatial.experiments.measurement.roi import roi_interpretation
from advspatial.experiments.perceptual.config import ATTACKS, STATS, PerceptualConfig
from advspatial.experiments.perceptual.findings import PerceptualFindings, attack_metrics
from advspatial.experiments.perceptual.report import summary_text
from advspatial.experiments.running import run_experiment
from advspatial.experiments.settings import config_from_mapping
from advspatial.statistics.verdicts import VERDICTS, verdict


def _csv_rows(path: Path) -> list[dict]:
    def parse(v: str) -> object:
        if v in ("True", "False"):
            return v == "True"
        try:
            return float(v)
        except ValueError:
            return v

    with open(path) as fh:
        return [{k: parse(v) for k, v in r.items()} for r in csv.DictReader(fh)]


def _same(a: float, b: float) -> bool:
    return (math.isnan(a) and math.isnan(b)) or a == pytest.approx(b, rel=1e-9, abs=1e-12)


@pytest.mark.slow
@needs_fashion_mnist
def test_end_to_end_quick_run_and_resume(trained_tiny_cnn, monkeypatch, tmp_path) -> None:
    # the briefly trained TinyCNN of conftest stands in for the cached default model (training that is too slow)
    resolved: list[str] = []

    def fake_resolve(dataset: str, spec: str, **kw: object) -> nn.Module:
        resolved.append(spec)
        return trained_tiny_cnn

    import advspatial.model_cache

    monkeypatch.setattr(advspatial.model_cache, "resolve_model", fake_resolve)
    out = tmp_path / "run"
    values = {**PerceptualConfig.QUICK, "out": str(out), "progress": False, "device": "cpu"}
    config = config_from_mapping(PerceptualConfig, values)
    config.validate()
    result, rundir = run_experiment("perceptual", config)
    for name in ("config.yaml", "metrics.json", "per_image.csv", "report.html"):
        assert (out / name).is_file()
    figures = {p.name for p in (out / "figures").glob("*.png")}
    assert {"attacks-summary.png", "calibration.png"} <= figures
    metrics = json.loads((out / "metrics.json").read_text())
    rows = _csv_rows(out / "per_image.csv")
    assert len(rows) == 2 * config.n and {r["attack"] for r in rows} == {"ssim-ball", "pgd"}
    # the metrics are recomputed from the rows of the CSV
    for name in ("ssim-ball", "pgd"):
        recomputed = attack_metrics(rows, name)
        for key, field_name in (("fooling_rate", "success_rate"), ("mean_ssim", "mean_ssim"),
                                ("mean_ssim_successful", "mean_ssim_successful"), ("clean_accuracy", "clean_accuracy"),
                                ("mean_l2", "mean_l2")):  # metrics.json key, findings field
            assert _same(metrics["attacks"][name][key], getattr(recomputed, field_name)), (name, key)
        for stat in STATS:
            assert _same(metrics["attacks"][name]["maps"][stat], getattr(recomputed.maps, stat))
        assert metrics["attacks"][name]["successful"] == recomputed.successful
    for r in rows:
        assert 0.0 <= r["ssim"] <= 1.0 + 1e-6
    pgd_linf = [r["linf"] for r in rows if r["attack"] == "pgd"]
    assert max(pgd_linf) <= metrics["pgd_eps"] + 1e-6
    cal = metrics["calibration"]
    assert cal["eps"] == metrics["pgd_eps"] and cal["history"][0][0] == config.eps_max
    ssim_ball = [r["ssim"] for r in rows if r["attack"] == "ssim-ball"]  # in the order of the n images
    assert cal["target"] == pytest.approx(np.mean(ssim_ball[: config.calibration_n]))
    assert metrics["ssim_gap"] == pytest.approx(metrics["attacks"]["pgd"]["mean_ssim"]
                                                - metrics["attacks"]["ssim-ball"]["mean_ssim"])
    # the faithfulness gate ran on this run's CAM and decides how every RoI-dependent number reads
    from advspatial.maps.heads import default_importance_method

    method = default_importance_method(trained_tiny_cnn, torch.zeros(1, 1, 28, 28))[0]
    assert metrics["roi"]["method"] == method == "hirescam"  # TinyCNN has a flatten/FC head
    assert metrics["roi"]["why"] and "flatten" in metrics["roi"]["why"]
    gate = metrics["faithfulness"][method]
    assert set(gate) >= {"passed", "reason", "status", "comparisons", "means", "skipped", "method"}
    assert isinstance(gate["passed"], bool) and gate["reason"]
    assert set(gate["means"]["deletion"]) == set(config.gate_fills) and gate["means"]["attack"]
    # too few images to decide: undecided, not failed, so the randomization checks still ran (a failed check
    # would change the verdict)
    assert gate["status"] == "undecided" and gate["skipped"] == [] and gate["randomization"]
    pgd_rows = [r for r in rows if r["attack"] == "pgd"]  # in the order of the n images
    correct = sum(1 for r in pgd_rows[: config.gate_n] if r["correct"])
    assert gate["n"] == correct  # the gate sees the correctly classified images among the first gate_n
    assert metrics["roi"]["faithful"] is gate["passed"]
    assert not gate["passed"] and "insufficient data: n=" in gate["reason"]  # CI-sized: n < 30
    label = roi_interpretation(GateResult.from_dict(gate))
    assert metrics["roi"]["interpretation"] == label
    # claims: one primary per attack with >= 3 successful images, verdicts from the fixed list, gated
    claims = metrics["claims"]
    assert claims and all(c["verdict"] in VERDICTS for c in claims)
    assert "smoke_test" not in metrics and "(smoke)" not in result.summary  # not made by --quick: real words
    primary = [c for c in claims if c["primary"]]
    testable = [a for a in ATTACKS if metrics["attacks"][a]["successful"] >= 3]
    for null in ("same-class", "geometry"):  # co-location: against the same-class and the geometry null
        assert [c["subject"] for c in primary if c["null"] == null] == testable, null
        assert all(c["statistic"] == "energy_in_roi" for c in primary if c["null"] == null)
    distortion = [c for c in primary if c["subject"] == "ssim-ball vs pgd"]
    # per-image minimal distortion: no RoI involved, only the curves' range (the verdict at each curve's end)
    assert len(distortion) == 1 and set(distortion[0]["gates"]) == {"curve range"}
    own = verdict(estimate_of(distortion[0]["effect"]), distortion[0]["p_adjusted"], {},
                  sesoi=distortion[0]["sesoi"], alpha=config.significance)
    ends = metrics["minimal_distortion"]["bounds"]
    assert set(ends) == {name for name, k in metrics["minimal_distortion"]["capped"].items() if k}
    assert distortion[0]["gates"]["curve range"] == all(end["verdict"] == own for end in ends.values())
    # the summary says which gate made it not interpretable
    assert ("(the curve range gate failed)" in result.summary) is (not distortion[0]["gates"]["curve range"])
    assert len(primary) == 2 * len(testable) + 1
    assert "highest fooling SSIM" in result.summary  # each primary row in the summary names its own null
    if testable:
        assert "vs geometry null" in result.summary and "vs same-class null" in result.summary
    md = metrics["minimal_distortion"]
    assert md["images_both"] == distortion[0]["effect"]["n"]
    # the geometry null has the attack's SSIM on every image it can reach (scaled toward 0 from the set's edge)
    for r in rows:
        assert r["geometry_ssim"] >= r["ssim"] - 1e-3
    matched = [abs(r["geometry_ssim"] - r["ssim"]) < 1e-3 for r in rows]
    assert sum(matched) >= 0.8 * len(rows)
    # the curves: the main budgets among their points, success rates in [0, 1] (metrics.json key: fooling_rate)
    assert config.alpha in [p["budget"] for p in metrics["curves"]["ssim-ball"]]
    assert metrics["pgd_eps"] in [p["budget"] for p in metrics["curves"]["pgd"]]
    assert all(0 <= p["fooling_rate"] <= 1 for pts in metrics["curves"].values() for p in pts)
    for c in claims:
        if c in distortion:
            continue
        assert c["gates"] == {"RoI faithfulness": gate["status"] != "failed"}  # undecided keeps the verdict
        if not all(c["gates"].values()):
            assert c["verdict"] == "not interpretable", c
    for name in ATTACKS:
        assert metrics["attacks"][name]["maps"]["interpretation"] == label
        for stat, by_null in metrics["inference"].get(name, {}).items():
            assert all(cmp["interpretation"] == label for cmp in by_null.values())
            # the engine's observed means are the rows' means over the successful images
            uniform = by_null["uniform"]
            key = {v: k for k, v in STATS.items()}[stat]
            ok = [r[key] for r in rows if r["attack"] == name and r["correct"] and r["success"]]
            assert uniform["observed"] == pytest.approx(np.nanmean(ok), rel=1e-5, abs=1e-6), (name, stat)
            assert uniform["n"] == sum(1 for v in ok if v == v)
    # the report: verdicts first, then the gate, terms spelled out, RoI-dependent numbers labelled
    html = (out / "report.html").read_text()
    parser = ReportParser()
    parser.feed(html)
    assert parser.sections == ["verdicts", "faithfulness", "setup", "attacks-at-matched-ssim", "ssim-maps-vs-cam",
                               "overlap-vs-baseline", "limits", "what-would-decide", "config"]
    assert "Region of Importance (RoI)" in html and "Region of Attack (RoA)" in html and "1 − SSIM map" in html
    verdicts = html[html.index("id='verdicts'") if "id='verdicts'" in html else html.index('id="verdicts"'):]
    first = verdicts[: verdicts.index("</section>")]
    assert "What this run shows" in first and "Verdicts: one row per pre-declared claim" in first
    assert all(c["verdict"] in first for c in primary)
    if gate["status"] == "failed":
        assert "Not interpretable: the RoI failed the faithfulness gate" in first
    else:  # undecided: the verdicts stand, read with the caveat
        assert "RoI faithfulness undecided" in html
    md = metrics["minimal_distortion"]  # the attacks section states the curves' caps and the gate's outcome
    held = "passed" if distortion[0]["gates"]["curve range"] else "failed"
    assert (f"Of those {md['images_both']}, {md['capped']['ssim-ball']} are fooled already" in html
            and f"the curve-range gate {held}" in html)
    assert "<details>" in html  # the long per-statistic table is folded
    assert len(parser.images) == len(figures) and all(src.startswith("data:image/png;base64,")
                                                      for src in parser.images)
    assert "ssim-ball" in result.summary and "pgd" in result.summary
    assert result.summary.startswith(summary_text(PerceptualFindings.from_metrics(metrics)))
    assert result.summary.endswith("(--verbose lists each; the report has them all)")  # the rest counted
    # resume after a "kill": drop a PGD batch, a calibration stage, a gate batch and the results; identical numbers
    (out / "stages/attack/pgd/batch-00001.pt").unlink()
    next((out / "stages/calibration").rglob("*.pt")).unlink()
    next((out / "stages/gate").rglob("batch-*.pt")).unlink()
    (out / "metrics.json").unlink()
    config2 = config_from_mapping(PerceptualConfig, values)
    run_experiment("perceptual", config2, resume=True)
    again = json.loads((out / "metrics.json").read_text())
    assert json.dumps(without_timings(again)) == json.dumps(without_timings(metrics))  # NaN-aware comparison
    assert json.dumps(_csv_rows(out / "per_image.csv")) == json.dumps(rows)  # NaN-aware comparison
    assert resolved == ["smallcnn", "smallcnn"]
