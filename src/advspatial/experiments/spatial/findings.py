"""The spatial experiment's findings (:class:`SpatialFindings`; metrics.json is their serialization): the
measurement's parts (:mod:`advspatial.experiments.measurement.findings`) with, per attack, the spread of its random
controls' draws; the non-adaptive defence's paired comparisons and clean cost; the sweep; the adaptive evaluation
(:mod:`.claims`). Every part is a typed record (a row per configuration, a cell per sweep point, a paired comparison
with its Holm p), serialized to exactly the objects metrics.json holds.

Configurations, sweep cells, baselines and (attack, defence) pairs are keyed by typed keys here; metrics.json's
``"sweep|0.1|zero"``-style keys are made only when the findings are serialized (``as_dict``) and parsed back
(``from_dict``)."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, cast

from ...defence.adaptive import AdaptiveBudget
from ...defence.convergence import Convergence
from ...statistics.accuracy import PairedAccuracy, Proportion
from ..findings import from_json, to_json
from ..measurement.findings import AttackOutcome, MeasurementFindings
from .config import DefenceSetting, Role


def joined(parts: tuple[object, ...]) -> str:
    """Typed key parts as one metrics.json key: ``("sweep", 0.1, "zero")`` -> ``"sweep|0.1|zero"``."""
    return "|".join(f"{p:g}" if isinstance(p, float) else str(p) for p in parts)


@dataclass(frozen=True)
class DrawSpread:
    """A random control's accuracy across its draws (each draw's accuracy over the images): mean and SD."""

    mean: float
    sd: float
    draws: int


@dataclass(frozen=True)
class ShareSummary:
    """The mean of per-image shares with its 95% CI: Wilson's when every share is 0 or 1 (``k`` of ``n``
    correct), else a bootstrap CI (a randomized defence's shares of draws; ``k`` NaN)."""

    value: float
    low: float
    high: float
    k: int | float
    n: int


@dataclass(frozen=True)
class Comparison(PairedAccuracy):
    """A paired accuracy difference with its Holm-adjusted p in its table's family (None until adjusted)."""

    p_adjusted: float | None = None

    @classmethod
    def of(cls, paired: PairedAccuracy) -> Comparison:
        return cls(paired.a, paired.b, paired.delta, paired.p, paired.test)

    def adjusted(self, p_adjusted: float) -> Comparison:
        return replace(self, p_adjusted=p_adjusted)

    def as_dict(self) -> dict[str, Any]:
        extra = {} if self.p_adjusted is None else {"p_adjusted": self.p_adjusted}
        return {**super().as_dict(), **extra}


@dataclass(frozen=True)
class PairedComparisons:
    """A defence against its random control and against the undefended model, paired over the same images."""

    vs_control: Comparison
    vs_undefended: Comparison


@dataclass(frozen=True)
class SweepCell:
    """A sweep cell: the defended accuracy (Wilson), its control's mean ± SD over the draws, the paired difference."""

    defended: Proportion
    control: DrawSpread
    vs_control: Comparison


@dataclass(frozen=True)
class SettingConvergence:
    """The convergence of the two attacks a configuration's verdict compares: on the defence, on its control."""

    defended: Convergence
    control: Convergence


@dataclass(frozen=True)
class SettingMeasures:
    """The adaptive numbers of a configuration attacked adaptively: clean accuracy, accuracy under the attack
    through each gradient and in the worst case, its control's, both paired comparisons, both curves' convergence,
    and whether the control was attacked with EOT at full strength."""

    clean: Proportion
    adaptive_identity: Proportion = field(metadata={"key": "adaptive:identity"})
    adaptive_local: Proportion = field(metadata={"key": "adaptive:local"})
    adaptive_worst: Proportion = field(metadata={"key": "adaptive:worst"})
    control: ShareSummary
    vs_control: Comparison
    vs_undefended: Comparison
    convergence: SettingConvergence
    control_full_strength: bool


@dataclass(frozen=True)
class SettingRow:
    """A configuration's row of the adaptive table: what it is, its numbers (None: not attacked adaptively) and
    its verdict by the fixed rule, with why."""

    label: str
    fraction: float
    fill: str
    vulnerability: str
    measures: SettingMeasures | None
    verdict: str
    why: str

    @property
    def evaluated(self) -> bool:
        return self.measures is not None

    def measured(self) -> SettingMeasures:
        """Its adaptive numbers (a configuration attacked adaptively, such as the main defence)."""
        if self.measures is None:
            raise ValueError(f"{self.label} was not attacked adaptively")
        return self.measures

    def as_dict(self) -> dict[str, Any]:
        """metrics.json's form: one flat object, the numbers between what it is and its verdict."""
        head = {"label": self.label, "fraction": self.fraction, "fill": self.fill,
                "vulnerability": self.vulnerability, "evaluated": self.evaluated}
        numbers = {} if self.measures is None else to_json(self.measures)
        return {**head, **numbers, "verdict": self.verdict, "why": self.why}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SettingRow:
        measures = from_json(SettingMeasures, data, "settings") if data["evaluated"] else None
        return cls(str(data["label"]), float(data["fraction"]), str(data["fill"]), str(data["vulnerability"]),
                   measures, str(data["verdict"]), str(data["why"]))


@dataclass(frozen=True)
class UndefendedSummary:
    """The undefended model under the same attack: clean, white-box and RoI-restricted white-box accuracy, and the
    white-box attack's convergence."""

    clean: Proportion
    white_box: Proportion = field(metadata={"key": "white-box"})
    roi_white_box: Proportion = field(metadata={"key": "roi:white-box"})
    convergence: Convergence


@dataclass(frozen=True)
class HarmConvergence:
    """The curve the harm claim rests on: the RoI-restricted attack on the undefended model."""

    undefended: Convergence


@dataclass(frozen=True)
class Harm:
    """The pre-declared harm claim (:data:`.claims.HARM_RULE`): its paired comparison (in the adaptive table's Holm
    family), the curve it rests on, and its verdict."""

    claim: str
    rule: str
    comparison: Comparison
    convergence: HarmConvergence
    verdict: str


@dataclass(frozen=True)
class BaselineRow:
    """A trivial input transform: clean and adaptive robust accuracy, its convergence, and the labels that keep it
    out of the trade-off plot (empty when none applies)."""

    clean: ShareSummary
    robust: ShareSummary
    convergence: Convergence
    randomized: bool
    label: str


@dataclass
class SpatialAttackOutcome(AttackOutcome):
    """An attack's outcome with the spread of each random control's accuracy across its draws (mean, sd, draws)."""

    control_draws: dict[str, DrawSpread] = field(default_factory=dict)


@dataclass
class NonAdaptive:
    """Per (attack, deployable defence): defended vs its control and vs undefended, paired (Holm over the table)."""

    comparisons: dict[tuple[str, str], PairedComparisons]

    def as_dict(self) -> dict[str, Any]:
        return {joined(key): to_json(c) for key, c in self.comparisons.items()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> NonAdaptive:
        return cls({(key.split("|")[0], key.split("|")[1]): from_json(PairedComparisons, c, f"nonadaptive.{key}")
                    for key, c in data.items()})


@dataclass
class Sweep:
    """Per (adv|clean, fraction, fill): the defended accuracy (Wilson), its control's mean ± SD over the draws and
    the paired difference."""

    cells: dict[tuple[str, float, str], SweepCell]

    def as_dict(self) -> dict[str, Any]:
        return {joined(key): to_json(c) for key, c in self.cells.items()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Sweep:
        cells = {}
        for key, cell in data.items():
            tag, fraction, fill = key.split("|")
            cells[tag, float(fraction), fill] = from_json(SweepCell, cell, f"sweep.{key}")
        return cls(cells)


@dataclass
class Adaptive:
    """The adaptive evaluation: its images and budget, the rule, the undefended references, one row per
    configuration (its accuracies, convergence, paired comparisons and verdict), the harm claim, the RoI-restricted
    and transfer numbers, one row per (transform, strength) baseline and the main defence's convergence."""

    images: int
    budget: AdaptiveBudget
    rule: str
    undefended: UndefendedSummary
    settings: dict[DefenceSetting, SettingRow]
    harm: Harm
    roi_restricted: dict[str, Proportion]
    transfer: dict[str, Proportion]
    baselines: dict[tuple[str, float], BaselineRow]
    convergence: Convergence

    def main(self) -> SettingRow:
        """The main defence's row."""
        return next(row for s, row in self.settings.items() if s.role == "main")

    def as_dict(self) -> dict[str, Any]:
        return to_json({"images": self.images, "budget": self.budget.as_dict(), "rule": self.rule,
                        "undefended": self.undefended,
                        "settings": {joined(s.parts): r for s, r in self.settings.items()},
                        "harm": self.harm, "roi_restricted": self.roi_restricted, "transfer": self.transfer,
                        "baselines": {joined(k): r for k, r in self.baselines.items()},
                        "convergence": self.convergence})

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Adaptive:
        rows = {key: SettingRow.from_dict(row) for key, row in data["settings"].items()}
        settings = {DefenceSetting(cast(Role, key.split("|")[0]), row.fraction, row.fill): row
                    for key, row in rows.items()}
        baselines = {(key.split("|")[0], float(key.split("|")[1])): from_json(BaselineRow, row, f"baselines.{key}")
                     for key, row in data["baselines"].items()}
        part = lambda hint, key: from_json(hint, data[key], f"adaptive.{key}")  # noqa: E731
        return cls(int(data["images"]), part(AdaptiveBudget, "budget"), str(data["rule"]),
                   part(UndefendedSummary, "undefended"), settings, part(Harm, "harm"),
                   part(dict[str, Proportion], "roi_restricted"), part(dict[str, Proportion], "transfer"), baselines,
                   part(Convergence, "convergence"))


#: metrics.json's first keys, in the order spatial runs write them: each defence part beside the measured part it
#: belongs to. The fields' order (the measurement's, inherited, then the defence's) would put the defence's parts
#: after the measurement's (:meth:`SpatialFindings.to_metrics`).
METRICS_HEAD = ("n", "clean_accuracy", "nonadaptive", "clean_cost", "attacks", "defence_attack", "sweep")


@dataclass(kw_only=True)
class SpatialFindings(MeasurementFindings):
    """What a spatial run found: the measurement's parts (per attack its outcome with the controls' spread, the
    gates, the RoI, the comparisons, panel and claims) plus the defence: non-adaptive, sweep and adaptive."""

    #: narrowed: each outcome carries its random controls' spread, and metrics.json reads back by the declared types
    attacks: dict[str, SpatialAttackOutcome]
    nonadaptive: NonAdaptive
    clean_cost: dict[str, float]
    defence_attack: str
    sweep: Sweep
    adaptive: Adaptive | None = None

    def to_metrics(self) -> dict[str, Any]:
        """The findings as metrics.json's data, the keys of :data:`METRICS_HEAD` first."""
        metrics = super().to_metrics()
        return {**{key: metrics[key] for key in METRICS_HEAD}, **metrics}

    def adaptive_part(self) -> Adaptive:
        """The adaptive evaluation (every spatial run has one)."""
        if self.adaptive is None:
            raise ValueError("these findings hold no adaptive evaluation")
        return self.adaptive
