"""The classes of the promotion-suppression analysis (METHODS §5): targets of targeted attacks, the clean runner-up,
and the pre-specified class t whose promotion is measured (fixed before the attack is seen)."""

from __future__ import annotations

import math

import torch

from ...attacks import AttackResult
from ...errors import ConfigError, unknown_name
from ...runtime import make_generator

#: how a targeted attack's target class is chosen
TARGET_MODES = ("random", "least-likely", "next")


def choose_targets(labels: torch.Tensor, num_classes: int, mode: str, seed: int,
                   clean_logits: torch.Tensor | None = None) -> torch.Tensor:
    """(N,) target classes, never the label.

    ``random``: ``(label + U{1..K-1}) mod K`` from one seeded draw over all N images
    (uniform over the other classes); ``least-likely``: the class with the lowest
    clean logit (needs ``clean_logits``; the label is excluded); ``next``: ``(label + 1) mod K``.
    """
    if num_classes < 2:
        raise ConfigError(f"targeted attacks need at least 2 classes, got {num_classes}")
    labels = labels.long()
    if mode == "random":
        offset = torch.randint(1, num_classes, labels.shape, generator=make_generator(seed))
        return (labels + offset) % num_classes
    if mode == "next":
        return (labels + 1) % num_classes
    if mode == "least-likely":
        if clean_logits is None or clean_logits.shape != (labels.shape[0], num_classes):
            raise ConfigError("target_mode least-likely needs the clean logits (N,K)")
        masked = clean_logits.clone().float()
        masked[torch.arange(len(labels)), labels] = math.inf
        return masked.argmin(1)
    raise unknown_name("target_mode", mode, TARGET_MODES)


def adversarial_class(result: AttackResult) -> torch.Tensor:
    """The post-hoc class: the target of a targeted attack, else the prediction on x' (secondary view only)."""
    return result.target if result.target is not None else result.adv_pred


def runner_up(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """(N,) the clean runner-up class: the highest clean logit other than the label's (pre-specified t)."""
    masked = logits.clone().float()
    masked[torch.arange(len(labels)), labels.long()] = -math.inf
    return masked.argmax(1)


def prespecified_target(result: AttackResult, runner: torch.Tensor) -> torch.Tensor:
    """t fixed before the attack is seen: a targeted attack's target, else the clean runner-up class."""
    return result.target if result.target is not None else runner
