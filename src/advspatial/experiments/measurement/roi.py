"""What the faithfulness gate's status means for a run's RoI-dependent results, in one set of words.

Only a gate that **failed** (a faithfulness row shown *not better*, where the positive control beats, or a failed
randomization check) makes RoI-dependent results "not interpretable" (:func:`roi_label`). An **undecided** gate
keeps every verdict, with the caveat "RoI faithfulness undecided (about N correct images would decide)"; a gate that
**cannot judge** the setting keeps them with the caveat naming what the gate's own positive control could not pass
(:func:`roi_caveat`). :func:`roi_interpretation` is the one phrase every result carries; :class:`Roi` is a run's
explainer with its status.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from ...faithfulness.calibration import Budget
from ...faithfulness.controls import CONTROL_WORDS
from ...faithfulness.record import CANNOT_JUDGE, GATE_UNDECIDED, GateResult
from ...maps.heads import default_importance_method
from ...statistics.claims import NOT_INTERPRETABLE_ROI, Claim
from .config import GatedConfig

INTERPRETABLE = "interpretable"


def roi_label(gate: GateResult) -> str:
    """'' unless the gate failed; then the label every RoI-dependent result of the run carries, naming what the
    RoI is not better than ("not interpretable: the RoI is not better than location; fails randomization")."""
    if not gate.failed:
        return ""
    missed = gate.not_beaten(randomization=False)
    randomization = gate.comparisons.get("randomization")
    # only a randomization check that fails is named: one still undecided is not why the gate failed
    parts = ([f"the RoI is not better than {', '.join(missed)}"] if missed else []) + (
        [f"the RoI fails the randomization check: {'; '.join(randomization.failing())}"]
        if randomization is not None and randomization.outcome == "fails" else [])
    return "not interpretable: " + "; ".join(parts) if parts else NOT_INTERPRETABLE_ROI


def roi_caveat(gate: GateResult) -> str:
    """The caveat an undecided gate, or one that cannot judge its setting, puts on RoI-dependent results ('' for a
    gate that passed or failed)."""
    if gate.status == GATE_UNDECIDED:
        need = gate.images_to_decide()
        if math.isfinite(need):
            return f"RoI faithfulness undecided (about {int(need):,} correct images would decide)"
        return "RoI faithfulness undecided: " + gate.reason.removeprefix("undecided: ").removeprefix(
            "randomization undecided: ")
    if gate.status == CANNOT_JUDGE:
        return "RoI faithfulness cannot be judged here: " + gate.reason.removeprefix(
            "the gate cannot judge this setting: ")
    return ""


def roi_interpretation(gate: GateResult) -> str:
    """How every RoI-dependent result reads: "interpretable", "interpretable; <caveat>" or "not interpretable:
    <why>"."""
    label = roi_label(gate)
    if label:
        return label
    caveat = roi_caveat(gate)
    return f"{INTERPRETABLE}; {caveat}" if caveat else INTERPRETABLE


@dataclass
class Roi:
    """The explainer whose maps give a run its Region of Importance: the method, why it was chosen, whether its maps
    passed the faithfulness gate (``faithful``), the gate's status, and how every RoI-dependent result reads
    (:func:`roi_interpretation`)."""

    method: str
    why: str
    faithful: bool
    interpretation: str
    status: str = ""

    @property
    def usable(self) -> bool:
        """RoI-dependent results keep their verdicts (the gate did not fail)."""
        return not self.interpretation.startswith("not interpretable")

    @property
    def caveat(self) -> str:
        """The caveat RoI-dependent verdicts are read with ('' when there is none)."""
        return self.interpretation.removeprefix(INTERPRETABLE + "; ") if self.interpretation.startswith(
            INTERPRETABLE + "; ") else ""

    @classmethod
    def judged(cls, method: str, why: str, gate: GateResult) -> Roi:
        """The RoI of ``method`` (chosen because ``why``) as its ``gate`` judged it."""
        return cls(method, why, gate.passed, roi_interpretation(gate), gate.status)


def gate_rule(cfg: GatedConfig, images: int, fraction: float, eps: float, map_name: str = "the map",
              budget: Budget | None = None) -> str:
    """The gate's rule in one paragraph (one wording for every report)."""
    attack = budget.text() if budget is not None else f"eps {eps:g}"
    until = ", continued until every row is decided" if cfg.gate_until_decided else ""
    control = (f" A positive control is gated beside it ({CONTROL_WORDS['deletion']}): where it does not beat a "
               "comparison either, that cell reads 'cannot judge' instead of failing the map." if cfg.gate_control
               else "")
    return (f"Gate (faithfulness): on the correctly classified images among the first {images}{until}, the top "
            f"{fraction:.0%} of {map_name} must do more damage than its own shape at a random place (location) and "
            "as many random pixels (scatter, judged with fills that create no edges): deleting the region "
            f"({', '.join(cfg.gate_fills)} fills) must lower the true-class logit more. L-inf PGD "
            f"({cfg.gate_steps} steps, {attack}) confined to each region is reported beside it and not counted: "
            "at that budget the margin it removes is first-order gradient mass. Each fill reads beats (95% "
            "bootstrap CI above 0), not better "
            f"(90% CI below +{cfg.equivalence_margin:g} x the RoI's own damage) or undecided. The map must also "
            "change when the model's weights are destroyed (cascading randomization: |Spearman| with the trained "
            "model's map below 0.5 after every layer is re-initialized; smooth MPRT below 0.5; efficient MPRT: a "
            f"complexity rise above 5%; each over {cfg.randomization_draws} re-initializations of the model and "
            f"{cfg.randomization_images} check images, with a 95% CI over both).{control} It passes when every "
            "cell beats and randomization passes; "
            "it fails when a cell is not better or randomization fails; otherwise it is undecided. Specificity, "
            "not part of the gate: the same measures against the class and dataset layout, the centre, the image's "
            "intensity and its edges, each read as beats, equivalent (90% CI inside the margin), does less or "
            "undecided. Positive Δ = the map's region matters more.")


def with_roi_caveat(claims: list[Claim], gate: GateResult | str) -> list[Claim]:
    """``claims`` with the gate's caveat (:func:`roi_caveat`, or the caveat itself) added to each that rests on RoI
    faithfulness."""
    caveat = gate if isinstance(gate, str) else roi_caveat(gate)
    if caveat:
        for c in claims:
            if "RoI faithfulness" in c.gates and caveat not in c.caveats:
                c.caveats.append(caveat)
    return claims


def resolve_importance(name: str, model: nn.Module, x: torch.Tensor) -> tuple[str, str]:
    """(method, why): ``auto`` picks by head type (:func:`advspatial.maps.default_importance_method`)."""
    if name == "auto":
        return default_importance_method(model, x)
    return name, "chosen in the config"
