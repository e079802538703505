"""Projected Gradient Descent (Madry et al., 2018) in L-inf and L2; BIM is L-inf PGD without random start.

Each step, for the current iterate ``x_k`` and the attacker's loss gradient ``g``
(:func:`advspatial.attacks.gradients.attack_loss`, summed over images so each image's
gradient does not depend on its batch):

* L-inf: ``x_{k+1} = x_k + alpha * sign(mask*g) * mask``;
* L2:    ``x_{k+1} = x_k + alpha * (mask*g) / (||mask*g||_2 + 1e-10)`` (the masked
  gradient is normalized, so the step spends its whole length inside the mask);

then projection onto the eps-ball around ``x`` (L-inf: clip ``x_{k+1}-x`` to
``[-eps, eps]``; L2: scale ``x_{k+1}-x`` by ``min(1, eps/||x_{k+1}-x||)``), then
onto the box [0,1]. Without a mask these are exactly torchattacks' PGD/PGDL2
steps (the tests check equality to 1e-5), except that the loss is summed, not
averaged, over the batch (the same sign, and the same L2 direction up to the
1e-10 guard).

Random start (``random_start=True``), drawn per sample from ``(seed, sample_id)``:

* L-inf: ``eps * U[-1,1)`` per element, times the mask;
* L2: *uniform in the eps-ball* (not torchattacks' radius ``eps*U[0,1]``): with
  ``z ~ N(0, I_{D+2})``, the first D coordinates of ``z/||z||`` are uniform in the
  unit D-ball; we mask them before normalizing, so with a binary mask the start
  is uniform in the ball of the masked subspace (a fractional mask scales it).

``early_stop=True`` freezes an image at the first iterate that is already
adversarial (checked on the logits of the forward pass that computes the
gradient, so it costs nothing) and counts only the steps it was active.
"""

from __future__ import annotations

import torch
from torch import nn

from ..errors import ConfigError, check_range
from ..progress import steps
from ..runtime import per_sample_noise
from .base import Attack, register_attack
from .gradients import check_loss, is_adversarial, loss_gradient, masked_sign

L2_DIVISION_GUARD = 1e-10


#: PGD's step as a multiple of eps/steps when ``alpha="auto"`` (Madry et al. 2018)
AUTO_STEP_FACTOR = 2.5


def auto_step(alpha: float | str, eps: float, steps: int) -> float:
    """``alpha`` itself, or for ``"auto"`` the step ``2.5·eps/steps`` that lets the iterate cross the ball."""
    if alpha == "auto":
        return AUTO_STEP_FACTOR * float(eps) / int(steps)
    if isinstance(alpha, str):
        raise ConfigError(f"alpha={alpha!r} is not valid; valid: a number > 0 or 'auto' (2.5*eps/steps)")
    return float(alpha)


def rows_norm(t: torch.Tensor) -> torch.Tensor:
    """Per-image L2 norm of (N, ...) as an (N,1,...,1) tensor that broadcasts back."""
    return t.flatten(1).norm(p=2, dim=1).view(-1, *([1] * (t.ndim - 1)))


def l2_direction(grad: torch.Tensor, mask: torch.Tensor | None, guard: float) -> torch.Tensor:
    """The L2 steepest-ascent step of unit length: ``mask*g / (||mask*g||_2 + guard)`` per image
    (a zero gradient gives no step)."""
    if mask is not None:
        grad = grad * mask
    return grad / (rows_norm(grad) + guard)


def l2_project(x: torch.Tensor, x_new: torch.Tensor, eps: float) -> torch.Tensor:
    """Into the L2 ball and the box: scale ``x_new - x`` by ``min(1, eps/||x_new - x||)``, then clip to [0,1]."""
    delta = x_new - x
    norm = rows_norm(delta)
    factor = torch.where(norm > eps, eps / norm.clamp_min(1e-12), torch.ones_like(norm))
    return (x + delta * factor).clamp_(0.0, 1.0)


