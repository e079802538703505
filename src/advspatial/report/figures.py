"""Figures for people who do not read code: maps, regions, class means, permutation tests.

Each function takes tensors and an output path, writes a PNG and returns the
path. Figures are built as :class:`matplotlib.figure.Figure` objects (:func:`new_figure`) drawn by
the Agg canvas, so pyplot and matplotlib's global backend are never touched. matplotlib is imported
by the functions that draw, not with this module: it costs about half a second, and every command
of the command line imports the figure modules before it parses a word.
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from ..errors import ShapeError
from ..regions import PART_NAMES, Partition

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

HEAT_CMAP = "inferno"
#: the colour map of signed quantities (a map's change, an effect of either sign): blue below 0, red above
DIVERGING = "RdBu_r"
#: colours of the four parts, in the order of :data:`advspatial.regions.PART_NAMES` (codes 0..3)
PART_COLOURS = ("#e8e8e8", "#3a7bd5", "#f28e2b", "#c0182a")
PART_LABELS = {
    "neither": "neither (outside both)",
    "roi_only": "RoI only (looked at, not attacked)",
    "roa_only": "RoA only (attacked, not looked at)",
    "both": "both (looked at and attacked)",
}


def new_figure(**options: Any) -> Figure:
    """``matplotlib.figure.Figure(**options)``, without pyplot: how every figure of the package is made, matplotlib
    imported on the first.

    Example::

        >>> new_figure(figsize=(2, 1), dpi=100).get_size_inches().tolist()
        [2.0, 1.0]
    """
    from matplotlib.figure import Figure

    return Figure(**options)


def save_figure(fig: Figure, path: str | Path) -> Path:
    """Render ``fig`` with the Agg canvas (no pyplot global state) and write it as PNG; returns the path."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    from ..files import atomic_write_bytes

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    FigureCanvasAgg(fig)
    literal_unless_math(fig)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=fig.dpi)
    atomic_write_bytes(path, buffer.getvalue())  # a temp file and a rename: never through a planted symlink
    return path


def literal_unless_math(fig: Figure) -> None:
    """Every text of ``fig`` that holds a ``$`` but is not valid mathtext is drawn literally: class names, folder
    names and ``--source`` labels are the user's text, and ``$x^$`` or ``$\\undefinedcmd{x}$`` in one of them
    made saving the figure fail after all the work was done. Valid math is still typeset."""
    from matplotlib.mathtext import MathTextParser
    from matplotlib.text import Text

    parser = MathTextParser("path")
    for text in fig.findobj(Text):
        content = text.get_text()
        if "$" not in content or not text.get_parse_math():
            continue
        try:
            parser.parse(content)
        except (ValueError, RuntimeError, KeyError):
            text.set_parse_math(False)


def to_numpy(t: torch.Tensor | np.ndarray) -> np.ndarray:
    """A float array of a tensor (detached, on the CPU) or of anything array-like."""
    if isinstance(t, torch.Tensor):
        return t.detach().cpu().float().numpy()
    return np.asarray(t, dtype=float)


def image_for_display(img: torch.Tensor) -> tuple[np.ndarray, str | None]:
    """(H,W) gray or (H,W,3) colour array in [0,1], and the colour map to use."""
    arr = to_numpy(img).clip(0, 1)
    if arr.shape[0] == 1:
        return arr[0], "gray"
    return arr[:3].transpose(1, 2, 0), None


def per_image_max_normalized(maps: torch.Tensor) -> np.ndarray:
    """Divide each map by its maximum (all-zero maps stay 0), so colours read as 'fraction of the peak'."""
    peak = maps.flatten(1).amax(1).clamp_min(1e-30).view(-1, 1, 1)
    return to_numpy(maps / peak)


#: the gap between two panels drawn side by side, as a share of a panel's width (room for each panel's title)
PANEL_GAP = 0.37
#: the same in the report's opening strip, whose panels are small and titled in small type
STRIP_GAP = 0.06
#: how each of :func:`region_panels` is resampled: the heat maps smoothly, the parts' colours as they are
REGION_INTERPOLATION = ("antialiased", "antialiased", "antialiased", "nearest")
#: the heat map's opacity over the faded image
HEAT_ALPHA = 0.75


