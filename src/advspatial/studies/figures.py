"""Figures of a cross-model study: a forest plot of one effect per model with the pooled estimate, and the matrix
of pairwise agreement between the models. Each function takes plain numbers and an output path, writes a PNG and
returns the path; figures are drawn by the Agg canvas, so pyplot's global state is never touched."""

from __future__ import annotations

import math
import textwrap
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ..errors import ConfigError, ShapeError, check_range, unknown_name
from ..report.figures import DIVERGING, new_figure, save_figure
from ..statistics.verdicts import VERDICTS

if TYPE_CHECKING:
    from matplotlib.axes import Axes

INCLUDED = "#1f6fb2"
EXCLUDED = "#999999"
NA_GREY = "#c8c8c8"
#: the mark a verdict adds to a cell of the agreement matrix (verdicts not listed add none)
VERDICT_MARKS = {"supported": "*", "reversed": "†", "equivalent to null": "≈", "negligible": "~",
                 "not interpretable": "!"}


@dataclass(frozen=True)
class ForestRow:
    """One model's effect and interval; ``included=False`` (e.g. its gate failed): not pooled, drawn grey."""

    label: str
    effect: float
    low: float
    high: float
    included: bool
    note: str = ""


@dataclass(frozen=True)
class PooledRow:
    """The pooled effect with its interval and prediction interval (where a new model's effect is expected)."""

    label: str
    effect: float
    low: float
    high: float
    prediction_low: float = math.nan
    prediction_high: float = math.nan


def _num(value: float, digits: int) -> str:
    return "n/a" if math.isnan(value) else f"{value:.{digits}f}"


def _interval(effect: float, low: float, high: float, digits: int) -> str:
    """'effect [low, high]' ('n/a' for a NaN effect: nothing was measured)."""
    return "n/a" if math.isnan(effect) else f"{_num(effect, digits)} [{_num(low, digits)}, {_num(high, digits)}]"


def _check_interval(name: str, effect: float, low: float, high: float) -> None:
    """NaN means 'not computed'; an infinity would stretch the axis and low > high is a bug upstream."""
    for key, value in (("effect", effect), ("low", low), ("high", high)):
        if math.isinf(value):
            raise ConfigError(f"{name}: {key}={value} is infinite; pass NaN for a value not computed")
    if low > high:
        raise ConfigError(f"{name}: low={low:g} > high={high:g}")


def _check_forest(rows: Sequence[ForestRow], pooled: PooledRow | None, sesoi: float | None) -> None:
    if not rows:
        raise ShapeError("plot_model_forest needs at least one row (one model)")
    for r in rows:
        _check_interval(f"row {r.label!r}", r.effect, r.low, r.high)
    if pooled is not None:
        if not all(math.isfinite(v) for v in (pooled.effect, pooled.low, pooled.high)):
            raise ConfigError("pooled effect, low and high must be finite; pass pooled=None when nothing was pooled")
        _check_interval("pooled", pooled.effect, pooled.low, pooled.high)
        _check_interval("pooled prediction", math.nan, pooled.prediction_low, pooled.prediction_high)
    if sesoi is not None:
        check_range("sesoi", sesoi, 0.0, low_inclusive=False)


def _draw_row(ax: Axes, y: float, row: ForestRow, digits: int) -> None:
    """A point at the effect with whiskers low..high (grey and hollow when not pooled), its numbers on the right;
    'n/a' in place of the point when the effect is NaN."""
    from matplotlib.transforms import blended_transform_factory

    colour = INCLUDED if row.included else EXCLUDED
    side = blended_transform_factory(ax.transAxes, ax.transData)
    ax.text(1.02, y, _interval(row.effect, row.low, row.high, digits), transform=side, va="center", fontsize=8,
            color="black" if row.included else EXCLUDED)
    if math.isnan(row.effect):
        ax.text(0.5, y, "n/a", transform=side, ha="center", va="center", fontsize=8, color=colour,
                bbox={"facecolor": "white", "edgecolor": "none"})
        return
    if not (math.isnan(row.low) or math.isnan(row.high)):
        ax.plot([row.low, row.high], [y, y], color=colour, lw=1.6, solid_capstyle="butt")
    ax.plot([row.effect], [y], "o", ms=7, color=colour, mfc=colour if row.included else "white", mew=1.5)


