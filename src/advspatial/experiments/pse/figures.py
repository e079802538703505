"""The figures of a ``pse`` run, drawn at run time into ``rundir.figures`` from the stages' data and the findings.

The report (:mod:`.report`) shows a figure when its file is there; the plots themselves are
:mod:`advspatial.report.pse_figures`'s and :func:`advspatial.report.verdicts.plot_forest`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch

from ...analysis.pse import TYPE_NAMES, group_type_map
from ...report.pse_figures import (
    plot_dissection_scatter, plot_masking_curves, plot_pse_examples, plot_type_distribution, plot_unit_sensitivity,
)
from ...report.verdicts import plot_forest
from .claims import forest_claims
from .config import PSEConfig
from .metrics import DissectionFindings, PSEFindings, VariantRun

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
