"""What ``pse`` found: the typed findings (``metrics.json``), from the per-image rows and the stages.

Each variant's statistics are computed from its per-image rows only (``per_image.csv``,
:func:`advspatial.analysis.pse_rows.pse_rows`), so the two always agree; the image-level test, the units, the masking
curve and the adaptive attack come from the stages (:class:`VariantRun`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch

from ...analysis.pse import TYPE_NAMES, PSECamResult, PSEResult
from ...analysis.pse_rows import Typing, column_mean, typing_of
from ...analysis.pse_stability import TypingAgreement
from ...regions.claims import Claim
from ..findings import Findings
from ..gate import Roi
from ..results import mean_of
from .claims import typing_verdicts

#: the label of the unit-masking accuracies until an attack adapts to the masked model
NO_ADAPTIVE_ATTACK = "no adaptive attack yet"
MASKING_LABEL = (f"{NO_ADAPTIVE_ATTACK}: the adversarial images were crafted against the unmasked model, so these "
                 "accuracies are not robustness")


def variant_name(attack: str, mode: str) -> str:
    """Name of an attack variant, e.g. ``"pgd/targeted"``."""
    return f"{attack}/{mode}"


@dataclass
class Masking:
    """The masking curve over the test images: accuracy with the k most sensitive (or k random) units zeroed."""

    ks: list[int]
    clean_acc: list[float]
    robust_acc: list[float]
    random_clean_acc: list[float]
    random_robust_acc: list[float]
    evaluation: str = MASKING_LABEL


@dataclass
class RankingSet:
    """The training images the units are ranked on."""

    split: str
    images: int
    successful: int
    test_ids_among_them: int


@dataclass
class MaskedAccuracy:
    """Clean and robust accuracy of the model with its top ``k`` units masked, the adaptive attack run on it."""

    k: int
    clean_acc: float
    robust_acc: float
    images: int


@dataclass
class Adaptive:
    """The adaptive attack on the masked model (and on the unmasked one), beside the fixed-x' accuracy at that k."""

    masked: MaskedAccuracy
    unmasked: MaskedAccuracy
    fixed_robust_acc: float
    attack: str


@dataclass(kw_only=True)
class VariantFindings:
    """One attack variant: outcome, typing (three views), CAM overlap, units, masking, stability and verdicts."""

    images: int
    clean_accuracy: float
    success_rate: float
    successful: int
    mean_l2: float
    mean_linf: float
    reached_target: float
    untyped_groups: int
    perturbed_groups: int
    loo_untyped_groups: int
    mean_s_total: float
    mean_p_total: float
    mean_s_groups_sum: float
    mean_p_groups_sum: float
    mean_loo_s_groups_sum: float
    mean_loo_p_groups_sum: float
    cam_test_images: int
    type_fractions: dict[str, float]
    mean_shares: dict[str, float]
    type_fractions_loo: dict[str, float]
    mean_shares_loo: dict[str, float]
    type_fractions_posthoc: dict[str, float]
    mean_shares_posthoc: dict[str, float]
    true_cam_observed: dict[str, float]
    target_cam_observed: dict[str, float]
    typing: Typing
    cam_test: dict[str, Any] | None
    top_units: list[int]
    masking: Masking
    units_ranked_on: RankingSet
    adaptive: Adaptive
    stability: dict[str, TypingAgreement]
    cam_interpretation: str
    typing_verdicts: dict[str, str]


#: the keys metrics.json holds of a dissection that could not be done, and of one that was done
UNDISSECTED_KEYS = ("dissected", "dataset", "layer", "reason")
DISSECTED_KEYS = ("dissected", "dataset", "model", "layer", "concepts", "concept_source", "images", "successful",
                  "units_included", "units_never_active", "sensitivity", "spearman_rho", "p_value", "mean_best_iou",
                  "best_concepts", "best_iou", "relative_sensitivity", "active")


@dataclass(kw_only=True)
class DissectionFindings:
    """Dissection of the analysed model's unit layer against relative sensitivity, or why it was not done."""

    dissected: bool
    dataset: str
    layer: str
    reason: str = ""
    model: str = "the analysed model"
    concepts: list[str] = field(default_factory=list)
    concept_source: str = ""
    images: int = 0
    successful: int = 0
    units_included: int = 0
    units_never_active: int = 0
    sensitivity: str = "relative: mean |A(x') - A(x)| / mean |A(x)| over successful attacks"
    spearman_rho: float = math.nan
    p_value: float = math.nan
    mean_best_iou: float = math.nan
    best_concepts: list[str] = field(default_factory=list)
    best_iou: list[float] = field(default_factory=list)
    relative_sensitivity: list[float] = field(default_factory=list)
    active: list[bool] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        """metrics.json's form: the reason alone when nothing was dissected."""
        return {k: getattr(self, k) for k in (DISSECTED_KEYS if self.dissected else UNDISSECTED_KEYS)}


