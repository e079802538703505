"""benchmarks/batchnorm_folding.py: it times both networks folded and unfolded and their logits agree."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from helpers import load_script

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "batchnorm_folding.py"
batchnorm_folding = load_script(SCRIPT, "batchnorm_folding")


def test_the_script_reports_a_ratio_per_pass_and_logits_that_agree(tmp_path: Path) -> None:
    threads = torch.get_num_threads()
    try:
        results = batchnorm_folding.main(["--rounds", "1", "--networks", "smallcnn", "cifar10-resnet20",
                                          "--output", str(tmp_path / "f.json")])
    finally:
        torch.set_num_threads(threads)  # the script sets its own
    assert [r["network"] for r in results] == ["smallcnn", "cifar10-resnet20"]
    for r in results:
        assert r["forward"]["median_ratio"] > 0 and r["forward_and_gradient"]["median_ratio"] > 0
        assert r["largest_logit_difference"] <= 1e-4 * r["logit_scale"] and r["device"] == "cpu"
    assert json.loads((tmp_path / "f.json").read_text())["results"] == results
