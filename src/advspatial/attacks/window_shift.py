"""The exact shift that puts a window's clipped mean on a bound: the luminance part of the SSIM ball's box
projection (:meth:`~advspatial.attacks.ssim_ball.SSIMBallGeometry.project_box`).

Per window, ``mean(clip(z − λ, lo, hi))`` is continuous, non-increasing and piecewise linear in ``λ``; the ``λ``
that puts it on a goal is found at its sorted knots and interpolated, exactly and for every window at once.
"""

from __future__ import annotations

import torch


def clipped_mean_at(lam: torch.Tensor, u: torch.Tensor, v: torch.Tensor, hi_sum: torch.Tensor) -> torch.Tensor:
    """``φ(λ) = mean_i clip(z_i − λ, lo_i, hi_i)`` at the points ``lam`` (..., m), from sorted knots.

    With ``u = z − hi`` and ``v = z − lo`` (each sorted along the last axis),
    ``clip(z − λ, lo, hi) = hi − max(0, λ − u) + max(0, λ − v)``, and
    ``Σ_i max(0, λ − u_i) = k·λ − (sum of the k smallest u)`` with ``k = #{u_i ≤ λ}``.
    """
    n = u.shape[-1]
    zero = torch.zeros_like(u[..., :1])
    cum_u, cum_v = torch.cat([zero, u.cumsum(-1)], -1), torch.cat([zero, v.cumsum(-1)], -1)
    k_u = torch.searchsorted(u.contiguous(), lam.contiguous(), right=True)
    k_v = torch.searchsorted(v.contiguous(), lam.contiguous(), right=True)
    below_u = k_u * lam - cum_u.gather(-1, k_u)
    below_v = k_v * lam - cum_v.gather(-1, k_v)
    return (hi_sum.unsqueeze(-1) - below_u + below_v) / n


def mean_shift(z: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor, goal: torch.Tensor) -> torch.Tensor:
    """The λ (...,) with ``mean(clip(z − λ, lo, hi)) = goal`` per window, exactly (``lo ≤ 0 ≤ hi``).

    ``φ(λ)`` is continuous, non-increasing and linear between its 2n knots
    ``z − hi`` and ``z − lo``, from ``mean(hi)`` down to ``mean(lo)``; evaluate it
    at the sorted knots, find the segment where it crosses ``goal``, interpolate.
    ``goal`` must lie in ``[mean(lo), mean(hi)]`` (true for a goal in [−β, β]).

    >>> z, lo, hi = torch.tensor([[0.2, 0.4]]), torch.full((1, 2), -1.0), torch.full((1, 2), 1.0)
    >>> round(float(mean_shift(z, lo, hi, torch.tensor([0.1]))), 6)
    0.2
    """
    u, v = (z - hi).sort(-1).values, (z - lo).sort(-1).values
    knots = torch.cat([u, v], -1).sort(-1).values
    values = clipped_mean_at(knots, u, v, hi.sum(-1))
    last = (values >= goal.unsqueeze(-1)).sum(-1, keepdim=True).sub(1).clamp(0, knots.shape[-1] - 2)
    b0, b1 = knots.gather(-1, last).squeeze(-1), knots.gather(-1, last + 1).squeeze(-1)
    v0, v1 = values.gather(-1, last).squeeze(-1), values.gather(-1, last + 1).squeeze(-1)
    drop = v0 - v1
    safe_drop = torch.where(drop > 0, drop, torch.ones_like(drop))
    frac = torch.where(drop > 0, (v0 - goal) / safe_drop, torch.zeros_like(drop))
    return b0 + frac.clamp(0.0, 1.0) * (b1 - b0)