def _draw_pooled(ax: Axes, y: float, pooled: PooledRow | None, note: str, digits: int) -> None:
    """The pooled diamond (low..high, widest at the effect) over the thin prediction line, and ``note`` under it;
    without a pooled row, the note alone."""
    from matplotlib.patches import Polygon
    from matplotlib.transforms import blended_transform_factory

    side = blended_transform_factory(ax.transAxes, ax.transData)
    if note:
        ax.text(0.5, y if pooled is None else y - 0.55, note, transform=side, ha="center", va="center",
                fontsize=8 if pooled is None else 7, style="italic", color="#555",
                bbox={"facecolor": "white", "edgecolor": "none", "pad": 1})
    if pooled is None:
        return
    text = _interval(pooled.effect, pooled.low, pooled.high, digits)
    lo, hi = pooled.prediction_low, pooled.prediction_high
    if math.isfinite(lo) and math.isfinite(hi):
        ax.plot([lo, hi], [y, y], color="black", lw=0.9)
        text += f"\nprediction [{_num(lo, digits)}, {_num(hi, digits)}]"
    ax.add_patch(Polygon([(pooled.low, y), (pooled.effect, y + 0.3), (pooled.high, y), (pooled.effect, y - 0.3)],
                         closed=True, facecolor="black", edgecolor="black", zorder=3))
    ax.text(1.02, y, text, transform=side, va="center", fontsize=8, fontweight="bold")


def _x_limits(rows: Sequence[ForestRow], pooled: PooledRow | None, sesoi: float | None) -> tuple[float, float]:
    """Every finite number drawn, 0 and ±sesoi, with a margin."""
    values = [0.0, *(v for r in rows for v in (r.effect, r.low, r.high)), *((-sesoi, sesoi) if sesoi else ())]
    if pooled is not None:
        values += [pooled.effect, pooled.low, pooled.high, pooled.prediction_low, pooled.prediction_high]
    low, high = min(v for v in values if math.isfinite(v)), max(v for v in values if math.isfinite(v))
    pad = 0.08 * (high - low) if high > low else 1.0
    return low - pad, high + pad


def plot_model_forest(rows: Sequence[ForestRow], pooled: PooledRow | None, path: str | Path, *, title: str, xlabel: str,
                sesoi: float | None = None, pooled_note: str = "", digits: int = 2) -> Path:
    """One line per model (effect with its interval) and the pooled diamond at the bottom, 0 marked, the
    smallest effect of interest dashed at ±``sesoi``, the numbers in a column on the right.

    Models left out of the pool (``included=False``) stay visible in grey, so a reader sees what was dropped
    and why. Without ``pooled`` the bottom row shows ``pooled_note`` (by default why nothing was pooled).
    """
    rows = list(rows)
    _check_forest(rows, pooled, sesoi)
    if pooled is None and not pooled_note:
        few = sum(r.included for r in rows) < 2
        pooled_note = "not pooled: fewer than 2 models passed their gates" if few else "not pooled"
    n = len(rows)
    fig = new_figure(figsize=(9.0, 0.42 * (n + 1) + 1.7), dpi=100, layout="constrained")
    ax = fig.add_subplot(1, 1, 1)
    ys = [-float(i) for i in range(n)] + [-n - 0.4]
    for y, row in zip(ys, rows, strict=False):
        _draw_row(ax, y, row, digits)
    _draw_pooled(ax, ys[-1], pooled, pooled_note, digits)
    ax.axvline(0, color="black", lw=0.8)
    for s in (-sesoi, sesoi) if sesoi is not None else ():
        ax.axvline(s, color="#777", lw=0.9, ls="--")
    ax.axhline(-n + 0.35, color="#ccc", lw=0.8)
    names = [f"{r.label} ({r.note})" if r.note else r.label for r in rows]
    ax.set_yticks(ys, [*names, pooled.label if pooled is not None else "pooled"], fontsize=9)
    for tick, row in zip(ax.get_yticklabels(), rows, strict=False):
        tick.set_color("black" if row.included else EXCLUDED)
    ax.get_yticklabels()[-1].set_fontweight("bold")
    ax.text(1.02, 1.0, "effect [low, high]", transform=ax.transAxes, va="bottom", fontsize=8, fontweight="bold")
    ax.set_xlim(*_x_limits(rows, pooled, sesoi))
    ax.set_ylim(ys[-1] - (1.0 if pooled is not None and pooled_note else 0.7), 0.7)
    sesoi_text = f"  (dashed: ± smallest effect of interest, {sesoi:g})" if sesoi is not None else ""
    ax.set_xlabel(xlabel + sesoi_text, fontsize=9)
    ax.tick_params(axis="x", labelsize=8)
    ax.grid(axis="x", alpha=0.25)
    ax.set_title(title, fontsize=11)
    return save_figure(fig, path)


