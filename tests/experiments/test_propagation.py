"""Tests of the propagation experiment: pixel extraction, bounded-memory aggregation, metrics from rows,
figures, and an end-to-end CI-sized run on Fashion-MNIST (with resume)."""

from __future__ import annotations

import csv
import json
import math
import shutil
from pathlib import Path

import pytest
import torch
from conftest import needs_fashion_mnist
from helpers import ReportParser, assert_smoke_test, saved_trained_model
from hypothesis import given, settings
from hypothesis import strategies as st

from advspatial.analysis.locality import locality_analysis
from advspatial.experiments.propagation.pixel_changes import apply_pixels, format_pixels, perturbed_pixels
from advspatial.analysis.propagation import average_propagation, depth_summary, propagation_maps
from advspatial.experiments.propagation.totals import PropagationTotals, propagation_stats
from advspatial.attacks import make_attack
from advspatial.errors import ConfigError, ShapeError
from advspatial.experiments.paired import paired_claim
from advspatial.experiments.propagation.claims import CONTROL_NULLS, MATCHED_NULL
from advspatial.experiments.propagation.config import PropagationConfig
from advspatial.experiments.findings import to_json
from advspatial.experiments.propagation.findings import (
    ContextBalance, ControlOutcome, Locality, PropagationFindings, clustered_rate, k_findings, rate_with_ci,
)
from advspatial.experiments.propagation.report import render
from advspatial.experiments.propagation.stages import (
    LOCALITY, PROPAGATION, RANDOM, BatchPropagation, KSummary, LocalityCounts, RandomReach, add_locality_columns,
    resolve_layers,
)
from advspatial.experiments.running import run_experiment
from advspatial.experiments.smoke import unmark_tree, would_read
from advspatial.models import build_model
from advspatial.rundir import RunDir
from advspatial.statistics.accuracy import wilson_interval
from advspatial.experiments.propagation.figures import (
    plot_control_differences, plot_depth_curves, plot_locality, plot_per_se, plot_propagation_strip, strip_layers,
)

# -- perturbed pixels --------------------------------------------------------------------


def test_perturbed_pixels_known_answer_grey_and_colour():
    x = torch.zeros(2, 3, 5, 6)
    x_adv = x.clone()
    x_adv[0, :, 4, 1] = torch.tensor([0.1, 0.2, 0.3])
    x_adv[0, 1, 0, 5] = 0.7  # one channel changed: still a changed pixel, colour = the whole pixel of x_adv
    x_adv[1, :, 2, 2] = 1.0
    pixels, colours, count = perturbed_pixels(x, x_adv, k=2)
    assert count.tolist() == [2, 1]
    assert pixels[0].tolist() == [[0, 5], [4, 1]]  # row-major order
    assert torch.allclose(colours[0], torch.tensor([[0.0, 0.7, 0.0], [0.1, 0.2, 0.3]]))
    assert pixels[1].tolist() == [[2, 2], [2, 2]]  # one change: its pixel fills both slots
    assert torch.equal(colours[1], torch.ones(2, 3))


def test_perturbed_pixels_rejects_more_changes_than_k_and_bad_shapes():
    x = torch.zeros(1, 1, 4, 4)
    x_adv = x.clone()
    x_adv[0, 0, :2, 0] = 1.0
    with pytest.raises(ShapeError, match="more than k=1"):
        perturbed_pixels(x, x_adv, k=1)
    with pytest.raises(ShapeError):
        perturbed_pixels(x, x_adv[:, :, :3], k=2)


@settings(max_examples=20, deadline=None)
@given(k=st.integers(1, 4), channels=st.sampled_from([1, 3]), seed=st.integers(0, 10_000))
def test_perturbed_pixels_round_trips_apply_pixels(k: int, channels: int, seed: int):
    """Writing k random colours at random (possibly repeated) positions and reading them back gives x_adv
    exactly; the count is the number of distinct positions whose colour differs."""
    gen = torch.Generator().manual_seed(seed)
    n, h, w = 4, 7, 5
    x = torch.rand(n, channels, h, w, generator=gen)
    pos = torch.stack((torch.randint(0, h, (n, k), generator=gen), torch.randint(0, w, (n, k), generator=gen)), -1)
    colours = torch.rand(n, k, channels, generator=gen)
    # repeated positions get one colour, so which one wins does not matter
    for i in range(n):
        for j in range(k):
            first = next(a for a in range(k) if pos[i, a].tolist() == pos[i, j].tolist())
            colours[i, j] = colours[i, first]
    x_adv = apply_pixels(x, pos, colours)
    pixels, got_colours, count = perturbed_pixels(x, x_adv, k)
    assert torch.equal(apply_pixels(x, pixels, got_colours), x_adv)
    distinct = [len({tuple(p) for p in pos[i].tolist()}) for i in range(n)]
    assert count.tolist() == distinct
    assert torch.equal(got_colours, x_adv[torch.arange(n)[:, None], :, pixels[..., 0], pixels[..., 1]])


