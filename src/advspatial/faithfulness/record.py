"""The faithfulness gate's record: its verdict and numbers as typed parts, whose JSON form is ``metrics.json``'s.

:func:`~advspatial.faithfulness.gate.summarize_gate` builds a :class:`GateResult`; an experiment's gate stage
adds the explainer's name (``method``), keeps it in its findings, and its report reads the attributes. A
finished run's record is read back from its JSON (:meth:`GateResult.from_dict`, the exact inverse of
:meth:`GateResult.as_dict`), so a re-rendered report reads the same types.

Typed: the status (:data:`GATE_STATUSES`), every comparison with its paired effects and each measure's
:class:`~advspatial.statistics.outcomes.Decision`, the positive control's comparisons, the location comparison per
class, the blur control. Left as JSON mappings, because they are only serialized or shown as numbers: the raw
means (``means``), the maps' complexity (``complexity``: {"map", "blurred"}), the restricted attack's budget
(``restricted_attack``), the cascading randomization check's rows (``randomization``, read by
:func:`~advspatial.faithfulness.gate.randomization_passed`) and the MPRT results (``mprt``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ..statistics.estimates import Estimate, interval_text
from ..statistics.outcomes import (
    BEATS, DEFAULT_POWER, EQUIVALENT, NOT_BETTER, UNDECIDED, Decision, Projection, images_to_decide,
)

__all__ = ["GATE_STATUSES", "GRADIENT_MASS", "WITHIN_MARGIN", "BlurControl", "Cell", "ClassGate", "Comparison",
           "GateResult", "PairedEffect", "counted", "specificity_outcome", "specificity_word"]

#: a gate's status: the map is faithful (passed), is shown not to be (failed), the data cannot tell yet
#: (undecided), or the gate's measures cannot show faithfulness on this model and data (cannot judge: the positive
#: control, faithful by construction, does not beat a comparison the map does not beat either)
PASSED, FAILED, GATE_UNDECIDED, CANNOT_JUDGE = "passed", "failed", "undecided", "cannot judge"
GATE_STATUSES = (PASSED, FAILED, GATE_UNDECIDED, CANNOT_JUDGE)
#: the comparisons' roles: a faithfulness row decides the gate, a specificity row is a finding, randomization both
ROLES = ("faithfulness", "specificity", "randomization")
#: the measure that reads first-order gradient mass, not use: at the calibrated budget the margin the restricted
#: attack removes in a region is, to first order, the budget times the margin's input gradient summed over it
#: (docs/methods.md, "What the restricted-attack row measures"). It is reported apart and counted neither in a
#: row's outcome nor in the gate's pass rule.
GRADIENT_MASS = "attack"


def counted(measure: str) -> bool:
    """Whether ``measure`` counts in a row's outcome and the gate's pass rule: every deletion fill, not the
    restricted attack (:data:`GRADIENT_MASS`)."""
    return measure != GRADIENT_MASS


def _float(value: Any) -> float:
    """A JSON number as a float (None, which a writer may put for NaN, as NaN)."""
    return math.nan if value is None else float(value)


@dataclass(frozen=True)
class PairedEffect:
    """Mean of per-image paired differences with its bootstrap CI and two-sided sign-flip p of the mean."""

    estimate: Estimate
    p: float

    def above_zero(self) -> bool:
        """The whole CI lies strictly above 0 (the direction that supports the RoI)."""
        return self.estimate.n > 0 and self.estimate.low > 0

    def as_dict(self) -> dict[str, Any]:
        return {**self.estimate.as_dict(), "p": float(self.p)}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> PairedEffect:
        return cls(Estimate(_float(d["mean"]), _float(d["low"]), _float(d["high"]), int(d["n"])), _float(d["p"]))


def _effects_dict(d: Mapping[str, Any]) -> dict[str, Any]:
    """Effects, possibly nested one level by name, as JSON."""
    return {k: v.as_dict() if isinstance(v, PairedEffect) else _effects_dict(v) for k, v in d.items()}


def _effects(d: Mapping[str, Any]) -> dict[str, PairedEffect]:
    return {k: PairedEffect.from_dict(v) for k, v in d.items()}


def _fmt(e: PairedEffect) -> str:
    return interval_text(e.estimate.mean, e.estimate.low, e.estimate.high, "+.4g")


def _decisions(d: Mapping[str, Any]) -> dict[str, Decision]:
    return {k: Decision.from_dict(v) for k, v in d.items()}


#: a specificity measure whose difference is significant but too small to matter (its 90% CI inside the margin,
#: :attr:`Decision.within_margin`): the word the specificity table's legend gives it, never *beats* or *does less*
WITHIN_MARGIN = "within the margin"


def specificity_word(d: Decision) -> str:
    """One specificity measure's outcome as the table's legend reads it: a *beats* or *does less* within the
    margin is :data:`WITHIN_MARGIN`, any other outcome its own word."""
    return WITHIN_MARGIN if d.inside_margin and d.outcome != EQUIVALENT else d.outcome


def specificity_outcome(decisions: list[Decision]) -> str:
    """A specificity row's outcome over its counted measures: the one word they share (:func:`specificity_word`;
    *equivalent* beside *within the margin* reads as the weaker of the two, within the margin), else ``mixed``;
    ``not checked`` without a measure."""
    words = {specificity_word(d) for d in decisions}
    if not words:
        return "not checked"
    if words == {EQUIVALENT, WITHIN_MARGIN}:
        return WITHIN_MARGIN
    return words.pop() if len(words) == 1 else "mixed"


@dataclass
class Comparison:
    """The RoI against one other region: every measure's paired effect (> 0: the RoI matters more) and its
    :class:`~advspatial.statistics.outcomes.Decision` under the row's rule.

    ``effects`` holds ``deletion:FILL`` (logit drop of the RoI minus the other region's) and ``attack`` (the
    true-label margin the restricted attack removes inside the RoI minus inside the other region), each with its
    two-sided sign-flip p; ``decisions`` the same measures read by the row's rule. ``role``: ``faithfulness``
    (location, scatter: they decide the gate), ``specificity`` (the model-free references: a finding) or
    ``randomization``. ``beats``: every counted measure beats (:func:`counted`: the deletion fills; the restricted
    attack is reported beside them); ``checked``: the columns existed and at least one counted measure applies;
    ``skipped``: not run, because the gate had already failed; ``failed``: a row with its own rule (randomization)
    names what failed.
    """

    name: str
    words: str
    effects: dict[str, PairedEffect]
    beats: bool
    checked: bool
    failed: list[str] | None = None
    skipped: bool = False
    role: str = "faithfulness"
    decisions: dict[str, Decision] = field(default_factory=dict)
    undecided: list[str] = field(default_factory=list)

    @property
    def short(self) -> str:
        """The comparison in two or three words ("class layout", "image edges")."""
        return self.words.split(" (")[0]

    @property
    def counted_decisions(self) -> dict[str, Decision]:
        """The decisions of the measures that count in the row's outcome (:func:`counted`)."""
        return {k: d for k, d in self.decisions.items() if counted(k)}

    @property
    def outcome(self) -> str:
        """The row's outcome on its counted measures (:func:`counted`): one outcome shared by every one, else
        ``not better`` when any is not better, else ``undecided``; a specificity row's by
        :func:`specificity_outcome`; ``passes``/``fails``/``not run`` for randomization."""
        if self.role == "randomization":
            return "not run" if self.skipped else "not checked" if not self.checked else (
                "passes" if self.beats else "fails" if self.failed else "undecided")
        if self.role == "specificity":
            return specificity_outcome(list(self.counted_decisions.values()))
        outcomes = {d.outcome for d in self.counted_decisions.values()}
        if not outcomes:
            return "not checked"
        if len(outcomes) == 1:
            return outcomes.pop()
        return NOT_BETTER if NOT_BETTER in outcomes else UNDECIDED

    def failing(self) -> list[str]:
        """What is not beaten: the counted measures whose outcome is not *beats*, each with its effect and outcome
        (or, for a row with its own rule such as randomization, ``failed``)."""
        if self.failed is not None:
            return list(self.failed)
        return [f"{k} {_fmt(self.effects[k])} ({d.outcome})" for k, d in self.counted_decisions.items()
                if d.outcome != BEATS and k in self.effects]

    def as_dict(self) -> dict[str, Any]:
        out = {"name": self.name, "words": self.words, "beats": bool(self.beats), "checked": bool(self.checked),
               "effects": _effects_dict(self.effects), "failed": self.failing(), "role": self.role,
               "outcome": self.outcome, "decisions": {k: d.as_dict() for k, d in self.decisions.items()}}
        if self.skipped:
            out["skipped"] = True
        if self.undecided:
            out["undecided"] = list(self.undecided)
        return out

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Comparison:
        own_rule = d.get("role") == "randomization"
        return cls(d["name"], d["words"], _effects(d["effects"]), bool(d["beats"]), bool(d["checked"]),
                   list(d["failed"]) if own_rule else None, bool(d.get("skipped", False)),
                   str(d.get("role", "faithfulness")), _decisions(d.get("decisions", {})),
                   [str(t) for t in d.get("undecided", [])])


