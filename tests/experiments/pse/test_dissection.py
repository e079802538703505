"""Dissection stage of ``pse``: concepts that are not labels, user concept files, the sensitivity correlation."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch

from advspatial.analysis.units import UnitChange
from advspatial.errors import ConfigError
from advspatial.experiments.pse import PSEConfig
from advspatial.experiments.pse.units import concept_masks, dataset_concepts, label_concept, relative_correlation
from advspatial.experiments.findings import from_json
from advspatial.experiments.pse.findings import DissectionFindings
from advspatial.experiments.pse.stages import DISSECTION, run_dissection


def test_dataset_concepts_leave_out_the_labels() -> None:
    from advspatial.data import load_dataset

    data = load_dataset("synthetic-shapes", "test", n=10)
    concepts = dataset_concepts(data)
    assert concepts and not any(k.startswith("shape:") for k in concepts)
    assert {"background", "object", "object-boundary"} <= set(concepts)
    assert torch.equal(concepts["object"], data.masks.bool())
    assert (concepts["object-boundary"] <= concepts["object"]).all() and concepts["object-boundary"].any()
    assert label_concept("shape:circle", data.class_names) and not label_concept("texture:noise",
                                                                                         data.class_names)


def test_no_concepts_means_no_dissection_and_a_reason(tiny_cnn) -> None:
    data = SimpleNamespace(concepts={}, class_names=["a", "b"], masks=None)
    config = PSEConfig(dataset="fashion-mnist")
    assert concept_masks(config.concepts, config.dataset, data) == ({}, "")
    ctx = SimpleNamespace(config=config, data=data, layer="conv")
    summary = run_dissection(ctx)
    assert not summary.dissected and "cannot be dissected" in summary.reason and "No other model" in summary.reason
    assert summary.as_dict() == {"dissected": False, "dataset": "fashion-mnist", "layer": "conv",
                                 "reason": summary.reason}  # metrics.json's form: nothing of a dissection
    assert from_json(DissectionFindings, summary.as_dict(), "dissection") == summary


def test_dissection_correlation_leaves_out_never_active_units() -> None:
    """Dead units (no clean activation, empty region) would add (0, 0) points that inflate Spearman."""
    from advspatial.analysis.dissection import DissectionResult

    units = 8
    clean = torch.tensor([1.0, 2.0, 4.0, 8.0, 1.0, 0.0, 0.0, 0.0])
    change = UnitChange(mean_abs=clean * torch.tensor([0.1, 0.4, 0.2, 0.3, 0.5, 0, 0, 0]),
                            signed_mean=torch.zeros(units), clean_mean_abs=clean)
    iou = torch.tensor([0.5, 0.1, 0.4, 0.3, 0.05, 0.0, 0.0, 0.0])
    area = torch.tensor([5.0, 5, 5, 5, 5, 0, 0, 0])
    result = DissectionResult(("c",), torch.zeros(units), iou[:, None], torch.ones(units, 1), iou[:, None],
                              torch.zeros(units, dtype=torch.long), iou, area, 0.995, "upsampled", True)
    active, rho, _ = relative_correlation(change, result, 50, 0)
    assert active.tolist() == [True] * 5 + [False] * 3
    assert rho == pytest.approx(-1.0)  # relative sensitivity 0.1..0.5 against IoU in exactly reversed order
    dead = UnitChange(change.mean_abs, change.signed_mean, torch.zeros(units))
    active, rho, p = relative_correlation(dead, result, 50, 0)
    assert not active.any() and math.isnan(rho) and math.isnan(p)


def test_user_concepts_file_rows_follow_the_global_ids(tmp_path) -> None:
    import numpy as np

    masks = np.zeros((5, 4, 4), dtype=bool)
    masks[3, 0, 0] = True
    np.savez(tmp_path / "c.npz", spot=masks)
    data = SimpleNamespace(ids=torch.tensor([3, 1]), image_shape=(1, 4, 4), concepts={}, class_names=["a"])
    concepts, source = concept_masks(str(tmp_path / "c.npz"), "x", data)
    assert source.startswith("user file") and concepts["spot"].shape == (2, 4, 4)
    assert bool(concepts["spot"][0, 0, 0]) and not concepts["spot"][1].any()
    torch.save({"spot": torch.zeros(2, 4, 4, dtype=torch.bool)}, tmp_path / "short.pt")
    with pytest.raises(ConfigError, match="row for every test image"):
        concept_masks(str(tmp_path / "short.pt"), "x", data)
    with pytest.raises(ConfigError):
        concept_masks(str(tmp_path / "missing.npz"), "x", data)


def test_dissection_stage_round_trips_through_the_run_directory(tmp_path) -> None:
    from advspatial.analysis.dissection import DissectionResult
    from advspatial.rundir import RunDir

    rundir = RunDir(tmp_path / "run")
    iou = torch.rand(4, 2)
    result = DissectionResult(("a", "b"), torch.rand(4), iou, torch.ones(4, 2), iou, iou.argmax(1), iou.max(1).values,
                              torch.ones(4), 0.995, "upsampled", True)
    assert DISSECTION.key() == "dissection/result"
    DISSECTION.save(rundir, result)
    loaded = DISSECTION.load(rundir)
    assert loaded.concept_names == ("a", "b") and loaded.best_names == result.best_names
    assert torch.equal(loaded.iou, result.iou) and loaded.quantile == 0.995
