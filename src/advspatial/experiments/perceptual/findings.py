"""The perceptual experiment's findings (``metrics.json`` is their serialization): per attack its outcome,
computed from the per-image rows only (so the two always agree), the calibration, the curves, the gate, the
RoI, the engine's comparisons, the minimal-distortion comparison and the claims."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ...faithfulness.record import GateResult
from ...statistics.claims import Claim, estimate_of, float_of
from ...statistics.estimates import Estimate, finite_mean
from ...statistics.inference import NullComparison
from ..findings import Findings, from_json
from ..measurement.roi import Roi
from .config import ATTACKS
from .ssim_matching import Calibration


@dataclass
class MapMeans:
    """Means over the successful images of the 1 − SSIM map against the CAM, and how they read (the gate)."""

    spearman: float
    iou: float
    energy_in_cam: float
    interpretation: str = ""


@dataclass
class AttackOutcome:
    """One attack on the ``n`` images: outcome, SSIMs (over all attacked images unless named ``_successful``),
    norms and map means (over the successful images: correctly classified and fooled)."""

    images: int
    clean_accuracy: float
    #: metrics.json keeps its key ``fooling_rate`` (docs/architecture.md, "One word per concept")
    success_rate: float = field(metadata={"key": "fooling_rate"})
    adversarial_accuracy: float
    successful: int
    mean_ssim: float
    mean_ssim_window: float
    mean_ssim_successful: float
    geometry_mean_ssim: float
    mean_l2: float
    mean_linf: float
    maps: MapMeans
    geometry_energy_in_cam: float


@dataclass
class CurvePoint:
    """An attack at one budget on the calibration images (SSIM-ball: alpha; PGD: eps)."""

    budget: float
    mean_ssim: float
    success_rate: float = field(metadata={"key": "fooling_rate"})


@dataclass(frozen=True)
class LabelledComparison(NullComparison):
    """A statistic against a null with how it reads (``interpretable`` or why not: the RoI's gate)."""

    interpretation: str = ""

    @classmethod
    def of(cls, comparison: NullComparison, interpretation: str) -> LabelledComparison:
        """``comparison`` read as ``interpretation``."""
        values = {f.name: getattr(comparison, f.name) for f in dataclasses.fields(comparison)}
        return cls(**values, interpretation=interpretation)


@dataclass(frozen=True)
class CurveBound:
    """The minimal-distortion difference at one end of what a curve's grid leaves open: every image the attack's
    curve caps set to its highest possible fooling SSIM, 1 (the SSIM-ball attack's end raises the difference, PGD's
    lowers it), with the verdict the claim would read there (same family, same rule)."""

    effect: Estimate
    p_adjusted: float
    verdict: str

    def as_dict(self) -> dict[str, Any]:
        return {"effect": self.effect.as_dict(), "p_adjusted": self.p_adjusted, "verdict": self.verdict}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> CurveBound:
        return cls(estimate_of(data["effect"]), float_of(data["p_adjusted"]), str(data["verdict"]))


@dataclass
class MinimalDistortion:
    """Per image fooled by both attacks at some budget, the SSIM-ball attack's highest SSIM at which it succeeds against
    PGD's (``comparison``); the images only one attack fooled; each attack's least distorting curve point.

    ``capped``: per attack, how many of the images fooled by both its least distorting budget already fools (their
    value is a lower bound, :func:`~advspatial.experiments.perceptual.ssim_matching.capped_by_curve`); ``reach``: how
    far those images could move the mean difference were their true value 1 (up for the SSIM-ball attack, down for
    PGD); ``bounds``: per attack, the difference and the verdict at that extreme (:class:`CurveBound`), which the
    curve-range gate compares with the claim's own verdict.
    """

    images_both: int
    only_ssim_ball: int
    only_pgd: int
    ceilings: dict[str, float]
    comparison: NullComparison
    capped: dict[str, int] = field(default_factory=dict)
    reach: dict[str, float] = field(default_factory=dict)
    bounds: dict[str, CurveBound] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {"images_both": self.images_both, "only_ssim_ball": self.only_ssim_ball, "only_pgd": self.only_pgd,
                "ceilings": dict(self.ceilings), "capped": dict(self.capped), "reach": dict(self.reach),
                "bounds": {name: b.as_dict() for name, b in self.bounds.items()}, **self.comparison.as_dict()}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> MinimalDistortion:
        """What :meth:`as_dict` wrote; a file written before the curve-range gate (or its bounds) reads without them."""
        own = ("images_both", "only_ssim_ball", "only_pgd", "ceilings", "capped", "reach", "bounds")
        comparison = from_json(NullComparison, {k: v for k, v in data.items() if k not in own}, "minimal_distortion")
        return cls(int(data["images_both"]), int(data["only_ssim_ball"]), int(data["only_pgd"]),
                   {k: float(v) for k, v in data["ceilings"].items()}, comparison,
                   {k: int(v) for k, v in data.get("capped", {}).items()},
                   {k: float(v) for k, v in data.get("reach", {}).items()},
                   {k: CurveBound.from_dict(v) for k, v in data.get("bounds", {}).items()})


@dataclass
class PerceptualFindings(Findings):
    """Everything the perceptual run found; ``inference`` is per attack, statistic (the engine's name) and null.

    ``faithfulness`` is the gate of each CAM method as the gate stage returns it.
    """

    n: int
    clean_accuracy: float
    calibration: Calibration
    pgd_eps: float
    ssim_gap: float
    attacks: dict[str, AttackOutcome]
    curves: dict[str, list[CurvePoint]]
    faithfulness: dict[str, GateResult]
    roi: Roi
    inference: dict[str, dict[str, dict[str, LabelledComparison]]]
    minimal_distortion: MinimalDistortion | None = None
    claims: list[Claim] = field(default_factory=list)

    @property
    def gate(self) -> GateResult:
        """The faithfulness gate of the CAM in use."""
        return self.faithfulness[self.roi.method]


def attack_metrics(rows: list[dict[str, Any]], name: str, interpretation: str = "") -> AttackOutcome:
    """Summary of one attack, computed from its per-image rows only (so the two always agree)."""
    group = [r for r in rows if r["attack"] == name]
    correct = [r for r in group if r["correct"]]
    ok = [r for r in correct if r["success"]]
    return AttackOutcome(
        images=len(group),
        clean_accuracy=finite_mean([float(r["correct"]) for r in group]),
        success_rate=finite_mean([float(r["success"]) for r in correct]),
        adversarial_accuracy=finite_mean([float(r["adv_pred"] == r["label"]) for r in group]),
        successful=len(ok),
        mean_ssim=finite_mean([r["ssim"] for r in group]),
        mean_ssim_window=finite_mean([r.get("ssim_window", math.nan) for r in group]),
        mean_ssim_successful=finite_mean([r["ssim"] for r in ok]),
        geometry_mean_ssim=finite_mean([r.get("geometry_ssim", math.nan) for r in ok]),
        mean_l2=finite_mean([r["l2"] for r in ok]),
        mean_linf=finite_mean([r["linf"] for r in ok]),
        maps=MapMeans(finite_mean([r["spearman"] for r in ok]), finite_mean([r["iou"] for r in ok]),
                      finite_mean([r["energy_in_cam"] for r in ok]), interpretation),
        geometry_energy_in_cam=finite_mean([r.get("geometry_energy_in_cam", math.nan) for r in ok]),
    )


def attack_outcomes(rows: list[dict[str, Any]], interpretation: str) -> dict[str, AttackOutcome]:
    """Every attack's outcome, its map means read as ``interpretation``."""
    return {name: attack_metrics(rows, name, interpretation) for name in ATTACKS}