@dataclass(frozen=True)
class Cell:
    """One measure of one faithfulness comparison as the gate reads it: the map's decision, the positive
    control's outcome on the same comparison and measure (None: no control), and the cell's reading: ``beats``,
    ``not better``, ``undecided``, or ``cannot judge`` (the map does not beat it and the control does not either)."""

    comparison: str
    measure: str
    decision: Decision
    control: str | None

    @property
    def reading(self) -> str:
        if self.decision.outcome == BEATS:
            return BEATS
        if self.control is not None and self.control != BEATS:
            return CANNOT_JUDGE
        return self.decision.outcome


@dataclass
class BlurControl:
    """The blur control: the comparisons a Gaussian-blurred copy of the map beats (``beats``), whether it beats
    everything the map beats (``as_good``: passing may come from smoothness alone), and the map's region against
    the blurred copy's (``vs_map``)."""

    beats: dict[str, bool]
    as_good: bool
    vs_map: dict[str, PairedEffect]

    def as_dict(self) -> dict[str, Any]:
        return {"beats": dict(self.beats), "as_good": self.as_good, "vs_map": _effects_dict(self.vs_map)}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> BlurControl:
        return cls(dict(d["beats"]), bool(d["as_good"]), _effects(d["vs_map"]))


@dataclass
class ClassGate:
    """The location comparison on one class's images: each measure's paired effect (``deletion:FILL``,
    ``attack``; empty when the columns are missing)."""

    n: int
    effects: dict[str, PairedEffect]

    def as_dict(self) -> dict[str, Any]:
        return {"n": self.n, "effects": _effects_dict(self.effects)}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ClassGate:
        return cls(int(d["n"]), _effects(d.get("effects", {})))


