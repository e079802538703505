"""The faithfulness gate's record: its verdict and numbers as typed parts, whose JSON form is ``metrics.json``'s.

:func:`~advspatial.faithfulness.gate.summarize_gate` builds a :class:`GateResult`; an experiment's gate stage
adds the explainer's name (``method``), keeps it in its findings, and its report reads the attributes. A
finished run's record is read back from its JSON (:meth:`GateResult.from_dict`, the exact inverse of
:meth:`GateResult.as_dict`), so a re-rendered report reads the same types.

Typed: the verdict, every comparison with its paired effects, the location comparison's effects overall and
per class, the blur control. Left as JSON mappings, because they are only serialized or shown as numbers: the
raw means (``means``), the maps' complexity (``complexity``: {"map", "blurred"}), the cascading randomization
check's rows (``randomization``, read by
:func:`~advspatial.faithfulness.gate.randomization_passed`) and the MPRT results (``mprt``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ..statistics.estimates import Estimate

__all__ = ["BlurControl", "ClassGate", "Comparison", "GateResult", "PairedEffect"]


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
    return f"{e.estimate.mean:+.4g} [{e.estimate.low:+.4g}, {e.estimate.high:+.4g}]"


@dataclass
class Comparison:
    """The RoI against one other region: every measure's paired effect (> 0: the RoI matters more).

    ``effects`` holds ``deletion:FILL`` (logit drop of the RoI minus the other
    region's) and ``attack`` (the other region's margin after the restricted
    attack minus the RoI's). ``beats``: every effect's CI lies above 0;
    ``checked``: the columns existed and at least one measure applies; ``skipped``: not run, because the gate had
    already failed (:mod:`~advspatial.faithfulness.sequential`).
    """

    name: str
    words: str
    effects: dict[str, PairedEffect]
    beats: bool
    checked: bool
    failed: list[str] | None = None
    skipped: bool = False

    @property
    def short(self) -> str:
        """The comparison in two or three words ("class layout", "image edges")."""
        return self.words.split(" (")[0]

    def failing(self) -> list[str]:
        """What failed: the measures whose CI does not lie above 0, each with its effect (or, for a row with its
        own rule such as randomization, ``failed``)."""
        if self.failed is not None:
            return list(self.failed)
        return [f"{k} {_fmt(e)}" for k, e in self.effects.items() if not e.above_zero()]

    def as_dict(self) -> dict[str, Any]:
        out = {"name": self.name, "words": self.words, "beats": bool(self.beats), "checked": bool(self.checked),
               "effects": _effects_dict(self.effects), "failed": self.failing()}
        if self.skipped:
            out["skipped"] = True
        return out

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Comparison:
        return cls(d["name"], d["words"], _effects(d["effects"]), bool(d["beats"]), bool(d["checked"]),
                   list(d["failed"]), bool(d.get("skipped", False)))


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
    """The location comparison on one class's images: deletion {fill: {"logit", "accuracy"}} and the restricted
    attack {"margin", "accuracy"} (empty when the columns are missing)."""

    n: int
    deletion: dict[str, dict[str, PairedEffect]]
    attack: dict[str, PairedEffect]

    def as_dict(self) -> dict[str, Any]:
        return {"n": self.n, "deletion": _effects_dict(self.deletion), "attack": _effects_dict(self.attack)}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ClassGate:
        return cls(int(d["n"]), {f: _effects(e) for f, e in d["deletion"].items()}, _effects(d["attack"]))


@dataclass
class GateResult:
    """The faithfulness gate's verdict and its numbers (of the explainer ``method``, when a gate stage ran it).

    Attributes:
        passed: the map beats every comparison (:data:`~advspatial.faithfulness.gate.COMPARISONS` and
            randomization) with ``n >= min_n`` images.
        reason: "passed", or what failed separated by "; ".
        fraction: the nominal RoI fraction (None if not given).
        n: number of images.
        comparisons: {name: :class:`Comparison`} in report order (``randomization`` last).
        deletion, attack: the location comparison's effects in the layout every report's tables read
            ({fill: {"logit", "accuracy"}}, {"margin", "accuracy"}).
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
        decisive: the comparisons that stopped it there (empty when it did not stop early): a gate that failed early
            names only these as not beaten, the others being undecided on the images it examined.
    """

    passed: bool
    reason: str
    fraction: float | None = None
    n: int = 0
    comparisons: dict[str, Comparison] = field(default_factory=dict)
    deletion: dict[str, dict[str, PairedEffect]] = field(default_factory=dict)
    attack: dict[str, PairedEffect] = field(default_factory=dict)
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
    decisive: list[str] = field(default_factory=list)

    def not_beaten(self, *, randomization: bool = True) -> list[str]:
        """The short names of the comparisons the map did not beat ("class layout", "image edges"), not counting a
        check that was not run nor, for a gate that failed at an interim look, a comparison that look left
        undecided; ``randomization=False`` leaves that row out."""
        decided = self.decisive or None
        return [c.short for key, c in self.comparisons.items()
                if not c.beats and not c.skipped and (randomization or key != "randomization")
                and (decided is None or key in decided or key == "randomization")]

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
            "passed": bool(self.passed), "reason": self.reason,
            "fraction": None if self.fraction is None else float(self.fraction), "n": int(self.n),
            "comparisons": {k: c.as_dict() for k, c in self.comparisons.items()},
            "deletion": _effects_dict(self.deletion), "attack": _effects_dict(self.attack),
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
                   images_examined=int(self.images_examined), stopped=self.stopped, decisive=list(self.decisive))
        return out

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> GateResult:
        """The record :meth:`as_dict` wrote."""
        return cls(
            passed=bool(d["passed"]), reason=d["reason"],
            fraction=None if d["fraction"] is None else float(d["fraction"]), n=int(d["n"]),
            comparisons={k: Comparison.from_dict(c) for k, c in d["comparisons"].items()},
            deletion={f: _effects(e) for f, e in d["deletion"].items()}, attack=_effects(d["attack"]),
            blurred=BlurControl.from_dict(d["blurred"]) if d["blurred"] else None,
            complexity=dict(d["complexity"]), means=d["means"],
            per_class={name: ClassGate.from_dict(c) for name, c in d["per_class"].items()},
            randomization=d.get("randomization"), mprt=d.get("mprt"), method=d.get("method"),
            skipped=list(d.get("skipped", [])), images_planned=int(d.get("images_planned", 0)),
            images_examined=int(d.get("images_examined", 0)), stopped=str(d.get("stopped", "")),
            decisive=list(d.get("decisive", [])),
        )
