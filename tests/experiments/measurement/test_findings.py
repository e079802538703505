"""The measurement's outcomes from the per-image rows: the extra columns' accuracies as the columns declare them,
and the RoI's interpretation beside every attack map's statistics from the start."""

from __future__ import annotations

import math


from advspatial.experiments.measurement.findings import accuracies, attack_metrics
from advspatial.experiments.measurement.stages import Accuracy, AttackSummary


def rows() -> list[dict[str, object]]:
    """Four images of one attack: the defence predicts the label on three, its control is right on half its draws."""
    base = {"attack": "pgd", "correct": True, "success": True, "adv_pred": 1, "l0": 3, "l2": 0.5, "linf": 0.1,
            "contribution:roi_pixels": 4}
    stats = {f"contribution:{s}": 0.5 for s in ("iou", "dice", "energy_in_roi", "pointing_game", "spearman",
                                                "pearson", "both", "roi_only", "roa_only", "neither")}
    return [{**base, **stats, "label": 0, "gradient:pred_defended": pred, "gradient:correct_control": 0.5}
            for pred in (0, 0, 0, 2)]


def test_accuracies_read_each_column_as_it_is_declared() -> None:
    declared = {"gradient:defended": Accuracy("gradient:pred_defended", predicted=True),
                "gradient:control": Accuracy("gradient:correct_control", predicted=False)}
    assert accuracies(rows(), declared) == {"gradient:defended": 0.75, "gradient:control": 0.5}
    assert accuracies(rows(), {}) == {}


def test_every_attack_map_states_the_rois_interpretation_when_the_outcome_is_built() -> None:
    summary = AttackSummary("pgd", "linf", 4, {"contribution": []}, {}, {},
                            {"gradient:defended": Accuracy("gradient:pred_defended", predicted=True)})
    outcome = attack_metrics(rows(), summary, "interpretable")
    stats = outcome.maps["contribution"]
    assert list(stats)[-2:] == ["empty_roi_share", "interpretation"] and stats["interpretation"] == "interpretable"
    assert outcome.defence == {"gradient:defended": 0.75}
    assert outcome.successful == 4 and math.isclose(outcome.mean_l2, 0.5)
