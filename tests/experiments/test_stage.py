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
