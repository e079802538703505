"""Promotion–suppression effect (METHODS.md §5): which pixel groups of a
perturbation push the true class down, and which push the adversarial class up.

For an attack ``x -> x' = x + δ`` from true class ``t0`` to class ``t`` (the
adversarial prediction, or the attack's target) and a pixel group ``G``:

* suppression ``s_G = z_t0(x) − z_t0(x + δ_G)``  (> 0: G lowers the true logit),
* promotion   ``p_G = z_t(x + δ_G) − z_t(x)``    (> 0: G raises the target logit),

where ``δ_G`` keeps only G's part of δ (``x + δ_G`` equals ``x'`` on G and ``x``
elsewhere). ``method="exact"`` evaluates these by batched forward passes over all
(image, group) pairs; ``method="first_order"`` uses ``s_G ≈ −∇z_t0(x)·δ_G`` and
``p_G ≈ ∇z_t(x)·δ_G`` (two backward passes per image chunk). For a linear model
both are exact and additive: ``Σ_G s_G = z_t0(x) − z_t0(x')``.

Groups are ``block × block`` squares (default 2×2; edge blocks are smaller when
the size is not a multiple of ``block``) or a caller-supplied integer label map of
superpixels (N,H,W). Groups whose δ is exactly zero are never evaluated.

The groups are then typed (suppression, promotion, balanced, opposing; untyped
under the noise floor) and the perturbation gets the type with the largest
energy share: the rule lives in :mod:`advspatial.analysis.pse_types`, with
:class:`PSEResult`.

**Two ways of measuring a group (``variant``).** ``"isolated"`` (default) applies
``δ_G`` alone to the clean image, as above. ``"leave-one-out"`` removes G's part
from the adversarial image instead, the marginal effect of G at ``x'`` given all
the other groups: ``s_G = z_t0(x' − δ_G) − z_t0(x')`` and
``p_G = z_t(x') − z_t(x' − δ_G)``. For a model linear in its input both equal
the same ``∇z·δ_G``; where they differ, the groups interact.

**Pre-specified target.** ``target`` should be fixed before the attack is seen
(the clean runner-up class for an untargeted attack, the target of a targeted
one): the post-hoc ``argmax z(x')`` is the class that won *because* it was
promoted most, which biases the shares towards promotion. ``secondary_target``
measures the promotion of a second class from the same forward passes
(:func:`~advspatial.analysis.pse_types.secondary_view` types the groups with it), for a labelled secondary view.

The group types, their rule and :class:`PSEResult` live in :mod:`advspatial.analysis.pse_types`;
:func:`~advspatial.analysis.pse_cam.pse_vs_cam` (:mod:`advspatial.analysis.pse_cam`) then asks where each type
falls relative to the top region of ``CAM_t0(x)`` and ``CAM_t(x')``.
"""

from __future__ import annotations

import torch
from torch import nn

from ..errors import ConfigError, ShapeError, check_range
from ..models.hooks import frozen_eval
from ..runtime import batch_slices, model_device
from .pse_incremental import BlockEvaluator, check_incremental
from .pse_types import PSEResult, type_shares, typed_groups

__all__ = ["METHODS", "VARIANTS", "block_labels", "promotion_suppression"]

METHODS = ("exact", "first_order")
VARIANTS = ("isolated", "leave-one-out")


