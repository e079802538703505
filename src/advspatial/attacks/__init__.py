"""Attacks: a shared base with mask semantics (``base``), one module per attack family."""

from . import apgd, cw, deepfool, ensemble, fgsm, onepixel, pgd, square, ssim_ball  # noqa: F401  (register the attacks)
from .base import (
    Attack, AttackResult, AttackSpec, apply_mask, enforce_constraints, frozen_eval, list_attacks,
    make_attack, margin, per_sample_noise, perturbation_norms, prepare_mask, register_attack,
)

__all__ = [
    "Attack", "AttackResult", "AttackSpec", "apply_mask", "enforce_constraints", "frozen_eval",
    "list_attacks", "make_attack", "margin", "per_sample_noise", "perturbation_norms", "prepare_mask",
    "register_attack",
]