@dataclass
class GateResult:
    """The faithfulness gate's verdict and its numbers (of the explainer ``method``, when a gate stage ran it).

    Attributes:
        passed: ``status == "passed"``.
        reason: "passed", or what decided the status, separated by "; ".
        status: one of :data:`GATE_STATUSES` (given ``passed`` alone, "passed" or "failed").
        fraction: the nominal RoI fraction (None if not given).
        n: number of images (correctly classified ones).
        comparisons: {name: :class:`Comparison`} in report order: the faithfulness rows, the specificity rows,
            ``randomization`` last.
        control: the positive control's faithfulness comparisons ({name: :class:`Comparison`}, each with the
            measures its map is faithful to by construction); empty when no control ran.
        margin: the margin of the rows' rules as a share of the RoI's own damage on each measure.
        restricted_attack: the restricted attack's budget ({"eps", "planned_eps", "calibrated", "flip_rate"}: the
            share of the gate's images the unrestricted attack flips at ``eps``).
        blurred: the blur control (None when the blurred copy was not measured).
        complexity: mean Gini sparseness of the map and of its blurred copy ({"map", "blurred"}).
        means: raw means ({"roi_pixels", "deletion": {fill: {region: drop}}, "attack": {region: margin}}).
        per_class: {class name: :class:`ClassGate`}: the location comparison per class.
        randomization: the rows of the cascading model-randomization check, if given.
        mprt: smooth and efficient MPRT (``RandomizationResult.as_dict()``), if given.
        method: the explainer the gate judged (set by the experiment's gate stage).
        skipped: the randomization checks not run because the gate had already failed ("randomization", "mprt").
        images_planned, images_examined: the images (a prefix of the run's) the comparisons were planned on and
            examined (of which the ``n`` correctly classified ones count); 0 when not recorded.
        stopped: why the gate stopped before its last planned image ("" when it did not;
            :mod:`~advspatial.faithfulness.sequential`).
    """

    passed: bool
    reason: str
    status: str = ""
    fraction: float | None = None
    n: int = 0
    comparisons: dict[str, Comparison] = field(default_factory=dict)
    control: dict[str, Comparison] = field(default_factory=dict)
    margin: float = math.nan
    restricted_attack: dict[str, Any] = field(default_factory=dict)
    blurred: BlurControl | None = None
    complexity: dict[str, float] = field(default_factory=dict)
    means: dict[str, Any] = field(default_factory=dict)
    per_class: dict[str, ClassGate] = field(default_factory=dict)
    randomization: list[dict[str, Any]] | None = None
    mprt: dict[str, Any] | None = None
    method: str | None = None
    skipped: list[str] = field(default_factory=list)
    images_planned: int = 0
    images_examined: int = 0
    stopped: str = ""

    def __post_init__(self) -> None:
        if not self.status:
            self.status = PASSED if self.passed else FAILED
        self.passed = self.status == PASSED

    @property
    def failed(self) -> bool:
        """The map is shown not to be faithful: every RoI-dependent result is "not interpretable"."""
        return self.status == FAILED

    def why(self) -> str:
        """The reason, without a leading repeat of the status: what a sentence puts after "gate undecided" ("n=15 <
        30", not "undecided: n=15 < 30")."""
        return self.reason.removeprefix(f"{self.status}: ")

    def cells(self) -> list[Cell]:
        """Every counted measure of every faithfulness comparison (the pass rule's cells, :func:`counted`), with the
        positive control's outcome beside it."""
        out = []
        for name, c in self.comparisons.items():
            if c.role != "faithfulness":
                continue
            control = self.control.get(name)
            for measure, d in c.counted_decisions.items():
                outcome = None if control is None or measure not in control.decisions else \
                    control.decisions[measure].outcome
                out.append(Cell(name, measure, d, outcome))
        return out

    def not_beaten(self, *, randomization: bool = True) -> list[str]:
        """The short names of the faithfulness comparisons the map is shown not to beat ("location"), and of
        randomization when it fails (``randomization=False`` leaves that row out); undecided rows are not named."""
        missed = sorted({c.comparison for c in self.cells() if c.reading == NOT_BETTER},
                        key=list(self.comparisons).index)
        names = [self.comparisons[k].short for k in missed]
        rand = self.comparisons.get("randomization")
        if randomization and rand is not None and rand.checked and rand.failed and not rand.skipped:
            names.append(rand.short)
        return names

    def undecided(self, power: float = DEFAULT_POWER) -> list[tuple[Cell, Projection]]:
        """The undecided faithfulness cells, each with the images that would decide it (a projection)."""
        return [(c, images_to_decide(c.decision, power)) for c in self.cells() if c.reading == UNDECIDED]

    def images_to_decide(self, power: float = DEFAULT_POWER) -> float:
        """Correctly classified images that would decide every undecided faithfulness cell (the largest
        projection; NaN when none is undecided)."""
        values = [p.images for _, p in self.undecided(power)]
        return max(values) if values else math.nan

    def decided(self) -> str:
        """How the verdict was reached, in words: on every planned image, or where and why it stopped early, and
        which checks were not run."""
        if self.stopped:
            where = f"after {self.images_examined} of {self.images_planned} images: {self.stopped}"
        else:
            where = f"all {self.images_examined or self.n} images"
        return where + (f"; not run: {', '.join(self.skipped)}" if self.skipped else "")

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready (floats, NaN allowed); ``method`` only when set, then how the verdict was reached."""
        out: dict[str, Any] = {
            "passed": bool(self.passed), "reason": self.reason, "status": self.status,
            "fraction": None if self.fraction is None else float(self.fraction), "n": int(self.n),
            "comparisons": {k: c.as_dict() for k, c in self.comparisons.items()},
            "control": {k: c.as_dict() for k, c in self.control.items()}, "margin": float(self.margin),
            "restricted_attack": dict(self.restricted_attack),
            "blurred": {} if self.blurred is None else self.blurred.as_dict(), "complexity": dict(self.complexity),
            "means": self.means, "per_class": {name: c.as_dict() for name, c in self.per_class.items()},
        }
        if self.randomization is not None:
            out["randomization"] = [dict(row) for row in self.randomization]
        if self.mprt is not None:
            out["mprt"] = self.mprt
        if self.method is not None:
            out["method"] = self.method
        out.update(skipped=list(self.skipped), images_planned=int(self.images_planned),
                   images_examined=int(self.images_examined), stopped=self.stopped)
        return out

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> GateResult:
        """The record :meth:`as_dict` wrote."""
        return cls(
            passed=bool(d["passed"]), reason=d["reason"], status=str(d.get("status", "")),
            fraction=None if d["fraction"] is None else float(d["fraction"]), n=int(d["n"]),
            comparisons={k: Comparison.from_dict(c) for k, c in d["comparisons"].items()},
            control={k: Comparison.from_dict(c) for k, c in d.get("control", {}).items()},
            margin=_float(d.get("margin")), restricted_attack=dict(d.get("restricted_attack", {})),
            blurred=BlurControl.from_dict(d["blurred"]) if d["blurred"] else None,
            complexity=dict(d["complexity"]), means=d["means"],
            per_class={name: ClassGate.from_dict(c) for name, c in d["per_class"].items()},
            randomization=d.get("randomization"), mprt=d.get("mprt"), method=d.get("method"),
            skipped=list(d.get("skipped", [])), images_planned=int(d.get("images_planned", 0)),
            images_examined=int(d.get("images_examined", 0)), stopped=str(d.get("stopped", "")),
        )
