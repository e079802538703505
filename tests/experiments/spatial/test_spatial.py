"""End-to-end checks of the spatial experiment on a CI-sized real run.

One uninterrupted run and one run killed mid-way then resumed: both must give
identical per-image rows (same seed, resumability); every reported number is
recomputed from those rows; the HTML report must hold every section and figure.
"""

from __future__ import annotations

import csv
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
import torch
import yaml
from conftest import CNN_ARCH, needs_fashion_mnist
from helpers import SYNC_KEYS, ReportParser, assert_smoke_test, without_timings

from advspatial.errors import ConfigError
from advspatial.experiments import get_experiment, resolve_config, run_experiment
from advspatial.experiments.findings import RUN_KEYS
from advspatial.experiments.smoke import would_read
from advspatial.experiments.spatial.findings import SpatialAttackOutcome, SpatialFindings

pytestmark = [pytest.mark.slow, needs_fashion_mnist, pytest.mark.xdist_group("spatial-run")]

SETTINGS = {"n": 12, "batch_size": 6, "onepixel_n": 6, "prior_n": 12, "figure_images": 2}
SECTIONS = ["verdicts", "faithfulness", "setup", "attacks", "where-they-act", "overlap-vs-baseline", "defence",
            "limits", "what-would-decide", "config"]


def quick_config(weights: Path, out: Path, **extra):  # type: ignore[no-untyped-def]
    values = {**SETTINGS, "model": str(weights), "arch": CNN_ARCH, "out": str(out), "progress": False, **extra}
    return resolve_config(get_experiment("spatial"), None, values, quick=True)


@pytest.fixture(scope="module")
def finished_run(cnn_weights, tmp_path_factory):
    out = tmp_path_factory.mktemp("spatial") / "run"
    result, rundir = run_experiment("spatial", quick_config(cnn_weights, out))
    return result, rundir.path


def read_rows(path: Path) -> list[dict[str, str]]:
    with path.open() as fh:
        return list(csv.DictReader(fh))


def as_float(value: str) -> float:
    return float(value) if value not in ("", "nan") else math.nan


def mean(values: list[float]) -> float:
    finite = [v for v in values if not math.isnan(v)]
    return sum(finite) / len(finite) if finite else math.nan


def close(a: float, b: float) -> bool:
    return (math.isnan(a) and math.isnan(b)) or math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-9)


def test_run_directory_contents(finished_run) -> None:
    _, path = finished_run
    for name in ("config.yaml", "metrics.json", "per_image.csv", "report.html"):
        assert (path / name).is_file(), name
    config = yaml.safe_load((path / "config.yaml").read_text())
    assert config["experiment"] == "spatial" and config["n"] == 12 and config["arch"] == CNN_ARCH
    figures = {p.name for p in (path / "figures").glob("*.png")}
    assert {"defence-sweep.png", "frequency-roi.png", "frequency-roa.png", "frequency-difference.png"} <= figures
    assert any(name.startswith("regions-") for name in figures)


def test_metrics_json_holds_the_findings_in_their_order_and_reads_back(finished_run) -> None:
    """The findings inherit the measurement's parts, yet metrics.json keeps each defence part beside the measured
    part it belongs to, and reads back as the same findings (each attack's outcome with its controls' spread)."""
    _, path = finished_run
    metrics = json.loads((path / "metrics.json").read_text())
    written = [k for k in metrics if k not in RUN_KEYS]
    assert written[:7] == ["n", "clean_accuracy", "nonadaptive", "clean_cost", "attacks", "defence_attack", "sweep"]
    assert written[7:10] == ["faithfulness", "roi", "inference"]
    assert written[-3:] == ["claims", "defence_interpretation", "adaptive"]
    findings = SpatialFindings.from_metrics(metrics)
    assert json.dumps(findings.to_metrics()) == json.dumps({k: metrics[k] for k in written})
    assert all(isinstance(o, SpatialAttackOutcome) and o.control_draws for o in findings.attacks.values())


