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

**Group typing (choice, documented).** With ``s⁺ = max(s, 0)``, ``p⁺ = max(p, 0)``
(values with ``|v| <= atol`` count as 0) and ``κ >= 1`` (default 2):

* ``SUPPRESSION`` if ``s⁺ > κ·p⁺``,
* ``PROMOTION``   if ``p⁺ > κ·s⁺``,
* ``OPPOSING``    if ``s⁺ = p⁺ = 0`` (the group raises the true logit *and* lowers
  the target logit, or does nothing measurable: it works against the attack),
* ``BALANCED``    otherwise (both positive, neither dominates by a factor κ),
* ``UNPERTURBED`` (−1) for groups where δ is zero (no energy),
* ``UNTYPED`` (−2) for groups whose ``|s|`` and ``|p|`` both stay within the
  noise floor ``noise_floor · (|s_total| + |p_total|)`` of their image (a ratio
  of near-zero numbers is no type); they are counted, and left out of the shares.

Only the helpful part of each effect counts: with raw values ``s = −1, p = −3``
would satisfy ``s > κ·p`` and be called "suppression" although it *raises* the
true logit, and both inequalities could hold at once. With positive parts and
``κ >= 1`` the types are mutually exclusive.

**Whole-perturbation type.** Group energy is ``‖δ_G‖²``; the share of a type is
the energy of its groups over the energy of the typed groups, and the
perturbation gets the type with the largest share (ties: lowest type code).

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
(:func:`secondary_view` types the groups with it), for a labelled secondary view.

