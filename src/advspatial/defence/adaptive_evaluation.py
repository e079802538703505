"""A defence under the adaptive attack with its convergence curves, in one call (:func:`evaluate_adaptive`).

A robust accuracy is reported beside the curves that say whether more effort would lower it
(:mod:`.convergence`), measured on the same images with the same attack. :class:`AdaptivePlan` is that
attack and its checks (eps, :class:`~.adaptive.AdaptiveBudget`, :class:`~.convergence.CurveGrid`);
:func:`evaluate_adaptive` runs the attack (:func:`~.adaptive.attack_defence`) and its curves
(:func:`~.convergence.convergence_curves`) on one batch and returns both (:class:`AdaptiveEvaluation`).

What an experiment keeps of it is :class:`ComponentOutcome`: per image the correctness after each gradient's
attack and at each curve point. Outcomes of consecutive batches join into one over every image
(:meth:`PerImageRecord.concatenated`), whose curve the fixed rule reads (:meth:`AdaptivePlan.convergence`).
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar, cast, get_type_hints

import torch

from .adaptive import AdaptiveBudget, AdaptiveOutcome, Defence, attack_defence
from .convergence import Convergence, CurveGrid, convergence_curves, read_curve

R = TypeVar("R", bound="PerImageRecord")


class PerImageRecord:
    """Base of a frozen dataclass of per-image results on the CPU, over one batch or every image: its fields are
    tensors, dicts of tensors, other records, or None (a part not computed).

    :meth:`as_dict` is what a stage file holds (each field under its name, or its ``metadata["key"]``; a record
    as its own dict; None left out), :meth:`from_dict` reads it back, and :meth:`concatenated` joins the records
    of consecutive batches, each tensor concatenated in batch order.
    """

    def as_dict(self) -> dict[str, Any]:
        """The record as a stage file holds it."""
        out = {}
        for f in dataclasses.fields(self):  # type: ignore[arg-type]
            value = getattr(self, f.name)
            if value is not None:
                out[record_key(f)] = value.as_dict() if isinstance(value, PerImageRecord) else value
        return out

    @classmethod
    def from_dict(cls: type[R], data: Mapping[str, Any]) -> R:
        """The record a stage file holds (:meth:`as_dict`); an optional part it does not hold is its default."""
        hints = record_types(cast(type, cls))
        values = {}
        for f in dataclasses.fields(cls):  # type: ignore[arg-type]
            key = record_key(f)
            value = data[key] if f.default is dataclasses.MISSING else data.get(key, f.default)
            kind = hints[f.name]
            values[f.name] = kind.from_dict(value) if value is not None and kind is not None else value
        return cls(**values)

    @classmethod
    def concatenated(cls: type[R], parts: Sequence[R]) -> R:
        """One record over the images of ``parts`` (consecutive batches, in order)."""
        return cls(**{f.name: joined([getattr(p, f.name) for p in parts])
                      for f in dataclasses.fields(cls)})  # type: ignore[arg-type]


def record_key(f: dataclasses.Field[Any]) -> str:
    return str(f.metadata.get("key", f.name))


@functools.cache
def record_types(cls: type) -> dict[str, Any]:
    """Per field of a record class: the record class it holds (None for tensors and dicts of them)."""
    hints = get_type_hints(cls)
    out: dict[str, Any] = {}
    for name, hint in hints.items():
        options = [a for a in getattr(hint, "__args__", (hint,)) if isinstance(a, type)]
        out[name] = next((a for a in options if issubclass(a, PerImageRecord)), None)
    return out


def joined(values: list[Any]) -> Any:
    """One field over consecutive batches: tensors concatenated (a dict's key by key), records joined."""
    first = values[0]
    if first is None:
        return None
    if isinstance(first, torch.Tensor):
        return torch.cat(values)
    if isinstance(first, dict):
        return {key: torch.cat([v[key] for v in values]) for key in first}
    return type(first).concatenated(values)


@dataclass(frozen=True)
class ComponentOutcome(PerImageRecord):
    """Per-image results of the adaptive attack on one component (a defence, its control, a baseline, the
    undefended model): ``correct[g]`` after the attack through gradient ``g`` and ``correct["worst"]`` after the
    whole attack (:class:`~.adaptive.AdaptiveOutcome`), ``curve[point]`` at each point of its convergence curves
    (empty when none was measured)."""

    correct: dict[str, torch.Tensor]
    curve: dict[str, torch.Tensor]

    @property
    def worst(self) -> torch.Tensor:
        """The per-image result of the whole adaptive attack (its worst case over the gradients)."""
        return self.correct["worst"]

    def accuracies(self) -> dict[str, float]:
        """The curve as accuracies: the mean over the images at each point."""
        return {point: float(v.double().mean()) for point, v in self.curve.items()}


@dataclass(frozen=True)
class AdaptivePlan:
    """The adaptive attack a defence number sits beside (at ``eps``, within ``budget``) and the grid of its
    convergence curves."""

    eps: float
    budget: AdaptiveBudget
    grid: CurveGrid

    def convergence(self, outcome: ComponentOutcome, randomized: bool = False) -> Convergence:
        """The fixed rule's reading of ``outcome``'s curve (:func:`~.convergence.read_curve`) over its images."""
        return read_curve(outcome.accuracies(), int(outcome.worst.numel()), self.budget, self.grid, self.eps,
                          randomized=randomized)


@dataclass(frozen=True)
class AdaptiveEvaluation:
    """A defence under the adaptive attack on one batch: the attack's outcome (its examples included) and the
    per-image correctness at each point of its convergence curves; ``randomized``: the defence's."""

    plan: AdaptivePlan
    outcome: AdaptiveOutcome
    curves: dict[str, torch.Tensor]
    randomized: bool

    @property
    def component(self) -> ComponentOutcome:
        """What an experiment keeps of it: the per-image results, without the examples."""
        return ComponentOutcome(dict(self.outcome.correct), self.curves)

    @property
    def x_adv(self) -> torch.Tensor:
        """The attack's examples (per image the worst case for the defence)."""
        return self.outcome.x_adv

    def convergence(self) -> Convergence:
        """The fixed rule's reading of the curves (over EOT draws when the defence is randomized)."""
        return self.plan.convergence(self.component, self.randomized)


def evaluate_adaptive(defence: Defence, x: torch.Tensor, y: torch.Tensor, plan: AdaptivePlan, *,
                      sample_ids: torch.Tensor, seed: int, mask: torch.Tensor | None = None,
                      components: tuple[str, ...] | None = None, left_side: bool = True,
                      curve: bool = True, per_gradient: bool = True) -> AdaptiveEvaluation:
    """The adaptive attack on ``defence`` at ``plan``'s budget (:func:`~.adaptive.attack_defence`; ``components``
    of the ensemble only, confined to ``mask``), then its convergence curves on the same images, extending that
    attack (:func:`~.convergence.convergence_curves`; ``left_side``: also the points below the budget).
    ``curve=False`` measures no curve: for a number no verdict needs converged. ``per_gradient=False``: the worst
    case only, each gradient on the images the earlier ones left standing (:func:`~.adaptive.attack_defence`).

    Examples:
        >>> import torch
        >>> _ = torch.manual_seed(0)
        >>> from torch import nn
        >>> model = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),  # any nn.Module
        ...                       nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),  # taking images
        ...                       nn.Flatten(), nn.Linear(16 * 7 * 7, 10)).eval()  # in [0,1]; untrained here
        >>> images = torch.rand(12, 1, 28, 28)            # (N,C,H,W) in [0,1]
        >>> labels = model(images).argmax(1)              # (N,) labels: here the model's own predictions
        >>> from advspatial.defence import AdaptiveBudget, AdaptivePlan, CurveGrid, Undefended, evaluate_adaptive
        >>> budget = AdaptiveBudget(steps=2, restarts=1, queries=5)
        >>> plan = AdaptivePlan(0.03, budget, CurveGrid(steps=(2, 4), restarts=(1, 2), eps_factors=(1.0, 2.0)))
        >>> result = evaluate_adaptive(Undefended(model), images, labels, plan,
        ...                            sample_ids=torch.arange(len(images)), seed=0)
        >>> sorted(result.curves)[:2], result.convergence().n == len(images)
        (['eps=0.03', 'eps=0.06'], True)
    """
    outcome = attack_defence(defence, x, y, plan.eps, plan.budget, sample_ids=sample_ids, seed=seed, mask=mask,
                             components=components, per_gradient=per_gradient)
    curves = convergence_curves(defence, x, y, plan.eps, plan.budget, plan.grid, sample_ids=sample_ids, seed=seed,
                                mask=mask, reported=outcome, left_side=left_side) if curve else {}
    return AdaptiveEvaluation(plan, outcome, curves, defence.randomized)
