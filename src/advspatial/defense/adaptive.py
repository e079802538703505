"""Adaptive attacks on a pre-processing defence, and the checks that make their numbers worth reporting.

A defence number means something only beside the number of an attack that
knows the defence (Carlini et al. 2019, "On Evaluating Adversarial
Robustness"; Tramèr et al. 2020). Here that attack is:

- the registered ``autoattack`` ensemble (APGD-CE, then APGD-DLR, then the
  gradient-free Square attack on the images still standing; worst case per
  image) with ``restarts`` restarts of ``steps`` iterations (:class:`AdaptiveBudget`);
- run through **both** gradients of the defence (``identity`` BPDA and the
  ``local`` gradient, :mod:`advspatial.defense.transforms`), keeping per image
  the worse of the two for the defence;
- with EOT (the gradient averaged over ``eot_iter`` forward passes, no Square)
  when the defence is randomized (a resampling control, a noise baseline), whose
  final examples are then scored on ``draws`` fresh draws the attacker never saw.

The same ensemble at the same budget on the *undefended* model gives the
white-box reference every adaptive number sits beside
(:func:`attack_undefended`). :func:`convergence_curves` measures robust accuracy
against the iteration count, the restart count and eps, and
:func:`convergence_rule` is the fixed rule that calls a number converged.
:func:`roi_mask` confines an attack to the RoI of the clean image.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

import torch
from torch import nn

from ..attacks import Attack, make_attack
from ..errors import ConfigError, ShapeError, check_range
from .neutralize import BinarizeFn, MapFn, map_of, top_fraction

#: the attacker's gradients through a defence: BPDA with an identity backward, and the local gradient
GRADIENTS = ("identity", "local")


class Defence(Protocol):
    """What the adaptive evaluation needs of a defence (``NeutralizedModel``, ``TransformDefence``)."""

    randomized: bool

    def with_backward(self, backward: str) -> nn.Module: ...

    def predict_draws(self, x: torch.Tensor, draws: int, sample_ids: torch.Tensor | None = None) -> torch.Tensor: ...


@dataclass(frozen=True)
class AdaptiveBudget:
    """The budget of the adaptive ensemble (defaults: the standard of the field, not a quick look).

    Attributes:
        steps: APGD iterations per restart.
        restarts: APGD restarts (each on the images still standing).
        queries: Square attack queries per image.
        eot_iter: forward passes averaged per gradient when the defence is randomized.
        draws: fresh draws a randomized defence's final examples are scored on.
        components: the ensemble's attacks, in order.
        eot_early_stop: on a randomized defence, stop an image once all
            ``eot_iter`` passes of a step are fooled (cheaper but weaker: the
            defence may still be right on fresh draws); False is AutoAttack's
            rand mode, every image takes every step.
    """

    steps: int = 100
    restarts: int = 5
    queries: int = 5000
    eot_iter: int = 8
    draws: int = 10
    components: tuple[str, ...] = ("apgd-ce", "apgd-dlr", "square")
    eot_early_stop: bool = False

    def __post_init__(self) -> None:
        for name in ("steps", "restarts", "queries", "eot_iter", "draws"):
            check_range(name, getattr(self, name), 1)
        if not self.components:
            raise ConfigError("components must name at least one attack")

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def ensemble_attack(model: nn.Module, eps: float, budget: AdaptiveBudget, *, randomized: bool, seed: int,
                    steps: int | None = None, restarts: int | None = None,
                    components: Sequence[str] | None = None) -> Attack:
    """The ensemble at ``budget`` (``steps``/``restarts``/``components`` override it, for the curves).

    A randomized model gets EOT and no Square (a score-based attack on a noisy
    score is not the adaptive attack for it; autoattack's "rand" version does the
    same); with ``budget.eot_early_stop`` an image stops once all ``eot_iter``
    passes of a step are fooled (a weaker attack: score the examples on fresh
    draws, as :func:`attack_defence` does).
    """
    parts = tuple(components or budget.components)
    if randomized:
        parts = tuple(c for c in parts if not c.startswith("square")) or ("apgd-ce",)
    return make_attack("autoattack", model, eps=eps, steps=steps or budget.steps, n_restarts=restarts or budget.restarts,
                       n_queries=budget.queries, components=parts, eot_iter=budget.eot_iter if randomized else 1,
                       seed=seed, eot_early_stop=budget.eot_early_stop)


def correct_share(defence: Defence, x: torch.Tensor, y: torch.Tensor, draws: int,
                  sample_ids: torch.Tensor | None = None) -> torch.Tensor:
    """(N,) float on the CPU: share of ``draws`` fresh draws the defence classifies correctly (0/1 if deterministic)."""
    preds = defence.predict_draws(x, draws, sample_ids)
    return (preds == y.to(preds.device)[:, None]).float().mean(1).cpu()


@dataclass
class AdaptiveOutcome:
    """Per-image results of the adaptive ensemble on one batch (CPU tensors).

    ``correct[g]`` is the (share of draws) correct after the attack through
    gradient ``g``; ``correct["worst"]`` the per-image minimum over the
    gradients; ``x_adv`` the examples of the worst case (for transfer).
    """

    correct: dict[str, torch.Tensor]
    x_adv: torch.Tensor = field(repr=False)


def attack_defence(defence: Defence, x: torch.Tensor, y: torch.Tensor, eps: float, budget: AdaptiveBudget, *,
                   sample_ids: torch.Tensor, seed: int, mask: torch.Tensor | None = None,
                   gradients: Sequence[str] = GRADIENTS, **overrides: Any) -> AdaptiveOutcome:
    """The ensemble through each of ``gradients`` of ``defence``; worst case per image over them."""
    if not gradients:
        raise ConfigError("gradients must name at least one of " + ", ".join(GRADIENTS))
    correct: dict[str, torch.Tensor] = {}
    worst_x = x.detach().clone()
    worst = torch.full((x.shape[0],), math.inf)
    for g in gradients:
        if g not in GRADIENTS:
            raise ConfigError(f"gradient {g!r} unknown; valid: {', '.join(GRADIENTS)}")
        attacked = defence.with_backward(g)
        attack = ensemble_attack(attacked, eps, budget, randomized=defence.randomized, seed=seed, **overrides)
        x_adv = attack(x, y, mask=mask, sample_ids=sample_ids)
        correct[g] = correct_share(defence, x_adv, y, budget.draws, sample_ids)
        better = correct[g] < worst
        worst = torch.where(better, correct[g], worst)
        worst_x[better.to(x.device)] = x_adv[better.to(x.device)]
    correct["worst"] = worst
    return AdaptiveOutcome(correct, worst_x)


def attack_undefended(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, budget: AdaptiveBudget, *,
                      sample_ids: torch.Tensor, seed: int, mask: torch.Tensor | None = None,
                      **overrides: Any) -> AdaptiveOutcome:
    """The white-box reference: the same ensemble and budget on the undefended model."""
    attack = ensemble_attack(model, eps, budget, randomized=False, seed=seed, **overrides)
    x_adv = attack(x, y, mask=mask, sample_ids=sample_ids)
    with torch.no_grad():
        correct = (model(x_adv).argmax(1) == y).float().cpu()
    return AdaptiveOutcome({"white-box": correct}, x_adv)


# -- convergence ---------------------------------------------------------------------------------

#: the convergence curves' gradient attacks (Square counts queries, not iterations)
CURVE_COMPONENTS = ("apgd-ce", "apgd-dlr")


@dataclass(frozen=True)
class CurveGrid:
    """Where robust accuracy is measured: iterations, restarts, and eps as multiples of the run's eps."""

    steps: tuple[int, ...] = (10, 20, 50, 100, 200, 500)
    restarts: tuple[int, ...] = (1, 2, 5, 10)
    eps_factors: tuple[float, ...] = (0.25, 0.5, 1.0, 2.0, 4.0, 8.0)

    def check(self, budget: AdaptiveBudget) -> None:
        if budget.steps not in self.steps or budget.restarts not in self.restarts:
            raise ConfigError(f"the convergence grid must contain the budget's steps ({budget.steps}) and "
                              f"restarts ({budget.restarts}); got steps {self.steps}, restarts {self.restarts}")
        if max(self.steps) <= budget.steps or max(self.restarts) <= budget.restarts:
            raise ConfigError("the convergence grid must go beyond the budget (more steps and more restarts) "
                              "to show the curve is flat there")