:func:`pse_vs_cam` then asks where each type falls relative to the top region of
``CAM_t0(x)`` and ``CAM_t(x')`` (the shared top-fraction rule), against the exact
partner null of the one inference engine (:mod:`advspatial.regions.inference`).
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields

import torch
from torch import nn

from ..attacks.base import frozen_eval
from ..errors import ConfigError, ShapeError, check_range
from ..regions import top_fraction_mask
from ..regions.inference import NullComparison, excess_test
from ..runtime import batch_slices, model_device

UNTYPED = -2
UNPERTURBED = -1
SUPPRESSION = 0
PROMOTION = 1
BALANCED = 2
OPPOSING = 3
TYPE_NAMES: tuple[str, ...] = ("suppression", "promotion", "balanced", "opposing")
METHODS = ("exact", "first_order")
VARIANTS = ("isolated", "leave-one-out")


@dataclass
class PSEResult:
    """Per-group promotion/suppression of a batch of perturbations.

    Attributes:
        labels: (N,H,W) int64 group index of each pixel (the group geometry).
        s, p: (N,G) suppression and promotion per group (0 for unperturbed groups).
        energy: (N,G) ``‖δ_G‖²``; size: (N,G) pixels per group (0 = group absent).
        types: (N,G) int64 group type (see module docstring; −1 = unperturbed,
            −2 = untyped: both effects within the noise floor).
        shares: (N,4) share of the typed groups' energy of each type, in ``TYPE_NAMES``
            order (rows sum to 1, or 0 when no group is typed).
        perturbation_type: (N,) type with the largest share (−1 when no group is typed).
        pixel_energy: (N,H,W) ``Σ_c δ²`` per pixel.
        s_total, p_total: (N,) the same quantities for the whole δ (from x and x').
        true_class, target_class: (N,) t0 and t.
        kappa, method, atol: the settings used.
        variant: ``"isolated"`` or ``"leave-one-out"``; noise_floor: the relative floor;
        floor: (N,) the absolute floor of each image (``noise_floor · (|s_total| + |p_total|)``).
        secondary_class, p_secondary, p_total_secondary: the promotion of
            ``secondary_target`` (None when none was asked for).
    """

    labels: torch.Tensor
    s: torch.Tensor
    p: torch.Tensor
    energy: torch.Tensor
    size: torch.Tensor
    types: torch.Tensor
    shares: torch.Tensor
    perturbation_type: torch.Tensor
    pixel_energy: torch.Tensor
    s_total: torch.Tensor
    p_total: torch.Tensor
    true_class: torch.Tensor
    target_class: torch.Tensor
    kappa: float
    method: str
    atol: float = 0.0
    type_names: tuple[str, ...] = field(default=TYPE_NAMES)
    variant: str = "isolated"
    noise_floor: float = 0.0
    floor: torch.Tensor | None = None
    secondary_class: torch.Tensor | None = None
    p_secondary: torch.Tensor | None = None
    p_total_secondary: torch.Tensor | None = None

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    @property
    def num_groups(self) -> int:
        return int(self.s.shape[1])

    @property
    def untyped(self) -> torch.Tensor:
        """(N,) number of perturbed groups left untyped by the noise floor."""
        return (self.types == UNTYPED).sum(1)


def block_labels(height: int, width: int, block: int = 2) -> torch.Tensor:
    """(H,W) int64 labels of ``block × block`` squares, numbered row-major."""
    if block < 1:
        raise ConfigError(f"block={block} is out of range; valid: >= 1")
    per_row = -(-width // block)
    rows = torch.arange(height) // block
    cols = torch.arange(width) // block
    return rows[:, None] * per_row + cols[None, :]


def classify_groups(s: torch.Tensor, p: torch.Tensor, kappa: float = 2.0, atol: float = 0.0,
                    floor: torch.Tensor | None = None) -> torch.Tensor:
    """Type code per element from suppression ``s`` and promotion ``p`` (same shape).

    Uses positive parts (see module docstring): SUPPRESSION if ``s⁺ > κ·p⁺``,
    PROMOTION if ``p⁺ > κ·s⁺``, OPPOSING if both are 0, else BALANCED; UNTYPED
    where neither ``|s|`` nor ``|p|`` exceeds ``floor`` (broadcast against ``s``,
    e.g. (N,1) per image), so that no ratio of near-zero numbers is typed. Never
    returns UNPERTURBED; :func:`promotion_suppression` sets that from the energy.
    """
    check_range("kappa", kappa, 1.0, None)
    check_range("atol", atol, 0.0, None)
    if s.shape != p.shape:
        raise ShapeError(f"s and p must have the same shape, got {tuple(s.shape)} and {tuple(p.shape)}")
    sp = torch.where(s > atol, s, torch.zeros_like(s))
    pp = torch.where(p > atol, p, torch.zeros_like(p))
    types = torch.full(s.shape, BALANCED, dtype=torch.int64, device=s.device)
    types[sp > kappa * pp] = SUPPRESSION
    types[pp > kappa * sp] = PROMOTION
    types[(sp == 0) & (pp == 0)] = OPPOSING
    if floor is not None:
        floor = torch.as_tensor(floor, dtype=s.dtype, device=s.device)
        types[(s.abs() <= floor) & (p.abs() <= floor)] = UNTYPED
    return types


def type_shares(types: torch.Tensor, energy: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Energy share of each type per row (N,4), and the dominant type (N,) (−1 if no typed energy).

    Unperturbed and untyped groups (negative codes) carry no weight.
    """
    n = types.shape[0]
    idx = types.clamp(min=0)
    weights = torch.where(types >= 0, energy, torch.zeros_like(energy))
    per_type = torch.zeros(n, len(TYPE_NAMES), dtype=energy.dtype, device=energy.device)
    per_type.scatter_add_(1, idx, weights)
    total = per_type.sum(1, keepdim=True)
    shares = torch.where(total > 0, per_type / total.clamp_min(torch.finfo(energy.dtype).tiny), torch.zeros_like(per_type))
    dominant = torch.where(total.squeeze(1) > 0, shares.argmax(1), torch.full_like(total.squeeze(1), UNPERTURBED, dtype=torch.int64))
    return shares, dominant


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
    """
    if method not in METHODS:
        raise ConfigError(f"unknown method {method!r}; valid: {', '.join(METHODS)}")
    if variant not in VARIANTS:
        raise ConfigError(f"unknown variant {variant!r}; valid: {', '.join(VARIANTS)}")
    check_range("kappa", kappa, 1.0, None)
    check_range("noise_floor", noise_floor, 0.0, None)
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
            z = _exact_pairs(model, x, x_adv, classes, labels, energy > 0, variant, batch_size)
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
    types = _types(s, p, energy, kappa, atol, floor)
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


def _types(s: torch.Tensor, p: torch.Tensor, energy: torch.Tensor, kappa: float, atol: float,
           floor: torch.Tensor) -> torch.Tensor:
    """Group types with the per-image floor, unperturbed groups marked."""
    types = classify_groups(s, p, kappa, atol, floor[:, None])
    types[energy <= 0] = UNPERTURBED
    return types


def retype(result: PSEResult, kappa: float | None = None, noise_floor: float | None = None) -> PSEResult:
    """The same measurements typed with another κ and/or noise floor (no forward pass; for stability checks)."""
    kappa = result.kappa if kappa is None else float(kappa)
    noise_floor = result.noise_floor if noise_floor is None else float(noise_floor)
    check_range("kappa", kappa, 1.0, None)
    check_range("noise_floor", noise_floor, 0.0, None)
    floor = noise_floor * (result.s_total.abs() + result.p_total.abs())
    types = _types(result.s, result.p, result.energy, kappa, result.atol, floor)
    shares, dominant = type_shares(types, result.energy)
    values = {f.name: getattr(result, f.name) for f in fields(result)}
    values.update(types=types, shares=shares, perturbation_type=dominant, kappa=kappa, noise_floor=noise_floor,
                  floor=floor)
    return PSEResult(**values)


def secondary_view(result: PSEResult) -> PSEResult:
    """The result typed towards ``secondary_class`` (e.g. the post-hoc argmax of x'): a labelled secondary view."""
    if result.p_secondary is None or result.secondary_class is None or result.p_total_secondary is None:
        raise ConfigError("this result has no secondary target; pass secondary_target to promotion_suppression")
    values = {f.name: getattr(result, f.name) for f in fields(result)}
    values.update(p=result.p_secondary, p_total=result.p_total_secondary, target_class=result.secondary_class,
                  secondary_class=None, p_secondary=None, p_total_secondary=None)
    return retype(PSEResult(**values))


def group_type_map(result: PSEResult) -> torch.Tensor:
    """(N,H,W) int64 map: each pixel gets the type of its group (−1 = unperturbed)."""
    return group_value_map(result, result.types)


def group_value_map(result: PSEResult, values: torch.Tensor) -> torch.Tensor:
    """Spread per-group values (N,G) back onto pixels (N,H,W), e.g. ``result.s``."""
    if values.shape != result.s.shape:
        raise ShapeError(f"values must be (N,G)={tuple(result.s.shape)}, got {tuple(values.shape)}")
    n, h, w = result.labels.shape
    return values.gather(1, result.labels.flatten(1)).view(n, h, w)


# ----------------------------------------------------------------------------- internals


def _check_inputs(x: torch.Tensor, x_adv: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, ...]:
    if x.ndim != 4 or x_adv.shape != x.shape:
        raise ShapeError(f"x and x_adv must both be (N,C,H,W) of the same shape, got {tuple(x.shape)} and {tuple(x_adv.shape)}")
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
    active: torch.Tensor, variant: str, batch_size: int,
) -> torch.Tensor:
    """(N,G,M) logits of ``classes`` on ``x + δ_G`` (isolated) or ``x' − δ_G`` (leave-one-out) for every
    (image, group) pair with non-zero δ_G (0 elsewhere): one forward pass per ``batch_size`` pairs."""
    n, num_groups = active.shape
    out = torch.zeros(n, num_groups, classes.shape[1], dtype=x.dtype, device=x.device)
    inner, outer = (x_adv, x) if variant == "isolated" else (x, x_adv)
    img, grp = active.nonzero(as_tuple=True)
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


# ----------------------------------------------------------------------------- image level


@dataclass
class CamOverlap:
    """Where each group type falls relative to one CAM's top region.

    Attributes (type axis in ``TYPE_NAMES`` order):
        per_image: (N,4) share of the type's weight inside the region (NaN where the
            image has none of that type, or no partner to be compared with).
        observed: (4,) mean of ``per_image`` over the images that enter the test.
        baseline_mean: (4,) the exact null: per image, the mean share over its
            partners' CAM regions (:func:`~advspatial.regions.inference.partner_null`),
            averaged over the same images.
        baseline_std: (4,) spread of the mean excess under random within-stratum permutations.
        p_value: (4,) two-sided permutation p of the mean excess
            (:func:`~advspatial.regions.inference.excess_test`).
        comparisons: the four engine results (excess with its bootstrap CI, ratio, z, n).
    """

    per_image: torch.Tensor
    observed: torch.Tensor
    baseline_mean: torch.Tensor
    baseline_std: torch.Tensor
    p_value: torch.Tensor
    comparisons: tuple[NullComparison, ...] = ()

    def as_dict(self) -> dict[str, dict[str, object]]:
        """``{type: {observed, baseline_mean, baseline_std, p_value, n, excess, ratio, z}}`` as plain values."""
        out: dict[str, dict[str, object]] = {}
        for k, name in enumerate(TYPE_NAMES):
            row: dict[str, object] = {
                "observed": float(self.observed[k]),
                "baseline_mean": float(self.baseline_mean[k]),
                "baseline_std": float(self.baseline_std[k]),
                "p_value": float(self.p_value[k]),
            }
            if self.comparisons:
                c = self.comparisons[k]
                row.update(n=c.n, excess=c.excess.as_dict(), ratio=c.ratio, z=c.z, null=c.null)
            out[name] = row
        return out


@dataclass
class PSECamResult:
    """:func:`pse_vs_cam` output: overlap with ``CAM_t0(x)`` and with ``CAM_t(x')``."""

    true_cam: CamOverlap
    target_cam: CamOverlap
    top_fraction: float
    weight: str
    n_perm: int

    def as_dict(self) -> dict[str, object]:
        return {
            "true_cam": self.true_cam.as_dict(), "target_cam": self.target_cam.as_dict(),
            "top_fraction": self.top_fraction, "weight": self.weight, "n_perm": self.n_perm,
            "alternative": "two-sided",
        }


WEIGHTS = ("energy", "pixels")


def pse_vs_cam(
    result: PSEResult,
    cam_true: torch.Tensor,
    cam_target: torch.Tensor,
    top_fraction: float = 0.2,
    n_perm: int = 100,
    seed: int = 0,
    *,
    weight: str = "energy",
    strata: torch.Tensor | None = None,
    sample_ids: torch.Tensor | None = None,
) -> PSECamResult:
    """Share of each group type inside the top-``top_fraction`` region of two CAMs, against chance.

    ``cam_true`` is CAM_t0(x) and ``cam_target`` CAM_t(x'), both (N,H,W) ≥ 0, computed
    by the caller (``advspatial.maps``). For type k and image i the statistic is
    ``Σ_{pixels of type k in region} w / Σ_{pixels of type k} w`` with ``w`` the
    pixel energy ``Σ_c δ²`` (``weight="energy"``, default) or 1 (``"pixels"``);
    images without type k are left out of its mean.

    Top region: the shared rule :func:`advspatial.regions.top_fraction_mask`
    (strictly positive pixels only, ties at the cut broken by a random order seeded
    by (``seed``, ``sample_ids[i]``); default ids 0..N-1). Null: the type map of
    image i with the CAM region of its partners -- the other images of its stratum
    (``strata``, e.g. the true class; default all images) -- through the one
    inference engine: exact per-image null, mean excess with a bootstrap CI and a
    two-sided p from ``n_perm`` random within-stratum permutations
    (:func:`advspatial.regions.inference.excess_test`). Images alone in their
    stratum have no partner and are left out (NaN in ``per_image``).
    """
    check_range("top_fraction", top_fraction, 0.0, 1.0, low_inclusive=False)
    if n_perm < 1:
        raise ConfigError(f"n_perm={n_perm} is out of range; valid: >= 1")
    if weight not in WEIGHTS:
        raise ConfigError(f"unknown weight {weight!r}; valid: {', '.join(WEIGHTS)}")
    n, h, w = result.labels.shape
    for name, cam in (("cam_true", cam_true), ("cam_target", cam_target)):
        if tuple(cam.shape) != (n, h, w):
            raise ShapeError(f"{name} must be ({n},{h},{w}) like the group map, got {tuple(cam.shape)}")
    if strata is not None and tuple(strata.shape) != (n,):
        raise ShapeError(f"strata must be ({n},), got {tuple(strata.shape)}")
    groups = torch.zeros(n, dtype=torch.int64) if strata is None else torch.as_tensor(strata).cpu().long()
    null = "any-class" if strata is None else "same-stratum"

    type_map = group_type_map(result).flatten(1).cpu()
    base = result.pixel_energy.flatten(1).cpu().double() if weight == "energy" else torch.ones(n, h * w).double()
    weights = torch.stack([base * (type_map == k) for k in range(len(TYPE_NAMES))])  # (4,N,HW)
    overlaps = []
    for cam in (cam_true, cam_target):
        region = top_fraction_mask(cam.detach().cpu().float(), top_fraction, seed, sample_ids).mask
        pairs = _type_pairs(weights, region.flatten(1).double())
        overlaps.append(_overlap(pairs, groups, n_perm, seed, null))
    return PSECamResult(overlaps[0], overlaps[1], float(top_fraction), weight, n_perm)


def _type_pairs(weights: torch.Tensor, region: torch.Tensor) -> torch.Tensor:
    """(4,N,N) pair matrices, entry [k, j, i]: share of image i's type-k weight inside image j's region.

    The engine's convention (row = the image whose region is used, column = the
    image whose map is measured); NaN columns for images without type k.
    """
    total = weights.sum(-1)  # (4,N)
    inside = torch.einsum("jp,kip->kji", region, weights)
    return torch.where(total[:, None, :] > 0, inside / total[:, None, :].clamp_min(1e-300), torch.nan)


def _overlap(pairs: torch.Tensor, groups: torch.Tensor, n_perm: int, seed: int, null: str) -> CamOverlap:
    """Each type's observed share against its exact partner null, by :func:`excess_test`."""
    comparisons = tuple(excess_test(pairs[k], groups, n_perm, seed, statistic=name, null=null)
                        for k, name in enumerate(TYPE_NAMES))
    _, inverse, counts = torch.unique(groups, return_inverse=True, return_counts=True)
    has_partner = counts[inverse] >= 2
    diagonal = pairs.diagonal(dim1=1, dim2=2)  # (4,N)
    per_image = torch.where(has_partner[None, :], diagonal, torch.nan).T.contiguous()

    def field(name: str) -> torch.Tensor:
        return torch.tensor([float(getattr(c, name)) for c in comparisons], dtype=torch.float64)

    return CamOverlap(per_image, field("observed"), field("null_mean"), field("null_std"), field("p"), comparisons)
