"""The propagation experiment's stages: their keys, saved layout and types, and the locality chunks
(:mod:`advspatial.experiments.propagation.stages`)."""

from __future__ import annotations


import pytest
import torch

from advspatial.errors import ConfigError
from advspatial.experiments.propagation.stages import (
    LOCALITY, PROPAGATION, RANDOM, BatchPropagation, LocalityCounts, RandomReach,
)
from advspatial.rundir import RunDir


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