@register_attack("bim", "Basic Iterative Method: L-inf PGD without random start", random_start=False)
@register_attack("pgd-linf", "Projected Gradient Descent in the L-inf ball")
@register_attack("pgd", "Projected Gradient Descent in the L-inf ball (alias of pgd-linf)")
class PGD(Attack):
    """PGD / BIM in the L-inf ball.

    Args:
        model: classifier on [0,1] images returning logits.
        eps: radius of the L-inf ball, in [0, 1].
        alpha: step size, > 0, or ``"auto"``: ``2.5·eps/steps`` (Madry et al. 2018), the one owner of that rule.
        steps: number of gradient steps, >= 1.
        random_start: start from a random point of the ball (per-sample seeded).
        early_stop: freeze each image at its first adversarial iterate.
        loss: ``ce`` (cross-entropy, default) or ``margin`` (logit margin).
        seed: seed of the random start.

    Examples:
        >>> import torch
        >>> _ = torch.manual_seed(0)
        >>> from torch import nn
        >>> model = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),  # any nn.Module
        ...                       nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),  # taking images
        ...                       nn.Flatten(), nn.Linear(16 * 7 * 7, 10)).eval()  # in [0,1]; untrained here
        >>> images = torch.rand(12, 1, 28, 28)            # (N,C,H,W) in [0,1]
        >>> labels = model(images).argmax(1)              # (N,) labels: here the model's own predictions
        >>> from advspatial.attacks import PGD
        >>> attack = PGD(model, eps=8 / 255, steps=10)
        >>> x_adv = attack(images, labels)                 # the adversarial images, as in torchattacks
        >>> bool((x_adv - images).abs().max() <= 8 / 255 + 1e-6 and 0 <= x_adv.min() and x_adv.max() <= 1)
        True
        >>> result = attack.run(images, labels)            # with success, predictions, norms and query counts
        >>> result.success.shape, result.linf.shape
        (torch.Size([12]), torch.Size([12]))
    """

    name = "pgd"
    norm = "linf"
    budget_params = {"eps": "eps_linf", "steps": "steps"}
    budget_fixed = {"alpha": "auto"}
    eps_max: float | None = 1.0

    def __init__(
        self, model: nn.Module, eps: float = 8 / 255, alpha: float | str = 2 / 255, steps: int = 10,
        random_start: bool = True, early_stop: bool = False, loss: str = "ce", seed: int = 0,
    ) -> None:
        super().__init__(model, seed)
        check_range("eps", eps, 0.0, self.eps_max)
        check_range("steps", steps, 1, None)
        alpha = auto_step(alpha, eps, steps)
        check_range("alpha", alpha, 0.0, None, low_inclusive=False)
        self.eps, self.alpha, self.steps = float(eps), float(alpha), int(steps)
        self.random_start, self.early_stop = bool(random_start), bool(early_stop)
        self.loss = check_loss(loss)

    # -- norm-specific pieces (overridden by PGDL2) ------------------------------
    def direction(self, grad: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        """Unit-size step direction from the loss gradient (L-inf: masked sign)."""
        return masked_sign(grad, mask)

    def project(self, x: torch.Tensor, x_new: torch.Tensor) -> torch.Tensor:
        """Project onto the eps-ball around x, then onto the box [0,1]."""
        delta = (x_new - x).clamp_(-self.eps, self.eps)
        return (x + delta).clamp_(0.0, 1.0)

    def random_delta(self, x: torch.Tensor, mask: torch.Tensor | None, sample_ids: torch.Tensor) -> torch.Tensor:
        """Random start offset: ``eps * U[-1,1)`` per element, masked."""
        noise = per_sample_noise(x.shape, self.seed, sample_ids, "uniform", x.device, x.dtype)
        noise = noise * self.eps
        return noise if mask is None else noise * mask

    # -- the loop -------------------------------------------------------------
    def perturb(
        self, x: torch.Tensor, y: torch.Tensor, mask: torch.Tensor | None,
        target: torch.Tensor | None, sample_ids: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        queries = torch.zeros(x.shape[0], dtype=torch.long, device=x.device)
        if self.eps == 0:
            return x.clone(), queries
        x_adv = x
        if self.random_start:
            x_adv = (x + self.random_delta(x, mask, sample_ids)).clamp_(0.0, 1.0)
        done = torch.zeros_like(queries, dtype=torch.bool)
        for _ in steps("PGD step", self.steps):  # a bar idle on a slow batch shows the step
            grad, logits = loss_gradient(self.model, x_adv, y, target, self.loss)
            with torch.no_grad():
                stepped = self.project(x, x_adv + self.alpha * self.direction(grad, mask))
                if self.early_stop:
                    queries += ~done
                    done |= is_adversarial(logits, y, target)
                    x_adv = torch.where(done.view(-1, 1, 1, 1), x_adv, stepped)
                else:
                    x_adv = stepped
        if not self.early_stop:
            queries += self.steps
        return x_adv, queries


@register_attack("pgd-l2", "Projected Gradient Descent in the L2 ball")
class PGDL2(PGD):
    """PGD in the L2 ball (same arguments as :class:`PGD`; eps >= 0 is an L2 radius).

    Examples:
        >>> import torch
        >>> _ = torch.manual_seed(0)
        >>> from torch import nn
        >>> model = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),  # any nn.Module
        ...                       nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),  # taking images
        ...                       nn.Flatten(), nn.Linear(16 * 7 * 7, 10)).eval()  # in [0,1]; untrained here
        >>> images = torch.rand(12, 1, 28, 28)            # (N,C,H,W) in [0,1]
        >>> labels = model(images).argmax(1)              # (N,) labels: here the model's own predictions
        >>> from advspatial.attacks import PGDL2
        >>> x_adv = PGDL2(model, eps=1.0, steps=10)(images, labels)
        >>> bool((x_adv - images).flatten(1).norm(dim=1).max() <= 1.0 + 1e-4)
        True
    """

    name = "pgd-l2"
    norm = "l2"
    budget_params = {"eps": "eps_l2", "steps": "steps"}
    eps_max = None

    def __init__(
        self, model: nn.Module, eps: float = 1.0, alpha: float | str = 0.2, steps: int = 10,
        random_start: bool = True, early_stop: bool = False, loss: str = "ce", seed: int = 0,
    ) -> None:
        super().__init__(model, eps, alpha, steps, random_start, early_stop, loss, seed)

    def direction(self, grad: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        """Masked gradient divided by its L2 norm (+1e-10, so a zero gradient gives no step)."""
        return l2_direction(grad, mask, L2_DIVISION_GUARD)

    def project(self, x: torch.Tensor, x_new: torch.Tensor) -> torch.Tensor:
        """Scale ``x_new - x`` by ``min(1, eps/||x_new - x||)``, then clip to [0,1]."""
        return l2_project(x, x_new, self.eps)

    def random_delta(self, x: torch.Tensor, mask: torch.Tensor | None, sample_ids: torch.Tensor) -> torch.Tensor:
        """Uniform in the eps-ball (of the masked subspace): first D of D+2 normalized Gaussians."""
        n, dim = x.shape[0], x[0].numel()
        z = per_sample_noise((n, dim + 2), self.seed, sample_ids, "normal", x.device, x.dtype)
        direction = z[:, :dim].view_as(x)
        if mask is not None:
            direction = direction * mask
        radius = (direction.flatten(1).pow(2).sum(1) + z[:, dim:].pow(2).sum(1)).sqrt()
        return self.eps * direction / radius.view(-1, 1, 1, 1)