def block_labels(height: int, width: int, block: int = 2) -> torch.Tensor:
    """(H,W) int64 labels of ``block × block`` squares, numbered row-major."""
    if block < 1:
        raise ConfigError(f"block={block} is out of range; valid: >= 1")
    per_row = -(-width // block)
    rows = torch.arange(height) // block
    cols = torch.arange(width) // block
    return rows[:, None] * per_row + cols[None, :]


def promotion_suppression(
    model: nn.Module,
    x: torch.Tensor,
    x_adv: torch.Tensor,
    y: torch.Tensor,
    target: torch.Tensor | None = None,
    *,
    groups: torch.Tensor | None = None,
    block: int = 2,
    method: str = "exact",
    kappa: float = 2.0,
    atol: float = 0.0,
    batch_size: int = 256,
    variant: str = "isolated",
    noise_floor: float = 0.0,
    secondary_target: torch.Tensor | None = None,
    incremental: bool | str = "auto",
) -> PSEResult:
    """Suppression and promotion of every pixel group of ``δ = x_adv − x``.

    Args:
        model: classifier returning logits; run in eval mode, restored afterwards.
        x, x_adv: (N,C,H,W) clean and adversarial images.
        y: (N,) true class t0.
        target: (N,) class t, pre-specified (see module docstring); default the
            prediction on ``x_adv`` (post-hoc). (When t = t0, ``p = −s``.)
        groups: optional (N,H,W) or (H,W) non-negative integer superpixel labels;
            default ``block × block`` squares. G = largest label + 1.
        block: block side when ``groups`` is None (choice: 2).
        method: ``"exact"`` (batched forward passes) or ``"first_order"`` (gradients).
        kappa: dominance factor κ >= 1 (choice: 2). atol: |values| <= atol count as 0.
        batch_size: images per forward pass (for "exact": (image, group) pairs per pass).
        variant: ``"isolated"`` (δ_G on x) or ``"leave-one-out"`` (δ_G removed from x').
        noise_floor: groups with ``|s|, |p| <= noise_floor · (|s_total| + |p_total|)`` are UNTYPED.
        secondary_target: optional (N,) second class whose promotion is measured too.
        incremental: ``"auto"`` (default): the exact method's square groups by incremental evaluation on a CPU
            (:mod:`~advspatial.analysis.pse_incremental`: the change followed only where it reaches, the logits
            equal to a full pass's to about 1e-5), full forward passes on a GPU; True: incremental on any device;
            False: full passes. Superpixel ``groups`` always take full passes.
    """
    if method not in METHODS:
        raise ConfigError(f"unknown method {method!r}; valid: {', '.join(METHODS)}")
    if variant not in VARIANTS:
        raise ConfigError(f"unknown variant {variant!r}; valid: {', '.join(VARIANTS)}")
    check_range("kappa", kappa, 1.0, None)
    check_range("noise_floor", noise_floor, 0.0, None)
    check_incremental(incremental)
    x, x_adv, y = _check_inputs(x, x_adv, y)
    device = model_device(model)
    x, x_adv, y = x.to(device), x_adv.to(device), y.to(device)
    n, _, h, w = x.shape
    labels = _resolve_labels(groups, block, n, h, w).to(device)
    num_groups = int(labels.max()) + 1
    flat = labels.flatten(1)
    pixel_energy = (x_adv - x).pow(2).sum(1)
    energy = torch.zeros(n, num_groups, dtype=x.dtype, device=device).scatter_add_(1, flat, pixel_energy.flatten(1))
    size = torch.zeros(n, num_groups, dtype=torch.int64, device=device).scatter_add_(1, flat, torch.ones_like(flat))

    with frozen_eval(model):
        with torch.no_grad():
            z_clean = _logits(model, x, batch_size)
            z_adv = _logits(model, x_adv, batch_size)
        k = z_clean.shape[1]
        t = z_adv.argmax(1) if target is None else _check_target(target, n, k).to(device)
        t2 = None if secondary_target is None else _check_target(secondary_target, n, k).to(device)
        classes = torch.stack([y, t] + ([] if t2 is None else [t2]), 1)  # (N,M)
        if method == "exact":
            blocks = None if groups is not None else BlockEvaluator.build(
                model, x if variant == "isolated" else x_adv, block, incremental)
            z = _exact_pairs(model, x, x_adv, classes, labels, energy > 0, variant, batch_size, blocks)
            z_base = (z_clean if variant == "isolated" else z_adv).gather(1, classes)[:, None, :]  # (N,1,M)
            # isolated: the change from x that G alone makes; leave-one-out: the change at x' that G accounts for
            gain = z - z_base if variant == "isolated" else z_base - z
        else:
            gain = _first_order(model, x, x_adv, classes, flat, num_groups, variant, batch_size)
    active = energy > 0
    gain = torch.where(active[..., None], gain, torch.zeros_like(gain))
    s, p = -gain[..., 0], gain[..., 1]
    s_total = z_clean.gather(1, y[:, None]).squeeze(1) - z_adv.gather(1, y[:, None]).squeeze(1)
    p_total = _promotion_total(z_clean, z_adv, t)
    floor = noise_floor * (s_total.abs() + p_total.abs())
    types = typed_groups(s, p, energy, kappa, atol, floor)
    shares, dominant = type_shares(types, energy)
    return PSEResult(
        labels=labels, s=s, p=p, energy=energy, size=size, types=types, shares=shares,
        perturbation_type=dominant, pixel_energy=pixel_energy, s_total=s_total, p_total=p_total,
        true_class=y, target_class=t, kappa=float(kappa), method=method, atol=float(atol),
        variant=variant, noise_floor=float(noise_floor), floor=floor,
        secondary_class=t2, p_secondary=None if t2 is None else gain[..., 2],
        p_total_secondary=None if t2 is None else _promotion_total(z_clean, z_adv, t2),
    )


def _promotion_total(z_clean: torch.Tensor, z_adv: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """``z_t(x') − z_t(x)`` per image: the whole perturbation's promotion of t."""
    return z_adv.gather(1, t[:, None]).squeeze(1) - z_clean.gather(1, t[:, None]).squeeze(1)


# ----------------------------------------------------------------------------- internals


def _check_inputs(x: torch.Tensor, x_adv: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, ...]:
    if x.ndim != 4 or x_adv.shape != x.shape:
        raise ShapeError(f"x and x_adv must both be (N,C,H,W) of the same shape, got {tuple(x.shape)} and "
                         f"{tuple(x_adv.shape)}")
    if y.shape != (x.shape[0],):
        raise ShapeError(f"y must be ({x.shape[0]},), got {tuple(y.shape)}")
    return x, x_adv, y.long()


def _check_target(target: torch.Tensor, n: int, num_classes: int) -> torch.Tensor:
    target = torch.as_tensor(target).long()
    if target.shape != (n,):
        raise ShapeError(f"target must be ({n},), got {tuple(target.shape)}")
    if n and (target.min() < 0 or target.max() >= num_classes):
        raise ConfigError(f"target classes must lie in 0..{num_classes - 1}")
    return target


def _resolve_labels(groups: torch.Tensor | None, block: int, n: int, h: int, w: int) -> torch.Tensor:
    """(N,H,W) int64 group labels from a superpixel map or the block size."""
    if groups is None:
        return block_labels(h, w, block).expand(n, h, w).contiguous()
    groups = torch.as_tensor(groups)
    if groups.dtype.is_floating_point or groups.dtype == torch.bool:
        raise ConfigError(f"groups must be an integer label map, got dtype {groups.dtype}")
    if groups.shape == (h, w):
        groups = groups.expand(n, h, w)
    if groups.shape != (n, h, w):
        raise ShapeError(f"groups must be ({n},{h},{w}) or ({h},{w}), got {tuple(groups.shape)}")
    if groups.numel() and groups.min() < 0:
        raise ConfigError("groups labels must be >= 0")
    return groups.long().contiguous()


def _logits(model: nn.Module, x: torch.Tensor, batch_size: int) -> torch.Tensor:
    return torch.cat([model(x[sl]) for sl in batch_slices(x.shape[0], batch_size)])


def _exact_pairs(
    model: nn.Module, x: torch.Tensor, x_adv: torch.Tensor, classes: torch.Tensor, labels: torch.Tensor,
    active: torch.Tensor, variant: str, batch_size: int, blocks: BlockEvaluator | None = None,
) -> torch.Tensor:
    """(N,G,M) logits of ``classes`` on ``x + δ_G`` (isolated) or ``x' − δ_G`` (leave-one-out) for every
    (image, group) pair with non-zero δ_G (0 elsewhere): one forward pass per ``batch_size`` pairs, or with
    ``blocks`` the whole square groups by incremental evaluation and the rest by forward passes."""
    n, num_groups = active.shape
    out = torch.zeros(n, num_groups, classes.shape[1], dtype=x.dtype, device=x.device)
    inner, outer = (x_adv, x) if variant == "isolated" else (x, x_adv)
    img, grp = active.nonzero(as_tuple=True)
    if blocks is not None:
        fast = blocks.whole[grp]
        i, g = img[fast], grp[fast]
        with torch.no_grad():
            out[i, g] = blocks.logits(inner, i, g, batch_size).gather(1, classes[i]).to(out.dtype)
        img, grp = img[~fast], grp[~fast]
    with torch.no_grad():
        for sl in batch_slices(int(img.numel()), batch_size):
            i, g = img[sl], grp[sl]
            inside = (labels[i] == g[:, None, None])[:, None]
            z = model(torch.where(inside, inner[i], outer[i]))
            out[i, g] = z.gather(1, classes[i]).to(out.dtype)
    return out


def _first_order(
    model: nn.Module, x: torch.Tensor, x_adv: torch.Tensor, classes: torch.Tensor,
    flat: torch.Tensor, num_groups: int, variant: str, batch_size: int,
) -> torch.Tensor:
    """(N,G,M) first-order gains ``∇z_c·δ_G`` per group, the gradient taken at x (isolated) or x' (leave-one-out)."""
    n, m = x.shape[0], classes.shape[1]
    out = torch.zeros(n, num_groups, m, dtype=x.dtype, device=x.device)
    point = x if variant == "isolated" else x_adv
    for sl in batch_slices(n, batch_size):
        xb = point[sl].detach().requires_grad_(True)
        delta = (x_adv[sl] - x[sl]).detach()
        with torch.enable_grad():
            z = model(xb)
            for c in range(m):
                grad, = torch.autograd.grad(z.gather(1, classes[sl, c:c + 1]).sum(), xb, retain_graph=c < m - 1)
                out[sl, :, c].scatter_add_(1, flat[sl], (grad * delta).sum(1).flatten(1))
    return out
