"""Would more effort lower an adaptive number? The convergence curves of an adaptive attack and their fixed rule.

A robust accuracy is worth reporting only if a stronger attack of the same kind
does not lower it (Carlini et al. 2019, §5; Athalye et al. 2018 for EOT). The
checks here are made on the images and with the attack whose number is
reported (:func:`convergence_curves` takes that attack's outcome):

- **more effort** (iterations beyond the budget, restarts beyond it, EOT draws
  beyond it on a randomized defence): the stronger attack runs on the images the
  reported attack left standing, and each image keeps the worse of the two
  (deterministic: the minimum; randomized: the example the attacker's own
  draws score lower, scored on the fresh draws). An image already broken stays
  broken, so the gap ``reported - stronger`` is exactly what more effort adds,
  and it costs only the images still standing;
- **a larger eps** (up to 8x): chained the same way (an image broken at eps is
  broken at any larger eps, the ball contains it). It must reach 0: a defence
  that stays accurate at a huge eps masks gradients;
- **less effort** (iterations, restarts, EOT draws, eps below the budget):
  separate attacks on every image, the curve's left side, for the plot only
  (EOT 1 is the plain attack: it stops an image at its first fooled draw).

:func:`read_curve` is the fixed rule that calls a number converged (:class:`Convergence`, the reading of one
curve; :func:`convergence_rule` gives the same reading as a dict, without the curve).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import torch

from ..errors import ConfigError
from .adaptive import (
    AdaptiveBudget, AdaptiveOutcome, Defence, attack_defence, attacker_share, correct_share, gradient_components,
    keep_worse, pick_lowest,
)


@dataclass(frozen=True)
class CurveGrid:
    """Where robust accuracy is measured: iterations, restarts, eps (multiples of the run's eps) and EOT draws."""

    steps: tuple[int, ...] = (10, 20, 50, 100, 200, 500)
    restarts: tuple[int, ...] = (1, 2, 5, 10)
    eps_factors: tuple[float, ...] = (0.25, 0.5, 1.0, 2.0, 4.0, 8.0)
    eot: tuple[int, ...] = (1, 4, 20, 50)

    def check(self, budget: AdaptiveBudget) -> None:
        """The grid holds the budget's own point of every curve and goes beyond it (else nothing is checked)."""
        if budget.steps not in self.steps or budget.restarts not in self.restarts:
            raise ConfigError(f"the convergence grid must contain the budget's steps ({budget.steps}) and "
                              f"restarts ({budget.restarts}); got steps {self.steps}, restarts {self.restarts}")
        if max(self.steps) <= budget.steps or max(self.restarts) <= budget.restarts:
            raise ConfigError("the convergence grid must go beyond the budget (more steps and more restarts) "
                              "to show the curve is flat there")
        if budget.eot_iter not in self.eot or max(self.eot) <= budget.eot_iter:
            raise ConfigError(f"the EOT grid must contain the budget's EOT ({budget.eot_iter}) and go beyond it; "
                              f"got {self.eot}")
        if max(self.eps_factors) <= 1.0:
            raise ConfigError(f"the eps grid must go beyond the run's eps (a factor > 1); got {self.eps_factors}")


def eps_key(eps: float) -> str:
    return f"eps={min(1.0, eps):.6g}"


@dataclass(frozen=True)
class AttackArgs:
    """What every attack of one curve shares: the images' global ids (its seeds), the seed, the mask that confines
    it and the gradients it goes through (None: :func:`~.adaptive.gradients_of` the defence)."""

    sample_ids: torch.Tensor
    seed: int
    mask: torch.Tensor | None = None
    gradients: Sequence[str] | None = None

    def rows(self, rows: torch.Tensor, seed_offset: int = 0) -> AttackArgs:
        """The same arguments for the images ``rows`` only, the seed moved by ``seed_offset``."""
        mask = None if self.mask is None else self.mask[rows.to(self.mask.device)]
        return replace(self, sample_ids=self.sample_ids[rows], mask=mask, seed=self.seed + seed_offset)


def convergence_curves(defence: Defence, x: torch.Tensor, y: torch.Tensor, eps: float, budget: AdaptiveBudget,
                       grid: CurveGrid, *, sample_ids: torch.Tensor, seed: int,
                       reported: AdaptiveOutcome | None = None, mask: torch.Tensor | None = None,
                       gradients: Sequence[str] | None = None, left_side: bool = True,
                       progress: Callable[[str], None] | None = None) -> dict[str, torch.Tensor]:
    """Per-image correctness at each curve point (keys ``steps=K``, ``restarts=R``, ``eps=E``; a randomized
    defence ``eot=K``), the budget's own point being ``reported`` (run here when not given).

    Points beyond the budget extend ``reported`` on the images it left standing (see the module docstring);
    with ``left_side`` the points below it are separate attacks on every image.
    """
    grid.check(budget)
    args = AttackArgs(sample_ids, seed, mask, gradients)
    if reported is None:
        reported = attack_defence(defence, x, y, eps, budget, sample_ids=sample_ids, seed=seed, mask=mask,
                                  gradients=gradients)
    base = reported.correct["worst"]
    out: dict[str, torch.Tensor] = {}
    if defence.randomized:
        out[f"eot={budget.eot_iter}"] = base
        for k in sorted(grid.eot):
            if k < budget.eot_iter and left_side:
                out[f"eot={k}"] = _run(defence, x, y, eps, budget, args, progress, f"eot={k}",
                                       eot_iter=k).correct["worst"]
            elif k > budget.eot_iter:
                out[f"eot={k}"] = extend(defence, x, y, eps, budget, reported, args, progress, f"eot={k}",
                                         eot_iter=k).correct["worst"]
        return out
    out[f"steps={budget.steps}"] = out[f"restarts={budget.restarts}"] = out[eps_key(eps)] = base
    for k in sorted(grid.steps):
        if k < budget.steps and left_side:
            out[f"steps={k}"] = _run(defence, x, y, eps, budget, args, progress, f"steps={k}", steps=k,
                                     restarts=1).correct["worst"]
        elif k > budget.steps:
            out[f"steps={k}"] = extend(defence, x, y, eps, budget, reported, args, progress, f"steps={k}", steps=k,
                                       restarts=1).correct["worst"]
    for r in sorted(grid.restarts):
        if r < budget.restarts and left_side:
            out[f"restarts={r}"] = _run(defence, x, y, eps, budget, args, progress, f"restarts={r}",
                                        restarts=r).correct["worst"]
        elif r > budget.restarts:
            # new random starts only: restart j of the stronger attack is restart budget.restarts + j overall
            out[f"restarts={r}"] = extend(defence, x, y, eps, budget, reported, args, progress, f"restarts={r}",
                                          restarts=r - budget.restarts, seed_offset=budget.restarts).correct["worst"]
    out.update(eps_curve(defence, x, y, eps, budget, grid, reported, args, progress, left_side))
    return out


def eps_curve(defence: Defence, x: torch.Tensor, y: torch.Tensor, eps: float, budget: AdaptiveBudget, grid: CurveGrid,
              reported: AdaptiveOutcome, args: AttackArgs, progress: Callable[[str], None] | None,
              left_side: bool) -> dict[str, torch.Tensor]:
    """The eps points: below eps separate attacks; above it each point extends the previous one (1 restart)."""
    out: dict[str, torch.Tensor] = {}
    previous = reported
    for f in sorted(grid.eps_factors):
        e = min(1.0, eps * f)
        key = eps_key(e)
        if key in out or e == eps:
            continue
        if e < eps and left_side:
            out[key] = _run(defence, x, y, e, budget, args, progress, key, restarts=1).correct["worst"]
        elif e > eps:
            previous = extend(defence, x, y, e, budget, previous, args, progress, key, restarts=1)
            out[key] = previous.correct["worst"]
    return out


def _run(defence: Defence, x: torch.Tensor, y: torch.Tensor, eps: float, budget: AdaptiveBudget,
         args: AttackArgs, progress: Callable[[str], None] | None, key: str, **overrides: Any) -> AdaptiveOutcome:
    """One curve point: the gradient attacks only (Square ran in the reported attack; its queries have no
    iterations, restarts or EOT to vary), each gradient on the images the earlier ones left standing (a curve reads
    only the worst case)."""
    if progress is not None:
        progress(key)
    return attack_defence(defence, x, y, eps, budget, components=gradient_components(budget),
                          sample_ids=args.sample_ids, seed=args.seed, mask=args.mask, gradients=args.gradients,
                          per_gradient=False, **overrides)


def extend(defence: Defence, x: torch.Tensor, y: torch.Tensor, eps: float, budget: AdaptiveBudget,
           reported: AdaptiveOutcome, args: AttackArgs, progress: Callable[[str], None] | None, key: str,
           seed_offset: int = 0, **overrides: Any) -> AdaptiveOutcome:
    """``reported`` then the stronger attack (``overrides``, ``eps``) on the images it left standing; per image the
    worse of the two for the defence (deterministic: the minimum; randomized: the attacker's pick, fresh-scored)."""
    correct, x_adv = reported.correct["worst"].clone(), reported.x_adv.clone()
    rows = (correct > 0).nonzero().flatten()
    if not rows.numel():
        return AdaptiveOutcome({"worst": correct}, x_adv)
    r = rows.to(x.device)
    sub = args.rows(rows, seed_offset)
    stronger = _run(defence, x[r], y[r], eps, budget, sub, progress, key, **overrides)
    if defence.randomized:
        draws = int(overrides.get("eot_iter") or budget.eot_iter)
        y_r = y[r]
        pair = [(x_adv[r], attacker_share(defence, x_adv[r], y_r, draws, sub.sample_ids)),
                (stronger.x_adv, attacker_share(defence, stronger.x_adv, y_r, draws, sub.sample_ids))]
        picked = pick_lowest(pair)
        x_adv[r] = picked
        correct[rows] = correct_share(defence, picked, y_r, budget.draws, sub.sample_ids)
    else:
        correct, x_adv = keep_worse(correct, x_adv, rows, stronger.correct["worst"], stronger.x_adv)
    return AdaptiveOutcome({"worst": correct}, x_adv)


@dataclass(frozen=True)
class Convergence:
    """The fixed rule's reading of one curve (:func:`read_curve`): the curve (``accuracy`` per point), whether more
    effort no longer lowers it, and what that rests on.

    A randomized defence's reading has ``eot_gap`` (budget EOT minus the largest EOT) and ``full_strength`` (its EOT
    at full strength); ``reaches_zero`` is not measured (None). A deterministic one's has ``steps_gap``,
    ``restarts_gap`` and whether the accuracy at ``largest_eps`` ``reaches_zero``.
    """

    accuracy: dict[str, float]
    randomized: bool
    converged: bool
    tolerance: float
    n: int
    rule: str
    reaches_zero: bool | None = None
    eot_gap: float = math.nan
    full_strength: bool = False
    steps_gap: float = math.nan
    restarts_gap: float = math.nan
    largest_eps: str = ""

    def reading(self) -> dict[str, Any]:
        """The rule's reading as :func:`convergence_rule` gives it (every field but the curve, in its order)."""
        if self.randomized:
            return {"converged": self.converged, "tolerance": self.tolerance, "eot_gap": self.eot_gap,
                    "reaches_zero": self.reaches_zero, "n": self.n, "full_strength": self.full_strength,
                    "rule": self.rule}
        return {"converged": self.converged, "tolerance": self.tolerance, "steps_gap": self.steps_gap,
                "restarts_gap": self.restarts_gap, "reaches_zero": self.reaches_zero,
                "largest_eps": self.largest_eps, "n": self.n, "rule": self.rule}

    def as_dict(self) -> dict[str, Any]:
        """The curve then the reading (metrics.json's form)."""
        return {"accuracy": dict(self.accuracy), **self.reading()}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Convergence:
        """The inverse of :meth:`as_dict` (a reading with ``eot_gap`` is a randomized defence's)."""
        randomized = "eot_gap" in data
        common = {"accuracy": {k: float(v) for k, v in data["accuracy"].items()}, "randomized": randomized,
                  "converged": bool(data["converged"]), "tolerance": float(data["tolerance"]), "n": int(data["n"]),
                  "rule": str(data["rule"]), "reaches_zero": data["reaches_zero"]}
        if randomized:
            return cls(**common, eot_gap=_number(data["eot_gap"]), full_strength=bool(data["full_strength"]))
        return cls(**common, steps_gap=_number(data["steps_gap"]), restarts_gap=_number(data["restarts_gap"]),
                   largest_eps=str(data["largest_eps"]))


def _number(value: Any) -> float:
    """A gap read back from JSON (NaN, a missing point, may come back as None)."""
    return math.nan if value is None else float(value)


def read_curve(accuracies: Mapping[str, float], n: int, budget: AdaptiveBudget, grid: CurveGrid, eps: float,
               *, randomized: bool = False) -> Convergence:
    """The fixed rule: a robust accuracy is *converged* when more effort no longer lowers it.

    ``tolerance = max(0.01, 1/n)`` (one image or 1 point). Deterministic defence: converged iff the largest
    iteration count and the largest restart count each lower the accuracy by at most ``tolerance``;
    ``reaches_zero`` iff the accuracy at the largest eps is at most ``tolerance``. Randomized defence:
    converged iff the largest EOT lowers it by at most ``tolerance`` (``reaches_zero`` is not measured: None).
    A missing point is never "flat".
    """
    tolerance = max(0.01, 1.0 / max(n, 1))
    at = lambda key: accuracies.get(key, math.nan)  # noqa: E731
    flat = lambda gap: bool(gap <= tolerance + 1e-9)  # noqa: E731  (NaN is not flat)
    curve = dict(accuracies)
    if randomized:
        gap = at(f"eot={budget.eot_iter}") - at(f"eot={max(grid.eot)}")
        return Convergence(curve, True, flat(gap), tolerance, n, eot_gap=gap, full_strength=budget.full_eot,
                           rule=f"converged when EOT {max(grid.eot)} lowers robust accuracy by at most "
                                f"{tolerance:.3g} (one image or 1 point) below the budget's EOT {budget.eot_iter}")
    steps_gap = at(f"steps={budget.steps}") - at(f"steps={max(grid.steps)}")
    restarts_gap = at(f"restarts={budget.restarts}") - at(f"restarts={max(grid.restarts)}")
    largest = eps_key(eps * max(grid.eps_factors))
    return Convergence(curve, False, flat(steps_gap) and flat(restarts_gap), tolerance, n,
                       reaches_zero=flat(at(largest)), steps_gap=steps_gap, restarts_gap=restarts_gap,
                       largest_eps=largest,
                       rule=f"converged when {max(grid.steps)} iterations and {max(grid.restarts)} restarts lower "
                            f"robust accuracy by at most {tolerance:.3g} (one image or 1 point) below the budget's "
                            f"{budget.steps} iterations and {budget.restarts} restarts; accuracy at "
                            f"{max(grid.eps_factors):g}x eps must reach {tolerance:.3g} or less")


def convergence_rule(accuracies: dict[str, float], n: int, budget: AdaptiveBudget, grid: CurveGrid, eps: float,
                     *, randomized: bool = False) -> dict[str, Any]:
    """:func:`read_curve`'s reading as a dict (``converged``, ``tolerance``, the gaps, ``reaches_zero``, ``n``,
    ``rule``; a randomized defence's ``full_strength``)."""
    return read_curve(accuracies, n, budget, grid, eps, randomized=randomized).reading()
