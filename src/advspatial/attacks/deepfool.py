"""DeepFool (Moosavi-Dezfooli et al., 2016), L2, untargeted, batched over images.

Iteration i linearizes the classifier at ``x_i = clip(x + (1+overshoot) * r_tot, 0, 1)``:
for each candidate class k (the ``num_classes - 1`` classes other than the label
with the highest clean logits), ``f_k = z_k - z_y`` and ``w_k = mask * grad f_k``;
the closest linearized boundary is ``l = argmin_k |f_k| / ||w_k||`` and the step
``r_i = (|f_l| + 1e-4) / ||w_l||^2 * w_l`` reaches it (the 1e-4, as in the
paper's code, pushes just past it). ``r_tot`` accumulates the steps; an image stops
at the first iterate whose prediction differs from its label (an image that is
already misclassified is returned unchanged), or after ``max_iter`` steps. The
overshoot multiplies the total, as in the paper and foolbox (torchattacks instead
compounds it per step and clips each step).

The gradients of the candidate classes come from one backward pass per
candidate over the whole batch of still-active images, so the cost per
iteration is one forward and ``num_classes - 1`` backward passes.
"""

from __future__ import annotations

import torch
from torch import nn

from ..errors import check_range
from ..progress import steps
from .base import Attack, register_attack

STEP_PUSH = 1e-4
NORM_GUARD = 1e-12


def candidate_classes(logits: torch.Tensor, y: torch.Tensor, k: int) -> torch.Tensor:
    """(N, k) the ``k`` classes other than ``y`` with the highest logits, best first."""
    others = logits.scatter(1, y[:, None], float("-inf"))
    return others.topk(k, dim=1).indices


@register_attack("deepfool", "DeepFool: minimal L2 step to the linearized nearest boundary (untargeted)")
class DeepFool(Attack):
    """DeepFool, L2, untargeted.

    Args:
        model: classifier on [0,1] images returning logits.
        max_iter: maximum number of linearization steps (>= 1).
        overshoot: factor ``1 + overshoot`` on the total perturbation (>= 0).
        num_classes: classes considered, the label included (>= 2; capped at the model's outputs).
        seed: unused (the attack is deterministic); kept for a uniform signature.

    Examples:
        >>> import torch
        >>> _ = torch.manual_seed(0)
        >>> from torch import nn
        >>> model = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),  # any nn.Module
        ...                       nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),  # taking images
        ...                       nn.Flatten(), nn.Linear(16 * 7 * 7, 10)).eval()  # in [0,1]; untrained here
        >>> images = torch.rand(12, 1, 28, 28)            # (N,C,H,W) in [0,1]
        >>> labels = model(images).argmax(1)              # (N,) labels: here the model's own predictions
        >>> from advspatial.attacks import DeepFool
        >>> result = DeepFool(model, max_iter=10).run(images, labels)
        >>> result.x_adv.shape == images.shape
        True
    """

    name = "deepfool"
    norm = "l2"
    budget_params = {}  # no budget: it stops at the linearized boundary
    supports_targeted = False

    def __init__(
        self, model: nn.Module, max_iter: int = 50, overshoot: float = 0.02, num_classes: int = 10, seed: int = 0
    ) -> None:
        super().__init__(model, seed)
        check_range("max_iter", max_iter, 1, None)
        check_range("overshoot", overshoot, 0.0, None)
        check_range("num_classes", num_classes, 2, None)
        self.max_iter, self.overshoot, self.num_classes = int(max_iter), float(overshoot), int(num_classes)

    def perturb(
        self, x: torch.Tensor, y: torch.Tensor, mask: torch.Tensor | None,
        target: torch.Tensor | None, sample_ids: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        with torch.no_grad():
            logits = self.model(x)
        k = min(self.num_classes, logits.shape[1]) - 1
        candidates = candidate_classes(logits, y, k)
        r_tot = torch.zeros_like(x)
        queries = torch.zeros(x.shape[0], dtype=torch.long, device=x.device)
        active = torch.arange(x.shape[0], device=x.device)
        for it in steps("DeepFool iteration", self.max_iter + 1):  # a bar idle on a slow batch shows it
            x_i = self._image(x[active], r_tot[active])
            x_i.requires_grad_(True)
            logits = self.model(x_i)
            queries[active] += 1
            still = logits.argmax(1) == y[active]
            if it == self.max_iter or not bool(still.any()):
                break
            keep = still.nonzero().squeeze(1)
            step = self._step(x_i, logits, y[active], candidates[active], keep, mask, active)
            active = active[keep]
            r_tot[active] += step
            queries[active] += k - 1  # k gradients per linearization; the forward was counted above
        return self._image(x, r_tot).detach(), queries

    def _image(self, x: torch.Tensor, r_tot: torch.Tensor) -> torch.Tensor:
        return (x + (1 + self.overshoot) * r_tot).clamp(0.0, 1.0)

    def _step(
        self, x_i: torch.Tensor, logits: torch.Tensor, y: torch.Tensor, candidates: torch.Tensor,
        keep: torch.Tensor, mask: torch.Tensor | None, active: torch.Tensor,
    ) -> torch.Tensor:
        """DeepFool step for the rows ``keep`` of the current batch (gradients of all candidates)."""
        true = logits.gather(1, y[:, None])
        gaps = logits.gather(1, candidates) - true  # (n, k): f_k = z_k - z_y  (< 0 while y wins)
        grads = []
        for j in range(gaps.shape[1]):
            (g,) = torch.autograd.grad(gaps[:, j].sum(), x_i, retain_graph=j + 1 < gaps.shape[1])
            grads.append(g[keep])
        w = torch.stack(grads, dim=1)  # (m, k, C, H, W)
        if mask is not None:
            w = w * mask[active[keep]].unsqueeze(1)
        f = gaps.detach()[keep].abs()
        w_norm = w.flatten(2).norm(dim=2)
        dist = torch.where(w_norm > 0, f / w_norm.clamp_min(NORM_GUARD), torch.full_like(f, float("inf")))
        best = dist.argmin(dim=1)
        rows = torch.arange(len(best), device=best.device)
        w_best, f_best, n_best = w[rows, best], f[rows, best], w_norm[rows, best]
        scale = torch.where(n_best > 0, (f_best + STEP_PUSH) / n_best.clamp_min(NORM_GUARD) ** 2,
                            torch.zeros_like(f_best))
        return scale.view(-1, 1, 1, 1) * w_best
