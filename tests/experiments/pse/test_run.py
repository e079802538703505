"""A CI-sized end-to-end run of ``pse``: consistent results, the gate and its claims, and resume."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import pytest
import torch
from helpers import ReportParser, without_timings
from torch import nn

from advspatial.analysis.pse_types import TYPE_NAMES
from advspatial.experiments.pse.control import SHARE_NAMES
from advspatial.faithfulness.record import GateResult
from advspatial.experiments.measurement.roi import roi_caveat
from advspatial.experiments.pse import PSEConfig
from advspatial.experiments.pse.rows import CAM_KEYS
from advspatial.experiments.pse.claims import TYPING_NULL
from advspatial.statistics.verdicts import VERDICTS


def _train(arch: str, dataset: str, n: int, batches: int, path: Path) -> Path:
    from advspatial.data import load_dataset
    from advspatial.training import TrainConfig, build_for

    train = load_dataset(dataset, "train").head(n)
    torch.manual_seed(0)
    model = build_for(TrainConfig(dataset=dataset, arch=arch), train)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    model.train()
    g = torch.Generator().manual_seed(0)
    for _ in range(batches):
        idx = torch.randint(0, n, (64,), generator=g)
        loss = nn.functional.cross_entropy(model(train.images(idx)), train.labels[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    torch.save(model.eval().state_dict(), path)
    return path


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    from advspatial.experiments import run_experiment

    tmp = tmp_path_factory.mktemp("pse")
    main = _train("smallcnn", "synthetic-shapes", 2000, 30, tmp / "shapes.pt")  # a dataset with concept masks
    config = PSEConfig(**{**PSEConfig.QUICK, "dataset": "synthetic-shapes", "n": 12, "batch_size": 6,
                              "cw_steps": 5, "cw_search_steps": 2, "steps": 5, "permutations": 10, "mask_random": 1,
                              "unit_train_n": 12, "stability_images": 6, "superpixels": 20, "block": 4,
                              "correlation_permutations": 50, "model": str(main), "arch": "smallcnn",
                              "progress": False, "device": "cpu", "out": str(tmp / "run")})
    config.validate()
    result, rundir = run_experiment("pse", config)
    return config, result, rundir


SECTIONS = ["verdicts", "faithfulness", "setup", "perturbation-types", "typing-stability", "image-level", "unit-level",
            "dissection", "limits", "what-would-decide", "config"]


def _csv_rows(path: Path) -> list[dict[str, str]]:
    with path.open() as handle:
        return list(csv.DictReader(handle))


def _f(value: str) -> float:
    return math.nan if value == "" else float(value)


@pytest.mark.slow
def test_quick_run_writes_consistent_results(quick_run) -> None:
    config, result, rundir = quick_run
    for name in ("config.yaml", "metrics.json", "per_image.csv", "report.html"):
        assert (rundir.path / name).is_file(), name
    metrics = json.loads((rundir.path / "metrics.json").read_text())
    rows = _csv_rows(rundir.path / "per_image.csv")
    variants = [f"{a}/{m}" for a in config.attacks for m in config.modes]
    subset_ids = [int(r["index"]) for r in _csv_rows(rundir.path / "subset.csv")]
    assert len(subset_ids) == config.n and subset_ids == sorted(subset_ids)
    assert list(metrics["variants"]) == variants
    assert len(rows) == config.n * len(variants)
    for v in variants:
        group = [r for r in rows if r["variant"] == v]
        assert [int(r["index"]) for r in group] == subset_ids  # the global ids of the chosen images, in order
        ok = [r for r in group if r["successful"] == "True"]
        m = metrics["variants"][v]
        assert m["successful"] == len(ok)
        correct = [r for r in group if r["correct"] == "True"]
        assert math.isclose(m["success_rate"], sum(r["success"] == "True" for r in correct) / len(correct))
        assert all(r["target"] != r["label"] for r in group)  # t is pre-specified, never the label
        if not v.endswith("untargeted"):
            assert all((r["adv_pred"] == r["target"]) == (r["success"] == "True") for r in group)
        for name in TYPE_NAMES:
            if ok:
                assert math.isclose(m["type_fractions"][name],
                                    sum(r["perturbation_type"] == name for r in ok) / len(ok))
                assert math.isclose(m["mean_shares"][name], sum(float(r[f"share:{name}"]) for r in ok) / len(ok),
                                    rel_tol=1e-9)
        tested = [r for r in ok if r["in_cam_test"] == "True"]
        expected = min(len(ok), config.permutation_images) if len(ok) >= 2 else 0  # one image: no baseline
        assert m["cam_test_images"] == len(tested) == expected
        if m["cam_test"] is not None:
            for key in CAM_KEYS:
                for name in TYPE_NAMES:
                    vals = [_f(r[f"{key}:{name}"]) for r in tested if not math.isnan(_f(r[f"{key}:{name}"]))]
                    observed = m["cam_test"][key][name]["observed"]
                    if vals:
                        assert math.isclose(observed, sum(vals) / len(vals), rel_tol=1e-6)
                        assert 0 < m["cam_test"][key][name]["p_value"] <= 1
                    else:
                        assert observed is None or math.isnan(observed)
        assert m["units_ranked_on"]["split"] == "train" and m["units_ranked_on"]["test_ids_among_them"] == 0
        assert m["units_ranked_on"]["images"] == config.unit_train_n
        assert 0 < m["adaptive"]["masked"]["k"] < metrics["units"]
        assert 0 <= m["adaptive"]["masked"]["robust_acc"] <= 1 and "masked model" in m["adaptive"]["attack"]
        assert "APGD-CE/APGD-DLR/Square ensemble" in m["adaptive"]["attack"]
        assert {"kappa=1.5", "kappa=3", "leave-one-out", "4x4", "superpixels"} <= set(m["stability"])
        assert sum(int(r["groups_untyped"]) for r in ok) == m["untyped_groups"]
        typing = m["typing"]
        if ok:
            for name in SHARE_NAMES:
                for prefix, key in (("", "energy_shares"), ("control:", "control_energy_shares")):
                    values = [float(r[f"{prefix}energy:{name}"]) for r in ok]
                    assert math.isclose(typing[key][name], sum(values) / len(values), rel_tol=1e-9, abs_tol=1e-12)
            assert math.isclose(sum(typing["control_energy_shares"].values()), 1.0, rel_tol=1e-6)
            assert math.isclose(typing["untyped_share"]["by_count"], m["untyped_groups"] / m["perturbed_groups"])
            assert math.isclose(typing["additivity"]["p_isolated_sum"], m["mean_p_groups_sum"])
        assert all(math.isnan(_f(r["control:energy:untyped"])) for r in group if r["successful"] != "True")
        curve = m["masking"]
        assert curve["evaluation"].startswith("no adaptive attack yet")
        assert curve["ks"][0] == 0 and curve["ks"][-1] == metrics["units"]
        assert math.isclose(curve["clean_acc"][0], metrics["clean_accuracy"], abs_tol=1e-9)
        adv_acc = sum(r["adv_pred"] == r["label"] for r in group) / len(group)
        assert math.isclose(curve["robust_acc"][0], adv_acc, abs_tol=1e-9)
    d = metrics["dissection"]
    assert d["dissected"] and d["model"] == "the analysed model" and d["dataset"] == config.dataset
    assert len(d["best_iou"]) == len(d["relative_sensitivity"]) == 64
    assert d["units_included"] + d["units_never_active"] == 64 == len(d["active"])
    assert not any(c.startswith("shape:") for c in d["concepts"]) and "object-boundary" in d["concepts"]
    assert all(0 <= v <= 1 for v in d["best_iou"])
    assert "pgd/untargeted" in result.summary and "dissection" in result.summary
    assert "does not explain most" in result.summary and "random signs" in result.summary

    report = ReportParser()
    html = (rundir.path / "report.html").read_text()
    report.feed(html)
    assert report.sections == SECTIONS  # the verdicts first, then the gate, then the analyses
    assert "Region of Importance (RoI)" in html and "Region of Attack (RoA)" in html
    assert html.index("Region of Importance (RoI)") < html.index('id="faithfulness"')
    assert "no adaptive attack yet" in html
    assert "What the typing explains" in html and "The typing as a claim" in html
    assert "ensemble" in html[html.index('id="unit-level"'):]  # the masked model is attacked by the ensemble
    pngs = sorted(p.name for p in rundir.figures.glob("*.png"))
    for name in ("perturbation-types.png", "unit-sensitivity.png", "masking-curve.png", "dissection.png", "forest.png"):
        assert name in pngs
    assert len(report.images) == len(pngs)
    assert all(src.startswith("data:image/png;base64,") and len(src) > 1000 for src in report.images)


@pytest.mark.slow
def test_quick_run_gate_claims_and_verdicts(quick_run) -> None:
    """The gate runs on the CAM the run uses; claims carry it; 12 images cannot decide it (n < 30): it is undecided,
    so the CAM claims keep their verdicts (insufficient data) with its caveat, and its randomization checks ran."""
    config, result, rundir = quick_run
    metrics = json.loads((rundir.path / "metrics.json").read_text())
    roi = metrics["roi"]
    assert set(roi) == {"method", "why", "faithful", "interpretation", "status"}
    assert roi["method"] == "hirescam" and "flatten/FC head" in roi["why"]  # smallcnn: auto picks by head type
    gate = metrics["faithfulness"][roi["method"]]
    assert set(gate) >= {"passed", "reason", "status", "n", "comparisons", "per_class", "skipped", "method"}
    measures = gate["comparisons"]["location"]["decisions"]
    assert {m.split(":", 1)[1] for m in measures if m.startswith("deletion:")} == set(config.gate_fills)
    assert gate["fraction"] == config.top_fraction and gate["n"] <= config.n
    assert gate["status"] == "undecided" and "insufficient data" in gate["reason"]
    # undecided, not failed: its randomization checks ran, since they could still change the verdict
    assert gate["skipped"] == [] and "randomization" in gate
    caveat = roi_caveat(GateResult.from_dict(gate))
    label = roi["interpretation"]
    assert roi["faithful"] is False and roi["status"] == "undecided" and label == f"interpretable; {caveat}"
    claims = metrics["claims"]
    tested = [v for v, m in metrics["variants"].items() if m["cam_test"] is not None]
    assert tested
    for v in tested:
        nulls = metrics["variants"][v]["cam_test"]["nulls"]
        assert nulls[:3] == ["uniform", "any-class", "same-class"]  # the engine's hierarchy, as in spatial
        assert set(nulls) <= {"uniform", "any-class", "same-class", "object-conditioned"}
        cam = [c for c in claims if c["subject"] == v and c["null"] not in (TYPING_NULL, "one half")]
        assert len(cam) == 8 * len(nulls)
        primary = [c for c in cam if c["primary"]]
        assert [c["statistic"] for c in primary] == ["suppression share in CAM_t0(x)", "promotion share in CAM_t(x')"]
        assert {c["null"] for c in primary} == {config.baseline}
        assert metrics["variants"][v]["cam_test"]["interpretation"] == label
    for m in metrics["variants"].values():
        assert m["cam_interpretation"] == label
    for c in claims:
        assert c["verdict"] in VERDICTS
        if c["null"] in (TYPING_NULL, "one half"):  # the typing rests on no CAM: 12 images are simply too few
            assert c["gates"] == {} and c["verdict"] == "insufficient data"
        else:
            assert c["gates"] == {"RoI faithfulness": True} and c["verdict"] == "insufficient data"
            assert c["caveats"] == [caveat]
    for v, m in metrics["variants"].items():
        typing = [c for c in claims if c["subject"] == v and c["null"] in (TYPING_NULL, "one half")]
        assert [(c["statistic"], c["primary"]) for c in typing] == [
            ("suppression energy share", True), ("promotion energy share", True), ("balanced energy share", False),
            ("untyped energy share", False)]
        assert m["typing_verdicts"] == {c["statistic"]: c["verdict"] for c in typing}
    html = (rundir.path / "report.html").read_text()
    verdicts = html[html.index('id="verdicts"'):html.index('id="faithfulness"')]
    assert "NOT INTERPRETABLE" not in verdicts and "INSUFFICIENT DATA" in verdicts
    assert caveat[:40] in verdicts
    assert "faithfulness gate undecided" in result.summary
    # settings not made by --quick (smoke_test unset): the real words, no smoke label
    assert "smoke_test" not in metrics and "(smoke)" not in html and not result.summary.startswith("smoke test")


@pytest.mark.slow
def test_resume_recomputes_missing_stages_identically(quick_run) -> None:
    from advspatial.experiments import run_experiment

    config, _, rundir = quick_run
    before_rows = (rundir.path / "per_image.csv").read_text()
    before = json.loads((rundir.path / "metrics.json").read_text())
    gate_stages = sorted((rundir.stages / "gate").rglob("batch-00000.pt"))
    assert gate_stages, "the gate's batches are cached in the run directory"
    gate_stages[0].unlink()
    for stage in ("pse/isolated/pgd/targeted/batch-00001", "pse/control/pgd/untargeted/batch-00000",
                  "pse/leave-one-out/pgd/untargeted/batch-00000",
                  "stability/pgd/untargeted/batch-00000", "units/train/pgd/untargeted/batch-00001",
                  "adaptive/unmasked/batch-00000", "masking/cw-l2/untargeted/batch-00000", "dissection/result"):
        rundir.stage_path(stage).unlink()
    run_experiment("pse", config, resume=True)
    after = json.loads((rundir.path / "metrics.json").read_text())
    assert (rundir.path / "per_image.csv").read_text() == before_rows
    assert json.dumps(without_timings(after), sort_keys=True) == json.dumps(without_timings(before), sort_keys=True)
