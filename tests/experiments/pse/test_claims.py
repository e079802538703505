"""Image level and claims of ``pse``: the CAM test on planted co-locations, the claims it declares, the gate."""

from __future__ import annotations

from pathlib import Path

import torch
from helpers import suppression_case

from advspatial.analysis.pse import block_labels, promotion_suppression
from advspatial.analysis.pse_cam import pse_vs_cam
from advspatial.analysis.pse_types import (
    PROMOTION, SUPPRESSION, TYPE_NAMES, PSEResult, cat_pse, group_type_map, select_pse, type_shares,
)
from advspatial.experiments.pse.control import SHARE_NAMES, control_shares, energy_shares
from advspatial.experiments.pse import PSEConfig
from advspatial.experiments.pse.claims import TYPING_NULL, UNEXPLAINED, cam_claims, judged_claims, typing_claims
from advspatial.faithfulness.record import GateResult
from advspatial.experiments.measurement.roi import Roi
from advspatial.experiments.pse.findings import PSEFindings, build_findings
from advspatial.experiments.pse.report import not_interpretable_text, render
from advspatial.experiments.pse.stages import image_level
from advspatial.statistics.claims import NOT_INTERPRETABLE_ROI, judge
from advspatial.statistics.verdicts import VERDICTS


def planted_case(n: int = 40, seed: int = 0) -> tuple[PSEResult, torch.Tensor, torch.Tensor]:
    """8x8 images of 2x2 groups with random types; CAM_t0(x) marks exactly the suppression groups
    (so suppression falls in its region far more than in a partner's), CAM_t(x') is noise."""
    g = torch.Generator().manual_seed(seed)
    size, groups = 8, 16
    types = torch.randint(0, 4, (n, groups), generator=g)
    types[:, 0], types[:, 1] = SUPPRESSION, PROMOTION  # every image has both types
    energy = torch.full((n, groups), 4.0)
    shares, dominant = type_shares(types, energy)
    zeros = torch.zeros(n, groups)
    result = PSEResult(labels=block_labels(size, size, 2).expand(n, size, size).contiguous(), s=zeros, p=zeros.clone(),
                       energy=energy, size=torch.full((n, groups), 4), types=types, shares=shares,
                       perturbation_type=dominant, pixel_energy=torch.ones(n, size, size), s_total=torch.zeros(n),
                       p_total=torch.zeros(n), true_class=torch.arange(n) % 4, target_class=(torch.arange(n) + 1) % 4,
                       kappa=2.0, method="exact")
    cam_true = (group_type_map(result) == SUPPRESSION).float() + 0.01 * torch.rand(n, size, size, generator=g)
    cam_target = torch.rand(n, size, size, generator=g)
    return result, cam_true, cam_target


def _planted_test(n: int = 40):
    result, cam_true, cam_target = planted_case(n)
    return pse_vs_cam(result, cam_true, cam_target, 0.2, 200, 0, strata=result.true_class,
                      sample_ids=torch.arange(100, 100 + n))


def test_cam_claims_declare_one_primary_per_cam_and_follow_the_gate() -> None:
    from advspatial.statistics.claims import judge

    test = _planted_test()
    claims = cam_claims("pgd/targeted", test, {"RoI faithfulness": True}, "same-class")
    nulls = ("uniform", "any-class", "same-class")  # the engine's hierarchy (no composition: no object-conditioned)
    assert list(test.true_cam.by_null) == list(nulls)
    assert len(claims) == 2 * len(TYPE_NAMES) * len(nulls)
    assert {(c.statistic, c.null) for c in claims} == {
        (f"{t} share in {cam}", null) for t in TYPE_NAMES for cam in ("CAM_t0(x)", "CAM_t(x')") for null in nulls}
    primary = [c for c in claims if c.primary]  # one primary per pre-declared claim, against the primary null
    assert [c.statistic for c in primary] == ["suppression share in CAM_t0(x)", "promotion share in CAM_t(x')"]
    assert primary[0].claim == "suppression-dominated groups fall in the true-class CAM region"
    assert all(c.null == "same-class" for c in primary) and all(c.subject == "pgd/targeted" for c in claims)
    any_primary = [c for c in cam_claims("v", test, {"RoI faithfulness": True}, "any-class") if c.primary]
    assert [c.null for c in any_primary] == ["any-class", "any-class"]
    judge(claims, sesoi=0.01, alpha=0.05)
    assert all(c.verdict in VERDICTS for c in claims)
    assert primary[0].verdict == "supported", primary[0]  # the planted co-location
    assert primary[0].effect.low > 0.2 and primary[0].p_adjusted < 0.05
    assert primary[1].verdict != "supported"  # CAM_t(x') is noise
    uniform = next(c for c in claims if c.null == "uniform" and c.statistic == primary[0].statistic)
    assert uniform.verdict == "supported" and not uniform.primary  # planted: beyond uniform placement too
    failed = judge(cam_claims("v", test, {"RoI faithfulness": False}, "same-class"), sesoi=0.01)
    assert {c.verdict for c in failed} == {"not interpretable"}


