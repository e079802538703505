"""The attack stage of the spatial experiment: every attack with the experiment's budgets, on a prefix of
the images for L0 attacks, one cached stage per batch."""

from __future__ import annotations

from torch import nn

from ...attacks import Attack, AttackResult
from ...attacks.budgets import Budget, attack_for_budget
from ..stage import ATTACK
from .config import MeasurementConfig
from .context import Context


def build_attack(name: str, model: nn.Module, config: MeasurementConfig) -> Attack:
    """The attack ``name`` with the experiment's budgets: each attack declares which of them it takes
    (:mod:`advspatial.attacks.budgets`), so a newly registered attack runs here with its intended budget."""
    return attack_for_budget(name, model, Budget.from_settings(config, config.PRESET_FIELDS), seed=config.seed)


def images_for(attack: Attack, config: MeasurementConfig, n: int) -> int:
    """How many of the n images (a prefix) ``attack`` gets: L0 (one-pixel) attacks run on a subset."""
    return min(n, config.onepixel_n) if attack.norm == "l0" else n


def attack_batch(ctx: Context, name: str, attack: Attack, b: int, sl: slice) -> AttackResult:
    """Attack ``name`` on batch b (cached)."""
    return ctx.attack(ATTACK.at(name), attack, b, sl)
