"""The figures of experiment ``localized-training``, drawn at run time into the run's ``figures/`` folder: the
accuracy of every model under every attack, and for the natural and the localized model a few images under the
region-only attack with the true class's importance map before and after it. The report shows the ones drawn.

Each ``plot_*`` function takes tensors (or numbers) and an output path, writes a PNG and returns the path.
Figures are :class:`matplotlib.figure.Figure` objects drawn by the Agg canvas; pyplot's global state is never
touched.
"""

from __future__ import annotations

import textwrap
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn

from ...errors import ShapeError
from ...maps import importance_map
from ...report.figures import DIVERGING, HEAT_CMAP, image_for_display, new_figure, save_figure
from ...runtime import model_device
from ...statistics.claims import sentence_case
from ..measurement.roi import roi_label
from .attacked_region import fooled_first
from .claims import primary_condition
from .config import EXAMPLE_MODES, MODES, budget_text, condition_labels, region_names
from .findings import LocalizedFindings
from .stages import LocalizedContext, ModelEvaluation, region_of

if TYPE_CHECKING:
    from matplotlib.axes import Axes



def _check(x: torch.Tensor, labels: Sequence[str], **others: torch.Tensor) -> int:
    """Validate (N,C,H,W) images and companions; return N."""
    if not isinstance(x, torch.Tensor) or x.ndim != 4 or x.shape[1] not in (1, 3) or x.shape[0] == 0:
        raise ShapeError(f"images must be (N,1|3,H,W) with N >= 1, got {tuple(getattr(x, 'shape', ()))}")
    n, _, h, w = x.shape
    for name, t in others.items():
        if not isinstance(t, torch.Tensor) or t.shape[0] != n or tuple(t.shape[-2:]) != (h, w):
            raise ShapeError(f"{name} must have {n} rows of {h}x{w}, got {tuple(getattr(t, 'shape', ()))}")
    if len(labels) != n:
        raise ShapeError(f"need one row label per image: {n} images, {len(labels)} labels")
    return n


def _share(value: float) -> str:
    """A share as a percentage; 'n/a' for NaN (an all-zero importance map has no share)."""
    return "n/a" if value != value else f"{value:.0%}"


def _off(ax: Axes) -> None:
    ax.set_xticks([])
    ax.set_yticks([])


def plot_localized_examples(
    x: torch.Tensor,
    x_adv: torch.Tensor,
    mask: torch.Tensor,
    path: str | Path,
    *,
    row_labels: Sequence[str],
    region_name: str = "background",
    title: str = "Background-only attack",
) -> Path:
    """One row per image: clean | attacked | signed perturbation | the region the attack may change.

    The perturbation uses a diverging colour map centred on 0 with a symmetric
    range (the largest absolute change over the rows shown), so red = brighter,
    blue = darker, white = unchanged; the mask column is white where the attack
    may act and black where it may not.
    """
    n = _check(x, row_labels, x_adv=x_adv, mask=mask)
    if x_adv.shape != x.shape:
        raise ShapeError(f"x_adv must have the shape of x {tuple(x.shape)}, got {tuple(x_adv.shape)}")
    delta = (x_adv - x).detach().cpu().float()
    signed = delta.mean(1) if delta.shape[1] > 1 else delta[:, 0]
    vmax = float(signed.abs().max()) or 1.0
    masks = mask.detach().cpu().float().reshape(n, -1, *x.shape[-2:])[:, 0]
    height = 2.2 * n + 1.3
    fig = new_figure(figsize=(9.6, height), dpi=100)
    grid = fig.add_gridspec(n, 5, width_ratios=[1, 1, 1, 1, 0.06], wspace=0.12, hspace=0.35)
    columns = ("clean image", "attacked image", "perturbation\n(attacked - clean)",
               f"may change (white):\n{region_name}")
    im = None
    for i in range(n):
        clean, cmap = image_for_display(x[i])
        adv, _ = image_for_display(x_adv[i])
        axes = [fig.add_subplot(grid[i, j]) for j in range(4)]
        axes[0].imshow(clean, cmap=cmap, vmin=0, vmax=1)
        axes[1].imshow(adv, cmap=cmap, vmin=0, vmax=1)
        im = axes[2].imshow(signed[i].numpy(), cmap=DIVERGING, vmin=-vmax, vmax=vmax)
        axes[3].imshow(masks[i].numpy(), cmap="gray", vmin=0, vmax=1, interpolation="nearest")
        for j, ax in enumerate(axes):
            _off(ax)
            if i == 0:
                ax.set_title(columns[j], fontsize=9)
        axes[0].set_ylabel(row_labels[i], fontsize=8)
    cax = fig.add_subplot(grid[:, 4])
    assert im is not None  # n >= 1 rows were drawn (_check)
    fig.colorbar(im, cax=cax).set_label("perturbation: change of pixel value (red = brighter, blue = darker)",
                                        fontsize=8)
    fig.suptitle(title, fontsize=11, y=1 - 0.1 / height)
    fig.subplots_adjust(left=0.12, right=0.9, top=1 - 0.95 / height, bottom=0.2 / height)
    return save_figure(fig, path)


