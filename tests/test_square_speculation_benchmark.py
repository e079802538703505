"""benchmarks/square_speculation.py: on a device's path (forced on the CPU) the search with speculation takes the same
examples and queries as one iteration a call, in fewer rounds; with ``SPECULATED_ROWS`` 0 it makes one a call."""

from __future__ import annotations

from pathlib import Path

import torch

from advspatial import host_syncs
from advspatial.attacks import square
from helpers import load_script

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "square_speculation.py"
square_speculation = load_script(SCRIPT, "square_speculation_benchmark")


def test_speculation_gives_the_same_search_in_fewer_rounds_on_a_device_path(monkeypatch) -> None:
    monkeypatch.setattr(host_syncs, "DEVICE_PATH_ON_CPU", True)
    torch.manual_seed(0)
    (record,) = square_speculation.compare(torch.device("cpu"), queries=80, rows=(2,))
    assert record["same_examples"] and record["same_queries"]
    assert record["one_a_call"]["rounds"] >= 80  # no image is fooled: every query is a round of its own
    assert record["speculated"]["rounds"] < record["one_a_call"]["rounds"]
    assert square.SPECULATED_ROWS == 16  # put back after each search


def test_no_image_of_the_unfoolable_model_is_ever_misclassified() -> None:
    model = square_speculation.Unfoolable(torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 32 * 32, 10)))
    assert (model(torch.rand(64, 3, 32, 32) * 100).argmax(1) == 0).all()
