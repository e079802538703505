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
* ``UNPERTURBED`` (−1) for groups where δ is zero (no energy).

Only the helpful part of each effect counts: with raw values ``s = −1, p = −3``
would satisfy ``s > κ·p`` and be called "suppression" although it *raises* the
true logit, and both inequalities could hold at once. With positive parts and
``κ >= 1`` the types are mutually exclusive.

**Whole-perturbation type.** Group energy is ``‖δ_G‖²``; the share of a type is
the energy of its groups over the total energy, and the perturbation gets the
type with the largest share (ties: lowest type code).

:func:`pse_vs_cam` then asks where each type falls relative to the top region of
``CAM_t0(x)`` and ``CAM_t(x')`` (the shared top-fraction rule), against the exact
partner null of the one inference engine (:mod:`advspatial.regions.inference`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from ..attacks.base import frozen_eval
from ..errors import ConfigError, ShapeError, check_range
from ..regions import top_fraction_mask
from ..regions.inference import NullComparison, excess_test
from ..runtime import batch_slices, model_device

UNPERTURBED = -1
SUPPRESSION = 0
PROMOTION = 1
BALANCED = 2
OPPOSING = 3
TYPE_NAMES: tuple[str, ...] = ("suppression", "promotion", "balanced", "opposing")
METHODS = ("exact", "first_order")


@dataclass
class PSEResult:
    """Per-group promotion/suppression of a batch of perturbations.

    Attributes:
        labels: (N,H,W) int64 group index of each pixel (the group geometry).
        s, p: (N,G) suppression and promotion per group (0 for unperturbed groups).
        energy: (N,G) ``‖δ_G‖²``; size: (N,G) pixels per group (0 = group absent).
        types: (N,G) int64 group type (see module docstring; −1 = unperturbed).
        shares: (N,4) energy share of each type, in ``TYPE_NAMES`` order (rows sum to 1,
            or 0 when δ is zero).
        perturbation_type: (N,) type with the largest share (−1 when δ is zero).
        pixel_energy: (N,H,W) ``Σ_c δ²`` per pixel.
        s_total, p_total: (N,) the same quantities for the whole δ (from x and x').
        true_class, target_class: (N,) t0 and t.
        kappa, method, atol: the settings used.
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

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    @property
    def num_groups(self) -> int:
        return int(self.s.shape[1])


def block_labels(height: int, width: int, block: int = 2) -> torch.Tensor:
    """(H,W) int64 labels of ``block × block`` squares, numbered row-major."""
    if block < 1:
        raise ConfigError(f"block={block} is out of range; valid: >= 1")
    per_row = -(-width // block)
    rows = torch.arange(height) // block
    cols = torch.arange(width) // block
    return rows[:, None] * per_row + cols[None, :]


def classify_groups(s: torch.Tensor, p: torch.Tensor, kappa: float = 2.0, atol: float = 0.0) -> torch.Tensor:
    """Type code per element from suppression ``s`` and promotion ``p`` (same shape).

    Uses positive parts (see module docstring): SUPPRESSION if ``s⁺ > κ·p⁺``,
    PROMOTION if ``p⁺ > κ·s⁺``, OPPOSING if both are 0, else BALANCED. Never
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
    return types


def type_shares(types: torch.Tensor, energy: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Energy share of each type per row (N,4), and the dominant type (N,) (−1 if no energy)."""
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
) -> PSEResult:
    """Suppression and promotion of every pixel group of ``δ = x_adv − x``.

    Args:
        model: classifier returning logits; run in eval mode, restored afterwards.
        x, x_adv: (N,C,H,W) clean and adversarial images.
        y: (N,) true class t0.
        target: (N,) class t; default the prediction on ``x_adv``. (When the attack
            failed, t = t0 and ``p = −s``.)
        groups: optional (N,H,W) or (H,W) non-negative integer superpixel labels;
            default ``block × block`` squares. G = largest label + 1.
        block: block side when ``groups`` is None (choice: 2).
        method: ``"exact"`` (batched forward passes) or ``"first_order"`` (gradients).
        kappa: dominance factor κ >= 1 (choice: 2). atol: |values| <= atol count as 0.
        batch_size: images per forward pass (for "exact": (image, group) pairs per pass).
    """
    if method not in METHODS:
        raise ConfigError(f"unknown method {method!r}; valid: {', '.join(METHODS)}")
    check_range("kappa", kappa, 1.0, None)
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
        t = z_adv.argmax(1) if target is None else _check_target(target, n, z_clean.shape[1]).to(device)
        if method == "exact":
            s, p = _exact(model, x, x_adv, y, t, labels, energy > 0, z_clean, batch_size)
        else:
            s, p = _first_order(model, x, x_adv, y, t, flat, num_groups, batch_size)

    types = classify_groups(s, p, kappa, atol)
    types[energy <= 0] = UNPERTURBED
    shares, dominant = type_shares(types, energy)
    return PSEResult(
        labels=labels, s=s, p=p, energy=energy, size=size, types=types, shares=shares,
        perturbation_type=dominant, pixel_energy=pixel_energy,
        s_total=z_clean.gather(1, y[:, None]).squeeze(1) - z_adv.gather(1, y[:, None]).squeeze(1),
        p_total=z_adv.gather(1, t[:, None]).squeeze(1) - z_clean.gather(1, t[:, None]).squeeze(1),
        true_class=y, target_class=t, kappa=float(kappa), method=method, atol=float(atol),
    )


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


def _exact(
    model: nn.Module, x: torch.Tensor, x_adv: torch.Tensor, y: torch.Tensor, t: torch.Tensor,
    labels: torch.Tensor, active: torch.Tensor, z_clean: torch.Tensor, batch_size: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Forward passes on ``x + δ_G`` for every (image, group) pair with non-zero δ_G."""
    n, num_groups = active.shape
    s = torch.zeros(n, num_groups, dtype=z_clean.dtype, device=x.device)
    p = torch.zeros_like(s)
    img, grp = active.nonzero(as_tuple=True)
    with torch.no_grad():
        for sl in batch_slices(int(img.numel()), batch_size):
            i, g = img[sl], grp[sl]
            inside = (labels[i] == g[:, None, None])[:, None]
            z = model(torch.where(inside, x_adv[i], x[i]))
            s[i, g] = z_clean[i, y[i]] - z[torch.arange(len(i), device=x.device), y[i]]
            p[i, g] = z[torch.arange(len(i), device=x.device), t[i]] - z_clean[i, t[i]]
    return s, p


def _first_order(
    model: nn.Module, x: torch.Tensor, x_adv: torch.Tensor, y: torch.Tensor, t: torch.Tensor,
    flat: torch.Tensor, num_groups: int, batch_size: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``s_G ≈ −∇z_t0(x)·δ_G``, ``p_G ≈ ∇z_t(x)·δ_G``, summed per group."""
    n = x.shape[0]
    s = torch.zeros(n, num_groups, dtype=x.dtype, device=x.device)
    p = torch.zeros_like(s)
    for sl in batch_slices(n, batch_size):
        xb = x[sl].detach().requires_grad_(True)
        with torch.enable_grad():
            z = model(xb)
            g0, = torch.autograd.grad(z.gather(1, y[sl, None]).sum(), xb, retain_graph=True)
            gt, = torch.autograd.grad(z.gather(1, t[sl, None]).sum(), xb)
        delta = (x_adv[sl] - x[sl]).detach()
        s[sl].scatter_add_(1, flat[sl], -(g0 * delta).sum(1).flatten(1))
        p[sl].scatter_add_(1, flat[sl], (gt * delta).sum(1).flatten(1))
    return s, p


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