def plot_gradcam_shift(
    x: torch.Tensor,
    x_adv: torch.Tensor,
    cam_clean: torch.Tensor,
    cam_adv: torch.Tensor,
    energy_clean: torch.Tensor,
    energy_adv: torch.Tensor,
    path: str | Path,
    *,
    row_labels: Sequence[str],
    inside_name: str = "foreground",
    title: str = "Grad-CAM of the true class before and after a background-only attack",
    map_name: str = "Grad-CAM",
) -> Path:
    """One row per image: the importance map (``map_name``) on the clean image | on the attacked image | their
    difference.

    Both maps of a row are divided by the larger of their two maxima, so their
    colours are comparable; the difference (after - before) uses a diverging
    colour map. Titles give the share of the map's energy inside ``inside_name``.
    """
    n = _check(x, row_labels, x_adv=x_adv, cam_clean=cam_clean, cam_adv=cam_adv)
    if len(energy_clean) != n or len(energy_adv) != n:
        raise ShapeError(f"energies need {n} values each")
    before, after = cam_clean.detach().cpu().float(), cam_adv.detach().cpu().float()
    peak = torch.maximum(before.flatten(1).amax(1), after.flatten(1).amax(1)).clamp_min(1e-30).view(-1, 1, 1)
    before, after = before / peak, after / peak
    height = 2.3 * n + 1.5
    fig = new_figure(figsize=(10.5, height), dpi=100)
    grid = fig.add_gridspec(n, 6, width_ratios=[1, 1, 0.06, 0.3, 1, 0.06], wspace=0.1, hspace=0.5)
    heat = diff = None
    for i in range(n):
        clean, cmap = image_for_display(x[i])
        adv, _ = image_for_display(x_adv[i])
        ax0, ax1, ax2 = (fig.add_subplot(grid[i, j]) for j in (0, 1, 4))
        for ax, img, cam, energy, name in ((ax0, clean, before[i], energy_clean[i], "clean"),
                                           (ax1, adv, after[i], energy_adv[i], "attacked")):
            ax.imshow(img, cmap=cmap, vmin=0, vmax=1)
            heat = ax.imshow(cam.numpy(), cmap=HEAT_CMAP, vmin=0, vmax=1, alpha=0.7)
            ax.set_title(f"{name}: {_share(float(energy))} in {inside_name}", fontsize=8)
            if not cam.any():
                ax.text(0.5, 0.5, f"{map_name} is zero\neverywhere", ha="center", va="center", transform=ax.transAxes,
                        color="white", fontsize=8, bbox={"facecolor": "black", "alpha": 0.6, "edgecolor": "none"})
            _off(ax)
        diff = ax2.imshow((after[i] - before[i]).numpy(), cmap=DIVERGING, vmin=-1, vmax=1)
        shift = float(energy_adv[i]) - float(energy_clean[i])
        ax2.set_title("change: n/a" if shift != shift else f"change: {shift * 100:+.0f} points in {inside_name}",
                      fontsize=8)
        _off(ax2)
        ax0.set_ylabel(row_labels[i], fontsize=8)
    assert heat is not None and diff is not None  # n >= 1 rows were drawn (_check)
    fig.colorbar(heat, cax=fig.add_subplot(grid[:, 2])).set_label(f"{map_name} (fraction of the row's peak)",
                                                                  fontsize=8)
    fig.colorbar(diff, cax=fig.add_subplot(grid[:, 5])).set_label("after - before (red = more attention)", fontsize=8)
    fig.suptitle(title, fontsize=11, y=1 - 0.1 / height)
    fig.subplots_adjust(left=0.1, right=0.92, top=1 - 0.9 / height, bottom=0.2 / height)
    return save_figure(fig, path)


