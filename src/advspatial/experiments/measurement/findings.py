"""The RoI/RoA measurement's findings parts: per attack the outcome, the norms, the map statistics and the
accuracies of any extra columns (the defence's), computed from the per-image rows only (so the two always agree)
(:func:`attack_outcomes`); the gates, the RoI, the comparisons against the nulls, the panel and the claims
(:class:`Measured`, :mod:`.claims`); and the findings that hold them (:class:`MeasurementFindings`, whose
serialization is metrics.json)."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from ...faithfulness.record import GateResult
from ...statistics.claims import Claim
from ...statistics.estimates import finite_mean
from ..findings import Findings, optional_part
from .config import MeasurementConfig
from .roi import Roi
from .stages import PARTS, Accuracy, AttackSummary, Context

F = TypeVar("F", bound="MeasuredFindings")


@dataclass
class AttackOutcome:
    """One attack: its images, success, norms over the successful attacks, per attack map its statistics
    (``maps[kind]``: the means of the per-image statistics and parts, the completeness check, the RoI's
    interpretation) and the accuracy of every extra column (the defence's; empty without one)."""

    images: int
    clean_accuracy: float
    success_rate: float
    adversarial_accuracy: float
    successful: int
    mean_l0: float
    mean_l2: float
    mean_linf: float
    maps: dict[str, dict[str, Any]]
    defence: dict[str, float]


@dataclass
class PanelRow:
    """The primary statistic under another explainer or region fraction, against the same-class null."""

    subject: str
    observed: float
    null: float
    effect: dict[str, Any]
    p: float


@dataclass
class Measured:
    """The inference of the measurement (:func:`.claims.infer`): the gate of every explainer (by name; the RoI's
    at other fractions as ``"method @ top 10%"``), the RoI, per attack and map the comparisons against the nulls and
    the co-location beyond image content (when an attack had enough images), the panel, the claims."""

    faithfulness: dict[str, GateResult]
    roi: Roi
    inference: dict[str, dict[str, Any]]
    content: dict[str, dict[str, Any]] | None
    panel: list[PanelRow] | None
    claims: list[Claim]
    defence_interpretation: str


class MeasuredFindings(Findings):
    """Findings holding the measurement's parts (the parts a run did not reach, ``content`` and ``panel``, are
    optional parts: left out of metrics.json)."""

    @classmethod
    def measured(cls: type[F], head: Mapping[str, Any], measured: Measured, **tail: Any) -> F:
        """The findings of ``head`` fields, the measurement's parts and ``tail`` fields."""
        parts = {f.name: getattr(measured, f.name) for f in dataclasses.fields(measured)}
        return cls(**head, **parts, **tail)


@dataclass
class MeasurementFindings(MeasuredFindings):
    """What the measurement found: per attack its outcome, the gates, the RoI, the comparisons, panel and claims
    (the ``maps`` and ``analyze`` experiments' findings; the ``spatial`` experiment's add the defence's parts)."""

    n: int
    clean_accuracy: float
    #: read-only (Mapping, covariant): a findings type may narrow the outcome (the spatial experiment's)
    attacks: Mapping[str, AttackOutcome]
    faithfulness: dict[str, GateResult]
    roi: Roi
    inference: dict[str, dict[str, Any]]
    content: dict[str, dict[str, Any]] | None = optional_part()
    panel: list[PanelRow] | None = optional_part()
    claims: list[Claim] = field(default_factory=list)
    defence_interpretation: str = "interpretable"


@dataclass(frozen=True)
class Outcomes:
    """Every attack's outcome, with the number of images and the clean accuracy (on the first attack's images)."""

    n: int
    clean_accuracy: float
    attacks: dict[str, AttackOutcome]

    def head(self) -> dict[str, Any]:
        """The findings fields these fill (:meth:`MeasuredFindings.measured`'s ``head``)."""
        return {"n": self.n, "clean_accuracy": self.clean_accuracy, "attacks": self.attacks}


STATS = ("iou", "dice", "energy_in_roi", "pointing_game", "spearman", "pearson")


def iter_group(rows: list[dict[str, Any]], attack: str) -> Iterator[dict[str, Any]]:
    return (r for r in rows if r["attack"] == attack)


def attack_metrics(rows: list[dict[str, Any]], summary: AttackSummary, interpretation: str) -> AttackOutcome:
    """Summary of one attack, computed from its per-image rows only (so the two always agree); ``interpretation``:
    the RoI's, stated beside every attack map's statistics."""
    name, kinds = summary.name, summary.kinds()
    group = list(iter_group(rows, name))
    correct = [r for r in group if r["correct"]]
    ok = [r for r in correct if r["success"]]
    out: dict[str, Any] = {
        "images": len(group),
        "clean_accuracy": finite_mean([float(r["correct"]) for r in group]),
        "success_rate": finite_mean([float(r["success"]) for r in correct]),
        "adversarial_accuracy": finite_mean([float(r["adv_pred"] == r["label"]) for r in group]),
        "successful": len(ok),
        "mean_l0": finite_mean([float(r["l0"]) for r in ok]),
        "mean_l2": finite_mean([r["l2"] for r in ok]),
        "mean_linf": finite_mean([r["linf"] for r in ok]),
        "maps": {},
    }
    for kind in kinds:
        complete = [r for r in ok if not r.get(f"{kind}:flagged", False)]  # flagged maps enter no statistic
        stats = {s: finite_mean([r[f"{kind}:{s}"] for r in complete]) for s in (*STATS, *PARTS)}
        if f"{kind}:completeness_error" in group[0]:
            errors = sorted(e for r in ok if (e := r[f"{kind}:completeness_error"]) == e)
            stats["completeness_error_median"] = errors[len(errors) // 2] if errors else math.nan
            stats["completeness_error_max"] = errors[-1] if errors else math.nan
            stats["flagged_share"] = finite_mean([float(r[f"{kind}:flagged"]) for r in ok])
        out["maps"][kind] = stats
    out["defence"] = accuracies(group, summary.accuracies)
    for kind in kinds:
        out["maps"][kind]["empty_roi_share"] = finite_mean([float(r[f"{kind}:roi_pixels"] == 0) for r in ok])
        out["maps"][kind]["interpretation"] = interpretation
    return AttackOutcome(**out)


def accuracies(group: list[dict[str, Any]], declared: Mapping[str, Accuracy]) -> dict[str, float]:
    """The accuracy of every declared extra column over all images of the attack (incl. those it did not fool): a
    column of predicted classes is correct where it equals the label; a control's column is already its share of
    correct draws per image (its accuracy is their mean)."""
    return {name: finite_mean([float(r[a.column] == r["label"]) if a.predicted else float(r[a.column])
                               for r in group])
            for name, a in declared.items()}


def attack_outcomes(ctx: Context[MeasurementConfig], summaries: list[AttackSummary], rows: list[dict[str, Any]],
                    interpretation: str) -> Outcomes:
    """``n``, the clean accuracy (on the first attack's images) and every attack's outcome, each attack map's
    statistics with the RoI's ``interpretation``."""
    first = [r for r in rows if r["attack"] == ctx.config.attacks[0]]
    return Outcomes(len(ctx.data), finite_mean([float(r["correct"]) for r in first]),
                    {s.name: attack_metrics(rows, s, interpretation) for s in summaries})
