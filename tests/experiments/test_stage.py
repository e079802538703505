"""Stages that own their loaded type: a dataclass saved as its fields comes back as the same dataclass."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from advspatial.experiments.stage import FieldsStage
from advspatial.rundir import RunDir


@dataclass
class Counts:
    seen: torch.Tensor
    names: tuple[str, ...]
    total: int


def test_fields_stage_round_trips_a_dataclass_and_keeps_its_kind_in_families(tmp_path) -> None:
    rundir = RunDir(tmp_path / "run")
    stage = FieldsStage("counts", kind=Counts).at("pgd")
    assert stage.kind is Counts and stage.key(1) == "counts/pgd/batch-00001"
    value = Counts(torch.arange(3), ("a", "b"), 7)
    assert stage.saved(value) == {"seen": value.seen, "names": ("a", "b"), "total": 7}
    stage.save(rundir, value, 1)
    loaded = stage.load(rundir, 1)
    assert isinstance(loaded, Counts) and torch.equal(loaded.seen, value.seen)
    assert (loaded.names, loaded.total) == (("a", "b"), 7)
    assert stage.get(rundir, lambda: Counts(torch.zeros(1), (), 0), 1).total == 7  # read back, not recomputed


def test_stored_reads_a_saved_or_cached_value_and_computes_nothing_when_there_is_none(tmp_path) -> None:
    from advspatial.experiments.stage import Stage
    from advspatial.model_work import ModelWorkStore

    stage = Stage[dict]("gate").at("gradcam", "f0.2")
    inputs = {"x": torch.arange(3.0), "seed": 0}
    rundir = RunDir(tmp_path / "first")
    rundir.model_work = ModelWorkStore(tmp_path / "cache", {"model_sha256": "ab" * 32}, "cpu")
    assert stage.stored(rundir, inputs, 0) is None
    assert not stage.exists(rundir, 0) and rundir.passes.by_stage == {}  # nothing saved, nothing counted
    assert stage.get_model_work(rundir, inputs, lambda: {"value": 1}, 0) == {"value": 1}
    assert stage.stored(rundir, inputs, 0) == {"value": 1}  # the run's own file
    other = RunDir(tmp_path / "second")
    other.model_work = rundir.model_work
    assert stage.stored(other, inputs, 0) == {"value": 1} and stage.exists(other, 0)  # from the model cache
    assert stage.stored(other, {**inputs, "seed": 1}, 1) is None  # other inputs: not the cached value
