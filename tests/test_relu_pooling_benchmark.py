"""benchmarks/relu_pooling.py: it times each network both ways and their logits are the same."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from helpers import load_script

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "relu_pooling.py"
relu_pooling = load_script(SCRIPT, "relu_pooling")


def test_the_script_reports_a_ratio_per_pass_and_the_same_logits(tmp_path: Path) -> None:
    threads = torch.get_num_threads()
    try:
        results = relu_pooling.main(["--rounds", "1", "--networks", "smallcnn", "lenet5",
                                     "--output", str(tmp_path / "r.json")])
    finally:
        torch.set_num_threads(threads)  # the script sets its own
    assert [r["network"] for r in results] == ["smallcnn", "lenet5"]
    for r in results:
        assert r["forward"]["median_ratio"] > 0 and r["forward_and_gradient"]["median_ratio"] > 0
        assert r["largest_logit_difference"] == 0.0
    assert json.loads((tmp_path / "r.json").read_text())["results"] == results
