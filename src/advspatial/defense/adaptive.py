"""Adaptive attacks against the neutralization defence (METHODS.md §2).

A defence number is reported only beside the number of an attack that knows
the defence:

- :func:`bpda_pgd`: L-inf PGD through the whole defended model. The region
  selection is recomputed at every forward pass but treated as a constant for
  the gradient (straight-through / BPDA: the gradient flows through the fill
  only); with a randomized defence the gradient is averaged over
  ``eot_samples`` forward passes (EOT).
- :func:`roi_restricted_attack`: any attack restricted to the RoI of the clean
  image. The defence never neutralizes its own RoI, so a perturbation there
  survives it when the RoI does not move much; this measures what remains.

The PGD loop is written here (not taken from ``advspatial.attacks.pgd``) so the
defence does not depend on the attack helpers' exact API.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from ..attacks.base import frozen_eval, per_sample_noise, prepare_mask
from ..errors import ConfigError, ShapeError, check_range
from ..regions import sample_ids_or_range
from .neutralize import BinarizeFn, MapFn, map_of, top_fraction

#: ``attack(x, y, mask=mask) -> x_adv``; ``mask`` is (N,1,H,W) float in {0,1}.
MaskedAttack = Callable[..., torch.Tensor]


def _check_images(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    if not isinstance(x, torch.Tensor) or x.ndim != 4 or not x.is_floating_point():
        raise ShapeError(f"images must be a float (N,C,H,W) tensor, got {getattr(x, 'shape', type(x))}")
    if x.numel() and (float(x.min()) < 0 or float(x.max()) > 1):
        raise ConfigError("images must lie in [0, 1]")
    y = torch.as_tensor(y, device=x.device).long()
    if y.shape != (x.shape[0],):
        raise ShapeError(f"labels must have shape ({x.shape[0]},), got {tuple(y.shape)}")
    return y


def eot_gradient(model: nn.Module, x_adv: torch.Tensor, y: torch.Tensor, samples: int) -> torch.Tensor:
    """Sum over ``samples`` forward passes of the gradient of the summed cross-entropy w.r.t. x_adv."""
    grad = torch.zeros_like(x_adv)
    for _ in range(samples):
        var = x_adv.detach().clone().requires_grad_(True)
        with torch.enable_grad():
            loss = F.cross_entropy(model(var), y, reduction="sum")
            grad += torch.autograd.grad(loss, var)[0]
    return grad


def bpda_pgd(
    defended: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    eps: float,
    alpha: float,
    steps: int,
    *,
    eot_samples: int = 1,
    seed: int = 0,
    random_start: bool = True,
    mask: torch.Tensor | None = None,
    sample_ids: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Untargeted L-inf PGD on the cross-entropy of ``defended`` (any nn.Module).

    Each step: ``x' <- clip_{x,eps}(x' + alpha * sign(g))`` then the box [0,1],
    where ``g`` sums the gradients of ``eot_samples`` forward passes (EOT; the
    sign makes sum and mean the same). The random start is uniform in the eps
    ball, drawn per image from ``(seed, sample_ids[i])``. ``mask`` (broadcastable
    to x, values in [0,1]) scales each update, so the perturbation is exactly 0
    where it is 0. The last iterate is returned with ``success`` = one defended
    forward pass on it predicts a class other than y (a randomized defence may
    answer differently on another call). The defended model runs in eval mode
    with parameter gradients off, both restored afterwards.
    """
    y = _check_images(x, y)
    check_range("eps", eps, 0.0, None)
    check_range("alpha", alpha, 0.0, None, low_inclusive=False)
    if int(steps) != steps or steps < 0:
        raise ConfigError(f"steps={steps!r} is out of range; valid: an integer >= 0")
    if int(eot_samples) != eot_samples or eot_samples < 1:
        raise ConfigError(f"eot_samples={eot_samples!r} is out of range; valid: an integer >= 1")
    x = x.detach()
    mask_full = prepare_mask(mask, x)
    ones = torch.ones_like(x) if mask_full is None else mask_full
    x_adv = x
    if random_start and eps > 0:
        noise = per_sample_noise(x.shape, seed, sample_ids_or_range(x.shape[0], sample_ids), device=x.device, dtype=x.dtype)
        x_adv = (x + eps * noise * ones).clamp(0.0, 1.0)
    with frozen_eval(defended):
        for _ in range(int(steps)):
            grad = eot_gradient(defended, x_adv, y, int(eot_samples))
            x_adv = x_adv + alpha * grad.sign() * ones
            x_adv = torch.min(torch.max(x_adv, x - eps), x + eps).clamp(0.0, 1.0)
        if mask_full is not None:
            x_adv = torch.where(mask_full == 0, x, x_adv)
        with torch.no_grad():
            success = defended(x_adv).argmax(dim=1) != y
    return x_adv.detach(), success


def roi_restricted_attack(
    attack: MaskedAttack,
    x: torch.Tensor,
    y: torch.Tensor,
    importance_fn: MapFn,
    fraction: float = 0.2,
    *,
    seed: int = 0,
    binarize: BinarizeFn | None = None,
    sample_ids: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Run ``attack(x, y, mask=roi)`` inside the RoI of the clean image; return ``(x_adv, roi)``.

    RoI = top ``fraction`` of ``importance_fn(x)`` on the clean images (strictly
    positive pixels only, seeded ties; or ``binarize(maps, fraction)``). The mask
    is passed as (N,1,H,W) float; whatever the attack returns, pixels outside
    the RoI are reset to the clean image, so the perturbation there is exactly 0.
    ``attack`` may be an :class:`advspatial.attacks.base.Attack` built on the
    defended model (e.g. ``lambda x, y, mask: bpda_pgd(defended, x, y, ..., mask=mask)[0]``).
    """
    y = _check_images(x, y)
    maps = map_of(importance_fn, x)
    if binarize is None:
        roi = top_fraction(maps, fraction, seed=seed, sample_ids=sample_ids)
    else:
        check_range("fraction", fraction, 0.0, 1.0)
        roi = binarize(maps, fraction).to(torch.bool)
    mask = roi[:, None].to(x.dtype)
    x_adv = attack(x.detach(), y, mask=mask)
    if not isinstance(x_adv, torch.Tensor) or x_adv.shape != x.shape:
        raise ShapeError(f"attack must return images of shape {tuple(x.shape)}, got {getattr(x_adv, 'shape', type(x_adv))}")
    return torch.where(roi[:, None], x_adv.detach().to(x), x.detach()), roi