def test_image_level_breaks_ties_by_global_sample_id() -> None:
    """A flat CAM ties every pixel at the cut: the region must follow the image's global id, not its position."""
    result, _, cam_target = planted_case(40)
    flat = torch.ones(40, 8, 8)
    ids = torch.arange(500, 540)
    rows = [{"index": int(i)} for i in ids]
    kept = cat_pse([select_pse(result, torch.arange(0, 25)), select_pse(result, torch.arange(25, 40))])
    test = image_level(PSEConfig(permutations=20), kept, {"true": flat, "target": cam_target, "ids": ids}, rows)
    by_id = pse_vs_cam(result, flat, cam_target, 0.2, 20, 0, strata=result.true_class, sample_ids=ids)
    by_position = pse_vs_cam(result, flat, cam_target, 0.2, 20, 0, strata=result.true_class)
    torch.testing.assert_close(test.true_cam.per_image, by_id.true_cam.per_image, equal_nan=True)
    assert not torch.allclose(by_position.true_cam.per_image.nan_to_num(), by_id.true_cam.per_image.nan_to_num())
    assert rows[3]["in_cam_test"] and rows[3]["true_cam:suppression"] == float(by_id.true_cam.per_image[3, 0])


def _measure(variant_run, passed: bool, cam_test: bool = True):
    runs = [variant_run("pgd/untargeted", cam_test=_planted_test() if cam_test else None),
            variant_run("cw-l2/targeted")]
    gate = GateResult(passed, "passed" if passed else "deletion:zero logit effect not above 0")
    claims = judged_claims(PSEConfig(), {run.name: run.cam_test for run in runs}, [], gate)
    findings = build_findings(runs, claims, gate, Roi.judged("hirescam", "flatten/FC head", gate), n=40,
                              layer="features.3", units=4, noise_floor=0.01, dissection=None)
    return findings, claims


def test_measure_labels_every_cam_result_when_the_gate_fails(variant_run) -> None:
    findings, claims = _measure(variant_run, passed=False)
    metrics = findings.to_metrics()
    assert "dissection" not in metrics  # switched off: no key, as before findings were typed
    assert PSEFindings.from_metrics(metrics).to_metrics().keys() == metrics.keys()
    gate = metrics["faithfulness"]["hirescam"]
    assert gate["passed"] is False and gate["reason"] == "deletion:zero logit effect not above 0"
    assert metrics["roi"] == {"method": "hirescam", "why": "flatten/FC head", "faithful": False,
                              "interpretation": NOT_INTERPRETABLE_ROI, "status": "failed"}
    assert metrics["cam_interpretation"] == NOT_INTERPRETABLE_ROI
    for m in metrics["variants"].values():
        assert m["cam_interpretation"] == NOT_INTERPRETABLE_ROI
    assert metrics["variants"]["pgd/untargeted"]["cam_test"]["interpretation"] == NOT_INTERPRETABLE_ROI
    cam = [c for c in metrics["claims"] if c["null"] not in (TYPING_NULL, "one half")]
    assert len(cam) == 24  # 8 shares x 3 nulls; the variant without a test has none
    assert {c["verdict"] for c in cam} == {"not interpretable"}
    assert all(c["gates"] == {"RoI faithfulness": False} for c in cam)
    typing = [c for c in claims if c.null in (TYPING_NULL, "one half")]
    assert len(typing) == 8 and len(claims) == 32  # 4 typing claims per variant rest on no CAM, no gate
    assert all(c.gates == {} and c.verdict == "insufficient data" for c in typing)  # no rows: no images
    text = not_interpretable_text(findings)
    assert text.startswith("Not interpretable: the RoI failed")


