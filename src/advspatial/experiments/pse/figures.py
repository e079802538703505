"""The figures of a ``pse`` run (METHODS.md §5), for people who do not read code: drawn at run time into
``rundir.figures`` from the stages' data and the findings; the report (:mod:`.report`) shows a figure when its file
is there, the verdicts' forest plot is :func:`advspatial.report.verdicts.plot_forest`.

Each ``plot_*`` function takes tensors/arrays and an output path, writes a PNG and returns the path. Figures are
:class:`matplotlib.figure.Figure` objects drawn by the Agg canvas; pyplot and matplotlib's global state are never
touched.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from ...analysis.pse_types import TYPE_NAMES, group_type_map
from ...report.figures import image_for_display, new_figure, save_figure, to_numpy
from ...report.verdicts import plot_forest
from .claims import forest_claims
from .config import PSEConfig
from .findings import DissectionFindings, PSEFindings, VariantRun

if TYPE_CHECKING:
    from matplotlib.axes import Axes


#: group types in TYPE_NAMES order (suppression, promotion, balanced, opposing)
TYPE_COLOURS = ("#d62728", "#1f77b4", "#9467bd", "#bcbd22")
TYPE_LABELS = {
    "suppression": "suppression (lowers the true class)",
    "promotion": "promotion (raises the adversarial class)",
    "balanced": "balanced (both, neither dominates)",
    "opposing": "opposing (works against the attack)",
}


def _show_image(ax: Axes, img: torch.Tensor) -> None:
    arr, cmap = image_for_display(img)
    ax.imshow(arr, cmap=cmap, vmin=0, vmax=1)


def _top_mask(cam: np.ndarray, fraction: float) -> np.ndarray:
    """Pixels at or above the top-``fraction`` cut, positive only (outline drawn on the CAM)."""
    k = max(int(round(fraction * cam.size)), 1)
    cut = np.sort(cam.ravel())[-k]
    return (cam >= cut) & (cam > 0)


def plot_pse_examples(
    x: torch.Tensor, x_adv: torch.Tensor, cam_true: torch.Tensor, cam_target: torch.Tensor,
    type_map: torch.Tensor, path: str | Path, *, row_labels: Sequence[str], target_labels: Sequence[str],
    title: str, top_fraction: float = 0.2, cam_name: str = "Grad-CAM",
) -> Path:
    """Example images: clean, adversarial, and the group types coloured over CAM_t0(x) and CAM_t(x').

    ``type_map`` (N,H,W) holds the type code of each pixel's group (−1 = unperturbed,
    drawn transparent). The white outline marks each CAM's top region.
    """
    from matplotlib.colors import ListedColormap
    from matplotlib.patches import Patch

    n = x.shape[0]
    fig = new_figure(figsize=(11, 3.2 * n + 1.2), dpi=100)
    axes = fig.subplots(n, 4, squeeze=False)
    cmap = ListedColormap(TYPE_COLOURS)
    for i in range(n):
        types = to_numpy(type_map[i])
        overlay = np.ma.masked_less(types, 0)
        _show_image(axes[i, 0], x[i])
        _show_image(axes[i, 1], x_adv[i])
        for j, (cam, label) in enumerate(((cam_true[i], f"{cam_name} of true class\n{row_labels[i]} on x"),
                                          (cam_target[i],
                                           f"{cam_name} of adversarial class\n{target_labels[i]} on x'")),
                                         start=2):
            c = to_numpy(cam)
            axes[i, j].imshow(c, cmap="gray", vmin=0, vmax=max(float(c.max()), 1e-12))
            axes[i, j].imshow(overlay, cmap=cmap, vmin=-0.5, vmax=3.5, alpha=0.55, interpolation="nearest")
            axes[i, j].contour(_top_mask(c, top_fraction).astype(float), levels=[0.5], colors="white", linewidths=1.5)
            axes[i, j].set_title(label, fontsize=9)
        axes[i, 0].set_title(f"clean x (true: {row_labels[i]})", fontsize=9)
        axes[i, 1].set_title(f"adversarial x' (-> {target_labels[i]})", fontsize=9)
        for ax in axes[i]:
            ax.set_xticks([])
            ax.set_yticks([])
    handles = [Patch(color=TYPE_COLOURS[k], label=TYPE_LABELS[name]) for k, name in enumerate(TYPE_NAMES)]
    handles.append(Patch(facecolor="#888888", edgecolor="white",
                         label=f"white outline: top {top_fraction:.0%} of the CAM"))
    fig.legend(handles=handles, loc="lower center", ncol=3, fontsize=8, frameon=False)
    fig.suptitle(title, fontsize=11)
    fig.tight_layout(rect=(0, 0.06, 1, 0.96))
    fig.subplots_adjust(hspace=0.45)  # room for the two-line titles
    return save_figure(fig, path)


def plot_type_distribution(
    fractions: Mapping[str, Sequence[float]], shares: Mapping[str, Sequence[float]], counts: Mapping[str, int],
    path: str | Path,
) -> Path:
    """Per attack variant: which type dominates each perturbation (left) and the mean energy share of each type (right).

    ``fractions[v]`` and ``shares[v]`` are in TYPE_NAMES; ``counts[v]`` the number of
    successful perturbations behind them.
    """
    variants = list(fractions)
    fig = new_figure(figsize=(12, 4.6), dpi=100)
    left, right = fig.subplots(1, 2)
    pos = np.arange(len(variants))
    bottom = np.zeros(len(variants))
    for k, name in enumerate(TYPE_NAMES):
        vals = np.array([fractions[v][k] for v in variants], dtype=float)
        vals = np.nan_to_num(vals)
        left.bar(pos, vals, bottom=bottom, color=TYPE_COLOURS[k], label=name)
        bottom += vals
    left.set_xticks(pos, [f"{v}\n(n={counts[v]})" for v in variants], fontsize=8)
    left.set_ylabel("fraction of successful perturbations")
    left.set_ylim(0, 1.05)
    left.set_title("Dominant type of each perturbation\n(the type with the largest energy share)", fontsize=10)
    width = 0.8 / len(TYPE_NAMES)
    for k, name in enumerate(TYPE_NAMES):
        vals = np.nan_to_num(np.array([shares[v][k] for v in variants], dtype=float))
        right.bar(pos + (k - 1.5) * width, vals, width, color=TYPE_COLOURS[k], label=TYPE_LABELS[name])
    right.set_xticks(pos, variants, fontsize=8)
    right.set_ylabel("mean share of perturbation energy")
    right.set_ylim(0, 1.05)
    right.set_title("Share of the perturbation's energy (sum of delta^2)\nin groups of each type", fontsize=10)
    right.legend(fontsize=8, loc="upper right")
    fig.tight_layout()
    return save_figure(fig, path)


def plot_unit_sensitivity(sensitivity: Mapping[str, torch.Tensor], path: str | Path, *, layer: str,
                          top: int = 20) -> Path:
    """Left: each variant's per-unit activation change, sorted; right: the top units of each variant (heat map)."""
    variants = list(sensitivity)
    fig = new_figure(figsize=(12, 4.6), dpi=100)
    left, right = fig.subplots(1, 2, gridspec_kw={"width_ratios": [1, 1.3]})
    for v in variants:
        vals = np.sort(to_numpy(sensitivity[v]))[::-1]
        left.plot(np.arange(1, len(vals) + 1), vals, marker=".", label=v)
    left.set_xlabel("unit rank (1 = most sensitive)")
    left.set_ylabel("mean |A(x') - A(x)| (successful attacks)")
    left.set_title(f"Unit sensitivity in layer {layer}, sorted", fontsize=10)
    left.legend(fontsize=8)
    stacked = np.stack([to_numpy(sensitivity[v]) for v in variants])
    order = np.argsort(-np.nan_to_num(stacked.mean(0)), kind="stable")[:top]
    image = right.imshow(stacked[:, order], aspect="auto", cmap="viridis")
    right.set_yticks(np.arange(len(variants)), variants, fontsize=8)
    right.set_xticks(np.arange(len(order)), [str(u) for u in order], fontsize=7)
    right.set_xlabel("unit index (the units most sensitive on average, left to right)")
    right.set_title(f"Top {len(order)} units: activation change per attack variant", fontsize=10)
    fig.colorbar(image, ax=right, label="mean |A(x') - A(x)|")
    fig.tight_layout()
    return save_figure(fig, path)


