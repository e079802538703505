"""What ``pse`` found: the typed findings (``metrics.json``), from the per-image rows and the stages.

Each variant's statistics are computed from its per-image rows only (``per_image.csv``,
:func:`advspatial.experiments.pse.rows.pse_rows`), so the two always agree; the image-level test, the units, the masking
curve and the adaptive attack come from the stages (:class:`VariantRun`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields
from typing import Any

import torch

from ...analysis.pse_cam import PSECamResult
from ...analysis.pse_types import PSEResult
from ...faithfulness.record import GateResult
from ...statistics.claims import Claim
from ..findings import Findings, optional_part
from ..measurement.roi import Roi
from .claims import typing_verdicts
from .rows import RowStatistics, row_statistics
from .stability import TypingAgreement

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
class VariantFindings(RowStatistics):
    """One attack variant: the statistics of its rows (outcome, typing in three views, CAM overlap), then its
    image-level test, units, masking, stability and verdicts."""

    cam_test: dict[str, Any] | None
    top_units: list[int]
    masking: Masking
    units_ranked_on: RankingSet
    adaptive: Adaptive
    stability: dict[str, TypingAgreement]
    cam_interpretation: str
    typing_verdicts: dict[str, str]


#: the keys metrics.json holds of a dissection that could not be done (one that was done: every field but the reason)
UNDISSECTED_KEYS = ("dissected", "dataset", "layer", "reason")


@dataclass(kw_only=True)
class DissectionFindings:
    """Dissection of the analysed model's unit layer against relative sensitivity, or why it was not done."""

    dissected: bool
    dataset: str
    model: str = "the analysed model"
    layer: str
    reason: str = ""
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
        keys = [f.name for f in fields(self) if f.name != "reason"] if self.dissected else UNDISSECTED_KEYS
        return {k: getattr(self, k) for k in keys}


@dataclass(kw_only=True)
class PSEFindings(Findings):
    """Everything a ``pse`` run found: per attack variant, the dissection, the CAM explainer's gate, the claims."""

    n: int
    clean_accuracy: float
    layer: str
    units: int
    variants: dict[str, VariantFindings]
    noise_floor: float
    dissection: DissectionFindings | None = optional_part()  # switched off
    faithfulness: dict[str, GateResult]
    roi: Roi
    cam_interpretation: str
    claims: list[Claim]


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
    curve: dict[str, Any] = {f.name: run.curve[f.name].tolist() for f in fields(Masking) if f.name != "evaluation"}
    return VariantFindings(
        **vars(row_statistics(run.rows)),
        cam_test=None if run.cam_test is None else {**run.cam_test.as_dict(), "interpretation": label},
        top_units=run.ranked[:10].tolist(), masking=Masking(**curve), units_ranked_on=run.ranking,
        adaptive=run.adaptive, stability=run.stability, cam_interpretation=label,
        typing_verdicts=typing_verdicts(claims, run.name))


def build_findings(runs: list[VariantRun], claims: list[Claim], gate: GateResult, roi: Roi, *, n: int,
                   layer: str, units: int, noise_floor: float, dissection: DissectionFindings | None) -> PSEFindings:
    """The run's findings: every variant's, the dissection, the gate of the CAM explainer ``roi`` and the claims.

    A failed gate labels every CAM-dependent result (the variants' CAM tests, the interpretation fields).
    """
    variants = {run.name: variant_findings(run, claims, roi.interpretation) for run in runs}
    return PSEFindings(n=n, clean_accuracy=variants[runs[0].name].clean_accuracy, layer=layer, units=units,
                       variants=variants, noise_floor=noise_floor, dissection=dissection,
                       faithfulness={roi.method: gate}, roi=roi, cam_interpretation=roi.interpretation, claims=claims)