def plot_accuracy_bars(
    accuracies: Mapping[str, Mapping[str, float]],
    condition_labels: Mapping[str, str],
    path: str | Path,
    *,
    title: str = "Accuracy of each model under each attack",
    primary: str | None = None,
) -> Path:
    """Grouped bars: one group per condition (key order of ``condition_labels``), one bar per model, each model
    in its own colour across the groups, so the models compare side by side under each attack; the ``primary``
    condition's group is named as the primary endpoint."""
    from matplotlib import colormaps

    if not accuracies or not condition_labels:
        raise ShapeError("need at least one model and one condition")
    models = list(accuracies)
    conditions = list(condition_labels)
    for m in models:
        missing = [c for c in conditions if c not in accuracies[m]]
        if missing:
            raise ShapeError(f"model {m!r} has no accuracy for {missing}")
    fig = new_figure(figsize=(min(16.0, 2.5 + 0.32 * len(models) * len(conditions)), 4.8), dpi=100)
    ax = fig.add_subplot(1, 1, 1)
    width = 0.8 / len(models)
    colours = colormaps["tab10"]
    positions = np.arange(len(conditions))
    for k, model in enumerate(models):
        values = [accuracies[model][c] for c in conditions]
        bars = ax.bar(positions + (k - (len(models) - 1) / 2) * width, values, width * 0.95,
                      color=colours(k % 10), label=f"{model} model")
        for bar, v in zip(bars, values, strict=True):
            if v == v:
                ax.text(bar.get_x() + bar.get_width() / 2, v + 0.01, f"{v:.2f}", ha="center", va="bottom", fontsize=6)
    ax.set_xticks(positions)
    ax.set_xticklabels([textwrap.fill(condition_labels[c] + (" [primary endpoint]" if c == primary else ""), 18)
                        for c in conditions], fontsize=8)
    for tick, c in zip(ax.get_xticklabels(), conditions, strict=True):
        if c == primary:
            tick.set_fontweight("bold")
    ax.set_ylabel("accuracy on the test images")
    ax.set_ylim(0, 1.1)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), title="model", title_fontsize=8)
    ax.set_title(title, fontsize=11)
    fig.tight_layout()
    return save_figure(fig, path)


#: the accuracy bars of every model and condition
ACCURACY_PNG = "accuracy.png"


def examples_png(mode: str) -> str:
    """The file of ``mode``'s example images under the region-only attack."""
    return f"examples-{mode}.png"


def importance_png(mode: str) -> str:
    """The file of ``mode``'s importance maps on the example images, before and after the attack."""
    return f"importance-{mode}.png"


def draw_figures(ctx: LocalizedContext, findings: LocalizedFindings, models: dict[str, nn.Module],
                 evaluations: dict[str, ModelEvaluation]) -> None:
    """Every figure of the run into ``rundir.figures``: the accuracy bars, and the examples of the natural and the
    localized model (none for a model without an image correct when clean, or with ``figure_images`` 0)."""
    cfg, folder = ctx.config, ctx.rundir.figures
    labels = condition_labels(cfg)
    plot_accuracy_bars({m: {c: findings.models[m].stats.accuracy[c] for c in labels} for m in MODES}, labels,
                       folder / ACCURACY_PNG, title=f"Accuracy under full-image and localized attacks "
                                                    f"({budget_text(cfg)})", primary=primary_condition(cfg, labels))
    for mode in EXAMPLE_MODES:
        draw_examples(ctx, findings, mode, models[mode], evaluations[mode])


def draw_examples(ctx: LocalizedContext, findings: LocalizedFindings, mode: str, model: nn.Module,
                  ev: ModelEvaluation) -> None:
    """Up to ``figure_images`` images of ``mode``, those the region-only attack fools first (none drawn when no image
    is correct when clean): clean and attacked, the region it could change, the true class's map before and after."""
    cfg, data, folder = ctx.config, ctx.data, ctx.rundir.figures
    idx = fooled_first(data.labels, ev.preds["clean"], ev.preds["region"], cfg.figure_images)
    if cfg.figure_images == 0 or len(idx) == 0:
        return
    method, device, names = ev.importance, model_device(model), data.class_names
    x, x_adv, y, adv_pred = data.images(idx), ev.region_x_adv[idx], data.labels[idx], ev.preds["region"][idx]
    mask = torch.cat([region_of(ctx, model, method, slice(int(i), int(i) + 1)) for i in idx])
    cams = [importance_map(method, model, z.to(device), target="true", y=y.to(device)).cpu() for z in (x, x_adv)]
    region, complement = region_names(cfg.mask)
    labels = [f"#{int(i)} {names[int(t)]}\nafter attack: {names[int(p)]}"
              for i, t, p in zip(idx, y, adv_pred, strict=True)]
    plot_localized_examples(x, x_adv, mask, folder / examples_png(mode), row_labels=labels, region_name=region,
                            title=f"{sentence_case(region)}-only PGD ({budget_text(cfg)}) against the {mode} model")
    label = roi_label(findings.faithfulness[mode])
    plot_gradcam_shift(x, x_adv, cams[0], cams[1], ev.cam_energy_clean[idx], ev.cam_energy_adv[idx],
                       folder / importance_png(mode), row_labels=labels, inside_name=complement, map_name=method,
                       title=f"{mode} model: {method} of the true class before and after {region}-only PGD"
                             + (f"\n({label})" if label else ""))
