"""The spatial experiment's findings (:class:`SpatialFindings`; metrics.json is their serialization): the
measurement's parts (:mod:`..maps.metrics`) with, per attack, the spread of its random controls' draws; the
non-adaptive defence's paired comparisons and clean cost; the sweep; the adaptive evaluation (:mod:`.claims`).

Configurations, sweep cells, baselines and (attack, defence) pairs are keyed by typed keys here; metrics.json's
``"sweep|0.1|zero"``-style keys are made only when the findings are serialized (``as_dict``) and parsed back
(``from_dict``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, cast

from ...faithfulness.record import GateResult
from ...statistics.claims import Claim
from ..findings import optional_part, to_json
from ..maps.metrics import AttackOutcome, MeasuredFindings, PanelRow
from ..roi import Roi
from .stages import DefenceSetting, Role


def joined(parts: tuple[object, ...]) -> str:
    """Typed key parts as one metrics.json key: ``("sweep", 0.1, "zero")`` -> ``"sweep|0.1|zero"``."""
    return "|".join(f"{p:g}" if isinstance(p, float) else str(p) for p in parts)


@dataclass
class SpatialAttackOutcome(AttackOutcome):
    """An attack's outcome with the spread of each random control's accuracy across its draws (mean, sd, draws)."""

    control_draws: dict[str, dict[str, Any]] = field(default_factory=dict)


@dataclass
class NonAdaptive:
    """Per (attack, deployable defence): defended vs its control and vs undefended, paired (Holm over the table)."""

    comparisons: dict[tuple[str, str], dict[str, Any]]

    def as_dict(self) -> dict[str, Any]:
        return {joined(key): to_json(c) for key, c in self.comparisons.items()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> NonAdaptive:
        return cls({(key.split("|")[0], key.split("|")[1]): c for key, c in data.items()})


@dataclass
class Sweep:
    """Per (adv|clean, fraction, fill): the defended accuracy (Wilson), its control's mean ± SD over the draws and
    the paired difference."""

    cells: dict[tuple[str, float, str], dict[str, Any]]

    def as_dict(self) -> dict[str, Any]:
        return {joined(key): to_json(c) for key, c in self.cells.items()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Sweep:
        cells = {}
        for key, cell in data.items():
            tag, fraction, fill = key.split("|")
            cells[tag, float(fraction), fill] = cell
        return cls(cells)


@dataclass
class Adaptive:
    """The adaptive evaluation: its images and budget, the rule, the undefended references, one row per
    configuration (its accuracies, convergence, paired comparisons and verdict), the harm claim, the RoI-restricted
    and transfer numbers, one row per (transform, strength) baseline and the main defence's convergence."""

    images: int
    budget: dict[str, Any]
    rule: str
    undefended: dict[str, Any]
    settings: dict[DefenceSetting, dict[str, Any]]
    harm: dict[str, Any]
    roi_restricted: dict[str, Any]
    transfer: dict[str, Any]
    baselines: dict[tuple[str, float], dict[str, Any]]
    convergence: dict[str, Any]

    def main(self) -> dict[str, Any]:
        """The main defence's row."""
        return next(row for s, row in self.settings.items() if s.role == "main")

    def as_dict(self) -> dict[str, Any]:
        return to_json({"images": self.images, "budget": self.budget, "rule": self.rule, "undefended": self.undefended,
                        "settings": {joined(s.parts): r for s, r in self.settings.items()},
                        "harm": self.harm, "roi_restricted": self.roi_restricted, "transfer": self.transfer,
                        "baselines": {joined(k): r for k, r in self.baselines.items()},
                        "convergence": self.convergence})

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Adaptive:
        settings = {DefenceSetting(cast(Role, key.split("|")[0]), row["fraction"], row["fill"]): row
                    for key, row in data["settings"].items()}
        baselines = {(key.split("|")[0], float(key.split("|")[1])): row for key, row in data["baselines"].items()}
        return cls(data["images"], data["budget"], data["rule"], data["undefended"], settings, data["harm"],
                   data["roi_restricted"], data["transfer"], baselines, data["convergence"])


@dataclass
class SpatialFindings(MeasuredFindings):
    """What a spatial run found: the measurement's parts (per attack its outcome with the controls' spread, the
    gates, the RoI, the comparisons, panel and claims) plus the defence: non-adaptive, sweep and adaptive."""

    n: int
    clean_accuracy: float
    nonadaptive: NonAdaptive
    clean_cost: dict[str, float]
    attacks: dict[str, SpatialAttackOutcome]
    defence_attack: str
    sweep: Sweep
    faithfulness: dict[str, GateResult]
    roi: Roi
    inference: dict[str, dict[str, Any]]
    content: dict[str, dict[str, Any]] | None = optional_part()
    panel: list[PanelRow] | None = optional_part()
    claims: list[Claim] = field(default_factory=list)
    defence_interpretation: str = "interpretable"
    adaptive: Adaptive | None = None

    def adaptive_part(self) -> Adaptive:
        """The adaptive evaluation (every spatial run has one)."""
        if self.adaptive is None:
            raise ValueError("these findings hold no adaptive evaluation")
        return self.adaptive