def colour_image(img: np.ndarray, cmap: str | None) -> np.ndarray:
    """(H,W,3) RGB in [0,1] of an image from :func:`image_for_display` (a gray one through its colour map)."""
    from matplotlib import colormaps

    return img if cmap is None else colormaps[cmap](img)[..., :3]


def heat_over(base: np.ndarray, heat: np.ndarray) -> np.ndarray:
    """(H,W,3) the heat map (values in [0,1], :data:`HEAT_CMAP`) at :data:`HEAT_ALPHA` over the image ``base``."""
    from matplotlib import colormaps

    return HEAT_ALPHA * colormaps[HEAT_CMAP](np.clip(heat, 0, 1))[..., :3] + (1 - HEAT_ALPHA) * base


def colour_codes(codes: np.ndarray) -> np.ndarray:
    """(H,W,3) the four parts' colours (:data:`PART_COLOURS`) of partition codes 0..3."""
    from matplotlib.colors import ListedColormap

    return ListedColormap(PART_COLOURS)(codes.astype(int))[..., :3]


def region_panels(image: torch.Tensor, importance: np.ndarray, attack: np.ndarray,
                  codes: torch.Tensor) -> list[np.ndarray]:
    """One example's four (H,W,3) panels: the image, its importance and attack heat maps (each in [0,1]) over it,
    and its four parts (codes 0..3)."""
    img, cmap = image_for_display(image)
    base = colour_image(img, cmap)
    return [base, heat_over(base, importance), heat_over(base, attack), colour_codes(to_numpy(codes))]


def draw_panels(ax: Axes, panels: Sequence[np.ndarray], interpolation: Sequence[str] = (),
                gap: float = PANEL_GAP) -> list[float]:
    """Draw (H,W,3) ``panels`` side by side in one axes, ``gap`` panel widths apart, each framed, without ticks
    (``interpolation``: each panel's, default matplotlib's); returns each panel's centre in the axes' data
    coordinates (x), for labels.

    One axes holding several images draws as fast as one panel: a figure of many small panels, one axes each, spent
    most of its time making axes (their ticks and spines), not drawing images.
    """
    from matplotlib.patches import Rectangle

    h, w = panels[0].shape[:2]
    step = w + max(1, round(gap * w))
    for k, panel in enumerate(panels):
        left = k * step - 0.5
        ax.imshow(panel, extent=(left, left + w, h - 0.5, -0.5),
                  interpolation=interpolation[k] if k < len(interpolation) else None)
        ax.add_patch(Rectangle((left, -0.5), w, h, fill=False, edgecolor="black", linewidth=0.8, clip_on=False))
    ax.set_xlim(-0.5, len(panels) * step - (step - w) - 0.5)
    ax.set_ylim(h - 0.5, -0.5)
    ax.set_xticks([])
    ax.set_yticks([])
    for side in ax.spines.values():  # each panel has its own frame; the row's ylabel stays
        side.set_visible(False)
    return [k * step + (w - 1) / 2 for k in range(len(panels))]


def check_images_maps(images: torch.Tensor, **maps: torch.Tensor) -> None:
    if not isinstance(images, torch.Tensor) or images.ndim != 4 or images.shape[1] not in (1, 3):
        raise ShapeError(f"images must be (N,1|3,H,W), got {tuple(getattr(images, 'shape', ()))}")
    n, _, h, w = images.shape
    if n == 0:
        raise ShapeError("need at least one image to plot")
    for name, m in maps.items():
        if not isinstance(m, torch.Tensor) or tuple(m.shape) != (n, h, w):
            raise ShapeError(f"{name} must have shape {(n, h, w)}, got {tuple(getattr(m, 'shape', ()))}")