def _check_agreement(labels: Sequence[str], verdicts: object, **given: object) -> tuple[dict[str, np.ndarray],
                                                                                        np.ndarray]:
    """The k x k float arrays (NaN allowed: a pair with too few images; infinities and low > high not) and the
    k x k marks of the verdicts ('' for none; a verdict outside the known words is a typo upstream)."""
    k = len(labels)
    if k < 2:
        raise ShapeError(f"plot_agreement needs at least 2 labels (models), got {k}")
    arrays = {name: np.asarray(a, dtype=float) for name, a in given.items()}
    words = np.full((k, k), None, dtype=object) if verdicts is None else np.asarray(verdicts, dtype=object)
    for name, arr in [*arrays.items(), ("verdicts", words)]:
        if arr.shape != (k, k):
            raise ShapeError(f"{name} must be {k}x{k} (one row and column per label), got shape {arr.shape}")
        if name != "verdicts" and np.isinf(arr).any():
            raise ConfigError(f"{name} holds an infinite value; pass NaN for a pair not computed")
    bad = np.argwhere(arrays["low"] > arrays["high"])  # NaN compares false
    if bad.size:
        i, j = bad[0]
        raise ConfigError(f"low > high for the pair ({labels[i]}, {labels[j]}): {arrays['low'][i, j]:g} > "
                          f"{arrays['high'][i, j]:g}")
    unknown = [v for v in words.flat if v is not None and v not in VERDICTS]
    if unknown:
        raise unknown_name("verdict", str(unknown[0]), VERDICTS)
    return arrays, np.vectorize(lambda v: VERDICT_MARKS.get(v, "") if v else "", otypes=[object])(words)


def _cell_text(excess: float, low: float, high: float, mark: str) -> str:
    return "n/a" if math.isnan(excess) else f"{excess:.2f}{mark}\n[{_num(low, 2)}, {_num(high, 2)}]"


def _key(marks: np.ndarray, any_nan: bool) -> str:
    """The line under the matrix that explains the cells, the marks that occur and the grey cells."""
    parts = ["cell: excess [low, high]", *(f"{m} {v}" for v, m in VERDICT_MARKS.items() if (marks == m).any())]
    return ";  ".join(parts + (["grey n/a: too few images"] if any_nan else []))


def plot_agreement(labels: Sequence[str], excess: np.ndarray, low: np.ndarray, high: np.ndarray, path: str | Path,
                   *, title: str, verdicts: np.ndarray | Sequence[Sequence[str | None]] | None = None,
                   colorbar_label: str | None = None) -> Path:
    """The k x k matrix of the pairwise agreement excess over a null, each cell with its interval.

    The diverging colour map is centred at 0 with symmetric limits (the largest finite absolute excess), so red
    is agreement beyond the null and blue below it. ``verdicts`` adds a mark per cell (:data:`VERDICT_MARKS`);
    NaN cells are grey 'n/a', the diagonal blank. The colour bar is labelled ``colorbar_label`` (the title).
    """
    from matplotlib import colormaps
    from matplotlib.patches import Rectangle

    a, marks = _check_agreement(labels, verdicts, excess=excess, low=low, high=high)
    k = len(labels)
    off = ~np.eye(k, dtype=bool)
    shown = np.where(off, a["excess"], np.nan)
    finite = np.abs(shown[np.isfinite(shown)])
    vmax = float(finite.max()) if finite.size and finite.max() > 0 else 1.0
    cell, font = 1.25 - 0.035 * k, max(6.5, 9.5 - 0.3 * k)
    width = cell * k + 2.8
    fig = new_figure(figsize=(width, cell * k + 2.2), dpi=100, layout="constrained")
    ax = fig.add_subplot(1, 1, 1)
    im = ax.imshow(shown, cmap=colormaps[DIVERGING].with_extremes(bad=NA_GREY), vmin=-vmax, vmax=vmax)
    for i, j in np.argwhere(off):
        dark = math.isfinite(shown[i, j]) and abs(shown[i, j]) > 0.6 * vmax
        ax.text(j, i, _cell_text(shown[i, j], a["low"][i, j], a["high"][i, j], marks[i, j]), ha="center",
                va="center", fontsize=font, color="white" if dark else "black")
    for i in range(k):  # the diagonal blank, not the grey of a missing pair
        ax.add_patch(Rectangle((i - 0.5, i - 0.5), 1, 1, facecolor="white", edgecolor="none"))
    ax.set_xticks(range(k), labels, rotation=40, ha="right", rotation_mode="anchor", fontsize=font + 1)
    ax.set_yticks(range(k), labels, fontsize=font + 1)
    ax.set_xlabel(textwrap.fill(_key(marks[off], bool(np.isnan(shown[off]).any())), int(width * 11)), fontsize=8)
    bar = fig.colorbar(im, ax=ax, shrink=0.85)
    bar.ax.tick_params(labelsize=8)
    bar.set_label(textwrap.fill(colorbar_label or title, int(cell * k * 10)), fontsize=8)
    ax.set_title(textwrap.fill(title, int(width * 11)), fontsize=10)
    return save_figure(fig, path)
