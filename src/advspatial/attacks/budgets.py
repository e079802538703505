"""Attack budgets: one description of them, owned by the attacks, and the datasets' budgets by norm.

An experiment describes its budgets once, as a :class:`Budget` (L-inf and L2 radii, iterations, CW and
one-pixel search sizes); each attack class says which budget field feeds which of its constructor
arguments (``Attack.budget_params``, plus ``Attack.budget_fixed`` for arguments a budgeted build sets,
PGD's ``alpha="auto"``). :func:`attack_for_budget` joins the two, so an attack registered tomorrow takes
an experiment's budgets by declaring them in its own module, with no table in any experiment to extend.

The budgets of the settings in the literature (RobustBench; Madry et al. 2018; Croce & Hein 2020) are
:data:`DATASET_EPS` (radius by preset and norm) and :data:`DATASET_BUDGETS` (the whole budget per
preset), which the experiments' presets (``experiments/presets.py``) are built from.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from torch import nn

from .base import ATTACKS, Attack, make_attack


def _budget(meaning: str) -> Any:
    """A budget field: unset (None: the attack's own default) unless given; ``meaning`` documents it."""
    return field(default=None, metadata={"meaning": meaning})


@dataclass(frozen=True)
class Budget:
    """The budgets an experiment gives its attacks; None leaves an attack's own default in place.

    The field names are the generic budget names of the presets (``experiments/presets.py``), so an
    experiment's budget is read off its settings through its ``PRESET_FIELDS`` (:meth:`from_settings`).
    """

    eps_linf: float | None = _budget("L-inf budget of FGSM/PGD/APGD (max change per pixel, images in [0,1])")
    eps_l2: float | None = _budget("L2 budget of PGD-L2")
    steps: int | None = _budget("PGD iterations")
    cw_steps: int | None = _budget("CW-L2 Adam steps per binary-search round")
    cw_search_steps: int | None = _budget("CW-L2 binary-search rounds over c")
    onepixel_popsize: int | None = _budget("one-pixel DE population")
    onepixel_steps: int | None = _budget("one-pixel DE generations")

    @classmethod
    def from_settings(cls, settings: object, field_names: Mapping[str, str]) -> Budget:
        """The budget in ``settings`` (an experiment config): ``field_names`` maps a budget field to the
        settings' own name for it (an experiment's ``PRESET_FIELDS``); budgets it does not name stay unset."""
        return cls(**{f.name: getattr(settings, field_names[f.name]) for f in fields(cls) if f.name in field_names})

    def given(self) -> dict[str, Any]:
        """The budgets that are set, in field order."""
        return {f.name: getattr(self, f.name) for f in fields(self) if getattr(self, f.name) is not None}


def budget_meanings() -> dict[str, str]:
    """What each budget field means (the presets' table documents them)."""
    return {f.name: f.metadata["meaning"] for f in fields(Budget)}


def budget_arguments(attack: type[Attack], budget: Budget) -> dict[str, Any]:
    """The constructor arguments ``budget`` gives ``attack``: its declared budget fields that are set, plus its
    fixed budgeted arguments when the budget feeds any (none at all: the class defaults stand)."""
    given = budget.given()
    taken = {arg: given[name] for arg, name in attack.budget_params.items() if name in given}
    return {**taken, **attack.budget_fixed} if taken else {}


def attack_for_budget(name: str, model: nn.Module, budget: Budget, seed: int = 0, **params: Any) -> Attack:
    """The registered attack ``name`` with the budgets it declares taken from ``budget``; ``params`` win over
    the budget (an experiment's extra settings, e.g. AutoAttack's restarts)."""
    spec = ATTACKS.get(name)
    return make_attack(name, model, seed=seed, **{**budget_arguments(spec.cls, budget), **params})


#: the L-inf and L2 radius of each dataset setting (images in [0,1])
DATASET_EPS: dict[str, dict[str, float]] = {
    "mnist": {"linf": 0.3, "l2": 2.0},
    "cifar10": {"linf": 8 / 255, "l2": 0.5},
    "imagenet": {"linf": 4 / 255, "l2": 3.0},
}

#: the attack budgets of each dataset setting (Fashion-MNIST's are the experiments' own defaults: none here)
DATASET_BUDGETS: dict[str, Budget] = {
    "mnist": Budget(eps_linf=DATASET_EPS["mnist"]["linf"], eps_l2=DATASET_EPS["mnist"]["l2"], steps=40),
    "cifar10": Budget(eps_linf=DATASET_EPS["cifar10"]["linf"], eps_l2=DATASET_EPS["cifar10"]["l2"], steps=20,
                      cw_steps=50, cw_search_steps=4),
    "imagenet": Budget(eps_linf=DATASET_EPS["imagenet"]["linf"], eps_l2=DATASET_EPS["imagenet"]["l2"], steps=20,
                       cw_steps=30, cw_search_steps=3),
}