def plot_region_grid(
    images: torch.Tensor,
    importance: torch.Tensor,
    attack: torch.Tensor,
    partition: Partition | torch.Tensor,
    path: str | Path,
    *,
    row_labels: Sequence[str] | None = None,
    importance_name: str = "Grad-CAM",
    attack_name: str = "contribution",
    title: str = "Where the model looks (RoI) and where the attack acts (RoA)",
    region_rule: str = "top 20% of each map",
    max_rows: int = 8,
) -> Path:
    """One row per image: image | importance heat map | attack heat map | four-part partition.

    Heat maps are shown over the faded image, each divided by its own maximum
    (colour = fraction of that image's peak). ``partition`` is a
    :class:`~advspatial.regions.Partition` or its (N,H,W) codes 0..3.
    """
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize
    from matplotlib.patches import Patch

    codes = partition.codes() if isinstance(partition, Partition) else partition
    check_images_maps(images, importance=importance, attack=attack, partition=codes)
    if codes.dtype == torch.bool or codes.is_floating_point() or (codes.numel() and int(codes.max()) > 3):
        raise ShapeError("partition codes must be integers 0..3 (neither, roi_only, roa_only, both)")
    if max_rows < 1:
        raise ShapeError(f"max_rows must be >= 1 (for no image, draw no figure), got {max_rows}")
    n = min(images.shape[0], max_rows)
    if row_labels is not None and len(row_labels) < n:
        raise ShapeError(f"row_labels needs {n} entries, got {len(row_labels)}")
    imp, att = per_image_max_normalized(importance[:n]), per_image_max_normalized(attack[:n])
    fig = new_figure(figsize=(10.5, 2.35 * n + 1.6), dpi=100)
    grid = fig.add_gridspec(n + 1, 1, height_ratios=[1.0] * n + [0.09], hspace=0.35)
    cols = ("image", f"importance: {importance_name}", f"attack map: {attack_name}", f"regions ({region_rule})")
    for i in range(n):
        ax = fig.add_subplot(grid[i, 0])  # one axes a row, not one a panel: axes cost, images do not
        centres = draw_panels(ax, region_panels(images[i], imp[i], att[i], codes[i]), REGION_INTERPOLATION)
        for centre, m in zip(centres[1:3], (imp[i], att[i]), strict=True):
            if not m.any():
                ax.text(centre, (images.shape[2] - 1) / 2, "map is zero\neverywhere", ha="center", va="center",
                        color="white", fontsize=9, bbox={"facecolor": "black", "alpha": 0.6, "edgecolor": "none"})
        if i == 0:
            for centre, name in zip(centres, cols, strict=True):  # above the panel, as an axes' title
                ax.annotate(name, (centre, -0.5), xytext=(0, 6), textcoords="offset points", ha="center",
                            va="bottom", fontsize=10)
        if row_labels is not None:
            ax.set_ylabel(row_labels[i], fontsize=8)
    cax = fig.add_subplot(grid[n, 0].subgridspec(1, 4, wspace=PANEL_GAP)[0, 1:3])  # under the heat maps
    bar = fig.colorbar(ScalarMappable(Normalize(0, 1), HEAT_CMAP), cax=cax, orientation="horizontal", alpha=HEAT_ALPHA)
    bar.set_label("heat = fraction of the image's maximum (0 = none, 1 = peak)", fontsize=9)
    handles = [Patch(facecolor=PART_COLOURS[k], edgecolor="#888", label=PART_LABELS[name])
               for k, name in enumerate(PART_NAMES)][::-1]
    fig.legend(handles=handles, loc="lower right", fontsize=8, ncol=1, frameon=True, bbox_to_anchor=(0.99, 0.0))
    height = 2.35 * n + 1.6
    fig.suptitle(title, fontsize=12, y=1 - 0.12 / height)
    fig.subplots_adjust(left=0.1, right=0.99, top=1 - 0.75 / height, bottom=1.2 / height)
    return save_figure(fig, path)


#: the file of the figure a report opens with (:func:`plot_region_strip`), inside the run's figures/
OVERVIEW_FIGURE = "overview.png"


