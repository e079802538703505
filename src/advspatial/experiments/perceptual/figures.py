"""The perceptual experiment's figures, drawn at run time into the run's figures folder from what the run
computed; the report shows each one whose PNG is there: SSIM maps vs CAM side by side, the attack summary, the
calibration of a budget to a mean SSIM, overlap levels against the nulls.

Each ``plot_*`` function takes tensors/numbers and an output path, writes a PNG and returns the path; figures are
drawn by the Agg canvas (no pyplot state).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from ...errors import ShapeError
from ...report.figures import (
    HEAT_CMAP, check_images_maps, image_for_display, new_figure, per_image_max_normalized, save_figure, to_numpy,
)
from ...report.verdicts import forest_figures, plot_forest
from .config import ATTACKS, ENGINE_LABELS, PerceptualConfig
from .findings import PerceptualFindings
from .stages import Examples, MainPass

if TYPE_CHECKING:
    from matplotlib.axes import Axes


ATTACK_COLOURS = ("#3a7bd5", "#f28e2b", "#59a14f", "#b07aa1")
CAM_CONTOUR = "#00e5ff"
SSIM_CONTOUR = "white"
DIST_CMAP = "magma"


def _contour(ax: Axes, region: torch.Tensor, colour: str, style: str = "solid") -> None:
    mask = to_numpy(region.float())
    if 0 < mask.sum() < mask.size:
        ax.contour(mask, levels=[0.5], colors=[colour], linewidths=1.4, linestyles=style)


def _bare(ax: Axes) -> None:
    ax.set_xticks([])
    ax.set_yticks([])


def plot_ssim_vs_cam(
    images: torch.Tensor,
    cam: torch.Tensor,
    cam_region: torch.Tensor,
    adversarial: Mapping[str, torch.Tensor],
    ssim_maps: Mapping[str, torch.Tensor],
    ssim_regions: Mapping[str, torch.Tensor],
    path: str | Path,
    *,
    row_labels: Sequence[str] | None = None,
    adversarial_captions: Mapping[str, Sequence[str]] | None = None,
    importance_name: str = "Grad-CAM",
    fraction: float = 0.2,
    max_rows: int = 8,
) -> Path:
    """One row per image: image | CAM (+ its top region) | per attack: adversarial | 1-SSIM map (+ both regions).

    The CAM is shown over the faded image divided by its own maximum; the
    1-SSIM maps of all attacks share one absolute colour scale so that the
    attacks compare directly. Cyan contour: the CAM's top region; white dashed:
    the 1-SSIM map's top region.
    """
    from matplotlib.lines import Line2D

    names = list(adversarial)
    if not names or set(names) != set(ssim_maps) or set(names) != set(ssim_regions):
        raise ShapeError("adversarial, ssim_maps and ssim_regions need the same (non-empty) attack names")
    check_images_maps(images, cam=cam, cam_region=cam_region, **{f"ssim_maps[{a}]": ssim_maps[a] for a in names},
                       **{f"ssim_regions[{a}]": ssim_regions[a] for a in names})
    for a in names:
        if tuple(adversarial[a].shape) != tuple(images.shape):
            raise ShapeError(f"adversarial[{a!r}] must have shape {tuple(images.shape)}")
    if max_rows < 1:
        raise ShapeError(f"max_rows must be >= 1 (for no image, draw no figure), got {max_rows}")
    n = min(images.shape[0], max_rows)
    if row_labels is not None and len(row_labels) < n:
        raise ShapeError(f"row_labels needs {n} entries, got {len(row_labels)}")
    cam_n = per_image_max_normalized(cam[:n])
    vmax = max(float(torch.stack([ssim_maps[a][:n] for a in names]).max()), 1e-6)
    ncols = 2 + 2 * len(names)
    height = 2.2 * n + 1.9
    fig = new_figure(figsize=(2.0 * ncols + 0.6, height), dpi=100)
    grid = fig.add_gridspec(n + 1, ncols, height_ratios=[1.0] * n + [0.08], hspace=0.45, wspace=0.08)
    heat = dist = None
    for i in range(n):
        img, cmap = image_for_display(images[i])
        axes = [fig.add_subplot(grid[i, j]) for j in range(ncols)]
        axes[0].imshow(img, cmap=cmap, vmin=0, vmax=1)
        axes[1].imshow(img, cmap=cmap, vmin=0, vmax=1)
        heat = axes[1].imshow(cam_n[i], cmap=HEAT_CMAP, vmin=0, vmax=1, alpha=0.75)
        _contour(axes[1], cam_region[i], CAM_CONTOUR)
        for k, a in enumerate(names):
            adv, acmap = image_for_display(adversarial[a][i])
            axes[2 + 2 * k].imshow(adv, cmap=acmap, vmin=0, vmax=1)
            dist = axes[3 + 2 * k].imshow(to_numpy(ssim_maps[a][i]), cmap=DIST_CMAP, vmin=0, vmax=vmax)
            _contour(axes[3 + 2 * k], cam_region[i], CAM_CONTOUR)
            _contour(axes[3 + 2 * k], ssim_regions[a][i], SSIM_CONTOUR, "dashed")
            if adversarial_captions is not None:
                axes[2 + 2 * k].set_xlabel(adversarial_captions[a][i], fontsize=7)
        for ax in axes:
            _bare(ax)
        if row_labels is not None:
            axes[0].set_ylabel(row_labels[i], fontsize=8)
        if i == 0:
            titles = ["clean image", f"{importance_name}, true class"]
            for a in names:
                titles += [f"{a}: adversarial", f"{a}: 1 - SSIM map"]
            for ax, t in zip(axes, titles, strict=True):
                ax.set_title(t, fontsize=9)
    # n >= 1 here (no rows: vmax above raised) and names is not empty, so both were drawn
    assert heat is not None and dist is not None
    bar = fig.colorbar(heat, cax=fig.add_subplot(grid[n, 0:2]), orientation="horizontal")
    bar.set_label("CAM, fraction of the image's peak", fontsize=8)
    bar = fig.colorbar(dist, cax=fig.add_subplot(grid[n, 3:ncols]), orientation="horizontal")
    bar.set_label("1 - local SSIM (0 = unchanged; same scale for all attacks)", fontsize=8)
    handles = [Line2D([], [], color=CAM_CONTOUR, lw=2, label=f"CAM top {fraction:.0%}"),
               Line2D([], [], color=SSIM_CONTOUR, lw=2, ls="--", label=f"1-SSIM map top {fraction:.0%}")]
    fig.legend(handles=handles, loc="upper right", fontsize=8, frameon=True, facecolor="#555555", labelcolor="white")
    fig.suptitle("Where each attack lowers SSIM vs where the model looks (true class)", fontsize=12,
                 x=0.45, y=1 - 0.15 / height)
    fig.subplots_adjust(left=0.06, right=0.99, top=1 - 0.9 / height, bottom=0.75 / height)
    return save_figure(fig, path)


def plot_attack_summary(
    success_rates: Mapping[str, float],
    ssim_values: Mapping[str, torch.Tensor],
    path: str | Path,
    *,
    target: float | None = None,
) -> Path:
    """Left: success rate per attack (bars). Right: per-image SSIM per attack (box plot, mean as a diamond)."""
    names = list(success_rates)
    if not names or set(names) != set(ssim_values):
        raise ShapeError("success_rates and ssim_values need the same (non-empty) attack names")
    fig = new_figure(figsize=(4.0 + 1.6 * len(names), 4.0), dpi=100)
    left, right = fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)
    colours = [ATTACK_COLOURS[i % len(ATTACK_COLOURS)] for i in range(len(names))]
    rates = [success_rates[a] for a in names]
    bars = left.bar(names, [0 if math.isnan(r) else r for r in rates], color=colours)
    for bar, r in zip(bars, rates, strict=True):
        left.text(bar.get_x() + bar.get_width() / 2, (0 if math.isnan(r) else r) + 0.02,
                  "n/a" if math.isnan(r) else f"{r:.1%}", ha="center", fontsize=9)
    left.set_ylim(0, 1.12)
    left.set_ylabel("success rate (correctly classified images)")
    left.set_title("How often the attack fools the model", fontsize=10)
    data = [to_numpy(ssim_values[a]).ravel() for a in names]
    box = right.boxplot(data, patch_artist=True, widths=0.5, showfliers=True)
    right.set_xticks(range(1, len(names) + 1), names)
    right.set_xlim(0.5, len(names) + 0.85)  # room for the mean labels right of the boxes
    for patch, c in zip(box["boxes"], colours, strict=True):
        patch.set_facecolor(c)
        patch.set_alpha(0.55)
    means = [float(np.mean(d)) if d.size else math.nan for d in data]
    right.scatter(range(1, len(names) + 1), means, marker="D", color="black", zorder=3, label="mean SSIM")
    for k, m in enumerate(means):
        right.text(k + 1.28, m, f"{m:.3f}", va="center", fontsize=8)
    if target is not None:
        right.axhline(target, color="#c0182a", ls="--", lw=1, label=f"calibration target {target:.3f}")
    right.set_ylabel("SSIM(clean, adversarial) per image")
    right.set_title("Perceptual similarity (1 = identical)", fontsize=10)
    right.legend(fontsize=8, loc="lower left")
    fig.suptitle("Attacks at matched mean SSIM", fontsize=12)
    fig.subplots_adjust(left=0.1, right=0.97, top=0.84, bottom=0.1, wspace=0.35)
    return save_figure(fig, path)


def plot_calibration(
    history: Sequence[tuple[float, float]],
    target: float,
    chosen_eps: float,
    path: str | Path,
    *,
    tolerance: float | None = None,
) -> Path:
    """Mean SSIM of PGD at each budget tried (numbered in evaluation order), the target and the chosen budget."""
    if not history:
        raise ShapeError("history needs at least one (eps, mean SSIM) evaluation")
    eps = np.array([h[0] for h in history], dtype=float)
    values = np.array([h[1] for h in history], dtype=float)
    order = np.argsort(eps)
    fig = new_figure(figsize=(6.0, 4.0), dpi=100)
    ax = fig.add_subplot(1, 1, 1)
    ax.plot(np.concatenate([[0.0], eps[order]]), np.concatenate([[1.0], values[order]]), color="#9aa5b1", lw=1,
            zorder=1, label="PGD mean SSIM (eps = 0: SSIM 1)")
    ax.scatter(eps, values, color="#3a7bd5", zorder=2, label="budgets tried")
    for k, (e, v) in enumerate(zip(eps, values, strict=True)):
        ax.annotate(str(k + 1), (e, v), textcoords="offset points", xytext=(4, 4), fontsize=8)
    ax.axhline(target, color="#c0182a", ls="--", lw=1.2, label=f"target (SSIM-ball) {target:.4f}")
    if tolerance:
        ax.axhspan(target - tolerance, target + tolerance, color="#c0182a", alpha=0.1, label=f"± {tolerance}")
    ax.axvline(chosen_eps, color="black", lw=1, label=f"chosen eps {chosen_eps:.4f}")
    ax.set_xlabel("PGD L-inf budget eps")
    ax.set_ylabel("mean SSIM on the calibration images")
    ax.set_title("Calibrating the PGD budget to the SSIM-ball attack's mean SSIM\n(numbers: evaluation order)",
                 fontsize=10)
    ax.legend(fontsize=8, loc="best")
    fig.subplots_adjust(left=0.13, right=0.97, top=0.86, bottom=0.13)
    return save_figure(fig, path)


#: colours of the observed bar and of each null's bar, weakest null first
NULL_COLOURS = {"observed": "#c0182a", "uniform": "#d9dde2", "any-class": "#b6bec8", "same-class": "#8894a3",
                "object-conditioned": "#5b6675"}


def _value(comparison: Any, key: str) -> float:
    """``observed`` / ``null_mean`` of a NullComparison or of its ``as_dict()``."""
    value = comparison[key] if isinstance(comparison, Mapping) else getattr(comparison, key)
    return float(value) if value is not None else math.nan


def plot_overlap_vs_baseline(
    comparisons: Mapping[str, Mapping[str, Mapping[str, Any]]],
    path: str | Path,
    *,
    labels: Mapping[str, str] | None = None,
) -> Path:
    """One panel per statistic: per attack, the observed mean next to the mean each null expects.

    ``comparisons[attack][statistic][null]`` is a
    :class:`~advspatial.statistics.inference.NullComparison` or its ``as_dict()``
    (the ``inference`` entry of the metrics). The bars show levels only; the
    excess over each null with its CI is the forest plot's job.
    """
    attacks = [a for a, res in comparisons.items() if res]
    if not attacks:
        raise ShapeError("need at least one attack with comparisons")
    stats = list(comparisons[attacks[0]])
    nulls = list(dict.fromkeys(n for a in attacks for s in stats for n in comparisons[a].get(s, {})))
    series = ["observed", *nulls]
    width = 0.8 / len(series)
    fig = new_figure(figsize=(4.4 * len(stats), 4.2), dpi=100)
    x = np.arange(len(attacks))
    for k, stat in enumerate(stats):
        ax = fig.add_subplot(1, len(stats), k + 1)
        for j, name in enumerate(series):
            values = []
            for a in attacks:
                by_null = comparisons[a].get(stat, {})
                if name == "observed":
                    first = next(iter(by_null.values()), None)
                    values.append(_value(first, "observed") if first is not None else math.nan)
                else:
                    values.append(_value(by_null[name], "null_mean") if name in by_null else math.nan)
            pos = x - 0.4 + width * (j + 0.5)
            ax.bar(pos, values, width=width, color=NULL_COLOURS.get(name, "#999999"),  # NaN: no bar
                   label=name if name == "observed" else f"{name} null")
            for i, v in enumerate(values):
                if v != v:  # e.g. a null without partners: no value, which is not 0
                    ax.text(pos[i], 0.03, "n/a", ha="center", va="bottom", fontsize=7, color="#555555",
                            transform=ax.get_xaxis_transform())
        ax.set_xticks(x, attacks)
        ax.axhline(0, color="black", lw=0.6)
        ax.set_title((labels or {}).get(stat, stat), fontsize=10)
        ax.set_ylabel("mean over successful images")
        if k == 0:
            handles, names = ax.get_legend_handles_labels()
    fig.legend(handles, names, loc="lower center", ncol=len(series), fontsize=8, frameon=False)
    fig.suptitle("1-SSIM map vs CAM: observed vs what each null expects", fontsize=11)
    fig.subplots_adjust(left=0.07, right=0.98, top=0.84, bottom=0.2, wspace=0.35)
    return save_figure(fig, path)


FOREST = "forest.png"
FOREST_ALL = "forest-all.png"
ATTACKS_SUMMARY = "attacks-summary.png"
CALIBRATION = "calibration.png"
EXAMPLES = "ssim-maps-vs-cam.png"
OVERLAP = "overlap-vs-baseline.png"


def draw_figures(folder: Path, config: PerceptualConfig, findings: PerceptualFindings, main: MainPass,
                 class_names: Sequence[str]) -> None:
    """Every figure of the report: the forest plots of the claims, the attacks' summary, the calibration, the
    side-by-side examples and the overlap levels against the nulls."""
    forest_figures(findings.claims, folder / FOREST,
                   "Energy in CAM: observed minus each null, per-image mean with 95% bootstrap CI", "")
    values = {name: torch.cat(store.ssim_values) for name, store in main.stores.items()}
    calibration = findings.calibration
    plot_attack_summary({n: m.success_rate for n, m in findings.attacks.items()}, values, folder / ATTACKS_SUMMARY,
                        target=calibration.target)
    plot_calibration(calibration.history, calibration.target, calibration.eps, folder / CALIBRATION,
                     tolerance=calibration.tolerance)
    draw_examples(folder / EXAMPLES, main.examples, class_names, findings.roi.method, config.fraction)
    if findings.inference:
        plot_overlap_vs_baseline(findings.inference, folder / OVERLAP, labels=ENGINE_LABELS)
        groups = {name: [c for c in findings.claims if c.subject == name] for name in ATTACKS}
        if any(groups.values()):
            plot_forest(groups, folder / FOREST_ALL,
                        title="Every statistic: observed minus each null (95% bootstrap CI)")


def draw_examples(path: Path, examples: Examples, class_names: Sequence[str], method: str, fraction: float) -> None:
    """The images every attack fooled side by side (none drawn when there is no such image)."""
    if not sum(len(t) for t in examples.clean.get("labels", [])):
        return
    clean = {k: torch.cat(v) for k, v in examples.clean.items()}
    sides = {a: {k: torch.cat(v) for k, v in examples.attacks[a].items()} for a in ATTACKS}
    captions = {a: [f"pred {class_names[int(p)]}, SSIM {float(s):.3f}"
                    for p, s in zip(sides[a]["adv_pred"], sides[a]["ssim"], strict=True)] for a in ATTACKS}
    plot_ssim_vs_cam(clean["x"], clean["cam"], clean["cam_region"], {a: sides[a]["x_adv"] for a in ATTACKS},
                     {a: sides[a]["dist"] for a in ATTACKS}, {a: sides[a]["dist_region"] for a in ATTACKS}, path,
                     row_labels=[class_names[int(c)] for c in clean["labels"]], adversarial_captions=captions,
                     importance_name=method, fraction=fraction)
