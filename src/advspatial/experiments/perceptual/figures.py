"""The perceptual experiment's figures, drawn at run time into the run's figures folder from what the run
computed (the plots: :mod:`advspatial.report.ssim_figures`); the report shows each one whose PNG is there."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch

from ...report.ssim_figures import plot_attack_summary, plot_calibration, plot_overlap_vs_baseline, plot_ssim_vs_cam
from ...report.verdicts import forest_figures, plot_forest
from .config import ATTACKS, ENGINE_LABELS, PerceptualConfig
from .metrics import PerceptualFindings
from .stages import Examples, MainPass

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
