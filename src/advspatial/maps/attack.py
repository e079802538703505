"""Attack maps: where the perturbation acts (the Region of Attack side).

Three kinds (METHODS.md section 1), each an (N,H,W) float map >= 0:

- ``magnitude``: ||delta_{:,h,w}||_2 over channels. Nearly flat for L-inf
  attacks (|delta| = eps almost everywhere) -- a property of the attack, not a bug.
- ``contribution`` (default): each pixel's share of the margin change, by
  integrated gradients of the margin m(x) = z_y - max_{j!=y} z_j along the
  straight path x -> x' = x + delta. With the signed per-pixel attribution
  ``S_p = sum_c delta_cp * int_0^1 dm(x + t delta)/dx_cp dt``:

  * ``part="drop"`` (default, METHODS.md "Contribution map, signed"):
    ``A_p = max(0, -S_p)``, the pixels that *lower* the margin, i.e. that work
    for the attack;
  * ``part="absolute"``: ``A_p = sum_c |delta_cp * int dm/dx_cp|`` (the
    earlier map; it also counts pixels that raise the margin).

  The max class j is taken at every point of the path (the gradient of m
  itself). The label y is the true label when ``y`` is given, else the clean
  prediction. Completeness says sum_p S_p = m(x') - m(x); its relative error is
  checked per image, and images above ``tolerance`` (default 2%) are
  recomputed with twice the quadrature points, only those, until within the
  tolerance or ``max_steps`` is reached; images still above it are
  ``flagged`` (to be excluded and their share reported). Images whose margin
  does not change have error NaN and are never flagged.
- ``gradient``: |grad_x CE(z(x~), y^)| summed over channels at the input x~
  alone (x_adv when given, else x), y^ = the model's prediction on x~. Needs
  no clean image, so a deployed defence can compute it.

:func:`attack_map` returns an :class:`AttackMap`: the map plus, for
``contribution``, the per-image diagnostics (completeness error, quadrature
points used, flag).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from ..attacks.base import margin
from ..models.hooks import frozen_eval
from ..errors import ConfigError, ShapeError, check_range, unknown_name
from ..registry import Registry
from ..runtime import model_device, scaled_batch
from ._common import check_classes, check_images, check_options, predict

RULES = ("gausslegendre", "trapezoid", "midpoint")
PARTS = ("drop", "absolute")


@dataclass
class AttackMap:
    """An attack map and its diagnostics.

    Attributes:
        map: (N,H,W) float >= 0.
        method: the map kind (``magnitude``, ``contribution``, ``gradient``).
        labels: (N,) classes used (margin label for ``contribution``,
            prediction for ``gradient``); None for ``magnitude``.
        margin_clean, margin_adv: (N,) m(x) and m(x') (``contribution`` only).
        completeness_error: (N,) |sum_p delta_p int dm - (m(x') - m(x))| / |m(x') - m(x)|
            after refinement (``contribution`` only; NaN where m(x') == m(x)).
        steps_used: (N,) int64 quadrature points of each image's final integral
            (``contribution`` only).
        flagged: (N,) bool, True where the completeness error is still above the
            tolerance at ``max_steps`` (``contribution`` only; never where it is NaN).
    """

    map: torch.Tensor
    method: str
    labels: torch.Tensor | None = None
    margin_clean: torch.Tensor | None = None
    margin_adv: torch.Tensor | None = None
    completeness_error: torch.Tensor | None = None
    steps_used: torch.Tensor | None = None
    flagged: torch.Tensor | None = None


Kind = Callable[..., AttackMap]
#: every attack map by name (``advspatial list maps`` iterates it); a map documents itself
ATTACK_MAPS: Registry[Kind] = Registry("attack map")
list_attack_maps = ATTACK_MAPS.names
"""The names :func:`attack_map` accepts, sorted."""
describe_attack_maps = ATTACK_MAPS.descriptions
"""Each name with the first line of its function's docstring (``advspatial list maps``)."""


def register_attack_map(name: str) -> Callable[[Kind], Kind]:
    """Decorator adding an attack map: one function, the first line of its docstring its description.

    The function is ``fn(model, x, x_adv, y, **options) -> AttackMap`` (inputs on
    the model's device; ``x_adv`` and ``y`` may be None); its keyword options
    (with defaults) become :func:`attack_map`'s. A taken name is an error.
    """
    return ATTACK_MAPS.decorator(name)


def attack_map(name: str, model: nn.Module, x: torch.Tensor, x_adv: torch.Tensor | None = None,
               y: torch.Tensor | None = None, **kw: Any) -> AttackMap:
    """Compute attack map ``name`` for clean images ``x`` and adversarial ``x_adv``.

    ``magnitude`` and ``contribution`` need ``x_adv``; ``gradient`` uses
    ``x_adv`` when given, else ``x``. Unknown names or parameters raise
    :class:`~advspatial.errors.ConfigError`.

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
        >>> from advspatial.maps import attack_map
        >>> x_adv = FGSM(model, eps=8 / 255)(images, labels)
        >>> attack_map("contribution", model, images, x_adv=x_adv, y=labels).map.shape
        torch.Size([12, 28, 28])
    """
    fn = ATTACK_MAPS.get(name)
    check_options(ATTACK_MAPS.kind, name, fn, kw, ("model", "x", "x_adv", "y"))
    if model is not None and isinstance(x, torch.Tensor):
        device = model_device(model)
        x = x.to(device)
        x_adv = None if x_adv is None else torch.as_tensor(x_adv).to(device)
        y = None if y is None else torch.as_tensor(y).to(device)
    return fn(model, x, x_adv, y, **kw)


def _check_pair(x: torch.Tensor, x_adv: torch.Tensor | None, kind: str) -> torch.Tensor:
    check_images(x)
    if x_adv is None:
        raise ConfigError(f"attack map {kind!r} needs x_adv (the adversarial images)")
    check_images(x_adv, "x_adv")
    if x_adv.shape != x.shape:
        raise ShapeError(f"x_adv must have the shape of x {tuple(x.shape)}, got {tuple(x_adv.shape)}")
    return x_adv.to(x.device)


@register_attack_map("magnitude")
def magnitude_map(
    model: nn.Module | None, x: torch.Tensor, x_adv: torch.Tensor | None, y: torch.Tensor | None = None
) -> AttackMap:
    """||delta_{:,h,w}||_2 over channels (the model is not used)."""
    x_adv = _check_pair(x, x_adv, "magnitude")
    return AttackMap((x_adv - x).detach().norm(p=2, dim=1), "magnitude")


def quadrature(steps: int, rule: str = "gausslegendre") -> tuple[torch.Tensor, torch.Tensor]:
    """Nodes t in [0,1] and weights (summing to 1) of a ``steps``-point rule on [0,1]."""
    check_range("steps", steps, 1)
    if rule == "gausslegendre":
        nodes, weights = np.polynomial.legendre.leggauss(int(steps))
        t, w = (nodes + 1) / 2, weights / 2
    elif rule == "trapezoid":
        if steps < 2:
            raise ConfigError("the trapezoid rule needs steps >= 2")
        t = np.linspace(0.0, 1.0, steps)
        w = np.full(steps, 1.0 / (steps - 1))
        w[[0, -1]] /= 2
    elif rule == "midpoint":
        t, w = (np.arange(steps) + 0.5) / steps, np.full(steps, 1.0 / steps)
    else:
        raise unknown_name("quadrature rule", rule, RULES)
    return torch.as_tensor(t, dtype=torch.float64), torch.as_tensor(w, dtype=torch.float64)


def integrated_margin_gradient(
    model: nn.Module, x: torch.Tensor, delta: torch.Tensor, labels: torch.Tensor,
    steps: int = 32, rule: str = "gausslegendre", batch_size: int = 512,
) -> torch.Tensor:
    """int_0^1 dm(x + t delta)/dx dt, (N,C,H,W), by a quadrature rule, batched over images x steps.

    At most ``batch_size`` path points (images x steps) of 28x28 go through the model at once;
    larger images proportionally fewer (:func:`advspatial.runtime.scaled_batch`).
    """
    check_range("batch_size", batch_size, 1)
    t_all, w_all = quadrature(steps, rule)
    n = x.shape[0]
    per_chunk = max(1, scaled_batch(batch_size, x.shape[2], x.shape[3]) // max(n, 1))
    total = torch.zeros_like(x, dtype=torch.float64)
    for start in range(0, len(t_all), per_chunk):
        t = t_all[start:start + per_chunk].to(x.device, x.dtype)
        w = w_all[start:start + per_chunk].to(x.device)
        k = t.shape[0]
        points = (x[None] + t.view(k, 1, 1, 1, 1) * delta[None]).reshape(k * n, *x.shape[1:])
        points.requires_grad_(True)
        with torch.enable_grad():
            m = margin(model(points), labels.repeat(k))
            (grad,) = torch.autograd.grad(m.sum(), points)
        total += (grad.view(k, *x.shape).double() * w.view(k, 1, 1, 1, 1)).sum(0)
    return total.to(x.dtype)


def _relative_error(attr: torch.Tensor, change: torch.Tensor) -> torch.Tensor:
    """(N,) float64 |sum attr - change| / |change|, NaN where change == 0."""
    total = attr.flatten(1).double().sum(1)
    err = (total - change).abs() / change.abs()
    return torch.where(change == 0, torch.full_like(err, float("nan")), err)


@register_attack_map("contribution")
def contribution_map(
    model: nn.Module, x: torch.Tensor, x_adv: torch.Tensor | None, y: torch.Tensor | None = None,
    steps: int = 32, rule: str = "gausslegendre", batch_size: int = 512, part: str = "drop",
    tolerance: float = 0.02, max_steps: int = 256,
) -> AttackMap:
    """Integrated-gradients share of the margin drop per pixel, refined per image until complete.

    ``y``: the labels of the margin (the true labels); None uses the clean prediction.
    ``part``: ``"drop"`` (default) keeps max(0, -sum_c delta_c int dm/dx_c), the
    pixels that lower the margin; ``"absolute"`` gives sum_c |delta_c int dm/dx_c|
    (see the module docstring). Quadrature: ``steps`` points of ``rule`` (default
    32-point Gauss-Legendre); every image whose completeness error exceeds
    ``tolerance`` is recomputed alone with twice the points (at most
    ``max_steps``), repeatedly, and flagged if still above it at ``max_steps``.
    ``max_steps == steps`` turns the refinement off. Measured on 32
    Fashion-MNIST test images, a briefly trained TinyCNN and 10-step L-inf PGD
    (eps 0.05 and 0.1), 32 points alone gave completeness error median
    0.03-0.06%, max 0.34%.
    """
    x_adv = _check_pair(x, x_adv, "contribution")
    if part not in PARTS:
        raise unknown_name("contribution part", part, PARTS)
    check_range("steps", steps, 1)
    check_range("tolerance", tolerance, 0.0)
    check_range("max_steps", max_steps, steps)
    x, delta = x.detach(), (x_adv - x).detach()
    n = x.shape[0]
    with frozen_eval(model):
        with torch.no_grad():
            logits = model(x)
        labels = logits.argmax(1) if y is None else torch.as_tensor(y, device=x.device).long()
        if labels.shape != (n,):
            raise ShapeError(f"y must have shape ({n},), got {tuple(labels.shape)}")
        check_classes(labels, logits)
        with torch.no_grad():
            m_clean, m_adv = margin(logits, labels), margin(model(x_adv.detach()), labels)
        change = (m_adv - m_clean).double()
        attr = delta * integrated_margin_gradient(model, x, delta, labels, steps, rule, batch_size)
        err = _relative_error(attr, change)
        steps_used = torch.full((n,), int(steps), dtype=torch.long, device=x.device)
        current = int(steps)
        todo = err > tolerance  # NaN compares False: an unchanged margin is never refined
        while bool(todo.any()) and current < max_steps:
            current = min(2 * current, int(max_steps))
            idx = todo.nonzero().squeeze(1)
            sub = delta[idx] * integrated_margin_gradient(model, x[idx], delta[idx], labels[idx], current, rule,
                                                          batch_size)
            attr[idx] = sub
            err[idx] = _relative_error(sub, change[idx])
            steps_used[idx] = current
            todo = err > tolerance
    flagged = err > tolerance
    signed = attr.sum(1)
    amap = (-signed).clamp_min(0.0) if part == "drop" else attr.abs().sum(1)
    return AttackMap(amap, "contribution", labels, m_clean, m_adv, err.float(), steps_used, flagged)


@register_attack_map("gradient")
def gradient_map(
    model: nn.Module, x: torch.Tensor, x_adv: torch.Tensor | None = None, y: torch.Tensor | None = None
) -> AttackMap:
    """|grad_x CE(z(x~), y^)| summed over channels, x~ = x_adv if given else x, y^ = prediction on x~.

    ``y`` is ignored: the deployable map must not need the true label.
    """
    inp = x if x_adv is None else x_adv
    check_images(inp, "x_adv" if x_adv is not None else "x")
    with frozen_eval(model):
        pred = predict(model, inp)
        point = inp.detach().clone().requires_grad_(True)
        with torch.enable_grad():
            loss = nn.functional.cross_entropy(model(point), pred, reduction="sum")
            (grad,) = torch.autograd.grad(loss, point)
    return AttackMap(grad.abs().sum(1), "gradient", pred)
