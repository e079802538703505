"""The ``pse`` run's context, and the attacks built with the experiment's budgets."""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from ...attacks import Attack
from ...attacks.budgets import Budget, attack_for_budget
from ..context import ExperimentContext
from .config import PSEConfig


@dataclass
class Context(ExperimentContext):
    """The common context plus the unit layer, its number of units, and the CAM explainer this run resolved."""

    layer: str = ""
    units: int = 0
    cam: str = ""
    cam_reason: str = ""


def build_attack(name: str, model: nn.Module, config: PSEConfig) -> Attack:
    """The attack ``name`` with the experiment's budgets: each attack declares which of them it takes
    (:mod:`advspatial.attacks.budgets`)."""
    return attack_for_budget(name, model, Budget.from_settings(config, config.PRESET_FIELDS), seed=config.seed)
