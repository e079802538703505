"""The control of the promotion–suppression typing: the same per-group energy with random signs.

The typing (:mod:`advspatial.analysis.pse_types`) says which groups of a
perturbation δ are suppression- or promotion-dominated. That a share of δ's
energy lands in a type says nothing by itself: any perturbation of that size
and layout has some groups that happen to lower the true logit. This module
gives the typing its null.

**Energy share of a type (the statistic).** A group's energy is
``E_G = ‖δ_G‖² = Σ_{pixels of G} Σ_c δ²``; the perturbation's energy is
``E = Σ_G E_G`` over *every* perturbed group, untyped ones included. The energy
share of a type is ``Σ_{G of that type} E_G / E`` per image
(:func:`energy_shares`); the untyped share is the same for the groups left
under the noise floor, so the five shares (four types and untyped) sum to 1.
This differs from ``PSEResult.shares``, whose denominator is the *typed* energy
only: there a perturbation that is 90% untyped can still look 100%
suppression-dominated.

**Control (choice: random signs, not random placement).** Each element of δ
(pixel × channel) gets an independent random sign: ``δ̃ = σ ⊙ δ`` with
``σ ∈ {−1, +1}``. ``|δ̃| = |δ|`` element by element, so every group keeps
exactly its energy and its place; only the direction is destroyed. The
comparison therefore asks whether the typing comes from the attack's
*direction* (what it does to the logits), with the energy layout held fixed.
Random placement (moving the groups' energies to other positions) would test
*where* the energy is instead, which is the question of the image-level CAM
test, not of the typing. The control image ``x + δ̃`` is not clipped to [0, 1]:
clipping would change the per-group energy the control must keep.

The control is typed with the *observed* perturbation's absolute noise floor
(``noise_floor · (|s| + |p|)`` of the attack): a group counts as typed by the
same size of logit change in both, so a direction-less perturbation whose groups
move the logits too little to clear the floor stays untyped, as it should. Its
shares are averaged over ``draws`` sign draws, each keyed by (seed, draw, global
sample id), so an image's control does not depend on its batch.
"""

from __future__ import annotations

import torch
from torch import nn

from ...analysis.pse import block_labels, promotion_suppression
from ...analysis.pse_types import TYPE_NAMES, UNPERTURBED, UNTYPED, PSEResult, typed_groups
from ...errors import ConfigError, ShapeError, check_range
from ...runtime import sample_generator, sample_ids_or_range, stream_seed

#: the shares of :func:`energy_shares`, in column order: the four types, then the untyped groups
SHARE_NAMES: tuple[str, ...] = (*TYPE_NAMES, "untyped")

#: the random stream of the sign draws (independent of every other per-sample stream of a run)
SIGN_STREAM = 3501

CONTROL = "random signs"


def energy_shares(types: torch.Tensor, energy: torch.Tensor) -> torch.Tensor:
    """(N,5) share of each image's perturbation energy in groups of each type, then in untyped groups.

    The denominator is the energy of every perturbed group (module docstring), so a row sums to 1, or is all 0
    when the image has no perturbation.
    """
    if types.shape != energy.shape:
        raise ShapeError(f"types and energy must have the same shape, got {tuple(types.shape)} and "
                         f"{tuple(energy.shape)}")
    column = torch.where(types == UNTYPED, torch.full_like(types, len(TYPE_NAMES)), types)
    perturbed = types != UNPERTURBED
    weights = torch.where(perturbed, energy, torch.zeros_like(energy))
    per_share = torch.zeros(types.shape[0], len(SHARE_NAMES), dtype=energy.dtype, device=energy.device)
    per_share.scatter_add_(1, column.clamp(min=0), weights)
    total = per_share.sum(1, keepdim=True)
    return torch.where(total > 0, per_share / total.clamp_min(torch.finfo(energy.dtype).tiny),
                       torch.zeros_like(per_share))


def untyped_count_share(types: torch.Tensor) -> torch.Tensor:
    """(N,) share of the perturbed groups left untyped by the noise floor (NaN for an image with none)."""
    perturbed = (types != UNPERTURBED).sum(1).double()
    untyped = (types == UNTYPED).sum(1).double()
    return torch.where(perturbed > 0, untyped / perturbed.clamp_min(1), torch.full_like(untyped, float("nan")))


def random_signs(delta: torch.Tensor, sample_ids: torch.Tensor | None, seed: int, draw: int = 0) -> torch.Tensor:
    """``δ`` with an independent random sign on every element, row i drawn from (seed, draw, ``sample_ids[i]``)."""
    check_range("draw", draw, 0)
    ids = sample_ids_or_range(delta.shape[0], sample_ids)
    stream = stream_seed(seed, SIGN_STREAM, draw)
    signs = [torch.randint(0, 2, tuple(delta.shape[1:]), generator=sample_generator(stream, int(i))) * 2 - 1
             for i in ids.tolist()]
    if not signs:
        return delta.clone()
    return delta * torch.stack(signs).to(device=delta.device, dtype=delta.dtype)


def control_shares(model: nn.Module, x: torch.Tensor, x_adv: torch.Tensor, observed: PSEResult,
                   sample_ids: torch.Tensor | None, seed: int, draws: int = 3, batch_size: int = 256,
                   block: int | None = None) -> torch.Tensor:
    """(N,5) :func:`energy_shares` of the random-sign control of ``δ = x_adv − x``, averaged over ``draws`` draws.

    Each draw is measured like ``observed`` (its groups, method, variant, κ, atol and pre-specified target
    class) and typed with ``observed``'s absolute noise floor (module docstring). ``block``: ``observed``'s groups
    are the ``block × block`` squares (:func:`~advspatial.analysis.pse.block_labels`), so the control's pairs go
    by incremental evaluation on a CPU as the observed ones did (:mod:`~advspatial.analysis.pse_incremental`;
    logits equal to full passes' to about 1e-5); None: ``observed.labels`` as given, by full forward passes.
    """
    check_range("draws", draws, 1)
    if x.shape != x_adv.shape or x.shape[0] != len(observed):
        raise ShapeError(f"x and x_adv must be ({len(observed)},C,H,W) like the observed result, got "
                         f"{tuple(x.shape)} and {tuple(x_adv.shape)}")
    floor = observed.floor if observed.floor is not None else torch.zeros(len(observed))
    groups = observed.labels if block is None else None
    if block is not None and len(observed) and not torch.equal(observed.labels[0].cpu(),
                                                              block_labels(x.shape[2], x.shape[3], block)):
        raise ConfigError(f"block={block} does not give the observed result's groups")
    delta = x_adv - x
    total = torch.zeros(len(observed), len(SHARE_NAMES), dtype=torch.float64)
    for draw in range(draws):
        control = promotion_suppression(
            model, x, x + random_signs(delta, sample_ids, seed, draw), observed.true_class, observed.target_class,
            groups=groups, block=block or 2, method=observed.method, kappa=observed.kappa, atol=observed.atol,
            batch_size=batch_size, variant=observed.variant)
        types = typed_groups(control.s, control.p, control.energy, observed.kappa, observed.atol,
                             floor.to(control.s.device, control.s.dtype))
        total += energy_shares(types, control.energy).double().cpu()
    return total / draws
