"""benchmarks/cli_start.py: each tree's start is timed against ``import torch`` in the same rounds (the start itself is
held free of the optional libraries by tests/test_cli_help.py)."""

from __future__ import annotations

from pathlib import Path

from helpers import load_script

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "cli_start.py"
cli_start = load_script(SCRIPT, "cli_start_benchmark")


def test_every_tree_is_timed_against_the_import_of_torch_in_the_same_rounds() -> None:
    figures = cli_start.measure([cli_start.HERE], rounds=1)
    assert set(figures) == {"import torch", str(cli_start.HERE)}
    assert figures["import torch"]["ratio"] == 1.0
    assert figures[str(cli_start.HERE)]["median"] > 0