def plot_masking_curves(curves: Mapping[str, Mapping[str, torch.Tensor]], path: str | Path, *, layer: str,
                        units: int) -> Path:
    """Accuracy as the k most sensitive units are zeroed (solid) vs k random units (dashed, min-max band).

    The adversarial images are fixed (crafted against the unmasked model), so the title says that no adaptive
    attack has been run yet: these accuracies are not robustness.
    """
    variants = list(curves)
    cols = min(len(variants), 2)
    rows = -(-len(variants) // cols)
    fig = new_figure(figsize=(6 * cols, 3.8 * rows + 0.6), dpi=100)
    axes = np.atleast_1d(fig.subplots(rows, cols, squeeze=False)).ravel()
    for ax, v in zip(axes, variants, strict=False):  # the grid can hold one axis more than there are variants
        c = curves[v]
        ks = to_numpy(c["ks"])
        x = np.where(ks == 0, 0.5, ks)  # k = 0 on a log axis
        for kind, colour, label in (("clean", "#2ca02c", "clean images"),
                                    ("robust", "#d62728", "adversarial images (fixed)")):
            ax.plot(x, to_numpy(c[f"{kind}_acc"]), color=colour, marker="o",
                    label=f"{label}: top-sensitive units masked")
            ax.plot(x, to_numpy(c[f"random_{kind}_acc"]), color=colour, linestyle="--",
                    label=f"{label}: random units masked (mean, band = min-max of draws)")
            draws = to_numpy(c[f"random_{kind}_all"]) if f"random_{kind}_all" in c else np.zeros((0,))
            if draws.size:
                ax.fill_between(x, draws.min(0), draws.max(0), color=colour, alpha=0.12)
        ax.set_xscale("log", base=2)
        ax.set_xticks(x, [str(int(k)) for k in ks], fontsize=8)
        ax.set_ylim(-0.02, 1.02)
        ax.set_xlabel(f"units masked (of {units} in {layer})")
        ax.set_ylabel("accuracy")
        ax.set_title(v, fontsize=10)
    for ax in axes[len(variants):]:
        ax.set_visible(False)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=2, fontsize=8, frameon=False)
    fig.suptitle("Masking the most sensitive units - no adaptive attack yet, not robustness\n"
                 "(x' was crafted against the unmasked model)", fontsize=11)
    fig.tight_layout(rect=(0, 0.1, 1, 0.92))
    return save_figure(fig, path)