def test_metrics_agree_with_per_image_rows(finished_run) -> None:
    _, path = finished_run
    metrics = json.loads((path / "metrics.json").read_text())
    rows = read_rows(path / "per_image.csv")
    attacks = metrics["attacks"]
    assert set(attacks) == {r["attack"] for r in rows}
    for name, m in attacks.items():
        group = [r for r in rows if r["attack"] == name]
        expected_images = SETTINGS["onepixel_n"] if name == "onepixel" else SETTINGS["n"]
        assert m["images"] == len(group) == expected_images
        correct = [r for r in group if r["correct"] == "True"]
        ok = [r for r in correct if r["success"] == "True"]
        assert m["successful"] == len(ok)
        assert close(m["success_rate"], mean([float(r["success"] == "True") for r in correct]))
        assert close(m["mean_l2"], mean([float(r["l2"]) for r in ok]))
        assert close(m["adversarial_accuracy"], mean([float(r["adv_pred"] == r["label"]) for r in group]))
        for kind, stats in m["maps"].items():
            complete = [r for r in ok if r.get(f"{kind}:flagged", "False") != "True"]
            for stat in ("iou", "energy_in_roi", "spearman", "both", "neither"):
                assert close(stats[stat], mean([as_float(r[f"{kind}:{stat}"]) for r in complete])), (name, kind, stat)
            if f"{kind}:flagged" in group[0]:
                assert close(stats["flagged_share"], mean([float(r[f"{kind}:flagged"] == "True") for r in ok]))
            for r in ok:  # the four parts partition the image
                total = sum(float(r[f"{kind}:{p}"]) for p in ("both", "roi_only", "roa_only", "neither"))
                assert math.isclose(total, 1.0, abs_tol=1e-6)
        for column, accuracy in m["defence"].items():
            assert close(accuracy, recompute_defence(group, column)), (name, column)
    first = [r for r in rows if r["attack"] == "fgsm"]
    assert set(metrics["clean_cost"]) == {"gradient:defended_clean", "gradient:control_clean",
                                          "prior:defended_clean", "prior:control_clean"}
    for column, accuracy in metrics["clean_cost"].items():
        assert close(accuracy, recompute_defence(first, column))
    assert close(metrics["clean_accuracy"],
                 mean([float(r["correct"] == "True") for r in rows if r["attack"] == "fgsm"]))


def recompute_defence(group: list[dict[str, str]], column: str) -> float:
    """A defence accuracy from the rows: a prediction column, or a control's share of correct draws."""
    tag, what = column.split(":")
    if f"{tag}:pred_{what}" in group[0]:
        return mean([float(r[f"{tag}:pred_{what}"] == r["label"]) for r in group])
    return mean([float(r[f"{tag}:correct_{what}"]) for r in group])


def test_defence_evaluation_is_adaptive_paired_and_labelled(finished_run) -> None:
    """The main defence has adaptive numbers beside the undefended white-box one and a rule verdict; every other
    configuration is listed as not evaluated adaptively (the default); each component has its own curve; the
    harm claim has a verdict; a weak EOT (--quick) is labelled and decides nothing."""
    from advspatial.experiments.spatial.claims import HARM_WORDS, VERDICT_WORDS, WEAK_EOT

    _, path = finished_run
    metrics = json.loads((path / "metrics.json").read_text())
    ad = metrics["adaptive"]
    keys = set(ad["settings"])
    assert {"main", "prior"} <= keys and any(k.startswith("sweep|") for k in keys)
    for key, row in ad["settings"].items():
        assert would_read(row["verdict"]) in VERDICT_WORDS
        if key != "main":
            assert not row["evaluated"]
            assert would_read(row["verdict"]) in ("not evaluated adaptively", "not interpretable")
            continue
        for name in ("adaptive:identity", "adaptive:local", "adaptive:worst", "clean"):
            acc = row[name]
            assert acc["low"] <= acc["value"] <= acc["high"] and acc["n"] == ad["images"]
        assert row["adaptive:worst"]["value"] <= min(row["adaptive:identity"]["value"], row["adaptive:local"]["value"])
        for cmp in (row["vs_control"], row["vs_undefended"]):
            assert cmp["p_adjusted"] >= cmp["p"] - 1e-12 and cmp["delta"]["low"] <= cmp["delta"]["high"]
        # --quick attacks the randomized control with a weak EOT: nothing may rest on it (with the RoI's gate
        # undecided on so few images, the verdict is held by its sample size or its checks)
        assert not row["control_full_strength"] and would_read(row["verdict"]) in (
            "not checked", "not converged", "not interpretable", "worse than undefended", "insufficient data")
        conv = row["convergence"]
        assert any(k.startswith("steps=") for k in conv["defended"]["accuracy"])
        # the budget's EOT and beyond: the points below it (read by no rule) are opt-in, curve_below_budget
        assert set(conv["control"]["accuracy"]) == {"eot=2", "eot=4"}
    assert ad["convergence"] == ad["settings"]["main"]["convergence"]["defended"]
    assert ad["undefended"]["convergence"]["n"] == ad["images"]
    assert would_read(ad["harm"]["verdict"]) in HARM_WORDS and "p_adjusted" in ad["harm"]["comparison"]
    assert all(k.startswith("made on") for k in ad["transfer"])  # transfer numbers are labelled as such
    assert set(ad["baselines"]) == {"blur|1", "noise|0.2", "jpeg|20"}
    assert ad["baselines"]["noise|0.2"]["label"] == WEAK_EOT and not ad["baselines"]["blur|1"]["label"]
    assert set(ad["baselines"]["noise|0.2"]["convergence"]["accuracy"]) == {"eot=2", "eot=4"}
    figures = {p.name for p in (path / "figures").glob("*.png")}
    assert {"defence-convergence.png", "defence-tradeoff.png"} <= figures
    report = (path / "report.html").read_text()
    assert "clean-restore diagnostic" in report and WEAK_EOT in report and "not evaluated adaptively" in report


