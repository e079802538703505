"""The budget of the gate's restricted attack, calibrated so that the attack is not saturated.

The restricted attack compares the damage an L-inf PGD does when it may change only one region's pixels. At a
budget where the attack flips nearly every image whatever region it is confined to (CIFAR-10 ResNet-20 at the
preset's 8/255: 98-99% of images flip inside any 20% region), every region "does the same damage" and the measure
compares how far PGD overshoots the decision boundary, not which pixels matter. So the gate calibrates the budget
per model: the largest budget that does not exceed the experiment's own, chosen by bisection so that the
*unrestricted* attack with the gate's steps flips about :data:`TARGET_FLIP` of the calibration images (the first
correctly classified images of the gate); at a budget that flips fewer, the experiment's own budget is kept
(:func:`calibrate_budget`). The report states the budget and its flip rate.

The bisection's budgets do not wait on each other more than they must: the experiment's budget runs beside the first
bisection step, and the later steps go two levels at a time (the next midpoint and both of its possible successors,
three budgets stacked as one run, :class:`_RowBudgetPGD`), so that a device makes 4 runs instead of 8; each image's
attack at a budget is the one a run at that budget alone makes (seeds keyed by sample id), so the bisection's path and
result are the same, at 11 budgets' passes instead of 8.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn

from ..attacks.gradients import masked_sign
from ..attacks.pgd import PGD, auto_step
from ..errors import check_range
from ..runtime import per_sample_noise
from ..stacked_runs import RowChunks

#: the share of the calibration images the unrestricted attack should flip
TARGET_FLIP = 0.5
#: correctly classified images the budget is calibrated on
CALIBRATION_IMAGES = 100
#: bisection steps between 0 and the experiment's budget (the budget is then known to 1/128 of it)
BISECTION_STEPS = 7
#: bisection levels whose budgets run as one stack (the next midpoint and its possible successors: 2**levels - 1)
LEVELS_PER_RUN = 2


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


class _RowBudgetPGD(PGD):
    """L-inf PGD with each row's own budget ``eps_rows`` (and its auto step, ``2.5 eps / steps``): several budgets'
    runs on the same images stacked as one. Row by row the arithmetic of :class:`~advspatial.attacks.PGD` at that
    row's budget (the same float32 step and bounds, the random start keyed by sample id)."""

    def __init__(self, model: nn.Module, eps_rows: list[float], steps: int, seed: int) -> None:
        super().__init__(model, eps=max(eps_rows), alpha="auto", steps=steps, seed=seed)
        shape = (-1, 1, 1, 1)
        self.row_eps = torch.tensor(eps_rows, dtype=torch.float32).view(shape)
        self.row_step = torch.tensor([auto_step("auto", e, steps) for e in eps_rows], dtype=torch.float32).view(shape)
        self.alpha = 1.0  # the step is each row's own, in direction(): 1.0 * (step * sign) is step * sign exactly

    def direction(self, grad: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        return self.row_step.to(grad.device) * masked_sign(grad, mask)

    def project(self, x: torch.Tensor, x_new: torch.Tensor) -> torch.Tensor:
        eps = self.row_eps.to(x.device)
        return (x + torch.minimum(torch.maximum(x_new - x, -eps), eps)).clamp_(0.0, 1.0)

    def random_delta(self, x: torch.Tensor, mask: torch.Tensor | None, sample_ids: torch.Tensor) -> torch.Tensor:
        noise = per_sample_noise(x.shape, self.seed, sample_ids, "uniform", x.device, x.dtype)
        noise = noise * self.row_eps.to(x.device)
        return noise if mask is None else noise * mask


def flip_rates(model: nn.Module, x: torch.Tensor, y: torch.Tensor, sample_ids: torch.Tensor, budgets: list[float],
               steps: int, seed: int, max_images: int | None = None) -> list[float]:
    """At each of ``budgets`` (all > 0), the share of the images whose prediction the unrestricted L-inf PGD
    (``steps``, step 2.5 eps / steps) moves off ``y``: the budgets' attacks stacked as one run (each step one round;
    the model called at most ``max_images`` rows at a time)."""
    n = len(y)
    if n == 0:
        return [0.0 for _ in budgets]
    chunked = RowChunks(model, max_images) if max_images else model
    attack = _RowBudgetPGD(chunked, [e for e in budgets for _ in range(n)], steps, seed)
    k = len(budgets)
    success = attack.run(x.repeat(k, *([1] * (x.ndim - 1))), y.repeat(k), sample_ids=sample_ids.repeat(k)).success
    return [v / n for v in success.view(k, n).sum(1).tolist()]


def bisection_budgets(low: float, high: float, levels: int) -> list[float]:
    """The midpoints of the next ``levels`` bisection steps of [low, high] that the flip rates may lead to: the
    midpoint, then those of both halves (``2**levels - 1`` budgets, each computed as the bisection computes it)."""
    if levels <= 0:
        return []
    mid = (low + high) / 2
    return [mid, *bisection_budgets(low, mid, levels - 1), *bisection_budgets(mid, high, levels - 1)]


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

    def rates(budgets: list[float]) -> dict[float, float]:
        return dict(zip(budgets, flip_rates(model, x, y, ids, budgets, steps, seed, max_images), strict=True))

    low, high = 0.0, float(planned_eps)
    first = min(1, bisection_steps)  # the first bisection step runs beside the experiment's budget
    known = rates([high, *bisection_budgets(low, high, first)])
    tried = [(high, known[high])]
    if tried[0][1] <= target or len(y) == 0:
        return Budget(high, high, False, tried[0][1], len(y), tried)
    for step in range(bisection_steps):
        mid = (low + high) / 2
        if mid not in known:
            known = rates(bisection_budgets(low, high, min(LEVELS_PER_RUN, bisection_steps - step)))
        tried.append((mid, known[mid]))
        low, high = (mid, high) if tried[-1][1] <= target else (low, mid)
    eps, flips = min(tried, key=lambda t: (abs(t[1] - target), t[0]))
    return Budget(eps, float(planned_eps), True, flips, len(y), tried)
