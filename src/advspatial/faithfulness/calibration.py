"""The budget of the gate's restricted attack, calibrated so that the attack is not saturated.

The restricted attack compares the damage an L-inf PGD does when it may change only one region's pixels. At a
budget where the attack flips nearly every image whatever region it is confined to (CIFAR-10 ResNet-20 at the
preset's 8/255: 98-99% of images flip inside any 20% region), every region "does the same damage" and the measure
compares how far PGD overshoots the decision boundary, not which pixels matter. So the gate calibrates the budget
per model: the largest budget that does not exceed the experiment's own, chosen by bisection so that the
*unrestricted* attack with the gate's steps flips about :data:`TARGET_FLIP` of the calibration images (the first
correctly classified images of the gate); at a budget that flips fewer, the experiment's own budget is kept
(:func:`calibrate_budget`). The report states the budget and its flip rate.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn

from ..attacks import make_attack
from ..errors import check_range
from ..runtime import batch_slices

#: the share of the calibration images the unrestricted attack should flip
TARGET_FLIP = 0.5
#: correctly classified images the budget is calibrated on
CALIBRATION_IMAGES = 100
#: bisection steps between 0 and the experiment's budget (the budget is then known to 1/128 of it)
BISECTION_STEPS = 7


@dataclass(frozen=True)
class Budget:
    """The restricted attack's budget: ``eps`` (used), ``planned_eps`` (the experiment's), whether it was
    ``calibrated``, the unrestricted attack's ``flip_rate`` at ``eps`` on ``images`` calibration images, and every
    (eps, flip rate) tried."""

    eps: float
    planned_eps: float
    calibrated: bool
    flip_rate: float
    images: int
    tried: list[tuple[float, float]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "tried": [list(t) for t in self.tried]}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Budget:
        return cls(float(d["eps"]), float(d["planned_eps"]), bool(d["calibrated"]), float(d["flip_rate"]),
                   int(d["images"]), [(float(e), float(f)) for e, f in d.get("tried", [])])

    def text(self) -> str:
        """'eps 0.0078 (of 0.0314, calibrated: the unrestricted attack flips 52% of 100 images)'."""
        how = "calibrated" if self.calibrated else "the experiment's budget"
        return (f"eps {self.eps:.4g} (of {self.planned_eps:.4g}, {how}: the unrestricted attack flips "
                f"{self.flip_rate:.0%} of {self.images} images)")


def flip_rate(model: nn.Module, x: torch.Tensor, y: torch.Tensor, sample_ids: torch.Tensor, eps: float,
              steps: int, seed: int, max_images: int | None = None) -> float:
    """Share of the images whose prediction the unrestricted L-inf PGD (``steps``, step 2.5 eps / steps) moves
    off ``y``; ``max_images`` bounds a pass."""
    if eps <= 0:
        return 0.0
    attack = make_attack("pgd", model, eps=eps, alpha="auto", steps=steps, seed=seed)
    flipped = 0
    for sl in batch_slices(len(y), max_images or len(y)):
        flipped += int(attack.run(x[sl], y[sl], sample_ids=sample_ids[sl]).success.sum())
    return flipped / max(len(y), 1)


def calibrate_budget(model: nn.Module, x: torch.Tensor, y: torch.Tensor, sample_ids: torch.Tensor | Sequence[int],
                     planned_eps: float, steps: int, seed: int = 0, target: float = TARGET_FLIP,
                     bisection_steps: int = BISECTION_STEPS, max_images: int | None = None) -> Budget:
    """The restricted attack's budget on these (correctly classified) calibration images (module docstring): the
    experiment's ``planned_eps`` when its unrestricted attack flips at most ``target`` of them, else the budget
    below it whose flip rate is closest to ``target`` after ``bisection_steps`` bisection steps (ties: the smaller
    budget)."""
    check_range("planned_eps", planned_eps, 0, low_inclusive=False)
    check_range("target", target, 0, 1, low_inclusive=False, high_inclusive=False)
    ids = torch.as_tensor(sample_ids).long()

    def rate(eps: float) -> float:
        return flip_rate(model, x, y, ids, eps, steps, seed, max_images)

    tried = [(float(planned_eps), rate(planned_eps))]
    if tried[0][1] <= target or len(y) == 0:
        return Budget(float(planned_eps), float(planned_eps), False, tried[0][1], len(y), tried)
    low, high = 0.0, float(planned_eps)
    for _ in range(bisection_steps):
        mid = (low + high) / 2
        tried.append((mid, rate(mid)))
        low, high = (mid, high) if tried[-1][1] <= target else (low, mid)
    eps, flips = min(tried, key=lambda t: (abs(t[1] - target), t[0]))
    return Budget(eps, float(planned_eps), True, flips, len(y), tried)
