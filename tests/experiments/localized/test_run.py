"""A CI-sized end-to-end run of the localized experiment.

The ``--quick`` preset (five smallcnn models trained for one epoch on 512 images, in a temporary model cache,
without the full test-set accuracy pass): the run directory, the faithfulness gate of each model, the claims and
their verdicts, every reported number recomputed from per_image.csv, the HTML report parsed, and a resume after
lost stages with identical rows.
"""

from __future__ import annotations

import csv
import html
import json
import math
from pathlib import Path

import pytest
import yaml
from conftest import fashion_mnist_available, needs_fashion_mnist
from helpers import ReportParser, assert_smoke_test

from advspatial import training
from advspatial.errors import ConfigError
from advspatial.experiments import get_experiment, resolve_config, run_experiment
from advspatial.faithfulness.record import GateResult
from advspatial.experiments.measurement.roi import roi_label
from advspatial.experiments.localized.config import CONDITIONS, MODES, ROI_GATE
from advspatial.experiments.smoke import SMOKE_MARK, would_read
from advspatial.statistics.claims import sentence_case
from advspatial.statistics.verdicts import VERDICTS


SECTIONS = ["verdicts", "faithfulness", "setup", "models", "robustness", "background-attacks", "limits",
            "what-would-decide", "config"]
FIGURES = {"accuracy.png", "examples-natural.png", "importance-natural.png", "examples-localized.png",
           "importance-localized.png"}


# -- end to end ----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    """A --quick run in a temporary model cache; the 10000-image accuracy pass of training is stubbed."""
    if not fashion_mnist_available():
        pytest.skip("Fashion-MNIST not installed (make data)")
    root = tmp_path_factory.mktemp("localized")
    patch = pytest.MonkeyPatch()
    patch.setenv("ADVSPATIAL_CACHE", str(root / "cache"))
    patch.setattr(training, "evaluate_accuracy", lambda model, dataset: -1.0)
    config = resolve_config(get_experiment("localized-training"), None, {"out": str(root / "run"), "progress": False},
                            quick=True)
    try:
        result, rundir = run_experiment("localized-training", config)
        yield result, rundir.path, config, patch
    finally:
        patch.undo()


def read_rows(path: Path) -> list[dict[str, str]]:
    with path.open() as fh:
        return list(csv.DictReader(fh))


@pytest.fixture(scope="module")
def quick_outputs(quick_run):
    """The quick run's directory, settings, metrics.json and per_image.csv rows (read once; not to be changed)."""
    _, path, config, _ = quick_run
    return path, config, json.loads((path / "metrics.json").read_text()), read_rows(path / "per_image.csv")


def as_float(value: str) -> float:
    return float(value) if value not in ("", "nan") else math.nan


@pytest.mark.slow
@needs_fashion_mnist
def test_quick_run_writes_every_result(quick_run) -> None:
    result, path, config, _ = quick_run
    for name in ("config.yaml", "metrics.json", "per_image.csv", "report.html"):
        assert (path / name).is_file(), name
    assert yaml.safe_load((path / "config.yaml").read_text())["experiment"] == "localized-training"
    assert {p.name for p in (path / "figures").glob("*.png")} == FIGURES
    rows = read_rows(path / "per_image.csv")
    assert len(rows) == len(MODES) * config.n
    assert [r["model"] for r in rows[:: config.n]] == list(MODES)
    assert "accuracy" in result.summary.split("\n")[1] and "localized" in result.summary  # [0]: the smoke line