def test_claims_follow_their_gates_and_rules(finished_run) -> None:
    """Every claim has a verdict from the fixed list; a failed RoI gate makes it 'not interpretable', an undecided one
    keeps the verdict and adds its caveat."""
    from advspatial.statistics.verdicts import VERDICTS

    _, path = finished_run
    metrics = json.loads((path / "metrics.json").read_text())
    assert metrics["roi"]["method"] == "hirescam"  # the CNN has a flatten/FC head
    gate = metrics["faithfulness"]["hirescam"]
    assert set(gate) >= {"passed", "reason", "status", "comparisons", "control", "restricted_attack", "randomization"}
    assert metrics["roi"]["faithful"] == gate["passed"] and metrics["roi"]["status"] == gate["status"]
    claims = metrics["claims"]
    assert claims and all(would_read(c["verdict"]) in VERDICTS for c in claims)
    primary = [c for c in claims if c["primary"]]
    assert len({c["subject"] for c in primary}) == len(primary) >= 1
    for c in claims:
        if not all(c["gates"].values()):
            assert would_read(c["verdict"]) == "not interpretable", c
        assert c["statistic"] not in ("iou", "dice") or "onepixel" not in c["subject"]
        assert c["p_adjusted"] != c["p_adjusted"] or c["p_adjusted"] >= c["p"] - 1e-12
        if c["gates"].get("RoI faithfulness") and gate["status"] in ("undecided", "cannot judge"):
            assert c["caveats"], c
    if gate["status"] == "failed":
        assert would_read(metrics["defence_interpretation"]).startswith("not interpretable")


def test_quick_run_is_a_smoke_test_and_says_so(finished_run) -> None:
    result, path = finished_run
    assert_smoke_test(path, result.summary)


def test_norms_respect_budgets(finished_run) -> None:
    _, path = finished_run
    rows = read_rows(path / "per_image.csv")
    for r in rows:
        if r["attack"] in ("fgsm", "pgd"):
            assert float(r["linf"]) <= 0.1 + 1e-6
        if r["attack"] == "pgd-l2":
            assert float(r["l2"]) <= 1.5 + 1e-5
        if r["attack"] == "onepixel":
            assert int(r["l0"]) <= 1


def test_report_renders_every_section_and_figure(finished_run) -> None:
    _, path = finished_run
    parser = ReportParser()
    html = (path / "report.html").read_text()
    parser.feed(html)
    assert parser.sections == SECTIONS
    assert "Region of Importance (RoI)" in html and "Region of Attack (RoA)" in html
    figures = list((path / "figures").glob("*.png"))
    assert len(parser.images) == len(figures) > 0
    assert all(src.startswith("data:image/png;base64,") and len(src) > 1000 for src in parser.images)


def test_the_runs_time_is_its_stages_and_its_phases_outside_them(finished_run) -> None:
    _, path = finished_run
    metrics = json.loads((path / "metrics.json").read_text())
    passes = metrics["model_passes"]
    phases = passes["outside_stages"]["phase_seconds"]
    assert {"setup", "rows", "statistics", "figures", "report", "other"} <= set(phases)
    stages = sum(count["wall_seconds"] for count in [*passes["stages"].values(), passes["outside_stages"]])
    outside = sum(spent["wall_seconds"] for spent in phases.values())
    assert stages + outside == pytest.approx(metrics["wall_seconds"], rel=0.05, abs=0.5)
    assert "Outside its stages this process spent" in (path / "report.html").read_text()


