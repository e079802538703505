"""The attack stage of the spatial experiment: every attack with the experiment's budgets, on a prefix of
the images for L0 attacks, one cached stage per batch."""

from __future__ import annotations

from typing import Any

from torch import nn

from ...attacks import Attack, AttackResult, make_attack
from .config import MeasurementConfig
from .context import Context


def build_attack(name: str, model: nn.Module, config: MeasurementConfig) -> Attack:
    """The attack ``name`` with the experiment's budgets."""
    eps, steps = config.eps_linf, config.steps
    params: dict[str, dict[str, Any]] = {
        "fgsm": {"eps": eps},
        "pgd": {"eps": eps, "alpha": "auto", "steps": steps},
        "pgd-linf": {"eps": eps, "alpha": "auto", "steps": steps},
        "bim": {"eps": eps, "alpha": "auto", "steps": steps},
        "pgd-l2": {"eps": config.eps_l2, "alpha": "auto", "steps": steps},
        "cw-l2": {"steps": config.cw_steps, "binary_search_steps": config.cw_search_steps},
        "onepixel": {"popsize": config.onepixel_popsize, "maxiter": config.onepixel_steps},
        "kpixel": {"popsize": config.onepixel_popsize, "maxiter": config.onepixel_steps},
    }
    return make_attack(name, model, seed=config.seed, **params.get(name, {}))


def images_for(attack: Attack, config: MeasurementConfig, n: int) -> int:
    """How many of the n images (a prefix) ``attack`` gets: L0 (one-pixel) attacks run on a subset."""
    return min(n, config.onepixel_n) if attack.norm == "l0" else n


def attack_batch(ctx: Context, name: str, attack: Attack, b: int, sl: slice) -> AttackResult:
    """Attack ``name`` on batch b (cached)."""
    return ctx.attack_stage(f"attack/{name}", attack, b, sl)