def test_perturbed_pixels_of_a_real_kpixel_attack(tiny_cnn):
    model = tiny_cnn(size=12)
    x = torch.rand(5, 1, 12, 12, generator=torch.Generator().manual_seed(0))
    y = torch.arange(5)
    result = make_attack("kpixel", model, pixels=3, popsize=8, maxiter=2, seed=1).run(x, y)
    pixels, colours, count = perturbed_pixels(x, result.x_adv, 3)
    assert torch.equal(count, result.l0)
    assert torch.equal(apply_pixels(x, pixels, colours), result.x_adv)


def test_format_pixels():
    pos, col = format_pixels(torch.tensor([[[1, 2], [3, 4]]]), torch.tensor([[[0.5, 0.25, 1.0], [0.0, 0.0, 0.125]]]))
    assert pos == ["1:2 3:4"]
    assert col == ["0.5000/0.2500/1.0000 0.0000/0.0000/0.1250"]


# -- bounded-memory aggregation ------------------------------------------------------------

def _pair(n: int, channels: int, size: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    x = torch.rand(n, channels, size, size, generator=gen)
    pos = torch.randint(0, size, (n, 2, 2), generator=gen)
    return x, apply_pixels(x, pos, torch.rand(n, 2, channels, generator=gen))


@pytest.mark.parametrize("arch, channels, size", [("tiny", 1, 12), ("resnet18-cifar", 3, 32)])
def test_totals_over_batches_equal_the_building_blocks_on_all_images(tiny_cnn, arch, channels, size):
    """Merging per-batch statistics gives what average_propagation/depth_summary give on everything at once."""
    model = tiny_cnn(size=size) if arch == "tiny" else build_model(arch, in_channels=channels, input_size=size).eval()
    x, x_adv = _pair(2, channels, size, seed=3)
    layers = resolve_layers(model, [])
    totals = PropagationTotals()
    peaks = []
    for sl in (slice(0, 1), slice(1, 1), slice(1, 2)):  # includes an empty batch
        stats = propagation_stats(model, x[sl], x_adv[sl], layers, threshold=0.05, batch_size=2)
        totals.add(stats)
        peaks.append(stats["peak_last"])
    pms = propagation_maps(model, x, x_adv, layers)
    expected_rows = depth_summary(pms, threshold=0.05)
    expected_means = average_propagation(pms)
    assert totals.count == 2 and totals.layers == list(pms)
    for got, want in zip(totals.depth_rows(), expected_rows, strict=True):
        assert (got.depth, got.layer, got.height, got.width) == (want.depth, want.layer, want.height, want.width)
        for name in ("mean_pm_max", "max_pm_max", "mean_pm_avg", "max_pm_avg", "spread"):
            assert getattr(got, name) == pytest.approx(getattr(want, name), rel=1e-4, abs=1e-6), (got.layer, name)
    for name, mean in totals.mean_maps().items():
        assert torch.allclose(mean.pm_max, expected_means[name].pm_max, atol=1e-6)
        assert torch.allclose(mean.pm_avg, expected_means[name].pm_avg, atol=1e-6)
    # each image's peak PMmax at the last layer
    assert torch.allclose(torch.cat(peaks), pms[list(pms)[-1]].pm_max.flatten(1).amax(1), rtol=1e-4, atol=1e-6)


def test_totals_reject_batches_with_other_layers(tiny_cnn):
    model = tiny_cnn(size=8)
    x, x_adv = _pair(2, 1, 8, seed=0)
    totals = PropagationTotals()
    totals.add(propagation_stats(model, x, x_adv, ["features.0"], 0.1))
    with pytest.raises(ConfigError):
        totals.add(propagation_stats(model, x, x_adv, ["features.3"], 0.1))


def test_layer_patterns_select_modules_and_unknown_names_fail(tiny_cnn):
    model = tiny_cnn()
    assert resolve_layers(model, ["features.?"]) == [f"features.{i}" for i in range(6)]
    with pytest.raises(ConfigError, match="valid"):
        resolve_layers(model, ["no_such_layer"])


# -- metrics from the rows --------------------------------------------------------------------

def _row(k, correct, analysed, **loc):
    row = {"k": k, "correct": correct, "analysed": analysed, "queries": 10, "l0": k, "pm_peak_last": 0.5}
    blank = {"original_fooled": "", "ring1_n": "", "ring1_fooled": "", "random_n": "", "random_fooled": ""}
    return {**row, **(loc if analysed else blank)}


def _wilson(successes: int, trials: int) -> tuple[float, float]:
    share = wilson_interval(successes, trials)
    return share.low, share.high


def test_rate_with_ci_is_the_wilson_interval_by_hand_and_against_scipy():
    from scipy.stats import binomtest

    z = 1.959963984540054  # two-sided 95% normal quantile
    z2 = z**2

    def ci(successes: int, trials: int) -> tuple[float, float]:
        entry = rate_with_ci(successes, trials)
        return entry.ci_low, entry.ci_high

    assert ci(0, 10) == pytest.approx((0.0, z2 / (10 + z2)))  # 0.2775
    assert ci(10, 10) == pytest.approx((10 / (10 + z2), 1.0))
    # s=5, n=10: centre 0.5, half = z * sqrt(0.025 + z2/400) / (1 + z2/10)
    half = z * (0.025 + z2 / 400) ** 0.5 / (1 + z2 / 10)
    assert ci(5, 10) == pytest.approx((0.5 - half, 0.5 + half))
    assert ci(0, 72)[0] == 0.0 and ci(48, 48)[1] == 1.0  # exact, no rounding residue
    for s, n in ((3, 17), (40, 41), (1, 600), (250, 500)):
        ref = binomtest(s, n).proportion_ci(confidence_level=0.95, method="wilson")
        assert ci(s, n) == pytest.approx((ref.low, ref.high), abs=1e-9)
        assert rate_with_ci(s, n).rate == s / n
    none = rate_with_ci(0, 0)  # no trial: no rate, the interval the whole of [0, 1]
    assert math.isnan(none.rate) and ci(0, 0) == (0.0, 1.0)


def _no_maps(k: int) -> KSummary:
    """The summary of a k with no propagation maps (the rows alone make its success and locality)."""
    return KSummary(k, PropagationTotals(), None, torch.zeros(0, k, 2, dtype=torch.long))


def test_k_findings_known_answer():
    rows = [
        _row(1, True, True, original_fooled=True, ring1_n=8, ring1_fooled=2, random_n=10, random_fooled=1),
        _row(1, True, True, original_fooled=True, ring1_n=5, ring1_fooled=5, random_n=10, random_fooled=0),
        _row(1, True, False),
        _row(1, False, False),
        _row(3, True, False),
    ]
    m = k_findings(rows, _no_maps(1), radii=[1])
    assert (m.images, m.correct) == (4, 3)
    assert m.success.rate == pytest.approx(2 / 3)
    assert (m.success.ci_low, m.success.ci_high) == pytest.approx(_wilson(2, 3))
    assert m.locality.rings[1].rate == pytest.approx(7 / 13)
    assert m.locality.random.rate == pytest.approx(1 / 20)
    assert m.locality.original.rate == 1.0
    none = k_findings(rows, _no_maps(3), radii=[1])
    assert none.success.rate == 0.0 and none.locality.rings[1].trials == 0
    assert math.isnan(none.locality.rings[1].rate)
    assert none.depth == [] and all(c.attacks == 0 for c in none.controls.values())
    # locality CIs are cluster bootstraps over images (2 images: 2/8 and 5/5), never a binomial over 13 placements
    r1 = m.locality.rings[1]
    assert r1.images == 2 and r1.ci == "cluster bootstrap over images"
    assert r1.ci_low >= 2 / 8 - 1e-12 and r1.ci_high <= 1.0
    assert r1.per_image_mean.mean == pytest.approx((2 / 8 + 5 / 5) / 2)
    # metrics.json keeps its flat locality keys
    assert list(m.locality.as_dict()) == ["original", "r1", "random", "matched_r1"]


def test_paired_claim_known_answer_and_missing_pairs():
    from advspatial.statistics.estimates import bootstrap_mean_ci, paired_p

    a = [0.5, 0.7, math.nan, 0.9, 0.2]
    b = [0.1, 0.2, 0.3, math.nan, 0.4]
    c = paired_claim("x", "s", "stat", "null", a, b, seed=3, primary=True)
    diff = [0.4, 0.5, -0.2]  # only images with both values
    ref = bootstrap_mean_ci(diff, seed=3)
    assert c.effect.n == ref.n and [c.effect.mean, c.effect.low, c.effect.high] == pytest.approx(
        [ref.mean, ref.low, ref.high])
    assert c.p == pytest.approx(paired_p(diff))
    assert (c.observed, c.null_value) == pytest.approx(((0.5 + 0.7 + 0.2) / 3, (0.1 + 0.2 + 0.4) / 3))
    empty = paired_claim("x", "s", "stat", "null", [], [], seed=0, primary=True)
    assert empty.effect.n == 0 and math.isnan(empty.p)


def test_locality_columns_match_locality_analysis(tiny_cnn):
    model = tiny_cnn(size=10)
    x = torch.rand(3, 1, 10, 10, generator=torch.Generator().manual_seed(2))
    y = torch.tensor([0, 1, 2])
    pixels = torch.tensor([[[0, 0]], [[5, 5]], [[9, 3]]])
    colours = torch.tensor([[[1.0]], [[0.0]], [[1.0]]])
    res = locality_analysis(model, x, y, pixels, colours, radii=(1, 2), n_random=5, seed=0)
    loc = LocalityCounts(res.ring_counts, res.ring_successes, res.random_counts, res.random_successes,
                         res.original_success, res.matched_counts, res.matched_successes, {})
    rows = [{"index": i, "analysed": i != 7} for i in (4, 7, 9, 2)]
    add_locality_columns(rows, torch.tensor([4, 9, 2]), loc, radii=(1, 2))
    assert rows[1]["ring1_n"] == ""  # not analysed
    assert rows[0]["ring1_n"] == 3 and rows[2]["ring1_n"] == 8  # a corner has 3 neighbours at r = 1
    assert [rows[j]["ring2_n"] for j in (0, 2, 3)] == res.ring_counts[:, 1].tolist()
    assert sum(rows[j]["random_fooled"] for j in (0, 2, 3)) == res.rows[-1].successes


def test_config_validation():
    with pytest.raises(ConfigError, match="twice"):
        PropagationConfig(pixels_list=[1, 1]).validate()
    with pytest.raises(ConfigError):
        PropagationConfig(pixels_list=[0]).validate()
    with pytest.raises(ConfigError):
        PropagationConfig(radii=[0]).validate()
    with pytest.raises(ConfigError):
        PropagationConfig(popsize=2).validate()
    with pytest.raises(ConfigError):
        PropagationConfig(threshold=-0.1).validate()
    with pytest.raises(ConfigError, match="reach_fraction"):
        PropagationConfig(reach_fraction=1.5).validate()
    with pytest.raises(ConfigError, match="random_draws"):
        PropagationConfig(random_draws=0).validate()


# -- figures --------------------------------------------------------------------------------

def test_strip_layers_keeps_spatial_layers_ends_and_limit():
    shapes = {f"l{i}": (8, 8) for i in range(12)} | {"fc": (1, 1)}
    chosen = strip_layers(shapes, 5)
    assert len(chosen) == 5 and chosen[0] == "l0" and chosen[-1] == "l11" and "fc" not in chosen
    assert strip_layers({"a": (4, 4), "fc": (1, 1)}, 10) == ["a"]


def test_figures_are_written(tmp_path):
    maps = {"conv": torch.rand(2, 8, 8), "deep": torch.rand(2, 2, 2), "fc": torch.rand(2, 1, 1)}
    strip = plot_propagation_strip(torch.rand(2, 3, 8, 8), maps, tmp_path / "s.png",
                                   pixels=[torch.tensor([[1, 1]]), torch.tensor([[2, 3], [4, 4]])],
                                   row_labels=["a", "b"])
    with pytest.raises(ShapeError):
        plot_propagation_strip(torch.rand(2, 1, 8, 8), {"x": torch.rand(3, 8, 8)}, tmp_path / "bad.png")
    depth = {1: [{"layer": "conv", "mean_pm_max": 0.1, "max_pm_max": 0.5, "spread": 0.2},
                 {"layer": "deep", "mean_pm_max": 0.3, "max_pm_max": 0.6, "spread": 0.7}], 3: []}
    curves = plot_depth_curves(depth, tmp_path / "d.png")
    entry = {"rate": 0.5, "ci_low": 0.2, "ci_high": 0.8, "trials": 10}
    loc = plot_locality({1: {"original": entry, "r1": entry, "random": entry},
                         5: {"original": {**entry, "trials": 0}, "r1": entry, "random": entry}},
                        [1], tmp_path / "l.png")
    per_se = plot_per_se({"a": [{"relative_depth": 0.5, "ratio": {"mean": 0.2, "low": 0.1, "high": 0.3}},
                                {"relative_depth": 1.0, "ratio": {"mean": 0.4, "low": 0.3, "high": 0.5}}], "b": []},
                         0.1, tmp_path / "p.png")
    with pytest.raises(ShapeError):
        plot_per_se({}, 0.1, tmp_path / "q.png")
    for path in (strip, curves, loc, per_se):
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


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
    metrics.pop("wall_seconds"), again.pop("wall_seconds")
    assert again == metrics
    assert (out / "per_image.csv").read_text() == csv_text


def test_control_difference_figure_is_written(tmp_path):

    rows = [{"layer": f"l{i}", "mean": 0.1 * i, "low": 0.1 * i - 0.05, "high": 0.1 * i + 0.05} for i in range(4)]
    nan_rows = [{**r, "mean": math.nan, "low": math.nan, "high": math.nan} for r in rows]
    path = plot_control_differences({1: {"a": rows, "b": nan_rows}, 3: {"a": rows, "b": []}}, tmp_path / "d.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(ShapeError, match="at least one k"):
        plot_control_differences({}, tmp_path / "e.png")


# -- stages and findings ------------------------------------------------------------------------

def test_stages_keep_their_keys_and_load_their_types(tmp_path):
    run = RunDir(tmp_path / "run")
    assert PROPAGATION.at("k3").key(2) == "propagation/k3/batch-00002" and RANDOM.key(0) == "random/batch-00000"
    assert LOCALITY.at("k1").key(4) == "locality/k1/chunk-00004"
    reach = RandomReach(["a", "b"], torch.rand(3, 2))
    RANDOM.save(run, reach, 0)
    assert run.load_stage(RANDOM.key(0)).keys() == {"layers", "peak"}  # the layout of earlier runs
    again = RANDOM.load(run, 0)
    assert again.layers == reach.layers and torch.equal(again.peak, reach.peak)
    batch = BatchPropagation({"count": 1, "image": {"peak": torch.ones(1, 2)}}, {"position": {"fooled": torch.ones(1)}})
    PROPAGATION.at("k1").save(run, batch, 0)
    loaded = PROPAGATION.at("k1").load(run, 0)
    assert loaded.stats.keys() == {"count", "image"}
    assert torch.equal(loaded.controls["position"]["fooled"], torch.ones(1))
    run.save_stage(PROPAGATION.at("k1").key(1), {"count": 0, "image": {}})  # written before the controls existed
    with pytest.raises(ConfigError, match="before the random-change controls"):
        PROPAGATION.at("k1").load(run, 1)
    empty = LocalityCounts.empty(2)
    LOCALITY.at("k1").save(run, empty, 0)
    back = LOCALITY.at("k1").load(run, 0)
    assert back.ring_counts.shape == (0, 2) and back.original_success.dtype == torch.bool and back.context == {}


def test_locality_counts_of_chunks_concatenate_in_order():
    def chunk(first: int, n: int) -> LocalityCounts:
        values = torch.arange(first, first + n)
        return LocalityCounts(values[:, None], values[:, None], values, values, values > 0, values[:, None],
                              values[:, None], {"edge": {"random": values.double()}})

    both = LocalityCounts.cat([chunk(0, 2), chunk(2, 3)])
    assert both.random_counts.tolist() == [0, 1, 2, 3, 4] and both.ring_counts.shape == (5, 1)
    assert both.context["edge"]["random"].tolist() == [0.0, 1.0, 2.0, 3.0, 4.0]


def test_findings_parts_serialize_to_the_flat_keys_and_back():
    balance = ContextBalance({1: 0.5, 2: math.nan}, 0.25, {1: 0.75, 2: 0.125})
    data = balance.as_dict()
    assert list(data) == ["ring_1", "ring_2", "random", "matched_1", "matched_2"]
    back = ContextBalance.from_dict(data)
    assert back.ring[1] == 0.5 and math.isnan(back.ring[2]) and back.matched == {1: 0.75, 2: 0.125}
    wilson = ControlOutcome(3, 4, rate_with_ci(1, 3))
    pooled = ControlOutcome(0, 0, clustered_rate([], []))
    for outcome in (wilson, pooled):
        again = ControlOutcome.from_dict(json.loads(json.dumps(to_json(outcome))))
        assert type(again.fooled) is type(outcome.fooled) and json.dumps(to_json(again)) == json.dumps(to_json(outcome))
    locality = k_findings([_row(1, True, False)], _no_maps(1), radii=[1, 3]).locality
    assert Locality.from_dict(json.loads(json.dumps(locality.as_dict()))).as_dict().keys() == locality.as_dict().keys()
