"""The propagation experiment's figures (:mod:`advspatial.experiments.propagation.figures`)."""

from __future__ import annotations

import math

import pytest
import torch

from advspatial.errors import ShapeError
from advspatial.experiments.propagation.figures import (
    plot_control_differences, plot_depth_curves, plot_locality, plot_per_se, plot_propagation_strip, strip_layers,
)


# -- figures --------------------------------------------------------------------------------

def test_strip_layers_keeps_spatial_layers_ends_and_limit():
    shapes = {f"l{i}": (8, 8) for i in range(12)} | {"fc": (1, 1)}
    chosen = strip_layers(shapes, 5)
    assert len(chosen) == 5 and chosen[0] == "l0" and chosen[-1] == "l11" and "fc" not in chosen
    assert strip_layers({"a": (4, 4), "fc": (1, 1)}, 10) == ["a"]


def test_figures_are_written(tmp_path):
    maps = {"conv": torch.rand(2, 8, 8), "deep": torch.rand(2, 2, 2), "fc": torch.rand(2, 1, 1)}
    strip = plot_propagation_strip(torch.rand(2, 3, 8, 8), maps, tmp_path / "s.png",
                                   pixels=[torch.tensor([[1, 1]]), torch.tensor([[2, 3], [4, 4]])],
                                   row_labels=["a", "b"])
    with pytest.raises(ShapeError):
        plot_propagation_strip(torch.rand(2, 1, 8, 8), {"x": torch.rand(3, 8, 8)}, tmp_path / "bad.png")
    depth = {1: [{"layer": "conv", "mean_pm_max": 0.1, "max_pm_max": 0.5, "spread": 0.2},
                 {"layer": "deep", "mean_pm_max": 0.3, "max_pm_max": 0.6, "spread": 0.7}], 3: []}
    curves = plot_depth_curves(depth, tmp_path / "d.png")
    entry = {"rate": 0.5, "ci_low": 0.2, "ci_high": 0.8, "trials": 10}
    loc = plot_locality({1: {"original": entry, "r1": entry, "random": entry},
                         5: {"original": {**entry, "trials": 0}, "r1": entry, "random": entry}},
                        [1], tmp_path / "l.png")
    per_se = plot_per_se({"a": [{"relative_depth": 0.5, "ratio": {"mean": 0.2, "low": 0.1, "high": 0.3}},
                                {"relative_depth": 1.0, "ratio": {"mean": 0.4, "low": 0.3, "high": 0.5}}], "b": []},
                         0.1, tmp_path / "p.png")
    with pytest.raises(ShapeError):
        plot_per_se({}, 0.1, tmp_path / "q.png")
    for path in (strip, curves, loc, per_se):
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"



def test_control_difference_figure_is_written(tmp_path):

    rows = [{"layer": f"l{i}", "mean": 0.1 * i, "low": 0.1 * i - 0.05, "high": 0.1 * i + 0.05} for i in range(4)]
    nan_rows = [{**r, "mean": math.nan, "low": math.nan, "high": math.nan} for r in rows]
    path = plot_control_differences({1: {"a": rows, "b": nan_rows}, 3: {"a": rows, "b": []}}, tmp_path / "d.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(ShapeError, match="at least one k"):
        plot_control_differences({}, tmp_path / "e.png")