def test_interrupted_run_resumes_to_identical_results(finished_run, cnn_weights, tmp_path) -> None:
    """Kill a run once its first attack stages exist, resume it, compare with the uninterrupted run."""
    _, reference = finished_run
    out = tmp_path / "killed"
    args = [sys.executable, "-m", "advspatial.cli", "run", "--quick", "--no-progress", "--out", str(out),
            "--model", str(cnn_weights), "--arch", CNN_ARCH]
    args += [f"--{k.replace('_', '-')}={v}" for k, v in SETTINGS.items()]
    # Same intra-op thread count as this process: float reductions (and so the last bits of
    # every number) depend on it; identical results are promised for identical settings.
    env = {**os.environ, "OMP_NUM_THREADS": str(torch.get_num_threads())}
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True, env=env)
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None:
        if len(list((out / "stages" / "attack").rglob("*.pt"))) >= 3:
            break
        time.sleep(0.2)
    killed = proc.poll() is None
    if killed:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    assert killed, f"run ended before it could be interrupted: {proc.stderr.read().decode()[-2000:]}"
    assert not (out / "metrics.json").exists()
    resumed = subprocess.run([sys.executable, "-m", "advspatial.cli", "run", "--resume", str(out), "--no-progress"],
                             capture_output=True, text=True, timeout=600, env=env)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert_smoke_test(out, resumed.stdout)  # a resumed --quick run is still a smoke test
    assert (out / "per_image.csv").read_text() == (reference / "per_image.csv").read_text()
    m_ref = json.loads((reference / "metrics.json").read_text())
    m_res = json.loads((out / "metrics.json").read_text())
    # host reads of a per-process cache filled on first use fall where the process first needs it: a resumed run
    # may count a few fewer
    syncs = m_res["model_passes"]["syncs"], m_ref["model_passes"]["syncs"]
    differing = {k: (v.get("syncs"), m_ref["model_passes"]["stages"].get(k, {}).get("syncs"))
                 for k, v in m_res["model_passes"]["stages"].items()
                 if v.get("syncs") != m_ref["model_passes"]["stages"].get(k, {}).get("syncs")}
    assert abs(syncs[0] - syncs[1]) <= 0.001 * syncs[1], (syncs, differing, m_ref["model_passes"].get("reused_stages"))
    assert without_timings(m_res, drop=SYNC_KEYS) == without_timings(m_ref, drop=SYNC_KEYS)


def test_the_rows_made_per_attack_are_those_of_the_batches_shared_by_every_attack(
        finished_run, tmp_path, monkeypatch) -> None:
    """The run shares each batch's decoded images, references and RoI among its attacks' rows (``SharedBatches``);
    a resumed copy that makes them for each attack alone (a budget of 0 bytes) gives the same rows and findings."""
    from advspatial.cli import main
    from advspatial.experiments.measurement import run as measurement_run
    from advspatial.experiments.measurement import stages
    from advspatial.experiments.measurement.batch_images import SharedBatches

    _, reference = finished_run
    made: list[tuple[int, int]] = []
    make = stages.batch_images
    monkeypatch.setattr(stages, "batch_images",
                        lambda ctx, sl, imp: made.append((sl.start, sl.stop)) or make(ctx, sl, imp))
    monkeypatch.setattr(measurement_run, "SharedBatches", lambda: SharedBatches(budget=0))
    copy = tmp_path / "run"
    shutil.copytree(reference, copy)
    try:
        main(["run", "--resume", str(copy), "--no-progress"])
    except SystemExit as done:
        assert not done.code
    assert (copy / "per_image.csv").read_text() == (reference / "per_image.csv").read_text()
    m_ref = json.loads((reference / "metrics.json").read_text())
    m_copy = json.loads((copy / "metrics.json").read_text())
    assert without_timings(m_copy, drop=SYNC_KEYS) == without_timings(m_ref, drop=SYNC_KEYS)
    images = Counter(row["attack"] for row in read_rows(reference / "per_image.csv"))
    assert len(made) == sum(math.ceil(n / SETTINGS["batch_size"]) for n in images.values())  # each attack's own
    assert sorted(set(made)) == [(0, 6), (6, 12)]  # shared, they are two batches (the one-pixel attack's 6: the first)


def test_bad_config_fails_before_work(tmp_path) -> None:
    for bad, fragment in (({"attacks": ["nope"]}, "unknown attack"), ({"fraction": 1.5}, "fraction"),
                          ({"fill": "glitter"}, "unknown fill"), ({"defence_attack": "onepixel"}, "L0")):
        with pytest.raises(ConfigError, match=fragment):
            resolve_config(get_experiment("spatial"), None, {"out": str(tmp_path / "x"), **bad}, quick=True)
    assert not (tmp_path / "x").exists()


def test_external_examples_never_describe_our_one_pixel_budget() -> None:
    """``analyze --source onepixel``: the examples were made elsewhere, so the report must not describe the DE
    budget of our own one-pixel attack (which never ran)."""
    from types import SimpleNamespace

    from advspatial.experiments.measurement.config import MeasurementConfig
    from advspatial.experiments.measurement.sections import measurement_limits_section

    cfg = MeasurementConfig()
    findings = SimpleNamespace(n=12, attacks={"onepixel": SimpleNamespace(successful=3, success_rate=0.25)})
    external = " ".join(measurement_limits_section(cfg, findings, external=True).paragraphs)
    ours = " ".join(measurement_limits_section(cfg, findings, external=False).paragraphs)
    assert "reduced DE budget" in ours
    assert "reduced DE budget" not in external and "made elsewhere" in external
