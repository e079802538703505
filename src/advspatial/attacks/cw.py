"""Carlini-Wagner L2 attack (Carlini & Wagner, 2017).

Minimizes, per image, ``||x' - x||_2^2 + c * f(x')`` over ``w`` with
``x' = x + mask * (tanh_img(w) - x)``, ``tanh_img(w) = (tanh(w) + 1) / 2``, so the
box [0,1] holds by construction and the perturbation is 0 where the mask is 0.
``f`` is the hinge on the logit margin with confidence ``kappa``:

* untargeted: ``f = max(z_y - max_{j!=y} z_j, -kappa)``;
* targeted:   ``f = max(max_{j!=t} z_j - z_t, -kappa)``.

Adam runs ``steps`` iterations per value of ``c`` (w restarted at the clean image,
``w0 = atanh((2x-1)(1-1e-6))`` so that 0/1 pixels stay movable), and a per-image
binary search over ``c`` runs ``binary_search_steps`` rounds: after a round in
which the image was attacked successfully ``c`` moves down (bisection), otherwise
it moves up (bisection once an upper bound is known, else x10). The result is the
successful iterate with the smallest L2 over all rounds (the clean image if none
succeeded, or if the clean image already is adversarial). An iterate counts as
successful when it is adversarial with margin ``kappa``. Every image is optimized
independently (summed loss, elementwise Adam, no batch-level early abort), so a
batch gives the same result as its images.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from ..errors import check_range
from ..progress import steps
from .base import Attack, margin, register_attack

TANH_SHRINK = 1 - 1e-6  # keeps atanh finite at pixels equal to 0 or 1


def to_tanh_space(x: torch.Tensor) -> torch.Tensor:
    """``w`` with ``(tanh(w)+1)/2 ~= x``, finite for x in [0,1]."""
    return torch.atanh((2 * x - 1) * TANH_SHRINK)


def from_tanh_space(w: torch.Tensor) -> torch.Tensor:
    """``(tanh(w) + 1) / 2``: an image in [0,1] for any w."""
    return (torch.tanh(w) + 1) / 2


@dataclass
class Adam:
    """Adam (Kingma & Ba, 2015) on one tensor, in ``torch.optim.Adam``'s arithmetic (its default betas and eps, the
    single-tensor update, so the iterates are the same to the bit), with the step counted on the host.

    Why not ``torch.optim.Adam``: it keeps its step count in a CPU tensor and reads it back (``.item()``) once or
    twice per step to compute the bias corrections; here the count is a Python integer, so a step reads nothing.

    >>> w = torch.zeros(3)
    >>> adam = Adam(w, lr=0.1)
    >>> adam.update(torch.tensor([1.0, -2.0, 0.0]))
    >>> w.tolist()  # the first step moves each coordinate by lr against its gradient's sign
    [-0.10000000149011612, 0.10000000149011612, 0.0]
    """

    param: torch.Tensor
    lr: float
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    step: int = 0
    first: torch.Tensor = field(init=False)
    second: torch.Tensor = field(init=False)

    def __post_init__(self) -> None:
        self.first = torch.zeros_like(self.param, memory_format=torch.preserve_format)
        self.second = torch.zeros_like(self.param, memory_format=torch.preserve_format)

    @torch.no_grad()
    def update(self, grad: torch.Tensor) -> None:
        """One step of the parameter (in place) against ``grad``."""
        beta1, beta2 = self.betas
        self.step += 1
        self.first.lerp_(grad, 1 - beta1)
        self.second.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
        step_size = self.lr / (1 - beta1**self.step)
        denom = (self.second.sqrt() / (1 - beta2**self.step) ** 0.5).add_(self.eps)
        self.param.addcdiv_(self.first, denom, value=-step_size)


@register_attack("cw-l2", "Carlini-Wagner L2: tanh-space Adam with a per-image binary search over c")
class CarliniWagnerL2(Attack):
    """Carlini-Wagner L2.

    Args:
        model: classifier on [0,1] images returning logits.
        c_init: initial trade-off constant c (> 0), the ``initial_const`` of the paper.
        binary_search_steps: rounds of the binary search over c (>= 1).
        steps: Adam iterations per round (>= 1).
        lr: Adam learning rate (> 0).
        kappa: confidence margin (>= 0), ``confidence`` in other libraries.
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
        >>> from advspatial.attacks import CarliniWagnerL2
        >>> result = CarliniWagnerL2(model, binary_search_steps=2, steps=10).run(images, labels)
        >>> result.x_adv.shape == images.shape and bool((result.l2[~result.success] == 0).all())
        True
    """

    name = "cw-l2"
    norm = "l2"
    budget_params = {"steps": "cw_steps", "binary_search_steps": "cw_search_steps"}

    def __init__(
        self, model: nn.Module, c_init: float = 1.0, binary_search_steps: int = 5, steps: int = 100,
        lr: float = 0.01, kappa: float = 0.0, seed: int = 0,
    ) -> None:
        super().__init__(model, seed)
        check_range("c_init", c_init, 0.0, None, low_inclusive=False)
        check_range("binary_search_steps", binary_search_steps, 1, None)
        check_range("steps", steps, 1, None)
        check_range("lr", lr, 0.0, None, low_inclusive=False)
        check_range("kappa", kappa, 0.0, None)
        self.c_init, self.binary_search_steps, self.steps = float(c_init), int(binary_search_steps), int(steps)
        self.lr, self.kappa = float(lr), float(kappa)

    def objective(self, logits: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None) -> torch.Tensor:
        """Per-image hinge ``f`` (see the module docstring)."""
        gap = margin(logits, y) if target is None else -margin(logits, target)
        return gap.clamp(min=-self.kappa)

    def succeeded(self, logits: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None) -> torch.Tensor:
        """(N,) bool: adversarial with confidence kappa (argmax criterion when kappa = 0)."""
        if target is None:
            return margin(logits, y) < -self.kappa
        return margin(logits, target) > self.kappa

    def perturb(
        self, x: torch.Tensor, y: torch.Tensor, mask: torch.Tensor | None,
        target: torch.Tensor | None, sample_ids: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        n = x.shape[0]
        w0 = to_tanh_space(x)
        with torch.no_grad():  # an image that is already adversarial needs no perturbation
            clean_ok = self.succeeded(self.model(x), y, target)
        best_l2sq = torch.where(clean_ok, 0.0, float("inf")).to(x.dtype)
        best_adv = x.clone()
        const = torch.full((n,), self.c_init, device=x.device)
        lower = torch.zeros_like(const)
        upper = torch.full_like(const, float("inf"))
        for search in range(self.binary_search_steps):
            label = f"CW search {search + 1}/{self.binary_search_steps}, step"  # a bar idle on a slow batch shows it
            hit = self._optimize(x, y, mask, target, w0, const, best_l2sq, best_adv, label)
            upper = torch.where(hit, torch.minimum(upper, const), upper)
            lower = torch.where(hit, lower, torch.maximum(lower, const))
            const = torch.where(torch.isinf(upper), const * 10, (lower + upper) / 2)
        queries = torch.full((n,), self.binary_search_steps * self.steps + 1, dtype=torch.long, device=x.device)
        return best_adv, queries

    def _optimize(
        self, x: torch.Tensor, y: torch.Tensor, mask: torch.Tensor | None, target: torch.Tensor | None,
        w0: torch.Tensor, const: torch.Tensor, best_l2sq: torch.Tensor, best_adv: torch.Tensor, label: str,
    ) -> torch.Tensor:
        """One round of Adam at fixed ``const``; updates ``best_*`` in place, returns (N,) 'succeeded once'. ``label``
        names its steps on the progress bar (:func:`~advspatial.progress.steps`)."""
        w = w0.clone().requires_grad_(True)
        optimizer = Adam(w, lr=self.lr)
        hit = torch.zeros_like(const, dtype=torch.bool)
        for _ in steps(label, self.steps):
            x_adv = from_tanh_space(w)
            if mask is not None:
                x_adv = x + mask * (x_adv - x)
            x_adv = x_adv.clamp(0.0, 1.0)
            logits = self.model(x_adv)
            l2sq = (x_adv - x).flatten(1).pow(2).sum(1)
            loss = (l2sq + const * self.objective(logits, y, target)).sum()
            (grad,) = torch.autograd.grad(loss, w)
            optimizer.update(grad)
            with torch.no_grad():
                ok = self.succeeded(logits, y, target)
                better = ok & (l2sq < best_l2sq)
                best_l2sq.copy_(torch.where(better, l2sq, best_l2sq))
                best_adv.copy_(torch.where(better.view(-1, 1, 1, 1), x_adv, best_adv))
                hit |= ok
        return hit
