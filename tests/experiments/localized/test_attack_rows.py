"""The localized experiment's per-image rows and what is computed from them
(:mod:`advspatial.experiments.localized.attack_rows`), with a model's findings in metrics.json
(:mod:`advspatial.experiments.localized.findings`)."""

from __future__ import annotations

import json
import math

import pytest
import torch

from advspatial.experiments.localized.attack_rows import model_rows, row_stats, seed_spread
from advspatial.experiments.localized.attacked_region import fooled_first
from advspatial.experiments.localized.findings import ModelFindings, TrainingFacts


def test_metrics_are_computed_from_rows() -> None:
    rows = [{"model": "natural", "label": 1, "clean_pred": 1, "full_pred": 2, "region_pred": 1, "complement_pred": 3,
             "region_share": 0.5, "cam_energy_clean": 0.8, "cam_energy_region_adv": math.nan},
            {"model": "natural", "label": 2, "clean_pred": 2, "full_pred": 2, "region_pred": 0, "complement_pred": 3,
             "region_share": 0.7, "cam_energy_clean": 0.6, "cam_energy_region_adv": 0.4},
            {"model": "pgd", "label": 0, "clean_pred": 5, "full_pred": 5, "region_pred": 5, "complement_pred": 5,
             "region_share": 0.1, "cam_energy_clean": 0.1, "cam_energy_region_adv": 0.1}]
    m = row_stats(rows, "natural")
    assert m.images == 2 and m.accuracy["clean"] == 1.0 and m.accuracy["full"] == 0.5
    assert m.accuracy["region"] == 0.5 and m.accuracy["complement"] == 0.0 and not m.attacked
    assert m.region_share == pytest.approx(0.6)
    # an image with an all-zero Grad-CAM (NaN share) before or after is left out of both means
    assert m.cam_energy_clean == pytest.approx(0.6) and m.cam_energy_region_adv == pytest.approx(0.4)
    assert m.cam_zero_images == 1 and row_stats(rows, "pgd").cam_zero_images == 0


def test_a_models_findings_are_one_flat_object_in_metrics_json() -> None:
    """metrics.json keeps its flat keys per model (``<condition>_accuracy``, ``<condition>_images``, the training
    facts), and reads back as the same typed findings."""
    rows = [{"model": "pgd", "label": i % 2, "clean_pred": 0, "ensemble_pred": 0 if i < 2 else -1,
             "full@x2_pred": 1, "region_share": 0.25, "cam_energy_clean": 0.5, "cam_energy_region_adv": 0.75}
            for i in range(4)]
    stats = row_stats(rows, "pgd")
    assert stats.accuracy == {"clean": 0.5, "ensemble": 0.5, "full@x2": 0.5} and stats.attacked == {"ensemble": 2.0}
    for facts in (TrainingFacts(0.9, 1.5, 2, "a.pt"), TrainingFacts(math.nan, 1.5, 2, "b.pt", 7, 0.25, "k")):
        model = ModelFindings(stats, facts, seed_spread(rows, ["pgd"]), "interpretable", "interpretable")
        flat = model.as_dict()
        assert list(flat)[:6] == ["images", "clean_accuracy", "ensemble_accuracy", "ensemble_images",
                                  "full@x2_accuracy", "region_share"]
        assert ("steps" in flat) == (facts.steps is not None), "a model trained from scratch has no steps"
        again = ModelFindings.from_dict(json.loads(json.dumps(flat)))
        assert json.dumps(again.as_dict()) == json.dumps(flat)
        assert again.stats == stats and again.seeds["ensemble"].values == [0.5]


def test_rows_of_a_model_and_the_images_a_figure_shows() -> None:
    labels = torch.tensor([0, 1, 2, 3])
    preds = {"clean": torch.tensor([0, 1, 0, 3]), "region": torch.tensor([0, 0, 0, 1])}
    rows = model_rows("m", labels, preds, torch.full((4,), 0.5), torch.tensor([0.2, 0.4, math.nan, 1.0]),
                      torch.tensor([0.1, 0.3, 0.5, 0.9]))
    assert [r["index"] for r in rows] == [0, 1, 2, 3]
    assert list(rows[0]) == ["model", "index", "label", "clean_pred", "region_pred", "region_share",
                             "cam_energy_clean", "cam_energy_region_adv"], "the per_image.csv columns, in order"
    stats = row_stats(rows, "m")
    assert stats.accuracy == {"clean": 0.75, "region": 0.25} and stats.cam_zero_images == 1
    # correct when clean: images 0, 1 and 3; the region-only attack fools 1 and 3, shown first
    assert fooled_first(labels, preds["clean"], preds["region"], 2).tolist() == [1, 3]
    assert fooled_first(labels, preds["clean"], preds["region"], 5).tolist() == [1, 3, 0]
