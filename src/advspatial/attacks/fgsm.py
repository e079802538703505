"""Fast Gradient Sign Method (Goodfellow et al., 2015), L-inf, plus the loss shared by gradient attacks.

One step: ``x' = clip(x + eps * sign(mask * grad L), 0, 1)`` where ``L`` is the
attacker's objective (:func:`attack_loss`): cross-entropy to the label
(untargeted, ascended) or minus cross-entropy to the target (targeted), or the
logit-margin variant. With a mask, the step is ``eps * sign(mask*grad) * mask``,
so a fractional mask scales the step and the perturbation is 0 where it is 0.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError, check_range
from .base import Attack, margin, register_attack

LOSSES = ("ce", "margin")


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
    pass computes no parameter gradients.
    """
    x_adv = x_adv.detach().requires_grad_(True)
    logits = model(x_adv)
    (grad,) = torch.autograd.grad(attack_loss(logits, y, target, loss).sum(), x_adv)
    return grad, logits.detach()


def is_adversarial(logits: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None) -> torch.Tensor:
    """(N,) bool: prediction != label (untargeted) or == target (targeted)."""
    pred = logits.argmax(1)
    return pred == target if target is not None else pred != y


def masked_sign(grad: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """``sign(mask * grad) * mask``: the L-inf step direction restricted (and scaled) by the mask."""
    if mask is None:
        return grad.sign()
    return (grad * mask).sign_().mul_(mask)


@register_attack("fgsm", "Fast Gradient Sign Method: one L-inf step of size eps")
class FGSM(Attack):
    """FGSM: ``x + eps * sign(grad)``, clipped to [0,1].

    Args:
        model: classifier on [0,1] images returning logits.
        eps: L-inf budget in [0, 1].
        loss: ``ce`` (cross-entropy, default) or ``margin`` (logit margin).
        seed: unused (FGSM is deterministic); kept for a uniform signature.
    """

    name = "fgsm"
    norm = "linf"
    budget_params = {"eps": "eps_linf"}

    def __init__(self, model: nn.Module, eps: float = 8 / 255, loss: str = "ce", seed: int = 0) -> None:
        super().__init__(model, seed)
        check_range("eps", eps, 0.0, 1.0)
        self.eps = float(eps)
        self.loss = check_loss(loss)

    def perturb(
        self, x: torch.Tensor, y: torch.Tensor, mask: torch.Tensor | None,
        target: torch.Tensor | None, sample_ids: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        queries = torch.full((x.shape[0],), int(self.eps > 0), dtype=torch.long, device=x.device)
        if self.eps == 0:
            return x.clone(), queries
        grad, _ = loss_gradient(self.model, x, y, target, self.loss)
        with torch.no_grad():
            x_adv = (x + self.eps * masked_sign(grad, mask)).clamp_(0.0, 1.0)
        return x_adv, queries
