"""Tests of the ``pse`` experiment: its helper functions on tiny models, and a CI-sized end-to-end run."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

import advspatial.data.synthetic  # noqa: F401  (registers synthetic-shapes)
import advspatial.experiments.pse as pse
from advspatial.analysis.pse import (PROMOTION, SUPPRESSION, TYPE_NAMES, PSEResult, block_labels, group_type_map,
                                     promotion_suppression, pse_vs_cam, type_shares)
from advspatial.analysis.units import masking_curve, unit_activation_change
from advspatial.errors import ConfigError
from advspatial.experiments.gate import GatedConfig
from advspatial.regions.claims import NOT_INTERPRETABLE_ROI
from advspatial.regions.inference import VERDICTS
from helpers import ReportParser


def _pair(n: int = 6, seed: int = 0, size: int = 28) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 1, size, size, generator=g)
    x_adv = (x + 0.1 * torch.randn(n, 1, size, size, generator=g)).clamp(0, 1)
    y = torch.randint(0, 10, (n,), generator=g)
    return x, x_adv, y


# -- targets -------------------------------------------------------------------------------

@settings(max_examples=20, deadline=None)
@given(st.integers(2, 12), st.integers(1, 40), st.integers(0, 10_000))
def test_random_targets_never_the_label_and_seeded(num_classes: int, n: int, seed: int) -> None:
    labels = torch.randint(0, num_classes, (n,), generator=torch.Generator().manual_seed(seed))
    t = pse.choose_targets(labels, num_classes, "random", seed)
    assert t.shape == (n,)
    assert ((t >= 0) & (t < num_classes)).all()
    assert (t != labels).all()
    assert torch.equal(t, pse.choose_targets(labels, num_classes, "random", seed))


def test_random_targets_cover_all_other_classes() -> None:
    labels = torch.zeros(3000, dtype=torch.long)
    t = pse.choose_targets(labels, 4, "random", 0)
    counts = torch.bincount(t, minlength=4)
    assert counts[0] == 0
    assert (counts[1:] > 850).all()  # ~1000 each, uniform over the 3 other classes


def test_next_and_least_likely_targets_known_answers() -> None:
    labels = torch.tensor([0, 2, 1])
    assert pse.choose_targets(labels, 3, "next", 0).tolist() == [1, 0, 2]
    logits = torch.tensor([[-5.0, 1.0, 0.0], [3.0, 2.0, -9.0], [0.0, -1.0, 4.0]])
    # in every row the lowest logit is the label's own, so the next lowest class is chosen
    assert pse.choose_targets(labels, 3, "least-likely", 0, logits).tolist() == [2, 1, 0]
    with pytest.raises(ConfigError):
        pse.choose_targets(labels, 3, "least-likely", 0)
    with pytest.raises(ConfigError):
        pse.choose_targets(labels, 3, "farthest", 0)
    with pytest.raises(ConfigError):
        pse.choose_targets(labels, 1, "random", 0)


def test_runner_up_is_the_clean_second_class() -> None:
    logits = torch.tensor([[5.0, 4.0, 1.0], [0.0, 2.0, 3.0], [1.0, 1.0, 9.0]])
    labels = torch.tensor([0, 2, 2])
    assert pse.runner_up(logits, labels).tolist() == [1, 1, 0]  # ties: the lowest class
    labels = torch.tensor([1, 0, 1])  # a misclassified image still gets the best class other than its label
    assert pse.runner_up(logits, labels).tolist() == [0, 2, 2]


def test_prespecified_target_ignores_the_class_the_attack_reached() -> None:
    runner = torch.tensor([1, 2])
    untargeted = SimpleNamespace(target=None, adv_pred=torch.tensor([3, 3]))
    targeted = SimpleNamespace(target=torch.tensor([4, 0]), adv_pred=torch.tensor([3, 3]))
    assert pse.prespecified_target(untargeted, runner).tolist() == [1, 2]
    assert pse.prespecified_target(targeted, runner).tolist() == [4, 0]
    assert pse.adversarial_class(untargeted).tolist() == [3, 3]  # the post-hoc class, secondary view only


def test_group_spec_and_adaptive_k() -> None:
    assert pse.group_spec("4x4") == 4 and pse.group_spec("superpixels") == 0
    for bad in ("4x2", "x", "0x0", "slic"):
        with pytest.raises(ConfigError):
            pse.group_spec(bad)
    curve = {"ks": torch.tensor([0, 1, 2, 4, 8]), "robust_acc": torch.tensor([0.1, 0.3, 0.5, 0.5, 0.9])}
    assert pse.adaptive_k(curve) == 2  # the best k short of masking every unit; ties: the smallest


def test_adaptive_attack_is_pgd_or_the_ensemble(tiny_cnn) -> None:
    model = tiny_cnn()
    assert pse.adaptive_attack_of(model, pse.PSEConfig()).name == "pgd"
    ensemble = pse.adaptive_attack_of(model, pse.PSEConfig(adaptive_attack="autoattack", adaptive_queries=10))
    assert ensemble.name == "autoattack" and ensemble.n_queries == 10
    assert "ensemble" in pse.adaptive_description(pse.PSEConfig(adaptive_attack="autoattack"))
    with pytest.raises(ConfigError):
        pse.PSEConfig(adaptive_attack="fgsm").validate()


# -- dissection of the analysed model ------------------------------------------------------------

def test_dataset_concepts_leave_out_the_labels() -> None:
    from advspatial.data import load_dataset

    data = load_dataset("synthetic-shapes", "test", n=10)
    concepts = pse.dataset_concepts(data)
    assert concepts and not any(k.startswith("shape:") for k in concepts)
    assert {"background", "object", "object-boundary"} <= set(concepts)
    assert torch.equal(concepts["object"], data.masks.bool())
    assert (concepts["object-boundary"] <= concepts["object"]).all() and concepts["object-boundary"].any()
    assert pse.label_concept("shape:circle", data.class_names) and not pse.label_concept("texture:noise",
                                                                                         data.class_names)


def test_no_concepts_means_no_dissection_and_a_reason(tiny_cnn) -> None:
    data = SimpleNamespace(concepts={}, class_names=["a", "b"], masks=None)
    config = pse.PSEConfig(dataset="fashion-mnist")
    assert pse.concept_masks(config, data) == ({}, "")
    ctx = SimpleNamespace(config=config, data=data, layer="conv")
    summary = pse.run_dissection(ctx)
    assert not summary.dissected and "cannot be dissected" in summary.reason and "No other model" in summary.reason
    assert pse.dissection_metrics(summary)["dissected"] is False


def test_dissection_correlation_leaves_out_never_active_units() -> None:
    """Dead units (no clean activation, empty region) would add (0, 0) points that inflate Spearman."""
    from advspatial.analysis.dissection import DissectionResult

    units = 8
    clean = torch.tensor([1.0, 2.0, 4.0, 8.0, 1.0, 0.0, 0.0, 0.0])
    change = pse.UnitChange(mean_abs=clean * torch.tensor([0.1, 0.4, 0.2, 0.3, 0.5, 0, 0, 0]),
                            signed_mean=torch.zeros(units), clean_mean_abs=clean)
    iou = torch.tensor([0.5, 0.1, 0.4, 0.3, 0.05, 0.0, 0.0, 0.0])
    area = torch.tensor([5.0, 5, 5, 5, 5, 0, 0, 0])
    result = DissectionResult(("c",), torch.zeros(units), iou[:, None], torch.ones(units, 1), iou[:, None],
                              torch.zeros(units, dtype=torch.long), iou, area, 0.995, "upsampled", True)
    active, rho, _ = pse.relative_correlation(change, result, 50, 0)
    assert active.tolist() == [True] * 5 + [False] * 3
    assert rho == pytest.approx(-1.0)  # relative sensitivity 0.1..0.5 against IoU in exactly reversed order
    dead = pse.UnitChange(change.mean_abs, change.signed_mean, torch.zeros(units))
    active, rho, p = pse.relative_correlation(dead, result, 50, 0)
    assert not active.any() and math.isnan(rho) and math.isnan(p)


def test_user_concepts_file_rows_follow_the_global_ids(tmp_path) -> None:
    import numpy as np

    masks = np.zeros((5, 4, 4), dtype=bool)
    masks[3, 0, 0] = True
    np.savez(tmp_path / "c.npz", spot=masks)
    data = SimpleNamespace(ids=torch.tensor([3, 1]), image_shape=(1, 4, 4), concepts={}, class_names=["a"])
    config = pse.PSEConfig(concepts=str(tmp_path / "c.npz"))
    concepts, source = pse.concept_masks(config, data)
    assert source.startswith("user file") and concepts["spot"].shape == (2, 4, 4)
    assert bool(concepts["spot"][0, 0, 0]) and not concepts["spot"][1].any()
    torch.save({"spot": torch.zeros(2, 4, 4, dtype=torch.bool)}, tmp_path / "short.pt")
    with pytest.raises(ConfigError, match="row for every test image"):
        pse.concept_masks(pse.PSEConfig(concepts=str(tmp_path / "short.pt")), data)
    with pytest.raises(ConfigError):
        pse.concept_masks(pse.PSEConfig(concepts=str(tmp_path / "missing.npz")), data)


def test_units_are_ranked_on_training_images_disjoint_from_the_test_ids(tiny_cnn, tmp_path) -> None:
    """One image set for both splits: the ranking images never include a test image."""
    from advspatial.data.tensors import register_dataset_object
    from advspatial.runtime import RunDir

    g = torch.Generator().manual_seed(0)
    name = register_dataset_object((torch.rand(40, 1, 28, 28, generator=g), torch.arange(40) % 10))
    config = pse.PSEConfig(dataset=name, unit_train_n=30, batch_size=8)
    test_ids = torch.arange(0, 40, 3)
    ctx = SimpleNamespace(config=config, data=SimpleNamespace(ids=test_ids), model=tiny_cnn(),
                          device=torch.device("cpu"), rundir=RunDir(tmp_path / "run"),
                          each_batch=lambda fn, desc="", slices=None: [fn(b, sl) for b, sl in enumerate(slices)])
    train = pse.train_split(ctx)
    assert train.shared and 20 < len(train.data) <= 40 - len(test_ids)  # stratified, rounded per class
    assert not torch.isin(train.data.ids, test_ids).any()
    assert (train.targets != train.data.labels).all()


# -- streaming helpers: combining batches equals the whole set --------------------------------

def test_select_and_cat_pse_round_trip(tiny_cnn) -> None:
    model = tiny_cnn()
    x, x_adv, y = _pair(5)
    whole = promotion_suppression(model, x, x_adv, y, block=7)
    parts = [pse.select_pse(whole, torch.tensor([0, 1])), pse.select_pse(whole, torch.tensor([2, 3, 4]))]
    again = pse.cat_pse(parts)
    for key, value in pse.pse_to_dict(whole).items():
        other = getattr(again, key)
        if isinstance(value, torch.Tensor):
            assert torch.equal(value, other), key
        else:
            assert value == other, key
    picked = pse.select_pse(whole, torch.tensor([3]))
    assert torch.equal(picked.s[0], whole.s[3]) and picked.kappa == whole.kappa
    with pytest.raises(ConfigError):
        pse.cat_pse([])


def test_unit_sums_over_batches_equal_the_whole_set(tiny_cnn) -> None:
    model = tiny_cnn()
    x, x_adv, _ = _pair(7)
    keep = torch.tensor([True, False, True, True, False, True, True])
    units = pse.count_units(model, "features.3", x[:1])
    assert units == 16
    sums = pse.UnitSums.from_change(None, 0, units)
    for sl in (slice(0, 3), slice(3, 5), slice(5, 7)):
        sums = sums + pse.sensitive_units_in_batch(model, "features.3", x[sl], x_adv[sl], keep[sl], units)
    whole = unit_activation_change(model, "features.3", x[keep], x_adv[keep])
    combined = sums.change()
    assert sums.images == int(keep.sum())
    for key in ("mean_abs", "signed_mean", "clean_mean_abs"):
        torch.testing.assert_close(getattr(combined, key), getattr(whole, key), rtol=1e-5, atol=1e-7)


def test_unit_sums_of_no_images_is_nan() -> None:
    empty = pse.UnitSums.from_change(None, 0, 4)
    assert empty.images == 0 and torch.isnan(empty.change().mean_abs).all()


def test_masking_curves_combined_over_batches_equal_the_whole_set(tiny_cnn) -> None:
    model = tiny_cnn()
    x, x_adv, y = _pair(9, seed=3)
    with torch.no_grad():
        y = model(x).argmax(1)  # some correct images so that the accuracies move
    ranked = torch.arange(16).flip(0)
    whole = masking_curve(model, "features.3", ranked, x, y, x_adv, n_random=2, seed=5)
    slices = (slice(0, 4), slice(4, 9))
    curves = [{k: getattr(c, k) for k in c.__dataclass_fields__}
              for c in (masking_curve(model, "features.3", ranked, x[s], y[s], x_adv[s], n_random=2, seed=5)
                        for s in slices)]
    combined = pse.combine_curves(curves, [4, 5])
    for key in ("clean_acc", "robust_acc", "random_clean_acc", "random_robust_acc", "random_clean_all"):
        torch.testing.assert_close(combined[key], getattr(whole, key).double(), rtol=0, atol=1e-12)
    assert combined["clean_acc"][0] == 1.0  # k = 0 masks nothing: y is the prediction


def test_cam_layer_name(tiny_cnn) -> None:
    model = tiny_cnn()
    probe = torch.rand(1, 1, 28, 28)
    assert pse.cam_layer_name(model, probe) == "features.3"
    assert pse.cam_layer_name(model, probe, "features.0") == "features.0"
    plain = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 26 * 26, 10))
    assert pse.cam_layer_name(plain, probe) == "1"  # found: the last 4-D feature map


# -- rows and metrics --------------------------------------------------------------------------

def test_batch_rows_agree_with_the_pse_result(tiny_cnn) -> None:
    from advspatial.attacks import make_attack

    model = tiny_cnn()
    x, _, _ = _pair(6, seed=1)
    with torch.no_grad():
        y = model(x).argmax(1)
    target = (y + 1) % 10
    result = make_attack("pgd", model, eps=0.2, alpha=0.05, steps=5).run(x, y, target=target)
    t = pse.adversarial_class(result)
    assert torch.equal(t, target)
    res = promotion_suppression(model, x, result.x_adv, y, t, block=4, secondary_target=result.adv_pred,
                                noise_floor=0.01)
    loo = promotion_suppression(model, x, result.x_adv, y, t, block=4, secondary_target=result.adv_pred,
                                variant="leave-one-out", noise_floor=0.01)
    ok = result.success
    rows = pse.batch_rows("pgd", "targeted", torch.arange(6), y, y, result, res, loo, ok)
    assert len(rows) == 6
    for i, row in enumerate(rows):
        assert row["targeted"] is True and row["variant"] == "pgd/targeted" and row["target"] == int(target[i])
        assert row["posthoc_target"] == int(target[i])
        for prefix in ("", "loo:", "posthoc:"):
            shares = [row[f"{prefix}share:{name}"] for name in TYPE_NAMES]
            assert math.isclose(sum(shares), 1.0, abs_tol=1e-5)
            assert row[f"{prefix}perturbation_type"] == TYPE_NAMES[max(range(4), key=lambda k: (shares[k], -k))]
        untyped = {"": row["groups_untyped"], "loo:": row["loo:groups_untyped"]}
        for prefix, count in untyped.items():
            assert sum(row[f"{prefix}groups:{name}"] for name in TYPE_NAMES) + count == row["groups_perturbed"]
        assert math.isclose(row["s_groups_sum"], float(res.s[i].sum()), rel_tol=1e-5, abs_tol=1e-6)
        assert math.isclose(row["loo:s_groups_sum"], float(loo.s[i].sum()), rel_tol=1e-5, abs_tol=1e-6)


def test_variant_metrics_known_answer() -> None:
    def row(correct: bool, success: bool, kind: str, share_s: float, tested: bool, in_cam: float) -> dict:
        r = {"variant": "a/untargeted", "correct": correct, "success": success, "successful": correct and success,
             "l2": 1.0, "linf": 0.1, "perturbation_type": kind, "s_total": 2.0, "p_total": 1.0,
             "s_groups_sum": 1.5, "p_groups_sum": 0.5, "in_cam_test": tested, "adv_pred": 1, "target": 1,
             "groups_untyped": 1, "groups_perturbed": 4, "loo:groups_untyped": 2, "loo:s_groups_sum": 1.0,
             "loo:p_groups_sum": 0.5, "loo:perturbation_type": kind, "posthoc:perturbation_type": "promotion"}
        for name in TYPE_NAMES:
            for prefix in ("", "loo:", "posthoc:"):
                r[f"{prefix}share:{name}"] = share_s if name == "suppression" else (1 - share_s) / 3
            for key in pse.CAM_KEYS:
                r[f"{key}:{name}"] = in_cam if tested else math.nan
        return r

    rows = [row(True, True, "suppression", 0.7, True, 0.5), row(True, True, "promotion", 0.1, True, 0.3),
            row(True, False, "balanced", 0.2, False, 0.0), row(False, True, "suppression", 0.9, False, 0.0)]
    m = pse.variant_metrics(rows, "a/untargeted")
    assert m["images"] == 4 and m["successful"] == 2
    assert m["clean_accuracy"] == 0.75
    assert math.isclose(m["success_rate"], 2 / 3)
    assert m["type_fractions"] == {"suppression": 0.5, "promotion": 0.5, "balanced": 0.0, "opposing": 0.0}
    assert math.isclose(m["mean_shares"]["suppression"], 0.4)
    assert math.isclose(m["true_cam_observed"]["promotion"], 0.4)
    assert m["cam_test_images"] == 2
    assert m["untyped_groups"] == 2 and m["perturbed_groups"] == 8 and m["loo_untyped_groups"] == 4
    assert m["type_fractions_posthoc"]["promotion"] == 1.0 and m["reached_target"] == 1.0


@pytest.mark.parametrize("change", [
    {"modes": ["sideways"]}, {"target_mode": "farthest"}, {"attacks": ["deepfool"]}, {"attacks": []},
    {"pse_method": "exactly"}, {"kappa": 0.5}, {"cam": "nope"}, {"noise_floor": -0.1},
    {"stability_groups": ["3x4"]}, {"stability_groups": ["slic"]}, {"stability_kappas": [0.5]}, {"unit_train_n": 0},
    {"baseline": "other"}, {"rank_by": "random"}, {"dissection_attack": "nope"}, {"top_fraction": 0.0},
    {"sesoi": -0.01}, {"significance": 0.0}, {"significance": 1.0}, {"gate_fills": ["zero"]}, {"gate_n": 0},
])
def test_config_validation(change: dict) -> None:
    with pytest.raises(ConfigError):
        pse.PSEConfig(**change).validate()


def test_untargeted_only_accepts_attacks_without_a_targeted_mode() -> None:
    pse.PSEConfig(attacks=["deepfool"], modes=["untargeted"]).validate()


def test_config_has_the_gate_and_the_engine_settings() -> None:
    config = pse.PSEConfig()
    assert isinstance(config, GatedConfig)
    assert config.cam == "auto" and config.sesoi == 0.01 and config.significance == 0.05
    config.validate()
    quick = pse.PSEConfig(**pse.PSEConfig.QUICK)
    assert quick.gate_n <= quick.n and quick.gate_steps < config.gate_steps
    assert quick.randomization_images < config.randomization_images
    # Holm over the primary claims must be able to reach alpha with the default permutations
    primary = 2 * len(config.attacks) * len(config.modes)
    assert primary / (config.permutations + 1) < config.significance


# -- claims from the engine's comparisons ---------------------------------------------------------

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
    from advspatial.regions.claims import judge

    test = _planted_test()
    claims = pse.cam_claims("pgd/targeted", test, {"RoI faithfulness": True}, "same-class")
    assert len(claims) == 2 * len(TYPE_NAMES)
    primary = [c for c in claims if c.primary]
    assert [c.statistic for c in primary] == ["suppression share in CAM_t0(x)", "promotion share in CAM_t(x')"]
    assert primary[0].claim == "suppression-dominated groups fall in the true-class CAM region"
    assert all(c.null == "same-class" and c.subject == "pgd/targeted" for c in claims)
    judge(claims, sesoi=0.01, alpha=0.05)
    assert all(c.verdict in VERDICTS for c in claims)
    assert primary[0].verdict == "supported", primary[0]  # the planted co-location
    assert primary[0].effect.low > 0.2 and primary[0].p_adjusted < 0.05
    assert primary[1].verdict != "supported"  # CAM_t(x') is noise
    failed = judge(pse.cam_claims("v", test, {"RoI faithfulness": False}, "same-class"), sesoi=0.01)
    assert {c.verdict for c in failed} == {"not interpretable"}


def test_image_level_breaks_ties_by_global_sample_id() -> None:
    """A flat CAM ties every pixel at the cut: the region must follow the image's global id, not its position."""
    result, _, cam_target = planted_case(40)
    flat = torch.ones(40, 8, 8)
    ids = torch.arange(500, 540)
    ctx = SimpleNamespace(config=pse.PSEConfig(permutations=20))
    rows = [{"index": int(i)} for i in ids]
    test = pse.image_level(ctx, "v", pse.cat_pse([pse.select_pse(result, torch.arange(0, 25)),
                                                  pse.select_pse(result, torch.arange(25, 40))]),
                           {"true": flat, "target": cam_target, "ids": ids}, rows)
    by_id = pse_vs_cam(result, flat, cam_target, 0.2, 20, 0, strata=result.true_class, sample_ids=ids)
    by_position = pse_vs_cam(result, flat, cam_target, 0.2, 20, 0, strata=result.true_class)
    torch.testing.assert_close(test.true_cam.per_image, by_id.true_cam.per_image, equal_nan=True)
    assert not torch.allclose(by_position.true_cam.per_image.nan_to_num(), by_id.true_cam.per_image.nan_to_num())
    assert rows[3]["in_cam_test"] and rows[3]["true_cam:suppression"] == float(by_id.true_cam.per_image[3, 0])


