"""Comparing two attacks at matched SSIM (METHODS §3), the parts that need no experiment: the budget at
matched mean SSIM, the geometry null, the per-image minimal distortion, and the 1 − SSIM map.

* **Budget at matched mean SSIM.** For a budget ``eps`` let ``s(eps)`` be an attack's mean SSIM over some
  images; ``s`` decreases with ``eps``. :func:`bisect_eps` brackets the root of ``s(eps) = target`` in
  ``(0, eps_max]`` and halves the bracket, stopping as soon as ``|s(eps) − target| <= tolerance``; the chosen
  budget is the evaluated one closest to the target (:class:`Calibration`).
* **Geometry null.** Where a perturbation lowers SSIM depends on the feasible
  set as much as on the attacker: an SSIM ball is larger on textured windows
  (often the object), an L-inf ball is the same everywhere. The null is a
  *random feasible perturbation* of the same set with the same per-image SSIM:
  a random direction in every window (seeded per sample id) taken to the edge
  of the set — :meth:`~advspatial.attacks.ssim_ball.SSIMBallGeometry.project_box`
  then :meth:`~advspatial.attacks.ssim_ball.SSIMBallGeometry.make_feasible` for
  the SSIM ball, random signs times eps for L-inf (a sign the box would clip
  flipped) — then scaled toward 0 by one
  factor per image (the sets are convex and hold 0, so every scaling stays
  feasible) until its SSIM equals the attack's. Its 1 − SSIM map against the CAM
  is the baseline of "the attack lowers SSIM where the model looks".
* **Minimal distortion**: per image, the highest SSIM among the budgets of an attack that fool it
  (:func:`minimal_distortion`). An image already fooled at the curve's least distorting budget is capped by the
  grid (:func:`capped_by_curve`): its true value lies between the curve's and 1.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from ...analysis.ssim import ssim, ssim_map
from ...attacks.ssim_ball import SSIMBallAttack
from ...errors import check_range
from ...runtime import per_sample_noise, stream_seed


@dataclass
class Calibration:
    """The PGD budget found at matched mean SSIM.

    Attributes:
        target: the mean SSIM to match (SSIM-ball attack on the calibration images).
        eps: the chosen budget (the evaluated one whose mean SSIM is closest to ``target``).
        mean_ssim: PGD's mean SSIM at ``eps`` on the calibration images.
        matched: ``|mean_ssim − target| <= tolerance``.
        reachable: False when even ``eps_max`` keeps the mean SSIM above the target.
        history: every evaluation ``(eps, mean SSIM)`` in order.
    """

    target: float
    eps: float
    mean_ssim: float
    matched: bool
    reachable: bool
    tolerance: float
    history: list[tuple[float, float]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {"target": self.target, "eps": self.eps, "mean_ssim": self.mean_ssim, "matched": self.matched,
                "reachable": self.reachable, "tolerance": self.tolerance,
                "history": [list(h) for h in self.history]}


def bisect_eps(
    mean_ssim_at: Callable[[float], float], target: float, eps_max: float, iters: int = 8, tolerance: float = 0.005,
) -> Calibration:
    """Find ``eps`` in ``(0, eps_max]`` with ``mean_ssim_at(eps) ≈ target``, for a function decreasing in eps.

    ``eps_max`` is evaluated first: if its mean SSIM is still above
    ``target + tolerance`` the target cannot be reached, and ``eps_max`` is
    returned with ``reachable=False``. Otherwise the bracket ``[0, eps_max]``
    (the SSIM at 0 is 1) is halved up to ``iters`` times, stopping when an
    evaluation lies within ``tolerance``. Returns the evaluated budget closest
    to the target (the smaller one on ties).
    """
    check_range("eps_max", eps_max, 0.0, None, low_inclusive=False)
    check_range("iters", iters, 0)
    history = [(float(eps_max), float(mean_ssim_at(eps_max)))]
    reachable = history[0][1] <= target + tolerance
    low, high = 0.0, float(eps_max)
    if reachable:
        for _ in range(iters):
            if abs(history[-1][1] - target) <= tolerance:
                break
            mid = (low + high) / 2
            value = float(mean_ssim_at(mid))
            history.append((mid, value))
            if value > target:  # not enough distortion yet: a larger budget
                low = mid
            else:
                high = mid
    eps, value = min(history, key=lambda h: (abs(h[1] - target), h[0]))
    return Calibration(float(target), eps, value, abs(value - target) <= tolerance, reachable, float(tolerance),
                       history)


#: random stream of the geometry null's directions
GEOMETRY_STREAM = 0x6E0
#: bisection steps of the per-image scale (SSIM matched to ~2^-30 of the full-slack distance)
SCALE_STEPS = 30


def full_slack_direction(attack_name: str, attack: object, x: torch.Tensor, sample_ids: torch.Tensor,
                         seed: int) -> torch.Tensor:
    """A random feasible perturbation at the edge of the attack's set, (N,C,H,W), seeded per sample id."""
    noise = per_sample_noise(x.shape, stream_seed(seed, GEOMETRY_STREAM), sample_ids, kind="normal",
                             device=x.device, dtype=torch.float64)
    if attack_name == "ssim-ball":
        assert isinstance(attack, SSIMBallAttack)
        ball = attack.constraint(x.double())
        big = noise * 10.0  # far outside: every window ends on the edge of its ball, luminance interval or box
        return ball.make_feasible(ball.project_box(big)).to(x.dtype)
    eps = float(getattr(attack, "eps"))  # noqa: B009  (attack is typed object: any L-inf attack, eps untyped)
    signs = noise.sign().to(x.dtype)
    # a sign the box would clip is flipped, so every pixel moves by eps (as PGD's do): the edge of the set
    signs = torch.where((x + eps * signs > 1) | (x + eps * signs < 0), -signs, signs)
    return (x + eps * signs).clamp(0, 1) - x