@pytest.mark.slow
@needs_fashion_mnist
def test_quick_run_metrics_agree_with_rows(quick_outputs) -> None:
    _, config, metrics, rows = quick_outputs
    assert metrics["n"] == config.n and set(metrics["models"]) == set(MODES)
    for mode in MODES:
        group = [r for r in rows if r["model"] == mode]
        assert [int(r["index"]) for r in group] == list(range(config.n))
        m = metrics["models"][mode]
        for cond in CONDITIONS:
            attacked = [r for r in group if r[f"{cond}_pred"] != "-1"]  # the ensembles attack the first images only
            expected = sum(r[f"{cond}_pred"] == r["label"] for r in attacked) / len(attacked)
            assert m[f"{cond}_accuracy"] == pytest.approx(expected, abs=1e-12), (mode, cond)
        shares = [as_float(r["region_share"]) for r in group]
        assert m["region_share"] == pytest.approx(sum(shares) / len(shares))
        assert all(0.0 < s < 1.0 for s in shares) and 0.3 < m["region_share"] < 0.8, "Fashion-MNIST: ~half background"
        pairs = [(as_float(r["cam_energy_clean"]), as_float(r["cam_energy_region_adv"])) for r in group]
        pairs = [p for p in pairs if not (math.isnan(p[0]) or math.isnan(p[1]))]
        assert m["cam_zero_images"] == len(group) - len(pairs)
        for k, key in enumerate(("cam_energy_clean", "cam_energy_region_adv")):
            assert m[key] == pytest.approx(sum(p[k] for p in pairs) / len(pairs)) if pairs else math.isnan(m[key])
        assert all(0.0 <= e <= 1.0 for p in pairs for e in p)
        assert m["epochs"] == config.train_epochs, "matched epochs"
        assert Path(m["checkpoint"]).is_file()
    assert set(metrics["timings"]) >= ({f"train/{m}" for m in MODES} | {f"evaluate/{m}" for m in MODES}
                                       | {f"gate/{m}" for m in MODES})


@pytest.mark.slow
@needs_fashion_mnist
def test_quick_run_gates_every_model(quick_outputs) -> None:
    path, config, metrics, _ = quick_outputs
    gates = metrics["faithfulness"]
    assert set(gates) == set(MODES)
    for mode in MODES:
        g, imp = gates[mode], metrics["importance"][mode]
        assert isinstance(g["passed"], bool) and g["reason"] and g["method"] == imp["method"]
        assert imp["method"] == "hirescam" and "flatten/FC head" in imp["why"], "auto: smallcnn has a flatten head"
        assert imp["faithful"] == g["passed"]
        assert g["n"] <= min(config.gate_n, config.n) and len(g["randomization"]) >= 1
        assert (path / f"stages/gate/{mode}/{imp['method']}/randomization.pt").is_file()
        label = would_read(metrics["models"][mode]["cam_interpretation"])
        # a failed gate's label says why; an undecided gate keeps the verdicts, read with its caveat after a ";"
        failed = roi_label(GateResult.from_dict(g))
        assert label == failed if failed else label.split(";")[0] == "interpretable"
        assert (";" in label) == (g["status"] == "undecided" or ";" in failed)
        assert label.startswith(("interpretable", "not interpretable"))
        # Fashion-MNIST: the background is the dataset's own mask, so accuracies do not rest on the map
        assert would_read(metrics["models"][mode]["mask_interpretation"]).startswith("interpretable")
    assert metrics["mask_from_importance"] is False


@pytest.mark.slow
@needs_fashion_mnist
def test_quick_run_is_a_smoke_test_and_says_so(quick_run) -> None:
    result, path, _, _ = quick_run
    assert_smoke_test(path, result.summary)


