"""Fast Gradient Sign Method (Goodfellow et al., 2015), L-inf.

One step: ``x' = clip(x + eps * sign(mask * grad L), 0, 1)`` where ``L`` is the
attacker's objective (:func:`~advspatial.attacks.gradients.attack_loss`): cross-entropy to the label
(untargeted, ascended) or minus cross-entropy to the target (targeted), or the
logit-margin variant. With a mask, the step is ``eps * sign(mask*grad) * mask``,
so a fractional mask scales the step and the perturbation is 0 where it is 0.
"""

from __future__ import annotations

import torch
from torch import nn

from ..errors import check_range
from .base import Attack, register_attack
from .gradients import check_loss, loss_gradient, masked_sign

@register_attack("fgsm", "Fast Gradient Sign Method: one L-inf step of size eps")
class FGSM(Attack):
    """FGSM: ``x + eps * sign(grad)``, clipped to [0,1].

    Args:
        model: classifier on [0,1] images returning logits.
        eps: L-inf budget in [0, 1].
        loss: ``ce`` (cross-entropy, default) or ``margin`` (logit margin).
        seed: unused (FGSM is deterministic); kept for a uniform signature.

    Examples:
        >>> import torch
        >>> _ = torch.manual_seed(0)
        >>> from torch import nn
        >>> model = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),  # any nn.Module
        ...                       nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),  # taking images
        ...                       nn.Flatten(), nn.Linear(16 * 7 * 7, 10)).eval()  # in [0,1]; untrained here
        >>> images = torch.rand(12, 1, 28, 28)            # (N,C,H,W) in [0,1]
        >>> labels = model(images).argmax(1)              # (N,) labels: here the model's own predictions
        >>> from advspatial.attacks import FGSM
        >>> x_adv = FGSM(model, eps=8 / 255)(images, labels)
        >>> bool((x_adv - images).abs().max() <= 8 / 255 + 1e-6)
        True
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
