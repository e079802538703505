"""The controls of the perceptual experiment (issue 16; METHODS §3).

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
* **Fooling rate vs SSIM curves** and the **per-image minimal distortion**: each
  attack at several budgets on the calibration images (SSIM-ball: ``alpha``;
  PGD: ``eps``); per image, the highest SSIM at which the attack fools it.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from ...analysis.ssim import ssim
from ...attacks.base import per_sample_noise
from ...attacks.ssim_ball import SSIMBallAttack
from ...regions.controls import stream_seed

#: random stream of the geometry null's directions
GEOMETRY_STREAM = 0x6E0
#: bisection steps of the per-image scale (SSIM matched to ~2^-30 of the full-slack distance)
SCALE_STEPS = 30


def full_slack_direction(attack_name: str, attack: object, x: torch.Tensor, sample_ids: torch.Tensor,
                         seed: int) -> torch.Tensor:
    """A random feasible perturbation at the edge of the attack's set, (N,C,H,W), seeded per sample id."""
    noise = per_sample_noise(x.shape, stream_seed(seed, GEOMETRY_STREAM), sample_ids, kind="normal",
                             dtype=torch.float64)
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
        value = ssim_fn(x, x + mid.to(x.dtype).view(-1, 1, 1, 1) * direction).double().cpu()
        too_similar = value > target  # not distorted enough yet: scale up
        low = torch.where(too_similar, mid, low)
        high = torch.where(too_similar, high, mid)
    return high


def geometry_null(attack_name: str, attack: object, x: torch.Tensor, target_ssim: torch.Tensor,
                  sample_ids: torch.Tensor, seed: int) -> torch.Tensor:
    """The geometry null's images: a random feasible perturbation of the attack's set with the attack's SSIM."""
    direction = full_slack_direction(attack_name, attack, x, sample_ids, seed)
    scale = matched_scale(x, direction, target_ssim).to(x.dtype).view(-1, 1, 1, 1)
    return (x + scale * direction).clamp(0, 1)


def minimal_distortion(fooled: torch.Tensor, ssims: torch.Tensor) -> torch.Tensor:
    """Per image the highest SSIM among the budgets that fool it, NaN if none does.

    ``fooled`` and ``ssims`` are (budgets, N): one row per point of an attack's curve.
    """
    masked = torch.where(fooled, ssims.double(), torch.full_like(ssims, float("nan"), dtype=torch.float64))
    best = torch.nan_to_num(masked, nan=-float("inf")).amax(0)
    return torch.where(torch.isinf(best), torch.full_like(best, float("nan")), best)
