"""The group types of the promotion–suppression effect (METHODS.md §5), and the result that carries them.

:func:`advspatial.analysis.pse.promotion_suppression` measures the suppression
``s_G`` and promotion ``p_G`` of every pixel group G; this module owns what is
made of those numbers: the type of each group, the type of the whole
perturbation, and :class:`PSEResult` with its selection, concatenation and
re-typing (another κ or noise floor, the secondary target).

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
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from typing import Any

import torch

from ..errors import ConfigError, ShapeError, check_range

UNTYPED = -2
UNPERTURBED = -1
SUPPRESSION = 0
PROMOTION = 1
BALANCED = 2
OPPOSING = 3
TYPE_NAMES: tuple[str, ...] = ("suppression", "promotion", "balanced", "opposing")


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
    shares = torch.where(total > 0, per_type / total.clamp_min(torch.finfo(energy.dtype).tiny),
                         torch.zeros_like(per_type))
    dominant = torch.where(total.squeeze(1) > 0, shares.argmax(1),
                           torch.full_like(total.squeeze(1), UNPERTURBED, dtype=torch.int64))
    return shares, dominant


def typed_groups(s: torch.Tensor, p: torch.Tensor, energy: torch.Tensor, kappa: float, atol: float,
                 floor: torch.Tensor) -> torch.Tensor:
    """(N,G) group types with the per-image ``floor`` (N,), the groups without energy marked UNPERTURBED."""
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
    types = typed_groups(result.s, result.p, result.energy, kappa, result.atol, floor)
    shares, dominant = type_shares(types, result.energy)
    values = pse_to_dict(result)
    values.update(types=types, shares=shares, perturbation_type=dominant, kappa=kappa, noise_floor=noise_floor,
                  floor=floor)
    return PSEResult(**values)


def secondary_view(result: PSEResult) -> PSEResult:
    """The result typed towards ``secondary_class`` (e.g. the post-hoc argmax of x'): a labelled secondary view."""
    if result.p_secondary is None or result.secondary_class is None or result.p_total_secondary is None:
        raise ConfigError("this result has no secondary target; pass secondary_target to promotion_suppression")
    values = pse_to_dict(result)
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


def pse_to_dict(result: PSEResult) -> dict[str, Any]:
    """The fields of a :class:`PSEResult` as a dict (what a run directory caches; the start of every variant)."""
    return {f.name: getattr(result, f.name) for f in fields(result)}


def select_pse(result: PSEResult, index: torch.Tensor) -> PSEResult:
    """The images ``index`` of a result (every per-image tensor indexed along dim 0)."""
    values = pse_to_dict(result)
    for key, value in values.items():
        if isinstance(value, torch.Tensor):
            values[key] = value[index.to(value.device)]
    return PSEResult(**values)


def cat_pse(results: Sequence[PSEResult]) -> PSEResult:
    """Concatenate the per-image tensors of results of one setting (same group count)."""
    if not results:
        raise ConfigError("cat_pse needs at least one result")
    values = pse_to_dict(results[0])
    for key, value in values.items():
        if isinstance(value, torch.Tensor):
            values[key] = torch.cat([getattr(r, key) for r in results])
    return PSEResult(**values)