@dataclass(kw_only=True)
class PSEFindings(Findings):
    """Everything a ``pse`` run found: per attack variant, the dissection, the CAM explainer's gate, the claims."""

    n: int
    clean_accuracy: float
    layer: str
    units: int
    variants: dict[str, VariantFindings]
    noise_floor: float
    dissection: DissectionFindings | None = None
    faithfulness: dict[str, Any]
    roi: Roi
    cam_interpretation: str
    claims: list[Claim]

    def to_metrics(self) -> dict[str, Any]:
        """metrics.json's data; without ``dissection`` when it was switched off."""
        out = super().to_metrics()
        if self.dissection is None:
            del out["dissection"]
        return out


@dataclass
class VariantRun:
    """What the stages give one attack variant: its rows, image-level test, units, masking curve, adaptive attack,
    typing stability, and the example images its figure shows."""

    name: str
    rows: list[dict[str, Any]]
    cam_test: PSECamResult | None
    sensitivity: torch.Tensor  # (U,) mean |A(x') - A(x)| over the ranking images' successful attacks
    ranked: torch.Tensor  # (U,) units, most sensitive first
    curve: dict[str, torch.Tensor]
    ranking: RankingSet
    adaptive: Adaptive
    stability: dict[str, TypingAgreement]
    examples: dict[str, torch.Tensor]  # the first figure_images kept images: x, x_adv, CAMs ("true", "target"), ids
    example_pse: PSEResult | None  # their group-wise measurement (None when no image was kept)


def variant_findings(run: VariantRun, claims: list[Claim], label: str) -> VariantFindings:
    """A variant's findings: the statistics of its rows (successful images), its stages' results, its verdicts."""
    group = run.rows
    correct = [r for r in group if r["correct"]]
    ok = [r for r in group if r["successful"]]
    tested = [r for r in ok if r.get("in_cam_test")]

    def fractions(prefix: str) -> dict[str, float]:
        return {t: mean_of([float(r[f"{prefix}perturbation_type"] == t) for r in ok]) for t in TYPE_NAMES}

    def shares(rows: list[dict[str, Any]], prefix: str) -> dict[str, float]:
        return {t: column_mean(rows, f"{prefix}{t}") for t in TYPE_NAMES}

    typing = typing_of(ok)
    add = typing.additivity
    curve: dict[str, Any] = {k: run.curve[k].tolist() for k in ("ks", "clean_acc", "robust_acc", "random_clean_acc",
                                                "random_robust_acc")}
    return VariantFindings(
        images=len(group), clean_accuracy=mean_of([float(r["correct"]) for r in group]),
        success_rate=mean_of([float(r["success"]) for r in correct]), successful=len(ok),
        mean_l2=column_mean(ok, "l2"), mean_linf=column_mean(ok, "linf"),
        reached_target=mean_of([float(r["adv_pred"] == r["target"]) for r in ok]),
        untyped_groups=sum(r["groups_untyped"] for r in ok), perturbed_groups=sum(r["groups_perturbed"] for r in ok),
        loo_untyped_groups=sum(r["loo:groups_untyped"] for r in ok), mean_s_total=add.s_total,
        mean_p_total=add.p_total, mean_s_groups_sum=add.s_isolated_sum, mean_p_groups_sum=add.p_isolated_sum,
        mean_loo_s_groups_sum=add.s_leave_one_out_sum, mean_loo_p_groups_sum=add.p_leave_one_out_sum,
        cam_test_images=len(tested), type_fractions=fractions(""), mean_shares=shares(ok, "share:"),
        type_fractions_loo=fractions("loo:"), mean_shares_loo=shares(ok, "loo:share:"),
        type_fractions_posthoc=fractions("posthoc:"), mean_shares_posthoc=shares(ok, "posthoc:share:"),
        true_cam_observed=shares(tested, "true_cam:"), target_cam_observed=shares(tested, "target_cam:"), typing=typing,
        cam_test=None if run.cam_test is None else {**run.cam_test.as_dict(), "interpretation": label},
        top_units=run.ranked[:10].tolist(), masking=Masking(**curve), units_ranked_on=run.ranking,
        adaptive=run.adaptive, stability=run.stability, cam_interpretation=label,
        typing_verdicts=typing_verdicts(claims, run.name))


def build_findings(runs: list[VariantRun], claims: list[Claim], gate: dict[str, Any], roi: Roi, *, n: int,
                   layer: str, units: int, noise_floor: float, dissection: DissectionFindings | None) -> PSEFindings:
    """The run's findings: every variant's, the dissection, the gate of the CAM explainer ``roi`` and the claims.

    A failed gate labels every CAM-dependent result (the variants' CAM tests, the interpretation fields).
    """
    variants = {run.name: variant_findings(run, claims, roi.interpretation) for run in runs}
    return PSEFindings(n=n, clean_accuracy=variants[runs[0].name].clean_accuracy, layer=layer, units=units,
                       variants=variants, noise_floor=noise_floor, dissection=dissection,
                       faithfulness={roi.method: gate}, roi=roi, cam_interpretation=roi.interpretation, claims=claims)
