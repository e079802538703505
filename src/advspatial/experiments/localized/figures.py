"""The figures of experiment ``localized-training``, drawn at run time into the run's ``figures/`` folder: the
accuracy of every model under every attack, and for the natural and the localized model a few images under the
region-only attack with the true class's importance map before and after it. The report shows the ones drawn."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from ...data import ImageDataset
from ...maps import importance_map
from ...regions.claims import sentence_case
from ...report.localized_figures import plot_accuracy_bars, plot_gradcam_shift, plot_localized_examples
from ...runtime import model_device
from ..context import ExperimentContext
from ..gate import roi_label
from .claims import primary_condition
from .config import EXAMPLE_MODES, MODES, LocalizedConfig, budget_text, condition_labels, region_names
from .metrics import LocalizedFindings
from .stages import ModelEvaluation, region_of

#: the accuracy bars of every model and condition
ACCURACY_PNG = "accuracy.png"


def examples_png(mode: str) -> str:
    """The file of ``mode``'s example images under the region-only attack."""
    return f"examples-{mode}.png"


def importance_png(mode: str) -> str:
    """The file of ``mode``'s importance maps on the example images, before and after the attack."""
    return f"importance-{mode}.png"


@dataclass
class Examples:
    """A few images of one model for the figures: clean and region-only adversarial images, the region the attack
    could change, the true class's importance map on both, and each image's prediction after the attack.
    ``index`` are the images' positions among the evaluated ones."""

    index: torch.Tensor
    x: torch.Tensor
    x_adv: torch.Tensor
    labels: torch.Tensor
    adv_pred: torch.Tensor
    mask: torch.Tensor
    cam_clean: torch.Tensor
    cam_adv: torch.Tensor
    energy_clean: torch.Tensor
    energy_adv: torch.Tensor
    method: str


def figure_indices(ev: ModelEvaluation, labels: torch.Tensor, k: int) -> torch.Tensor:
    """Up to k images correct when clean: those the region-only attack fools first, then the others."""
    correct = ev.preds["clean"] == labels
    fooled = correct & (ev.preds["region"] != labels)
    order = torch.cat([fooled.nonzero().squeeze(1), (correct & ~fooled).nonzero().squeeze(1)])
    return order[:k]


def example_images(ctx: ExperimentContext, model: nn.Module, ev: ModelEvaluation) -> Examples | None:
    """The first ``figure_images`` examples of ``model`` (:func:`figure_indices`); None when there is none."""
    data: ImageDataset = ctx.data
    idx = figure_indices(ev, data.labels, ctx.config.figure_images)
    if ctx.config.figure_images == 0 or len(idx) == 0:
        return None
    method, device = ev.importance, model_device(model)
    x, x_adv, y = data.images(idx), ev.region_x_adv[idx], data.labels[idx]
    mask = torch.cat([region_of(ctx, model, method, slice(int(i), int(i) + 1)) for i in idx])
    cams = [importance_map(method, model, z.to(device), target="true", y=y.to(device)).cpu() for z in (x, x_adv)]
    return Examples(idx, x, x_adv, y, ev.preds["region"][idx], mask, cams[0], cams[1], ev.cam_energy_clean[idx],
                    ev.cam_energy_adv[idx], method)


def draw_figures(ctx: ExperimentContext, findings: LocalizedFindings, models: dict[str, nn.Module],
                 evaluations: dict[str, ModelEvaluation]) -> None:
    """Every figure of the run into ``rundir.figures``: the accuracy bars, and the examples of the natural and the
    localized model (none for a model without an image correct when clean, or with ``figure_images`` 0)."""
    cfg, folder = ctx.config, ctx.rundir.figures
    labels = condition_labels(cfg)
    plot_accuracy_bars({m: {c: findings.models[m].stats.accuracy[c] for c in labels} for m in MODES}, labels,
                       folder / ACCURACY_PNG, title=f"Accuracy under full-image and localized attacks "
                                                    f"({budget_text(cfg)})", primary=primary_condition(cfg, labels))
    for mode in EXAMPLE_MODES:
        examples = example_images(ctx, models[mode], evaluations[mode])
        if examples is not None:
            draw_examples(cfg, findings, mode, examples, ctx.data.class_names, folder)


def draw_examples(cfg: LocalizedConfig, findings: LocalizedFindings, mode: str, ex: Examples,
                  names: tuple[str, ...] | list[str], folder: Path) -> None:
    """``mode``'s example images under the region-only attack, and its importance map before and after it."""
    region, complement = region_names(cfg.mask)
    labels = [f"#{int(i)} {names[int(y)]}\nafter attack: {names[int(p)]}"
              for i, y, p in zip(ex.index, ex.labels, ex.adv_pred, strict=True)]
    plot_localized_examples(ex.x, ex.x_adv, ex.mask, folder / examples_png(mode), row_labels=labels,
                            region_name=region,
                            title=f"{sentence_case(region)}-only PGD ({budget_text(cfg)}) against the {mode} model")
    label = roi_label(findings.faithfulness[mode])
    plot_gradcam_shift(ex.x, ex.x_adv, ex.cam_clean, ex.cam_adv, ex.energy_clean, ex.energy_adv,
                       folder / importance_png(mode), row_labels=labels, inside_name=complement, map_name=ex.method,
                       title=f"{mode} model: {ex.method} of the true class before and after {region}-only PGD"
                             + (f"\n({label})" if label else ""))