def plot_dissection_scatter(sensitivity: torch.Tensor, best_iou: torch.Tensor, best_names: Sequence[str],
                            path: str | Path, *, rho: float, p_value: float, layer: str, dataset: str) -> Path:
    """Each unit: its sensitivity to the attack vs its best dissection IoU, coloured by its best concept."""
    from matplotlib import colormaps

    sens, iou = to_numpy(sensitivity), to_numpy(best_iou)
    fig = new_figure(figsize=(8, 5.2), dpi=100)
    ax = fig.subplots()
    concepts = sorted(set(best_names))
    cmap = colormaps["tab20"]
    palette = [cmap(i % 20) for i in range(len(concepts))]
    for concept, colour in zip(concepts, palette, strict=True):
        sel = np.array([n == concept for n in best_names])
        ax.scatter(sens[sel], iou[sel], color=colour, label=concept, s=28, alpha=0.85)
    ax.set_xlabel("unit sensitivity: mean |A(x') - A(x)| on successful attacks")
    ax.set_ylabel("best IoU with a concept (network dissection)")
    ax.set_title(f"Sensitive vs interpretable units, layer {layer} ({dataset})\n"
                 f"Spearman rho = {rho:.3f}, permutation p = {p_value:.3g}, {len(sens)} units", fontsize=10)
    ax.legend(title="best concept", fontsize=8, loc="center left", bbox_to_anchor=(1.01, 0.5))
    fig.tight_layout()
    return save_figure(fig, path)