def test_measure_with_a_passed_gate_gives_verdicts_by_the_rules(variant_run) -> None:
    findings, claims = _measure(variant_run, passed=True)
    metrics = findings.to_metrics()
    assert metrics["roi"]["faithful"] and metrics["roi"]["interpretation"] == "interpretable"
    assert not_interpretable_text(findings) == ""
    verdicts = {(c["statistic"], c["primary"]): c["verdict"] for c in metrics["claims"]}
    assert verdicts[("suppression share in CAM_t0(x)", True)] == "supported"
    assert all(v in VERDICTS for v in verdicts.values())
    for c in metrics["claims"]:  # corrected p never below the raw p
        assert c["p_adjusted"] != c["p_adjusted"] or c["p_adjusted"] >= c["p"] - 1e-12


def _typing_verdicts(x, x_adv, model, y, t, noise_floor: float = 0.01) -> dict[str, object]:
    """The typing claims of one set of perturbations, judged; by statistic."""
    observed = promotion_suppression(model, x, x_adv, y, t, block=2, noise_floor=noise_floor)
    shares = energy_shares(observed.types, observed.energy)
    control = control_shares(model, x, x_adv, observed, torch.arange(len(x)), seed=0, draws=2)
    claims = typing_claims("toy", {n: shares[:, k].tolist() for k, n in enumerate(SHARE_NAMES)},
                           {n: control[:, k].tolist() for k, n in enumerate(SHARE_NAMES)}, seed=0)
    return {c.statistic: c for c in judge(claims)}


def test_typing_claim_supports_a_perturbation_built_to_suppress() -> None:
    model, x, x_adv, y, t = suppression_case(n=40)
    claims = _typing_verdicts(x, x_adv, model, y, t)
    supp = claims["suppression energy share"]
    assert supp.primary and supp.verdict == "supported" and supp.effect.low > 0.2
    assert supp.observed == 1.0 and supp.null == TYPING_NULL
    assert claims["promotion energy share"].verdict == "reversed"  # the δ promotes nothing; random signs do
    assert claims["untyped energy share"].claim == UNEXPLAINED
    assert claims["untyped energy share"].verdict == "reversed"  # every group is typed: the typing explains it


def test_typing_claim_does_not_support_a_random_perturbation() -> None:
    model, x, _, y, t = suppression_case(n=40)
    g = torch.Generator().manual_seed(5)
    x_adv = x + 0.05 * (torch.randint(0, 2, x.shape, generator=g) * 2 - 1).double()
    claims = _typing_verdicts(x, x_adv, model, y, t)
    for name in ("suppression", "promotion", "balanced"):
        assert claims[f"{name} energy share"].verdict != "supported", name
        assert claims[f"{name} energy share"].p_adjusted > 0.05, name


def test_unexplained_verdict_fires_when_most_energy_is_under_the_noise_floor() -> None:
    model, x, x_adv, y, t = suppression_case(n=40)
    # 16 equal blocks each carry 1/16 of the total effect, under a floor of 10% of it: all untyped
    claims = _typing_verdicts(x, x_adv, model, y, t, noise_floor=0.1)
    untyped = claims["untyped energy share"]
    assert untyped.observed > 0.5 and untyped.null_value == 0.5
    assert untyped.verdict == "supported" and not untyped.primary


def test_report_without_cam_claims_has_no_forest_plot_and_says_so(variant_run, tmp_path: Path) -> None:
    """No variant has enough successful images for the image-level test: no forest plot, and the report says why."""
    from advspatial.experiments.pse.figures import FOREST, draw_figures

    findings, claims = _measure(variant_run, passed=True, cam_test=False)
    assert claims and not any(c.null == "same-class" for c in claims)  # typing claims only
    runs = [variant_run(name) for name in findings.variants]
    draw_figures(tmp_path, PSEConfig(), findings, runs, class_names=["a", "b", "c", "d"])
    assert not (tmp_path / FOREST).exists() and (tmp_path / "masking-curve.png").is_file()
    rendered = render(PSEConfig(), findings, tmp_path)
    verdicts = rendered.sections[0]
    assert "No forest plot: no attack variant has a CAM claim against the same-class null." in verdicts.paragraphs
    assert not verdicts.figures
    with_forest = render(PSEConfig(), _measure(variant_run, passed=True)[0], tmp_path)
    assert not any(p.startswith("No forest plot") for p in with_forest.sections[0].paragraphs)
