"""benchmarks/batchnorm_folding.py and relu_pooling.py: each times its networks both ways, per pass, and the logits
of the two ways agree (the fold's to float rounding, the pooling's to the bit)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from helpers import load_script

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.mark.parametrize(("script", "networks", "tolerance"), [
    ("batchnorm_folding", ["smallcnn", "cifar10-resnet20"], 1e-4),  # a share of the logits' scale
    ("relu_pooling", ["smallcnn", "lenet5"], 0.0),
])
def test_the_script_reports_a_ratio_per_pass_and_logits_that_agree(tmp_path: Path, script: str,
                                                                    networks: list[str], tolerance: float) -> None:
    module = load_script(BENCHMARKS / f"{script}.py", script)
    threads = torch.get_num_threads()
    try:
        results = module.main(["--rounds", "1", "--networks", *networks, "--output", str(tmp_path / "r.json")])
    finally:
        torch.set_num_threads(threads)  # the script sets its own
    assert [r["network"] for r in results] == networks
    for r in results:
        assert r["forward"]["median_ratio"] > 0 and r["forward_and_gradient"]["median_ratio"] > 0
        assert r["largest_logit_difference"] <= tolerance * r["logit_scale"] and r["device"] == "cpu"
    assert json.loads((tmp_path / "r.json").read_text())["results"] == results