def plot_region_strip(
    images: torch.Tensor,
    importance: torch.Tensor,
    attack: torch.Tensor,
    codes: torch.Tensor,
    path: str | Path,
    *,
    column_labels: Sequence[str],
    importance_name: str,
    attack_name: str,
    title: str,
    per_row: int = 3,
) -> Path:
    """The figure a report opens with: each example (one per class where it can) as four small panels side by side
    (the adversarial image, where the model looks: the RoI map, where the attack acts: the RoA map, and the four-part
    regions), ``per_row`` examples to a row. Wide and short, so that it sits on a report's first screen with its
    sentences under it."""
    from matplotlib.patches import Patch

    check_images_maps(images, importance=importance, attack=attack, partition=codes)
    n = images.shape[0]
    if n < 1 or len(column_labels) < n:
        raise ShapeError(f"need at least one image and a label per example: {n} images, {len(column_labels)} labels")
    imp, att = per_image_max_normalized(importance), per_image_max_normalized(attack)
    groups = min(per_row, n)
    rows = math.ceil(n / groups)
    cell = 0.85
    fig = new_figure(figsize=(4 * groups * cell + 0.3 * (groups - 1) + 0.4, rows * (cell + 0.25) + 0.75), dpi=100)
    grid = fig.add_gridspec(rows, groups, hspace=0.25, wspace=0.12)
    names = ("image", f"RoI: {importance_name}", f"RoA: {attack_name}", "regions")
    for i in range(n):
        ax = fig.add_subplot(grid[i // groups, i % groups])
        centres = draw_panels(ax, region_panels(images[i], imp[i], att[i], codes[i]), REGION_INTERPOLATION,
                              gap=STRIP_GAP)
        for centre, name in zip(centres, (column_labels[i], *names[1:]), strict=True):
            ax.annotate(name, (centre, -0.5), xytext=(0, 3.5), textcoords="offset points", ha="center",
                        va="bottom", fontsize=7)
    handles = [Patch(facecolor=PART_COLOURS[k], edgecolor="#888", label=PART_LABELS[name])
               for k, name in enumerate(PART_NAMES)][::-1]
    fig.legend(handles=handles, loc="lower center", fontsize=7, ncol=4, frameon=False, bbox_to_anchor=(0.5, 0.0))
    height = rows * (cell + 0.25) + 0.75
    fig.suptitle(title, fontsize=9, y=1 - 0.05 / height)
    fig.subplots_adjust(left=0.01, right=0.99, top=1 - 0.42 / height, bottom=0.3 / height)
    return save_figure(fig, path)


def plot_class_mean_maps(
    maps: torch.Tensor,
    class_names: Sequence[str],
    path: str | Path,
    *,
    counts: torch.Tensor | Sequence[int] | None = None,
    title: str = "Mean map per class",
    colorbar_label: str = "mean map value",
    ncols: int = 5,
    vmin: float = 0.0,
    vmax: float | None = None,
    cmap: str | None = None,
) -> Path:
    """One panel per class (K,H,W) on a shared colour scale; classes without images say so.

    The scale runs from ``vmin`` to ``vmax`` (default: the largest finite value);
    ``cmap`` defaults to the heat map (pass a diverging map for differences).
    """
    if not isinstance(maps, torch.Tensor) or maps.ndim != 3:
        raise ShapeError(f"maps must be (K,H,W), got {tuple(getattr(maps, 'shape', ()))}")
    k = maps.shape[0]
    if len(class_names) != k or k == 0:
        raise ShapeError(f"need one class name per map: {k} maps, {len(class_names)} names")
    if counts is not None and len(counts) != k:
        raise ShapeError(f"counts needs {k} entries, got {len(counts)}")
    arr = to_numpy(maps)
    finite = arr[np.isfinite(arr)]
    if vmax is None:
        vmax = float(finite.max()) if finite.size and finite.max() > 0 else 1.0
    ncols = max(1, min(ncols, k))
    nrows = math.ceil(k / ncols)
    fig = new_figure(figsize=(2.2 * ncols + 1.0, 2.4 * nrows + 0.8), dpi=100)
    im = None
    for c in range(k):
        ax = fig.add_subplot(nrows, ncols, c + 1)
        ax.set_xticks([])
        ax.set_yticks([])
        label = class_names[c] if counts is None else f"{class_names[c]} (n={int(counts[c])})"
        ax.set_title(label, fontsize=9)
        if np.isfinite(arr[c]).all():
            im = ax.imshow(arr[c], cmap=cmap or HEAT_CMAP, vmin=vmin, vmax=vmax)
        else:
            ax.text(0.5, 0.5, "no images", ha="center", va="center", transform=ax.transAxes, color="#777")
    fig.suptitle(title, fontsize=12)
    fig.subplots_adjust(left=0.02, right=0.86, top=1 - 0.6 / (2.4 * nrows + 0.8), bottom=0.04, wspace=0.1,
                        hspace=0.3)
    if im is not None:
        cax = fig.add_axes((0.89, 0.1, 0.025, 0.75))
        fig.colorbar(im, cax=cax).set_label(colorbar_label, fontsize=9)
    return save_figure(fig, path)