def _measure(passed: bool):
    test = _planted_test()
    ctx = SimpleNamespace(config=pse.PSEConfig(), cam="hirescam", cam_reason="flatten/FC head")
    summaries = [SimpleNamespace(name="pgd/untargeted", cam_test=test), SimpleNamespace(name="cw-l2/targeted",
                                                                                        cam_test=None)]
    metrics = {"variants": {"pgd/untargeted": {"cam_test": test.as_dict()}, "cw-l2/targeted": {"cam_test": None}}}
    gate = {"passed": passed, "reason": "passed" if passed else "deletion:zero logit effect not above 0"}
    claims = pse.measure(ctx, summaries, metrics, gate)
    return metrics, claims


def test_measure_labels_every_cam_result_when_the_gate_fails() -> None:
    metrics, claims = _measure(passed=False)
    assert metrics["faithfulness"] == {"hirescam": {"passed": False,
                                                    "reason": "deletion:zero logit effect not above 0"}}
    assert metrics["roi"] == {"method": "hirescam", "why": "flatten/FC head", "faithful": False,
                              "interpretation": NOT_INTERPRETABLE_ROI}
    assert metrics["cam_interpretation"] == NOT_INTERPRETABLE_ROI
    for m in metrics["variants"].values():
        assert m["cam_interpretation"] == NOT_INTERPRETABLE_ROI
    assert metrics["variants"]["pgd/untargeted"]["cam_test"]["interpretation"] == NOT_INTERPRETABLE_ROI
    assert len(metrics["claims"]) == len(claims) == 8  # the variant without a test has no claim
    assert {c["verdict"] for c in metrics["claims"]} == {"not interpretable"}
    assert all(c["gates"] == {"RoI faithfulness": False} for c in metrics["claims"])
    text = pse.not_interpretable_text(metrics)
    assert text.startswith("Not interpretable: the RoI failed")