@pytest.mark.slow
@needs_fashion_mnist
def test_quick_run_claims_and_verdicts(quick_outputs) -> None:
    _, config, metrics, rows = quick_outputs
    claims = metrics["claims"]
    assert claims and all(would_read(c["verdict"]) in VERDICTS for c in claims)
    assert sum(c["primary"] for c in claims) == 7  # localized vs 4 models, the energy shift of 3
    for c in claims:
        gated = bool(c["gates"])
        assert gated == ("energy share" in c["statistic"]), c
        if gated and not all(c["gates"].values()):
            assert would_read(c["verdict"]) == "not interpretable", c
        mode = c["subject"].split()[0]
        if gated:
            assert c["gates"] == {ROI_GATE: metrics["faithfulness"][mode]["status"] != "failed"}
        elif c["effect"]["n"] < 30:
            assert would_read(c["verdict"]) == "insufficient data", c
    # the primary accuracy claim, recomputed from the rows: paired per image on the same images
    main = next(c for c in claims if c["subject"] == "localized vs natural model" and c["primary"])
    by = {m: {int(r["index"]): r for r in rows if r["model"] == m} for m in ("natural", "localized")}
    assert main["statistic"] == "background-only ensemble accuracy"  # the primary endpoint (the first ensemble_n)
    first = min(config.ensemble_n, config.n)
    diff = [float(by["localized"][i]["region-ensemble_pred"] == by["localized"][i]["label"])
            - float(by["natural"][i]["region-ensemble_pred"] == by["natural"][i]["label"]) for i in range(first)]
    assert main["effect"]["n"] == first
    assert main["effect"]["mean"] == pytest.approx(sum(diff) / len(diff), abs=1e-12)
    # one training seed (--quick): its own Δ, no CI over runs, and no verdict about the procedure
    assert config.training_seeds == 1 and main["seeds"] == 1 and main["per_seed"] == [main["effect"]["mean"]]
    assert math.isnan(main["effect"]["low"]) and would_read(main["verdict"]) == "insufficient data"
    assert all(c["seeds"] == 1 and would_read(c["verdict"]) in ("insufficient data", "not interpretable")
               for c in claims)
    assert main["observed"] - main["null_value"] == pytest.approx(main["effect"]["mean"], abs=1e-12)


@pytest.mark.slow
@needs_fashion_mnist
def test_quick_run_report_has_every_section_and_figure(quick_run) -> None:
    _, path, _, _ = quick_run
    parser = ReportParser()
    parser.feed((path / "report.html").read_text())
    assert parser.sections == SECTIONS, "the verdicts come first, then the faithfulness gate"
    assert len(parser.images) == len(FIGURES) and all(src.startswith("data:image/png;base64,") for src in parser.images)
    assert parser.tables >= 8
    text = (path / "report.html").read_text()
    for header in ("full-image PGD", "background-only PGD", "foreground-only PGD"):
        assert header in text
    verdicts = text[text.index('<section id="verdicts">'):text.index('<section id="faithfulness">')]
    assert "Region of Importance (RoI)" in verdicts and "Region of Attack (RoA)" in verdicts
    assert "What this run shows" in verdicts and "<details" in verdicts, "secondary claims folded"
    metrics = json.loads((path / "metrics.json").read_text())
    for c in metrics["claims"]:
        if c["primary"]:
            shown = f"{c['subject']}: {c['claim']} — {SMOKE_MARK}{would_read(c['verdict']).upper()}"
            assert html.escape(shown) in verdicts
    gate = text[text.index('<section id="faithfulness">'):text.index('<section id="setup">')]
    assert all(f"{m}: hirescam" in gate for m in MODES) and "randomization" in gate
    for g in metrics["faithfulness"].values():
        if not g["passed"]:
            assert html.escape(sentence_case(roi_label(GateResult.from_dict(g)))) in text


@pytest.mark.slow
@needs_fashion_mnist
def test_resume_after_lost_stages_gives_identical_rows(quick_run) -> None:
    _, path, config, _ = quick_run
    before = (path / "per_image.csv").read_text()
    lost = [path / "stages/attack/pgd/region/batch-00001.pt",
            path / "stages/importance/localized/hirescam/batch-00000.pt",
            path / "stages/attack/natural/full/batch-00000.pt", path / "stages/gate/pgd/hirescam/randomization.pt"]
    claims = json.loads((path / "metrics.json").read_text())["claims"]
    for stage in lost:
        assert stage.is_file(), stage
        stage.unlink()
    (path / "per_image.csv").unlink()
    (path / "metrics.json").unlink()
    with pytest.raises(ConfigError, match="already holds a run"):
        run_experiment("localized-training", config)
    run_experiment("localized-training", config, resume=True)  # models come from the cache, lost stages are recomputed
    assert all(stage.is_file() for stage in lost)
    assert (path / "per_image.csv").read_text() == before
    assert json.dumps(json.loads((path / "metrics.json").read_text())["claims"]) == json.dumps(claims)