def convergence_curves(defence: Defence, x: torch.Tensor, y: torch.Tensor, eps: float, budget: AdaptiveBudget,
                       grid: CurveGrid, *, sample_ids: torch.Tensor, seed: int,
                       progress: Callable[[str], None] | None = None) -> dict[str, torch.Tensor]:
    """Per-image correctness (worst over the gradients) at each grid point: keys ``steps=K``, ``restarts=R``, ``eps=E``.

    Iteration points use one restart; restart points use ``budget.steps``;
    eps points use ``budget.steps`` and one restart (the eps curve only has to
    reach 0). All with the gradient attacks of the ensemble.
    """
    grid.check(budget)
    points: list[tuple[str, dict[str, Any], float]] = (
        [(f"steps={k}", {"steps": k, "restarts": 1}, eps) for k in grid.steps]
        + [(f"restarts={r}", {"restarts": r}, eps) for r in grid.restarts]
        + [(f"eps={min(1.0, eps * f):.6g}", {"restarts": 1}, min(1.0, eps * f)) for f in grid.eps_factors])
    out: dict[str, torch.Tensor] = {}
    for key, overrides, e in points:
        if key in out:
            continue
        if progress is not None:
            progress(key)
        outcome = attack_defence(defence, x, y, e, budget, sample_ids=sample_ids, seed=seed,
                                 components=CURVE_COMPONENTS, **overrides)
        out[key] = outcome.correct["worst"]
    return out


