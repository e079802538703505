"""benchmarks/road_fill_cost.py: ROAD's fill of several regions in one stacked solve equals each region's own solve,
in fewer solver steps; the device's path forced on a CPU is put back."""

from __future__ import annotations

from pathlib import Path

import torch
from helpers import load_script

from advspatial import host_syncs
from advspatial.regions import imputation_iterative

road_fill_cost = load_script(Path(__file__).resolve().parents[1] / "benchmarks" / "road_fill_cost.py",
                             "road_fill_cost_benchmark")


def test_one_stacked_solve_gives_each_regions_fill_in_fewer_steps() -> None:
    record = road_fill_cost.main(["--device", "cpu", "--images", "6", "--size", "12", "--regions", "3"])
    assert record["largest_difference"] < 1e-12
    alone, stacked = record["one_solve_a_region"]["steps"], record["one_stacked_solve"]["steps"]
    assert stacked > 0 and alone == 3 * stacked  # at 12 px every region's systems converge by the first check
    assert not host_syncs.DEVICE_PATH_ON_CPU
    assert imputation_iterative._Solving.step.__name__ == "step"  # the step counter removed


def test_regions_are_blobs_of_the_fraction_asked() -> None:
    (region,) = road_fill_cost.blob_regions(1, 4, 16, 0.25)
    assert region.shape == (4, 16, 16) and region.dtype == torch.bool
    assert torch.equal(region.flatten(1).sum(1), torch.full((4,), 64))
