"""The ``pse`` run's context, and the attacks built with the experiment's budgets."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from torch import nn

from ...attacks import Attack, make_attack
from ..base import ExperimentContext
from .config import PSEConfig


@dataclass
class Context(ExperimentContext):
    """The common context plus the unit layer, its number of units, and the CAM explainer this run resolved."""

    layer: str = ""
    units: int = 0
    cam: str = ""
    cam_reason: str = ""


def build_attack(name: str, model: nn.Module, config: PSEConfig) -> Attack:
    """The attack ``name`` with the experiment's budgets."""
    eps, steps = config.eps, config.steps
    params: dict[str, dict[str, Any]] = {
        "fgsm": {"eps": eps},
        "pgd": {"eps": eps, "alpha": "auto", "steps": steps},
        "bim": {"eps": eps, "alpha": "auto", "steps": steps},
        "cw-l2": {"steps": config.cw_steps, "binary_search_steps": config.cw_search_steps},
    }
    return make_attack(name, model, seed=config.seed, **params.get(name, {}))
