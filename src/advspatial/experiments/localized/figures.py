"""The figures of experiment ``localized-training``, drawn at run time into the run's ``figures/`` folder: the
accuracy of every model under every attack, and for the natural and the localized model a few images under the
region-only attack with the true class's importance map before and after it. The report shows the ones drawn."""

from __future__ import annotations


import torch
from torch import nn

from ...analysis.attacked_region import fooled_first
from ...maps import importance_map
from ...statistics.claims import sentence_case
from ...report.localized_figures import plot_accuracy_bars, plot_gradcam_shift, plot_localized_examples
from ...runtime import model_device
from ..context import ExperimentContext
from ..roi import roi_label
from .claims import primary_condition
from .config import EXAMPLE_MODES, MODES, budget_text, condition_labels, region_names
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
        draw_examples(ctx, findings, mode, models[mode], evaluations[mode])


def draw_examples(ctx: ExperimentContext, findings: LocalizedFindings, mode: str, model: nn.Module,
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