FOREST = "forest.png"
TYPES = "perturbation-types.png"
UNIT_SENSITIVITY = "unit-sensitivity.png"
MASKING = "masking-curve.png"
DISSECTION = "dissection.png"


def examples_file(variant: str) -> str:
    """The file of a variant's example figure."""
    return f"examples-{variant.replace('/', '-')}.png"


def draw_figures(folder: Path, config: PSEConfig, findings: PSEFindings, runs: Sequence[VariantRun],
                 class_names: Sequence[str]) -> None:
    """Every figure of the run: the forest plot of the CAM claims (when a variant has any), the perturbation types,
    each variant's examples (when it has kept images), unit sensitivity and masking curves, the dissection."""
    groups = forest_claims(findings.claims, config.baseline)
    if groups:
        plot_forest(groups, folder / FOREST, title=f"Share of each group type's energy in the CAM region minus the "
                                                   f"{config.baseline} null (per-image mean, 95% bootstrap CI)")
    variants = findings.variants
    plot_type_distribution({v: [m.type_fractions[t] for t in TYPE_NAMES] for v, m in variants.items()},
                           {v: [m.mean_shares[t] for t in TYPE_NAMES] for v, m in variants.items()},
                           {v: m.successful for v, m in variants.items()}, folder / TYPES)
    for run in runs:
        draw_examples(folder, config, findings, run, class_names)
    plot_unit_sensitivity({run.name: run.sensitivity for run in runs}, folder / UNIT_SENSITIVITY, layer=findings.layer)
    plot_masking_curves({run.name: run.curve for run in runs}, folder / MASKING, layer=findings.layer,
                        units=findings.units)
    if findings.dissection is not None and findings.dissection.dissected:
        draw_dissection(folder, findings.dissection)


def draw_examples(folder: Path, config: PSEConfig, findings: PSEFindings, run: VariantRun,
                  class_names: Sequence[str]) -> None:
    """The variant's first kept images: clean, adversarial, and the group types over both CAMs (none: no figure)."""
    ex, pse = run.examples, run.example_pse
    if pse is None or not len(ex["ids"]):
        return
    faithful = findings.roi.usable
    plot_pse_examples(ex["x"], ex["x_adv"], ex["true"], ex["target"], group_type_map(pse),
                      folder / examples_file(run.name),
                      row_labels=[class_names[int(c)] for c in pse.true_class],
                      target_labels=[class_names[int(c)] for c in pse.target_class],
                      title=f"{run.name}: suppression and promotion groups over the class activation maps"
                            + ("" if faithful else " (CAM not faithful: not interpretable)"),
                      top_fraction=config.top_fraction, cam_name=findings.roi.method)


def draw_dissection(folder: Path, d: DissectionFindings) -> None:
    """Each active unit's relative sensitivity against its best dissection IoU."""
    active = torch.tensor(d.active).nonzero().squeeze(1)
    plot_dissection_scatter(torch.tensor(d.relative_sensitivity)[active], torch.tensor(d.best_iou)[active],
                            [d.best_concepts[int(u)] for u in active], folder / DISSECTION, rho=d.spearman_rho,
                            p_value=d.p_value, layer=d.layer, dataset=d.dataset)
