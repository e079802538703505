"""Per-image rows and the metrics computed from them (``per_image.csv`` and ``metrics.json`` of ``pse``)."""

from __future__ import annotations

import math

import torch

from advspatial.analysis.pse import promotion_suppression
from advspatial.analysis.pse_types import TYPE_NAMES
from advspatial.experiments.pse.control import SHARE_NAMES
from advspatial.experiments.pse.rows import pse_rows
from advspatial.experiments.pse.targets import adversarial_class
from advspatial.experiments.pse.rows import CAM_KEYS
from advspatial.experiments.pse.findings import variant_findings


def test_pse_rows_agree_with_the_pse_result(tiny_cnn, image_pair) -> None:
    from advspatial.attacks import make_attack

    model = tiny_cnn()
    x, _, _ = image_pair(6, seed=1)
    with torch.no_grad():
        y = model(x).argmax(1)
    target = (y + 1) % 10
    result = make_attack("pgd", model, eps=0.2, alpha=0.05, steps=5).run(x, y, target=target)
    t = adversarial_class(result)
    assert torch.equal(t, target)
    res = promotion_suppression(model, x, result.x_adv, y, t, block=4, secondary_target=result.adv_pred,
                                noise_floor=0.01)
    loo = promotion_suppression(model, x, result.x_adv, y, t, block=4, secondary_target=result.adv_pred,
                                variant="leave-one-out", noise_floor=0.01)
    ok = result.success
    control = torch.rand(6, len(SHARE_NAMES), dtype=torch.float64)
    rows = pse_rows(torch.arange(6), y, y, result, res, loo, ok, control, attack="pgd", targeted=True,
                    variant="pgd/targeted")
    assert len(rows) == 6
    assert list(rows[0])[:4] == ["attack", "targeted", "variant", "index"]  # the constants first
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
        energy = [row[f"energy:{name}"] for name in SHARE_NAMES]  # over the whole energy: untyped included
        assert math.isclose(sum(energy), 1.0, abs_tol=1e-5)
        typed = 1.0 - row["energy:untyped"]
        for name in TYPE_NAMES:
            assert math.isclose(row[f"energy:{name}"], row[f"share:{name}"] * typed, abs_tol=1e-5)
        assert [row[f"control:energy:{name}"] for name in SHARE_NAMES] == control[i].tolist()
        assert row["untyped_count_share"] == row["groups_untyped"] / row["groups_perturbed"]


def test_variant_findings_known_answer(variant_run) -> None:
    def row(correct: bool, success: bool, kind: str, share_s: float, tested: bool, in_cam: float) -> dict:
        r = {"variant": "a/untargeted", "correct": correct, "success": success, "successful": correct and success,
             "l2": 1.0, "linf": 0.1, "perturbation_type": kind, "s_total": 2.0, "p_total": 1.0,
             "s_groups_sum": 1.5, "p_groups_sum": 0.5, "in_cam_test": tested, "adv_pred": 1, "target": 1,
             "groups_untyped": 1, "groups_perturbed": 4, "loo:groups_untyped": 2, "loo:s_groups_sum": 1.0,
             "loo:p_groups_sum": 0.5, "loo:perturbation_type": kind, "posthoc:perturbation_type": "promotion"}
        for name in TYPE_NAMES:
            for prefix in ("", "loo:", "posthoc:"):
                r[f"{prefix}share:{name}"] = share_s if name == "suppression" else (1 - share_s) / 3
            for key in CAM_KEYS:
                r[f"{key}:{name}"] = in_cam if tested else math.nan
        for name in SHARE_NAMES:
            r[f"energy:{name}"] = 0.6 if name == "untyped" else 0.1
            r[f"control:energy:{name}"] = 0.2
        r["energy:untyped"] = share_s  # differs between images
        return r

    rows = [row(True, True, "suppression", 0.7, True, 0.5), row(True, True, "promotion", 0.1, True, 0.3),
            row(True, False, "balanced", 0.2, False, 0.0), row(False, True, "suppression", 0.9, False, 0.0)]
    m = variant_findings(variant_run("a/untargeted", rows), [], "interpretable")
    assert m.images == 4 and m.successful == 2
    assert m.clean_accuracy == 0.75
    assert math.isclose(m.success_rate, 2 / 3)
    assert m.type_fractions == {"suppression": 0.5, "promotion": 0.5, "balanced": 0.0, "opposing": 0.0}
    assert math.isclose(m.mean_shares["suppression"], 0.4)
    assert math.isclose(m.true_cam_observed["promotion"], 0.4)
    assert m.cam_test_images == 2 and m.cam_test is None and m.cam_interpretation == "interpretable"
    assert m.untyped_groups == 2 and m.perturbed_groups == 8 and m.loo_untyped_groups == 4
    assert m.type_fractions_posthoc["promotion"] == 1.0 and m.reached_target == 1.0
    typing = m.typing
    assert math.isclose(typing.untyped_share.by_energy, 0.4)  # mean of 0.7 and 0.1 over the successful two
    assert typing.untyped_share.by_count == 2 / 8
    assert typing.energy_shares["suppression"] == 0.1 and typing.control_energy_shares["promotion"] == 0.2
    add = typing.additivity
    assert add.s_isolated_over_total == 0.75 and add.s_leave_one_out_over_total == 0.5
    assert add.p_isolated_over_total == 0.5 and add.p_leave_one_out_over_total == 0.5
    assert m.masking.ks == [0, 1, 4] and m.top_units == [0, 1, 2, 3]


def test_pse_and_target_cam_stages_round_trip(tiny_cnn, image_pair, tmp_path) -> None:
    from advspatial.experiments.pse.stages import PSE, TARGET_CAM
    from advspatial.rundir import RunDir

    model = tiny_cnn()
    x, x_adv, y = image_pair(3, seed=2)
    pse = promotion_suppression(model, x, x_adv, y, (y + 1) % 10, block=7, noise_floor=0.01)
    rundir = RunDir(tmp_path / "run")
    isolated = PSE.at("isolated", "pgd", "targeted")
    assert isolated.key(1) == "pse/isolated/pgd/targeted/batch-00001"
    isolated.save(rundir, pse, 1)
    back = isolated.load(rundir, 1)
    assert back.type_names == pse.type_names and torch.equal(back.types, pse.types) and back.variant == pse.variant
    cam = TARGET_CAM.at("pgd", "targeted")
    assert cam.key(1) == "cam-target/pgd/targeted/batch-00001"
    cams = torch.rand(3, 28, 28)
    cam.save(rundir, cams, 1)
    assert torch.equal(cam.load(rundir, 1), cams)