def test_measure_with_a_passed_gate_gives_verdicts_by_the_rules() -> None:
    metrics, claims = _measure(passed=True)
    assert metrics["roi"]["faithful"] and metrics["roi"]["interpretation"] == "interpretable"
    assert pse.not_interpretable_text(metrics) == ""
    verdicts = {(c["statistic"], c["primary"]): c["verdict"] for c in metrics["claims"]}
    assert verdicts[("suppression share in CAM_t0(x)", True)] == "supported"
    assert all(v in VERDICTS for v in verdicts.values())
    for c in metrics["claims"]:  # corrected p never below the raw p
        assert c["p_adjusted"] != c["p_adjusted"] or c["p_adjusted"] >= c["p"] - 1e-12


# -- end to end --------------------------------------------------------------------------------

def _train(arch: str, dataset: str, n: int, batches: int, path: Path) -> Path:
    from advspatial.data import load_dataset
    from advspatial.training import build_for, TrainConfig

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
    config = pse.PSEConfig(**{**pse.PSEConfig.QUICK, "dataset": "synthetic-shapes", "n": 12, "batch_size": 6,
                              "cw_steps": 5, "cw_search_steps": 2, "steps": 5, "permutations": 10, "mask_random": 1,
                              "unit_train_n": 12, "stability_images": 6, "superpixels": 20, "block": 4,
                              "correlation_permutations": 50, "model": str(main), "arch": "smallcnn",
                              "progress": False, "device": "cpu", "out": str(tmp / "run")})
    config.validate()
    result, rundir = run_experiment("pse", config)
    return config, result, rundir