def matched_scale(x: torch.Tensor, direction: torch.Tensor, target_ssim: torch.Tensor,
                  ssim_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] = ssim) -> torch.Tensor:
    """Per image the factor ``t`` in [0, 1] with ``ssim(x, x + t·direction) ≈ target`` (bisection; SSIM falls
    as t grows). An image the full direction cannot bring down to its target gets ``t = 1``."""
    low = torch.zeros(len(x), dtype=torch.float64)
    high = torch.ones(len(x), dtype=torch.float64)
    target = target_ssim.double().cpu()
    for _ in range(SCALE_STEPS):
        mid = (low + high) / 2
        value = ssim_fn(x, x + mid.to(x).view(-1, 1, 1, 1) * direction).double().cpu()
        too_similar = value > target  # not distorted enough yet: scale up
        low = torch.where(too_similar, mid, low)
        high = torch.where(too_similar, high, mid)
    return high


def geometry_null(attack_name: str, attack: object, x: torch.Tensor, target_ssim: torch.Tensor,
                  sample_ids: torch.Tensor, seed: int) -> torch.Tensor:
    """The geometry null's images: a random feasible perturbation of the attack's set with the attack's SSIM."""
    direction = full_slack_direction(attack_name, attack, x, sample_ids, seed)
    scale = matched_scale(x, direction, target_ssim).to(x).view(-1, 1, 1, 1)
    return (x + scale * direction).clamp(0, 1)


def minimal_distortion(fooled: torch.Tensor, ssims: torch.Tensor) -> torch.Tensor:
    """Per image the highest SSIM among the budgets that fool it, NaN if none does.

    ``fooled`` and ``ssims`` are (budgets, N): one row per point of an attack's curve.
    """
    masked = torch.where(fooled, ssims.double(), torch.full_like(ssims, float("nan"), dtype=torch.float64))
    best = torch.nan_to_num(masked, nan=-float("inf")).amax(0)
    return torch.where(torch.isinf(best), torch.full_like(best, float("nan")), best)


def capped_by_curve(fooled: torch.Tensor, ssims: torch.Tensor) -> torch.Tensor:
    """Per image whether the curve's least distorting budget (the row of highest mean SSIM) already fools it: its
    highest fooling SSIM is then only a lower bound, set by the grid of budgets rather than by the attack.

    ``fooled`` and ``ssims`` are (budgets, N), as for :func:`minimal_distortion`.

    >>> capped_by_curve(torch.tensor([[True, True], [True, False]]), torch.tensor([[0.9, 0.9], [0.99, 0.98]]))
    tensor([ True, False])
    """
    return fooled[int(ssims.double().mean(1).argmax())].clone()


def ssim_distortion(x: torch.Tensor, x_adv: torch.Tensor) -> torch.Tensor:
    """The SSIM map ``1 − SSIM_local(x, x')``, (N,H,W) >= 0 (0 where nothing changed; channels averaged)."""
    return (1.0 - ssim_map(x, x_adv)).clamp_min(0.0)
