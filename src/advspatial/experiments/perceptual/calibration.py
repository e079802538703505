"""The PGD budget at matched mean SSIM (METHODS §3).

The calibration images are the first ``calibration_n`` of the ``n`` images. The *target* is the SSIM-ball
attack's mean SSIM over all calibration images (every image given to the attack, fooled or not, correctly
classified or not). For a budget ``eps`` let ``s(eps)`` be the mean SSIM of PGD(eps) over the same images;
``s`` decreases with ``eps``. :func:`bisect_eps` brackets the root of ``s(eps) = target`` in ``(0, eps_max]``
and halves the bracket up to ``calibration_iters`` times, stopping as soon as ``|s(eps) − target| <=
ssim_tolerance``; the chosen budget is the evaluated one closest to the target. PGD's random start is seeded
per image, so ``s`` is a deterministic function and every evaluation is a cached stage
(``calibration/eps-*/batch-*``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from ...errors import check_range
from ...progress import progress_bar
from ...runtime import batch_slices
from .stages import Context, attack_stage, pgd_attack


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


def calibration_slices(ctx: Context) -> list[slice]:
    return list(batch_slices(min(ctx.config.calibration_n, len(ctx.data)), ctx.config.batch_size))


def pgd_mean_ssim(ctx: Context, eps: float) -> float:
    """PGD(eps)'s mean SSIM over the calibration images (each batch a cached stage)."""
    cfg = ctx.config
    attack = pgd_attack(ctx.model, eps, cfg.steps, cfg.seed, cfg.loss)

    def batch_ssim(b: int, sl: slice) -> torch.Tensor:
        return attack_stage(ctx, f"calibration/eps-{eps:.8f}/batch-{b:05d}", attack, sl)["ssim"]

    values = ctx.each_batch(batch_ssim, slices=calibration_slices(ctx), desc=f"pgd eps {eps:.4g} (calibration)")
    return float(torch.cat(values).double().mean())


def calibrate(ctx: Context, ssim_ball_values: torch.Tensor) -> Calibration:
    """The PGD budget whose mean SSIM on the calibration images matches the SSIM-ball attack's."""
    cfg = ctx.config
    n_cal = min(cfg.calibration_n, len(ctx.data))
    target = float(ssim_ball_values[:n_cal].double().mean())
    with progress_bar(total=cfg.calibration_iters + 1, desc="calibrating the PGD budget", disable=not cfg.progress,
              unit="run") as bar:

        def evaluate(eps: float) -> float:
            bar.update(1)
            return pgd_mean_ssim(ctx, eps)

        return bisect_eps(evaluate, target, cfg.eps_max, cfg.calibration_iters, cfg.ssim_tolerance)