SECTIONS = ["verdicts", "faithfulness", "setup", "perturbation-types", "typing-stability", "image-level", "unit-level", "dissection",
            "limits", "config"]


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
            for key in pse.CAM_KEYS:
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
        assert {"kappa=1.5", "kappa=3", "leave-one-out", "4x4", "superpixels"} <= set(m["stability"])
        assert sum(int(r["groups_untyped"]) for r in ok) == m["untyped_groups"]
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

    report = ReportParser()
    html = (rundir.path / "report.html").read_text()
    report.feed(html)
    assert report.sections == SECTIONS  # the verdicts first, then the gate, then the analyses
    assert "Region of Importance (RoI)" in html and "Region of Attack (RoA)" in html
    assert html.index("Region of Importance (RoI)") < html.index('id="faithfulness"')
    assert "no adaptive attack yet" in html
    pngs = sorted(p.name for p in rundir.figures.glob("*.png"))
    for name in ("perturbation-types.png", "unit-sensitivity.png", "masking-curve.png", "dissection.png", "forest.png"):
        assert name in pngs
    assert len(report.images) == len(pngs)
    assert all(src.startswith("data:image/png;base64,") and len(src) > 1000 for src in report.images)


@pytest.mark.slow
def test_quick_run_gate_claims_and_verdicts(quick_run) -> None:
    """The gate runs on the CAM the run uses; claims carry it; 12 images cannot pass it (n < 30)."""
    config, result, rundir = quick_run
    metrics = json.loads((rundir.path / "metrics.json").read_text())
    roi = metrics["roi"]
    assert set(roi) == {"method", "why", "faithful", "interpretation"}
    assert roi["method"] == "hirescam" and "flatten/FC head" in roi["why"]  # smallcnn: auto picks by head type
    gate = metrics["faithfulness"][roi["method"]]
    assert set(gate) >= {"passed", "reason", "n", "deletion", "attack", "per_class", "randomization", "method"}
    assert set(gate["deletion"]) == set(config.gate_fills)
    assert gate["fraction"] == config.top_fraction and gate["n"] <= config.n
    assert len(gate["randomization"]) >= 1
    assert gate["passed"] is False and "insufficient data" in gate["reason"]
    assert roi["faithful"] is False and roi["interpretation"] == NOT_INTERPRETABLE_ROI
    claims = metrics["claims"]
    tested = [v for v, m in metrics["variants"].items() if m["cam_test"] is not None]
    assert tested and len(claims) == 8 * len(tested)
    for v in tested:
        primary = [c for c in claims if c["subject"] == v and c["primary"]]
        assert [c["statistic"] for c in primary] == ["suppression share in CAM_t0(x)", "promotion share in CAM_t(x')"]
        assert metrics["variants"][v]["cam_test"]["interpretation"] == NOT_INTERPRETABLE_ROI
    for m in metrics["variants"].values():
        assert m["cam_interpretation"] == NOT_INTERPRETABLE_ROI
    for c in claims:
        assert c["verdict"] in VERDICTS
        assert c["gates"] == {"RoI faithfulness": False} and c["verdict"] == "not interpretable"
        assert c["null"] == config.baseline
    html = (rundir.path / "report.html").read_text()
    verdicts = html[html.index('id="verdicts"'):html.index('id="faithfulness"')]
    assert "not interpretable" in verdicts and "NOT INTERPRETABLE" in verdicts
    assert "Not interpretable: the RoI failed the faithfulness gate" in verdicts
    assert "FAILED the faithfulness gate" in result.summary


@pytest.mark.slow
def test_resume_recomputes_missing_stages_identically(quick_run) -> None:
    from advspatial.experiments import run_experiment

    config, _, rundir = quick_run
    before_rows = (rundir.path / "per_image.csv").read_text()
    before = json.loads((rundir.path / "metrics.json").read_text())
    gate_stages = sorted((rundir.stages / "gate").rglob("batch-00000.pt"))
    assert gate_stages, "the gate's batches are cached in the run directory"
    gate_stages[0].unlink()
    for stage in ("pse/isolated/pgd/targeted/batch-00001", "pse/leave-one-out/pgd/untargeted/batch-00000",
                  "stability/pgd/untargeted/batch-00000", "units/train/pgd/untargeted/batch-00001",
                  "adaptive/unmasked/batch-00000", "masking/cw-l2/untargeted/batch-00000", "dissection/result"):
        rundir.stage_path(stage).unlink()
    run_experiment("pse", config, resume=True)
    after = json.loads((rundir.path / "metrics.json").read_text())
    before.pop("wall_seconds")
    after.pop("wall_seconds")
    assert (rundir.path / "per_image.csv").read_text() == before_rows
    assert json.dumps(after, sort_keys=True) == json.dumps(before, sort_keys=True)
