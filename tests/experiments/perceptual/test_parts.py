"""Tests of the perceptual experiment's parts: PGD budget calibration, SSIM maps vs CAM statistics, the
statistics engine's claims and their faithfulness gate, config, metrics and figures (the end-to-end run:
tests/experiments/perceptual/test_run.py)."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from attack_checks import contrast_structure_ref, luminance_ref
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from advspatial.analysis.ssim import ssim
from advspatial.data import ImageDataset
from advspatial.errors import ConfigError, ShapeError
from advspatial.experiments.perceptual.ssim_matching import bisect_eps, ssim_distortion
from advspatial.faithfulness.record import GateResult
from advspatial.experiments.perceptual.claims import (
    CURVE_RANGE_GATE, compare_attack, measure, minimal_distortion_claim, roi_of, settle_curve_range,
)
from advspatial.experiments.perceptual.config import ATTACKS, STATS, PerceptualConfig
from advspatial.experiments.perceptual.findings import (
    CurveBound, CurvePoint, LabelledComparison, MinimalDistortion, attack_metrics,
)
from advspatial.experiments.perceptual.ssim_matching import Calibration, capped_by_curve
from advspatial.experiments.perceptual.stages import (
    AttackStore, Context, Curves, budget_stage, calibrate, map_statistics, pgd_attack, ssim_attack,
)
from advspatial.experiments.perceptual.report import calibration_words, curve_budget, curve_range_words
from advspatial.experiments.measurement.rows import keep_first_images
from advspatial.experiments.settings import config_from_mapping
from advspatial.statistics.claims import NOT_INTERPRETABLE_ROI, Claim, judge
from advspatial.statistics.estimates import Estimate
from advspatial.statistics.nulls import NULLS
from advspatial.statistics.verdicts import VERDICTS, same_conclusion, verdict
from advspatial.statistics.inference import uniform_comparison
from advspatial.statistics.store import Store
from advspatial.experiments.perceptual.figures import (
    plot_attack_summary, plot_calibration, plot_overlap_vs_baseline, plot_ssim_vs_cam,
)
from advspatial.rundir import RunDir
from advspatial.runtime import batch_slices

# -- calibration -------------------------------------------------------------------------

def test_bisect_eps_finds_the_root_of_a_known_function() -> None:
    calls: list[float] = []

    def f(eps: float) -> float:
        calls.append(eps)
        return 1.0 - 2.0 * eps  # root of f = 0.8 at eps = 0.1

    cal = bisect_eps(f, 0.8, eps_max=0.3, iters=20, tolerance=1e-3)
    assert cal.reachable and cal.matched
    assert abs(cal.mean_ssim - 0.8) <= 1e-3 and abs(cal.eps - 0.1) <= 5e-4
    assert calls[0] == 0.3 and [h[0] for h in cal.history] == calls
    assert all(0 < e <= 0.3 for e in calls)
    assert len(calls) < 21  # stopped at the tolerance, before the iteration cap


@settings(max_examples=20, deadline=None)
@given(a=st.floats(0.5, 5.0), p=st.floats(0.5, 2.0), share=st.floats(0.05, 0.95))
def test_bisect_eps_matches_any_reachable_target_of_a_decreasing_function(a: float, p: float, share: float) -> None:
    def f(eps: float) -> float:
        return 1.0 - a * eps**p

    low = f(0.3)
    target = low + share * (0.99 - low)
    cal = bisect_eps(f, target, eps_max=0.3, iters=40, tolerance=1e-3)
    assert cal.matched and abs(f(cal.eps) - target) <= 1e-3
    assert cal.mean_ssim == f(cal.eps)
    # the chosen budget is the evaluated one closest to the target
    assert abs(cal.mean_ssim - target) == min(abs(v - target) for _, v in cal.history)


def test_bisect_eps_reports_an_unreachable_target() -> None:
    cal = bisect_eps(lambda eps: 1.0 - 0.1 * eps, 0.5, eps_max=0.3, iters=8, tolerance=1e-3)
    assert not cal.reachable and not cal.matched
    assert cal.eps == 0.3 and len(cal.history) == 1


def test_bisect_eps_stops_when_eps_max_already_matches() -> None:
    cal = bisect_eps(lambda eps: 1.0 - eps, 0.7005, eps_max=0.3, iters=8, tolerance=1e-3)
    assert cal.matched and cal.eps == 0.3 and len(cal.history) == 1


def _synthetic_context(tmp_path: Path, model: nn.Module, n: int = 8, **overrides: object) -> Context:
    gen = torch.Generator().manual_seed(3)
    # smooth random images (blurred noise), so SSIM behaves as on natural images
    noise = torch.rand(n, 1, 28, 28, generator=gen)
    pixels = nn.functional.avg_pool2d(noise, 5, stride=1, padding=2, count_include_pad=False)
    data = ImageDataset("synthetic", pixels, torch.arange(n) % 10, tuple(str(k) for k in range(10)))
    values = {"n": n, "batch_size": 4, "calibration_n": n, "steps": 5, "progress": False, **overrides}
    cfg = config_from_mapping(PerceptualConfig, values)
    return Context(cfg, RunDir(tmp_path / "run"), model, data, torch.device("cpu"),
                   list(batch_slices(n, cfg.batch_size)))


def test_calibration_on_a_tiny_model_matches_the_target_and_is_cached(tiny_cnn, tmp_path) -> None:
    model = tiny_cnn()
    ctx = _synthetic_context(tmp_path, model, calibration_iters=12, ssim_tolerance=0.002)
    x, y, ids = ctx.data.images(), ctx.data.labels, torch.arange(len(ctx.data))
    reference = ssim(x, pgd_attack(model, 0.05, 5, 0).run(x, y, sample_ids=ids).x_adv)  # "SSIM-ball" SSIMs
    cal = calibrate(ctx, reference)
    target = float(reference.double().mean())
    assert cal.target == pytest.approx(target)
    assert cal.matched and abs(cal.mean_ssim - target) <= 0.002
    assert abs(cal.eps - 0.05) < 0.01
    # every PGD run of the calibration is a stage: calibrating again runs no model at all
    broken = _synthetic_context(tmp_path, _Exploding(), calibration_iters=12, ssim_tolerance=0.002)
    again = calibrate(broken, reference)
    assert again.as_dict() == cal.as_dict()


class _Exploding(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        raise AssertionError("the model must not run: every stage is cached")


def test_calibration_target_uses_only_the_calibration_images(tiny_cnn, tmp_path) -> None:
    ctx = _synthetic_context(tmp_path, tiny_cnn(), n=8, calibration_n=4, calibration_iters=0)
    values = torch.tensor([0.9, 0.9, 0.9, 0.9, 0.1, 0.1, 0.1, 0.1])
    assert calibrate(ctx, values).target == pytest.approx(0.9)


def test_budget_stages_write_each_budget_at_a_fixed_precision() -> None:
    config = PerceptualConfig()
    assert budget_stage(config, "pgd", 0.15).key(0) == "calibration/eps-0.15000000/batch-00000"
    assert budget_stage(config, "ssim-ball", 0.8).key(2) == "curve/ssim-ball/alpha-0.800000/batch-00002"
    assert budget_stage(config, "pgd", 0.1 + 0.2).key(0) == budget_stage(config, "pgd", 0.3).key(0)


def test_a_curve_budget_above_alpha_l_raises_the_luminance_bound_and_names_it_in_its_stage() -> None:
    """At alpha > alpha_l the SSIM-ball curve point bounds the luminance term by alpha (every window's SSIM >=
    alpha^2, not alpha * alpha_l), under a stage key of its own; at or below alpha_l, and with the absolute luminance
    bound, nothing changes."""
    config = PerceptualConfig(alpha_l=0.99)
    model = nn.Sequential(nn.Flatten(), nn.Linear(4, 2))
    assert config.curve_alpha_l(0.999) == 0.999 and config.curve_alpha_l(0.99) == 0.99
    assert ssim_attack(model, config, 0.999).alpha_l == 0.999
    assert ssim_attack(model, config, 0.95).alpha_l == 0.99 and ssim_attack(model, config).alpha_l == 0.99
    assert budget_stage(config, "ssim-ball", 0.999).key(0) == (
        "curve/ssim-ball/alpha-0.999000-alpha_l-0.999000/batch-00000")
    assert budget_stage(config, "ssim-ball", 0.99).key(0) == "curve/ssim-ball/alpha-0.990000/batch-00000"
    absolute = PerceptualConfig(alpha_l=0.99, luminance="absolute")
    assert absolute.curve_alpha_l(0.999) == 0.99 and ssim_attack(model, absolute, 0.999).alpha_l == 0.99
    assert budget_stage(absolute, "ssim-ball", 0.999).key(0) == "curve/ssim-ball/alpha-0.999000/batch-00000"
    assert curve_budget(config, "ssim-ball", 0.999) == "0.999 (alpha_l 0.999)"
    assert curve_budget(config, "ssim-ball", 0.95) == "0.95" and curve_budget(config, "pgd", 0.999) == "0.999"


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 2**16), alpha=st.floats(0.993, 0.9995))
def test_a_curve_point_above_alpha_l_keeps_every_windows_ssim_at_alpha_squared(seed: int, alpha: float) -> None:
    """The curve's SSIM-ball attack at alpha > alpha_l keeps every window's SSIM >= alpha^2 (to 1e-5), tighter than
    the alpha * alpha_l the run's own luminance bound allows; the model's logits read brightness, so the attack
    presses the luminance bound and a bound left at alpha_l would show."""
    gen = torch.Generator().manual_seed(seed)
    brightness = nn.Linear(64, 2)
    with torch.no_grad():
        brightness.weight.copy_(torch.stack([-torch.ones(64), torch.ones(64)]))
        brightness.bias.zero_()
    model = nn.Sequential(nn.Flatten(), brightness).eval()
    x = 0.2 + 0.6 * torch.rand(2, 1, 8, 8, generator=gen)
    config = PerceptualConfig(alpha_l=0.99, steps=20, step_size=0.5, window="4", seed=seed)
    x_adv = ssim_attack(model, config, alpha).run(x, torch.tensor([1, 1])).x_adv  # unfoolable: it keeps pushing
    window = luminance_ref(x, x_adv, 4) * contrast_structure_ref(x, x_adv, 4)  # every window's SSIM
    assert float(window.min()) >= alpha ** 2 - 1e-5
    assert float(window.min()) <= alpha + 1e-4  # the luminance bound is pressed (SSIM at alpha there), not slack


def test_findings_parts_round_trip_through_json() -> None:
    comparison = uniform_comparison([0.9, 0.8, 0.95, 0.7], [0.6, 0.7, 0.5, 0.65], 0, statistic="s", null="pgd")
    distortion = MinimalDistortion(4, 1, 0, {"ssim-ball": 0.97, "pgd": 0.99}, comparison, {"ssim-ball": 2, "pgd": 0},
                                   {"ssim-ball": 0.012, "pgd": 0.0})
    data = json.loads(json.dumps(distortion.as_dict()))
    assert set(data) >= {"images_both", "ceilings", "observed", "excess"}  # the comparison's keys beside its own
    assert MinimalDistortion.from_dict(data) == distortion
    labelled = LabelledComparison.of(comparison, "interpretable")
    assert labelled.as_dict() == {**comparison.as_dict(), "interpretation": "interpretable"}


# -- SSIM map and statistics -------------------------------------------------------------

def test_ssim_distortion_is_one_minus_skimage_full_map() -> None:
    skimage_metrics = pytest.importorskip("skimage.metrics")
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(2, 1, 20, 20, generator=gen, dtype=torch.float64)
    x_adv = (x + 0.1 * torch.randn(x.shape, generator=gen, dtype=torch.float64)).clamp(0, 1)
    ours = ssim_distortion(x, x_adv)
    assert ours.shape == (2, 20, 20) and bool((ours >= 0).all())
    for i in range(2):
        _, full = skimage_metrics.structural_similarity(
            x[i, 0].numpy(), x_adv[i, 0].numpy(), data_range=1.0, gaussian_weights=True, sigma=1.5,
            use_sample_covariance=False, full=True)
        np.testing.assert_allclose(ours[i].numpy(), np.clip(1 - full, 0, None), atol=1e-10)
    assert float(ssim_distortion(x, x.clone()).abs().max()) < 1e-12


def _block_maps() -> tuple[torch.Tensor, torch.Tensor]:
    """A 10x10 CAM positive on a 4x5 block (20 px = the top 20%) with distinct values, and the block mask."""
    cam = torch.zeros(1, 10, 10)
    block = torch.zeros(1, 10, 10, dtype=torch.bool)
    block[0, 1:5, 2:7] = True
    cam[block] = torch.linspace(1.0, 2.0, 20)
    return cam, block


def test_map_statistics_known_answers() -> None:
    cam, block = _block_maps()
    ids = torch.tensor([0])
    same, cam_region, dist_region = map_statistics(cam, cam.clone(), 0.2, 0, ids)
    assert torch.equal(cam_region, block) and torch.equal(dist_region, block)
    assert same["spearman"].item() == pytest.approx(1.0)
    assert same["iou"].item() == 1.0 and same["energy_in_cam"].item() == pytest.approx(1.0)
    # distortion only on a disjoint block: no overlap, no mass in the CAM region
    far = torch.zeros(1, 10, 10)
    far[0, 6:10, 5:10] = torch.linspace(1.0, 2.0, 20).view(4, 5)
    disjoint, _, _ = map_statistics(cam, far, 0.2, 0, ids)
    assert disjoint["iou"].item() == 0.0 and disjoint["energy_in_cam"].item() == 0.0
    # 1 everywhere plus 3 on the block: mass 80 inside of 160 in all
    spread = 1.0 + 3.0 * block.float()
    half, _, region = map_statistics(cam, spread, 0.2, 0, ids)
    assert torch.equal(region, block)
    assert half["energy_in_cam"].item() == pytest.approx(0.5) and half["iou"].item() == 1.0
    assert set(STATS) <= set(half)


def _blob_maps(n: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """(n,12,12) CAMs: a 3x3 blob (distinct values) at one of 16 places per image; and foreground shares."""
    gen = torch.Generator().manual_seed(seed)
    cams = torch.zeros(n, 12, 12)
    places = torch.randint(0, 16, (n,), generator=gen)
    for i, k in enumerate(places.tolist()):
        r, c = divmod(k, 4)
        cams[i, 3 * r : 3 * r + 3, 3 * c : 3 * c + 3] = 1.0 + torch.arange(9.0).view(3, 3) / 10
    return cams, torch.rand(n, generator=gen)


def _store(cams: torch.Tensor, dist: torch.Tensor, labels: torch.Tensor, composition: torch.Tensor) -> AttackStore:
    ids = torch.arange(len(cams))
    _, cam_region, dist_region = map_statistics(cams, dist, 9 / 144, 0, ids)
    store = AttackStore()
    keep_first_images(store.kept, 1000, torch.ones(len(cams), dtype=torch.bool),
                      Store(cams, dist, cam_region, dist_region, labels, composition))
    return store


def test_compare_attack_detects_co_location_within_a_class() -> None:
    # 12 images of one class; each CAM is a 3x3 blob at its own place; the SSIM map equals the CAM
    n = 12
    cams = torch.zeros(n, 12, 12)
    for i in range(n):
        r, c = divmod(i, 4)
        cams[i, 3 * r : 3 * r + 3, 3 * c : 3 * c + 3] = 1.0 + torch.arange(9.0).view(3, 3) / 10
    store = _store(cams, cams.clone(), torch.zeros(n, dtype=torch.long), torch.linspace(0.1, 0.9, n))
    cfg = PerceptualConfig(permutations=30)
    results = compare_attack(store, cfg)
    assert set(results) == {"spearman", "iou", "energy_in_roi"}
    assert all(set(by_null) == set(NULLS) for by_null in results.values())
    same = results["iou"]["same-class"]
    assert same.observed == pytest.approx(1.0) and same.null_mean == pytest.approx(0.0)
    assert same.excess.low > 0 and same.n == n
    assert results["energy_in_roi"]["same-class"].observed == pytest.approx(1.0)
    for stat in ("iou", "energy_in_roi"):  # no derangement comes near: the two-sided p is 1 / (1 + B)
        assert results[stat]["same-class"].p == pytest.approx(1 / 31)
    assert compare_attack(AttackStore(), cfg) == {}


def _gate(passed: bool) -> GateResult:
    return GateResult(passed, "passed" if passed else "deletion:zero logit effect not above 0", n=40,
                      randomization=[], method="gradcam")


@pytest.mark.parametrize("passed", [True, False])
def test_measure_builds_gated_claims_with_fixed_verdicts(passed: bool) -> None:
    n = 40
    cams, composition = _blob_maps(n)
    labels = torch.arange(n) % 2
    gen = torch.Generator().manual_seed(1)
    stores = {"ssim-ball": _store(cams, cams + 0.01 * torch.rand(cams.shape, generator=gen), labels, composition),
              # the "PGD" SSIM map sits on another image's blob: no co-location beyond chance
              "pgd": _store(cams, cams.roll(7, 0) + 0.01 * torch.rand(cams.shape, generator=gen), labels,
                            composition)}
    roi = roi_of("gradcam", "test", {"gradcam": _gate(passed)})
    assert roi.faithful is passed and roi.method == "gradcam" and roi.why == "test"
    inference, distortion, claims = measure(PerceptualConfig(permutations=200), roi, stores)
    assert distortion is None  # no curves given
    primary = [c for c in claims if c.primary]
    assert [c.subject for c in primary] == list(ATTACKS)
    assert all(c.statistic == "energy_in_roi" and c.null == "same-class" for c in primary)
    assert len(claims) == 2 * 3 * len(NULLS)  # two attacks x three statistics x every null
    assert all(c.verdict in VERDICTS for c in claims)
    assert all(c.gates == {"RoI faithfulness": passed} for c in claims)
    # the p-values are corrected: Holm on the two primary claims, never below the raw p
    assert all(c.p_adjusted >= c.p - 1e-12 for c in claims)
    label = "interpretable" if passed else NOT_INTERPRETABLE_ROI
    assert roi.interpretation == label
    for name in ATTACKS:
        for by_null in inference[name].values():
            assert all(c.interpretation == label for c in by_null.values())
    if passed:
        assert primary[0].verdict == "supported" and primary[0].effect.low > 0
        assert primary[1].verdict != "supported"
    else:
        assert {c.verdict for c in claims} == {"not interpretable"}


def test_measure_skips_attacks_without_enough_successes() -> None:
    cams, composition = _blob_maps(2)
    stores = {"ssim-ball": _store(cams, cams.clone(), torch.zeros(2, dtype=torch.long), composition),
              "pgd": AttackStore()}
    roi = roi_of("gradcam", "", {"gradcam": _gate(True)})
    assert roi.why == "chosen in the config"
    inference, _, claims = measure(PerceptualConfig(permutations=200), roi, stores)
    assert claims == [] and inference == {}


# -- the minimal-distortion claim and its curve-range gate -------------------------------

def _curves(ball_best: torch.Tensor, ball_capped: torch.Tensor, pgd_best: torch.Tensor,
            pgd_capped: torch.Tensor) -> Curves:
    """Two-budget curves whose least distorting row (the second, of higher mean SSIM) fools the ``capped`` images
    and whose other row fools every image, each at its ``best`` SSIM (the capped images' best is the second row's)."""
    def curve(best: torch.Tensor, capped: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        lenient = torch.where(capped, best, torch.full_like(best, 0.999))
        strict = torch.where(capped, best - 0.05, best)
        return torch.stack([torch.ones_like(capped), capped]), torch.stack([strict, lenient])
    fooled, ssims = {}, {}
    for name, (best, capped) in {"ssim-ball": (ball_best, ball_capped), "pgd": (pgd_best, pgd_capped)}.items():
        fooled[name], ssims[name] = curve(best.double(), capped)
    points = {name: [CurvePoint(b, float(ssims[name][i].mean()), 1.0) for i, b in enumerate((0.5, 0.1))]
              for name in ssims}
    return Curves(points, fooled, ssims)


def _judged(curves: Curves, sesoi: float = 0.01) -> tuple[MinimalDistortion, Claim]:
    """The minimal-distortion claim judged alone, its curve-range gate settled, as :func:`measure` does."""
    distortion, claim, ends = minimal_distortion_claim(curves, seed=0)
    judge([claim], sesoi=sesoi)
    distortion.bounds = settle_curve_range([claim], claim, ends, sesoi=sesoi, alpha=0.05)
    return distortion, claim


def test_curve_range_gate_passes_without_capped_images_and_fails_when_the_grid_binds() -> None:
    n = 40
    gen = torch.Generator().manual_seed(0)
    ball = 0.90 + 0.02 * torch.rand(n, generator=gen, dtype=torch.float64)
    pgd = ball + 0.03  # PGD fools at a higher SSIM on every image: a decisive, reversed effect
    none = torch.zeros(n, dtype=torch.bool)
    free, claim = _judged(_curves(ball, none, pgd, none))
    assert free.capped == {"ssim-ball": 0, "pgd": 0} and free.reach == {"ssim-ball": 0.0, "pgd": 0.0}
    assert free.bounds == {} and claim.gates == {CURVE_RANGE_GATE: True} and claim.verdict == "reversed"
    # every SSIM-ball value capped: at its curve's end each is 1, the difference mean(1 - pgd) ~ +0.06, supported
    bound, claim = _judged(_curves(ball, ~none, pgd, none))
    assert bound.capped == {"ssim-ball": n, "pgd": 0} and set(bound.bounds) == {"ssim-ball"}
    assert abs(bound.reach["ssim-ball"] - float((1 - ball).mean())) < 1e-12 and bound.reach["pgd"] == 0.0
    assert abs(bound.bounds["ssim-ball"].effect.mean - float((1 - pgd).mean())) < 1e-12
    assert bound.bounds["ssim-ball"].verdict == "supported"
    assert claim.gates == {CURVE_RANGE_GATE: False} and claim.verdict == "not interpretable"
    assert claim.effect.mean == free.comparison.excess.mean  # the gate changes the verdict, not the numbers
    # one capped PGD image of 40: at PGD's end the difference falls by its reach, (1 - 0.93) / 40, still reversed
    one = none.clone()
    one[0] = True
    few, claim = _judged(_curves(ball, none, pgd, one))
    assert few.capped["pgd"] == 1 and abs(few.reach["pgd"] - float(1 - pgd[0]) / n) < 1e-12
    end = few.bounds["pgd"]
    assert abs(end.effect.mean - (claim.effect.mean - few.reach["pgd"])) < 1e-12 and end.verdict == "reversed"
    assert claim.gates == {CURVE_RANGE_GATE: True} and claim.verdict == "reversed"
    # SSIM-ball's caps only raise a supported difference: it stands
    _, ahead = _judged(_curves(pgd, ~none, ball, none))
    assert ahead.gates == {CURVE_RANGE_GATE: True} and ahead.verdict == "supported"
    # ... while PGD's caps could turn it reversed: not interpretable
    _, threatened = _judged(_curves(pgd, none, ball, ~none))
    assert threatened.gates == {CURVE_RANGE_GATE: False}
    # a larger smallest effect of interest (the run's sesoi setting): negligible at both the claim and the end
    lenient_md, lenient = _judged(_curves(ball, ~none, pgd, none), sesoi=0.2)
    assert lenient.verdict == lenient_md.bounds["ssim-ball"].verdict == "negligible"
    assert lenient.gates == {CURVE_RANGE_GATE: True}


def test_a_failed_curve_range_gate_says_what_would_decide_it_for_each_luminance_mode() -> None:
    """The report's words on a failed gate: budgets nearer the clean image decide it; with the absolute luminance
    bound (not an SSIM bound) a smaller beta or the luminance term as well, with the term mode not."""
    n = 40
    ball = 0.90 + 0.02 * torch.rand(n, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    md, claim = _judged(_curves(ball, torch.ones(n, dtype=torch.bool), ball + 0.03, torch.zeros(n, dtype=torch.bool)))
    assert claim.gates == {CURVE_RANGE_GATE: False}
    findings = SimpleNamespace(claims=[claim])
    term = curve_range_words(md, findings, PerceptualConfig(luminance="term"))
    absolute = curve_range_words(md, findings, PerceptualConfig(luminance="absolute"))
    for words in (term, absolute):
        assert "the curve-range gate failed" in words and "alphas nearer 1 in curve_alphas" in words
    assert "smaller beta" in absolute and "smaller beta" not in term
    assert f"Of those {md.images_both}, {n} are fooled already" in term


def test_curve_range_gate_fails_where_a_reach_below_the_margin_still_changes_the_verdict() -> None:
    """A difference just inside the margin (-0.0095, negligible) and two capped PGD images whose reach (about
    0.004) is below the smallest effect of interest (0.01) but carries the difference past -0.01 (reversed): the
    printed word would depend on values the grid leaves open, so the gate fails."""
    n = 40
    gen = torch.Generator().manual_seed(1)
    ball = 0.90 + 0.02 * torch.rand(n, generator=gen, dtype=torch.float64)
    pgd = ball + 0.0095 + 1e-5 * torch.randn(n, generator=gen, dtype=torch.float64)
    capped = torch.zeros(n, dtype=torch.bool)
    capped[:2] = True
    md, claim = _judged(_curves(ball, torch.zeros_like(capped), pgd, capped))
    assert md.reach["pgd"] < claim.sesoi == 0.01
    assert verdict(claim.effect, claim.p_adjusted, {}, sesoi=claim.sesoi) == "negligible"
    assert md.bounds["pgd"].verdict == "reversed"
    assert claim.gates == {CURVE_RANGE_GATE: False} and claim.verdict == "not interpretable"


def test_curve_range_gate_passes_an_end_that_only_loses_the_sign_of_an_effect_within_the_margin() -> None:
    """A negligible difference (-0.004, significant, inside the margin) whose SSIM-ball end sits near 0 (equivalent
    to null): both conclude that the difference is smaller than any of interest, so the gate passes."""
    n = 40
    gen = torch.Generator().manual_seed(2)
    pgd = 0.99 + 0.005 * torch.rand(n, generator=gen, dtype=torch.float64)
    ball = pgd - 0.004 + 1e-4 * torch.randn(n, generator=gen, dtype=torch.float64)
    capped = torch.zeros(n, dtype=torch.bool)
    capped[:8] = True  # their 1 - SSIM, about 0.014 in all, moves the mean by about +0.0035
    md, claim = _judged(_curves(ball, capped, pgd, torch.zeros_like(capped)))
    assert md.bounds["ssim-ball"].verdict == "equivalent to null" and claim.verdict == "negligible"
    assert claim.gates == {CURVE_RANGE_GATE: True}


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.floats(0.80, 0.999), st.floats(-0.05, 0.05), st.booleans(), st.booleans()),
                min_size=30, max_size=45),
       st.sampled_from([0.005, 0.01, 0.05]))
def test_curve_range_gate_passes_exactly_when_both_ends_read_the_claims_verdict(
        rows: list[tuple[float, float, bool, bool]], sesoi: float) -> None:
    ball = torch.tensor([r[0] for r in rows], dtype=torch.float64)
    pgd = (ball + torch.tensor([r[1] for r in rows], dtype=torch.float64)).clamp(0.5, 0.999)
    ball_capped, pgd_capped = (torch.tensor([r[k] for r in rows]) for k in (2, 3))
    md, claim = _judged(_curves(ball, ball_capped, pgd, pgd_capped), sesoi)
    own = verdict(claim.effect, claim.p_adjusted, {}, sesoi=claim.sesoi)
    assert set(md.bounds) == {name for name, k in md.capped.items() if k}  # an end only where a curve caps
    assert claim.gates[CURVE_RANGE_GATE] == all(same_conclusion(b.verdict, own) for b in md.bounds.values())
    assert (claim.verdict == "not interpretable") != claim.gates[CURVE_RANGE_GATE]
    assert claim.verdict in (own, "not interpretable")
    # each end moves the mean difference by exactly its reach: up at the SSIM-ball curve's, down at PGD's
    for name, sign in (("ssim-ball", 1.0), ("pgd", -1.0)):
        if name in md.bounds:
            assert abs(md.bounds[name].effect.mean - (claim.effect.mean + sign * md.reach[name])) < 1e-9


def test_capped_by_curve_reads_the_row_of_highest_mean_ssim() -> None:
    fooled = torch.tensor([[True, True, False], [False, True, False], [True, True, True]])
    ssims = torch.tensor([[0.99, 0.98, 0.99], [0.9, 0.91, 0.92], [0.8, 0.8, 0.8]])
    assert capped_by_curve(fooled, ssims).tolist() == [True, True, False]
    assert capped_by_curve(fooled[[2, 1, 0]], ssims[[2, 1, 0]]).tolist() == [True, True, False]  # not its position


def test_minimal_distortion_of_an_older_metrics_file_reads_without_the_curve_range() -> None:
    comparison = uniform_comparison([0.9, 0.8, 0.95, 0.7], [0.6, 0.7, 0.5, 0.65], 0, statistic="s", null="pgd")
    data = MinimalDistortion(4, 1, 0, {"ssim-ball": 0.97}, comparison).as_dict()
    del data["capped"], data["reach"], data["bounds"]
    assert MinimalDistortion.from_dict(data) == MinimalDistortion(4, 1, 0, {"ssim-ball": 0.97}, comparison)


def test_minimal_distortion_round_trips_its_curve_ends() -> None:
    comparison = uniform_comparison([0.9, 0.8, 0.95, 0.7], [0.6, 0.7, 0.5, 0.65], 0, statistic="s", null="pgd")
    end = CurveBound(Estimate(0.1, 0.05, 0.2, 4), 0.03, "insufficient data")
    md = MinimalDistortion(4, 1, 0, {"ssim-ball": 0.97}, comparison, {"ssim-ball": 2, "pgd": 0},
                           {"ssim-ball": 0.05, "pgd": 0.0}, {"ssim-ball": end})
    assert MinimalDistortion.from_dict(json.loads(json.dumps(md.as_dict()))) == md


# -- config and metrics ------------------------------------------------------------------

@pytest.mark.parametrize("bad", [{"window": "3x"}, {"window": "1"}, {"eps_max": 0.0}, {"eps_max": 1.5},
                                 {"importance": "nope"}, {"alpha": 1.0}, {"calibration_n": 0},
                                 {"ssim_tolerance": 0.0}, {"fraction": 1.0}, {"significance": 0.0},
                                 {"sesoi": -0.1}, {"gate_fills": ["zero"]}, {"gate_n": 0}, {"strata": 0}])
def test_config_rejects_invalid_values(bad: dict) -> None:
    with pytest.raises(ConfigError):
        config_from_mapping(PerceptualConfig, bad).validate()


def test_config_window_and_quick_preset() -> None:
    assert config_from_mapping(PerceptualConfig, {"window": "7"}).window_value() == 7
    assert PerceptualConfig().window_value() == "auto"
    config_from_mapping(PerceptualConfig, PerceptualConfig.QUICK).validate()
    default = PerceptualConfig()
    assert default.importance == "auto" and default.permutations == 10000
    assert default.sesoi == 0.01 and default.significance == 0.05 and default.alpha == 0.9  # alpha: the SSIM ball
    quick = PerceptualConfig.QUICK
    assert quick["permutations"] < 1000 and quick["gate_n"] <= quick["n"]
    assert quick["gate_steps"] < default.gate_steps and quick["randomization_images"] < default.randomization_images


def test_attack_metrics_from_rows_known_answers() -> None:
    def row(correct: bool, success: bool, s: float, iou: float) -> dict:
        return {"attack": "pgd", "label": 1, "correct": correct, "success": success, "adv_pred": 2 if success else 1,
                "ssim": s, "l2": 1.0, "linf": 0.1, "spearman": 0.5, "iou": iou, "energy_in_cam": 0.25}

    rows = [row(True, True, 0.8, 0.2), row(True, False, 0.9, 0.9), row(False, True, 0.5, 0.9),
            row(True, True, 0.6, float("nan"))]
    m = attack_metrics(rows, "pgd")
    assert m.images == 4 and m.clean_accuracy == 0.75 and m.successful == 2
    assert m.success_rate == pytest.approx(2 / 3)
    assert m.mean_ssim == pytest.approx((0.8 + 0.9 + 0.5 + 0.6) / 4)  # all attacked images
    assert m.mean_ssim_successful == pytest.approx(0.7)
    assert m.maps.iou == pytest.approx(0.2)  # NaN left out, only successful images
    assert m.adversarial_accuracy == pytest.approx(0.25)


# -- figures -----------------------------------------------------------------------------

def test_figures_write_pngs_and_reject_mismatched_inputs(tmp_path) -> None:
    cam, block = _block_maps()
    x = torch.rand(2, 1, 10, 10)
    cam2, block2 = cam.repeat(2, 1, 1), block.repeat(2, 1, 1)
    adv = {"ssim-ball": x.clamp(0, 0.9), "pgd": (x + 0.05).clamp(0, 1)}
    dist = {a: ssim_distortion(x, v) for a, v in adv.items()}
    regions = {a: block2.clone() for a in adv}
    p = plot_ssim_vs_cam(x, cam2, block2, adv, dist, regions, tmp_path / "ex.png", row_labels=["a", "b"],
                         adversarial_captions={a: ["c1", "c2"] for a in adv})
    assert p.stat().st_size > 1000
    with pytest.raises(ShapeError):
        plot_ssim_vs_cam(x, cam2, block2, adv, {"pgd": dist["pgd"]}, regions, tmp_path / "bad.png")
    s = plot_attack_summary({"ssim-ball": 0.9, "pgd": float("nan")}, {"ssim-ball": torch.rand(5), "pgd": torch.rand(5)},
                            tmp_path / "sum.png", target=0.5)
    assert s.stat().st_size > 1000
    c = plot_calibration([(0.3, 0.5), (0.15, 0.8)], 0.75, 0.15, tmp_path / "cal.png", tolerance=0.01)
    assert c.stat().st_size > 1000
    with pytest.raises(ShapeError):
        plot_calibration([], 0.75, 0.15, tmp_path / "cal2.png")
    cams, composition = _blob_maps(6)
    store = _store(cams, cams.flip(2), torch.zeros(6, dtype=torch.long), composition)
    comparisons = {"ssim-ball": compare_attack(store, PerceptualConfig(permutations=5))}
    o = plot_overlap_vs_baseline(comparisons, tmp_path / "ov.png")
    assert o.stat().st_size > 1000
    as_dicts = {"pgd": {s: {n: c.as_dict() for n, c in by_null.items()}
                        for s, by_null in comparisons["ssim-ball"].items()}}
    assert plot_overlap_vs_baseline(as_dicts, tmp_path / "ov1.png").stat().st_size > 1000  # the metrics' form
    with pytest.raises(ShapeError):
        plot_overlap_vs_baseline({"pgd": {}}, tmp_path / "ov2.png")


@pytest.mark.parametrize("reached, reachable", [(0.9413, True), (0.9282, True), (0.9702, False)])
def test_the_summary_says_matches_only_where_the_calibration_matched(reached: float, reachable: bool) -> None:
    """The summary's calibration line: "matches" only within the tolerance; otherwise the budget it settled on, what
    it gives and NOT matched (it read "eps 0.0187 matches mean SSIM 0.9415 -> 0.9282 (NOT matched)")."""
    cal = Calibration(target=0.9415, eps=0.0187, mean_ssim=reached, matched=abs(reached - 0.9415) <= 0.005,
                      reachable=reachable, tolerance=0.005)
    words = calibration_words(cal)
    assert (" matches " in words) == cal.matched and ("NOT matched" in words) == (not cal.matched), words
    assert f"{reached:.4f}" in words and "0.9415" in words and "0.0187" in words
    assert ("even the largest budget" in words) == (not reachable)
