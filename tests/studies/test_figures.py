"""Study figures: the forest plot and the agreement matrix write PNGs that grow with their input, draw NaN rows and
cells, reject bad input with one-line errors, and leave pyplot's state alone."""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib.image
import numpy as np
import pytest

from advspatial.errors import ConfigError, ShapeError
from advspatial.studies.figures import ForestRow, PooledRow, plot_agreement, plot_model_forest

NAN = math.nan


def _rows(n: int) -> list[ForestRow]:
    return [ForestRow(f"model {i}", 0.1 * i - 0.1, 0.1 * i - 0.2, 0.1 * i, included=i != 1,
                      note="gate failed" if i == 1 else "") for i in range(n)]


def _pixels(path: Path) -> tuple[int, int]:
    """(height, width) of the PNG as read back."""
    image = matplotlib.image.imread(path)
    assert image.ndim == 3 and image.shape[2] in (3, 4)
    return image.shape[0], image.shape[1]


def _matrices(k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    excess = np.linspace(-0.3, 0.4, k * k).reshape(k, k)
    np.fill_diagonal(excess, NAN)
    return excess, excess - 0.1, excess + 0.1


def test_forest_grows_with_the_rows(tmp_path: Path) -> None:
    pooled = PooledRow("pooled", 0.1, 0.02, 0.18, -0.1, 0.3)
    small = plot_model_forest(_rows(2), pooled, tmp_path / "sub" / "small.png", title="effect per model",
                              xlabel="excess", sesoi=0.05)
    large = plot_model_forest(_rows(8), pooled, tmp_path / "large.png", title="effect per model", xlabel="excess")
    assert small == tmp_path / "sub" / "small.png" and small.stat().st_size > 5_000
    (h_small, w_small), (h_large, w_large) = _pixels(small), _pixels(large)
    assert w_small == w_large and 600 <= w_small <= 1200
    assert 200 <= h_small < h_large <= 1200


def test_forest_draws_nan_rows_and_no_pool(tmp_path: Path) -> None:
    rows = [ForestRow("a", 0.2, 0.1, 0.3, True), ForestRow("b", NAN, NAN, NAN, False, "too few images"),
            ForestRow("c", 0.1, NAN, NAN, False, "gate failed")]
    out = plot_model_forest(rows, None, tmp_path / "none.png", title="t", xlabel="x")
    assert _pixels(out)[0] > 100
    only_nan = [ForestRow("b", NAN, NAN, NAN, False)]  # nothing finite to scale the axis by
    assert plot_model_forest(only_nan, None, tmp_path / "nan.png", title="t", xlabel="x",
                             pooled_note="no data").exists()
    no_prediction = PooledRow("pooled", 0.15, 0.1, 0.2)
    assert plot_model_forest(rows, no_prediction, tmp_path / "pooled.png", title="t", xlabel="x").exists()


def test_forest_rejects_bad_input(tmp_path: Path) -> None:
    target = tmp_path / "bad.png"
    with pytest.raises(ShapeError, match="at least one row"):
        plot_model_forest([], None, target, title="t", xlabel="x")
    with pytest.raises(ConfigError, match=r"row 'a': low=0.3 > high=0.1"):
        plot_model_forest([ForestRow("a", 0.2, 0.3, 0.1, True)], None, target, title="t", xlabel="x")
    with pytest.raises(ConfigError, match="high=inf is infinite"):
        plot_model_forest([ForestRow("a", 0.2, 0.1, math.inf, True)], None, target, title="t", xlabel="x")
    with pytest.raises(ConfigError, match="pooled effect, low and high must be finite"):
        plot_model_forest(_rows(2), PooledRow("p", NAN, 0.0, 1.0), target, title="t", xlabel="x")
    with pytest.raises(ConfigError, match="pooled prediction: low=0.5 > high=-0.5"):
        plot_model_forest(_rows(2), PooledRow("p", 0.1, 0.0, 0.2, 0.5, -0.5), target, title="t", xlabel="x")
    with pytest.raises(ConfigError, match="sesoi"):
        plot_model_forest(_rows(2), None, target, title="t", xlabel="x", sesoi=0.0)
    assert not target.exists()


@pytest.mark.parametrize("k", [2, 5, 10])
def test_agreement_grows_with_k(tmp_path: Path, k: int) -> None:
    excess, low, high = _matrices(k)
    excess[0, 1] = low[0, 1] = high[0, 1] = NAN  # a pair with too few images
    verdicts = np.where(excess > 0.2, "supported", None)
    out = plot_agreement([f"model {i}" for i in range(k)], excess, low, high, tmp_path / "agreement.png",
                         title="agreement excess over the null", verdicts=verdicts)
    height, width = _pixels(out)
    assert 300 <= height <= 1400 and 300 <= width <= 1500
    assert min(height, width) >= 100 * k  # readable: the matrix grows with the number of models


def test_agreement_is_larger_for_more_models(tmp_path: Path) -> None:
    shapes = [_pixels(plot_agreement([f"m{i}" for i in range(k)], *_matrices(k), tmp_path / f"{k}.png", title="t"))
              for k in (2, 6)]
    assert shapes[0][0] < shapes[1][0] and shapes[0][1] < shapes[1][1]


def test_agreement_rejects_bad_input(tmp_path: Path) -> None:
    target = tmp_path / "bad.png"
    excess, low, high = _matrices(3)
    labels = ["a", "b", "c"]
    with pytest.raises(ShapeError, match=r"excess must be 3x3 .* got shape \(3, 2\)"):
        plot_agreement(labels, excess[:, :2], low, high, target, title="t")
    with pytest.raises(ShapeError, match=r"excess must be 2x2 \(one row and column per label\)"):
        plot_agreement(labels[:2], excess, low, high, target, title="t")
    with pytest.raises(ShapeError, match="at least 2 labels"):
        plot_agreement(["a"], excess[:1, :1], low[:1, :1], high[:1, :1], target, title="t")
    crossed = low.copy()
    crossed[0, 2] = high[0, 2] + 0.5
    with pytest.raises(ConfigError, match=r"low > high for the pair \(a, c\)"):
        plot_agreement(labels, excess, crossed, high, target, title="t")
    with pytest.raises(ShapeError, match="verdicts must be 3x3"):
        plot_agreement(labels, excess, low, high, target, title="t", verdicts=[["supported"]])
    with pytest.raises(ConfigError, match="unknown verdict 'suported'"):
        plot_agreement(labels, excess, low, high, target, title="t", verdicts=np.full((3, 3), "suported"))
    excess[0, 1] = math.inf
    with pytest.raises(ConfigError, match="excess holds an infinite value"):
        plot_agreement(labels, excess, low, high, target, title="t")
    assert not target.exists()


def test_figures_leave_pyplot_alone(tmp_path: Path) -> None:
    import matplotlib.pyplot as plt

    mine = plt.figure()
    try:
        before, current = plt.get_fignums(), plt.gcf()
        plot_model_forest(_rows(3), None, tmp_path / "forest.png", title="t", xlabel="x")
        plot_agreement(["a", "b"], *_matrices(2), tmp_path / "agreement.png", title="t")
        assert plt.get_fignums() == before and plt.gcf() is current is mine
    finally:
        plt.close(mine)