def convergence_rule(accuracies: dict[str, float], n: int, budget: AdaptiveBudget,
                     grid: CurveGrid, eps: float) -> dict[str, Any]:
    """The fixed rule: a robust accuracy is *converged* when more effort no longer lowers it.

    Converged iff, on the curve's images, the accuracy at the budget's
    iterations exceeds the accuracy at the largest iteration count by at most
    ``tolerance``, and likewise for restarts, where ``tolerance = max(0.01, 1/n)``
    (one image). Separately, ``reaches_zero`` checks that accuracy falls to
    at most ``tolerance`` at the largest eps (a defence that stays accurate at a
    huge eps is masking gradients, not robust).
    """
    tolerance = max(0.01, 1.0 / max(n, 1))
    at = lambda key: accuracies.get(key, math.nan)  # noqa: E731
    steps_gap = at(f"steps={budget.steps}") - at(f"steps={max(grid.steps)}")
    restarts_gap = at(f"restarts={budget.restarts}") - at(f"restarts={max(grid.restarts)}")
    largest = f"eps={min(1.0, eps * max(grid.eps_factors)):.6g}"
    converged = bool(steps_gap <= tolerance + 1e-9 and restarts_gap <= tolerance + 1e-9)
    return {"converged": converged, "tolerance": tolerance, "steps_gap": steps_gap, "restarts_gap": restarts_gap,
            "reaches_zero": bool(at(largest) <= tolerance + 1e-9), "largest_eps": largest, "n": n,
            "rule": f"converged when {max(grid.steps)} iterations and {max(grid.restarts)} restarts lower robust "
                    f"accuracy by at most {tolerance:.3g} (one image or 1 point) below the budget's "
                    f"{budget.steps} iterations and {budget.restarts} restarts"}


# -- attacks confined to the RoI --------------------------------------------------------------

def roi_mask(x: torch.Tensor, importance_fn: MapFn, fraction: float = 0.2, *, seed: int = 0,
             binarize: BinarizeFn | None = None, sample_ids: torch.Tensor | None = None) -> torch.Tensor:
    """(N,1,H,W) float {0,1}: the RoI of the clean images, the top ``fraction`` of ``importance_fn(x)``.

    Strictly positive pixels only, seeded ties (or ``binarize(maps, fraction)``).
    The defence never neutralizes its own RoI, so a perturbation confined there
    survives it when the RoI does not move much.
    """
    if not isinstance(x, torch.Tensor) or x.ndim != 4:
        raise ShapeError(f"images must be an (N,C,H,W) tensor, got {getattr(x, 'shape', type(x))}")
    maps = map_of(importance_fn, x)
    if binarize is None:
        roi = top_fraction(maps, fraction, seed=seed, sample_ids=sample_ids)
    else:
        check_range("fraction", fraction, 0.0, 1.0)
        roi = binarize(maps, fraction).to(torch.bool)
    return roi[:, None].to(x.dtype)
