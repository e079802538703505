"""The gradient toolkit of the gradient attacks: the attacker's objective, its input gradient, the success
test and the masked sign step.

Why a module of its own: FGSM, PGD, APGD, Square, the SSIM-ball attack and the ensemble share these, and
one definition of "the attacker's loss" and "adversarial" keeps their numbers comparable. The objective is
cross-entropy to the label (untargeted, ascended) or minus cross-entropy to the target (targeted), or the
logit-margin variant; APGD also ascends the Difference of Logits Ratio (:func:`dlr_loss`, Croce & Hein 2020).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError
from ..stacked_runs import input_gradient
from .base import margin


LOSSES = ("ce", "margin")
#: keeps the DLR denominator away from 0 when the top logits tie
DLR_GUARD = 1e-12


def check_loss(loss: str) -> str:
    """Validate a loss name (``ce`` or ``margin``)."""
    if loss not in LOSSES:
        raise ConfigError(f"loss={loss!r} is unknown; valid: {', '.join(LOSSES)}")
    return loss


def attack_loss(
    logits: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None, loss: str = "ce"
) -> torch.Tensor:
    """Per-image objective that the attacker *ascends*, shape (N,).

    ``ce``: untargeted ``CE(z, y)``, targeted ``-CE(z, t)``.
    ``margin``: untargeted ``max_{j!=y} z_j - z_y``, targeted ``z_t - max_{j!=t} z_j``.
    Per-image values (summed, never averaged, by the caller) make each image's
    gradient independent of the batch it is in.
    """
    if loss == "ce":
        if target is None:
            return F.cross_entropy(logits, y, reduction="none")
        return -F.cross_entropy(logits, target, reduction="none")
    if target is None:
        return -margin(logits, y)
    return margin(logits, target)


def loss_gradient(
    model: nn.Module, x_adv: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None, loss: str = "ce"
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(grad of the summed attack loss w.r.t. x_adv, logits at x_adv)``; one forward + backward.

    Only the input requires a gradient (the model runs frozen), so the backward
    pass computes no parameter gradients. A model that calls a large run a batch at a time
    (:class:`~advspatial.stacked_runs.RowChunks`) takes each batch's gradient before the next's forward, so the
    run never holds more than one batch's activations; the per-image objective makes that the same gradient.
    """
    def objective(logits: torch.Tensor, rows: slice) -> torch.Tensor:
        return attack_loss(logits, y[rows], None if target is None else target[rows], loss).sum()
    return input_gradient(model, x_adv, objective)


def is_adversarial(logits: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None) -> torch.Tensor:
    """(N,) bool: prediction != label (untargeted) or == target (targeted)."""
    pred = logits.argmax(1)
    return pred == target if target is not None else pred != y


def masked_sign(grad: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """``sign(mask * grad) * mask``: the L-inf step direction restricted (and scaled) by the mask."""
    if mask is None:
        return grad.sign()
    return (grad * mask).sign_().mul_(mask)


def _need_classes(logits: torch.Tensor, k: int, what: str) -> None:
    if logits.shape[1] < k:
        raise ConfigError(f"the {what} loss needs at least {k} classes; the model has {logits.shape[1]}")


def dlr_loss(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Untargeted Difference of Logits Ratio, (N,): ``-(z_y - max_{i!=y} z_i) / (z_pi1 - z_pi3 + 1e-12)``."""
    _need_classes(logits, 3, "DLR")
    top = logits.topk(3, dim=1).values
    return -margin(logits, y) / (top[:, 0] - top[:, 2] + DLR_GUARD)


def dlr_loss_targeted(logits: torch.Tensor, y: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Targeted DLR, (N,): ``-(z_y - z_t) / (z_pi1 - (z_pi3 + z_pi4)/2 + 1e-12)``."""
    _need_classes(logits, 4, "targeted DLR")
    top = logits.topk(4, dim=1).values
    z_y = logits.gather(1, y[:, None]).squeeze(1)
    z_t = logits.gather(1, target[:, None]).squeeze(1)
    return -(z_y - z_t) / (top[:, 0] - 0.5 * (top[:, 2] + top[:, 3]) + DLR_GUARD)
