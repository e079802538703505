"""Perceptual SSIM-ball attack (METHODS.md §3): a margin attack inside a per-window SSIM constraint.

The constraint set. The image is cut into non-overlapping ``w x w`` windows
(``window="auto"``: 4 on inputs up to 28 pixels, 8 on larger ones), one per
channel, each with ``n = w*w`` pixels. For a window ``b`` let ``x̃_b`` be the
clean window minus its mean and ``δ̃_b`` the perturbation minus its mean, so the
adversarial window minus its mean is ``ỹ_b = x̃_b + δ̃_b``. SSIM's
contrast-structure term of the window, written with sums instead of averages, is

    S_b = (2 x̃_bᵀỹ_b + C) / (‖x̃_b‖² + ‖ỹ_b‖² + C),   C = (n-1)·C2  (sample covariance)

(``C = n·C2`` with ``sample_covariance=False``), ``C2 = (0.03·1)²``. For
``0 < α < 1`` and ``C > 0`` the denominator is positive, so ``S_b ≥ α`` is
``2x̃ᵀ(x̃+d) + C ≥ α(2‖x̃‖² + 2x̃ᵀd + ‖d‖² + C)`` with ``d = δ̃_b``, i.e.
``‖d‖² − 2((1−α)/α) x̃ᵀd ≤ 2((1−α)/α)‖x̃‖² + (1−α)C/α``; completing the square
(``(1−α)²/α² + 2(1−α)/α = (1−α²)/α²``) gives the Euclidean ball

    ‖δ̃_b − c_b‖² ≤ r_b²,   c_b = ((1−α)/α)·x̃_b,   r_b² = ((1−α²)/α²)‖x̃_b‖² + (1−α)C/α,

as METHODS states. ``r_b² − ‖c_b‖² = 2((1−α)/α)‖x̃_b‖² + (1−α)C/α > 0``, so
``δ̃_b = 0`` lies strictly inside.

Luminance (``luminance="term"``, the default) is kept by SSIM's own luminance term
``l_b = (2μ_xμ_y + C1)/(μ_x² + μ_y² + C1) ≥ α_l`` (``C1 = (0.01·1)²``, window
means μ). For fixed ``μ_x`` it reads ``α_l μ_y² − 2μ_x μ_y + α_l μ_x² − (1−α_l)C1 ≤ 0``,
a quadratic with a positive leading coefficient, so ``μ_y`` lies in the interval
between its roots ``(μ_x ± sqrt(μ_x²(1−α_l²) + α_l(1−α_l)C1))/α_l``, which holds
``μ_x``: the mean change ``mean(δ_b)`` lies in ``[lo_b, hi_b] ∋ 0``, and every
window keeps ``SSIM_b = l_b·S_b ≥ α_l·α``. On a black window (``μ_x = 0``) the
interval is ``±sqrt((1−α_l)C1/α_l)``, about ±0.001 at α_l = 0.99, where the absolute
bound ``|mean(δ_b)| ≤ β`` (``luminance="absolute"``, the older option) let SSIM's
luminance term fall to ~0.04.
Pixels in a strip at the bottom/right that no full window covers (when the
size is not a multiple of ``w``) are left unperturbed.

Two convex sets, each with an exact Euclidean projection, make up the feasible set:

* A, the balls: ``‖δ̃_b − c_b‖ ≤ r_b`` on the mean-free part of every window
  (projection: ``δ̃ ← c + (δ̃−c)·min(1, r/‖δ̃−c‖)``, the window mean kept);
* B, the box ``x+δ ∈ [0,1]`` (with ``δ = 0`` where the mask is 0 and on the
  uncovered strip) intersected with the luminance slabs ``lo_b ≤ mean(δ_b) ≤ hi_b``.
  Its projection is per window ``δ = clip(z − λ, lower, upper)`` with the scalar
  ``λ`` (0 when the clipped window already meets the bound) that puts the mean
  on the violated bound (KKT conditions of the projection); the clipped mean is
  piecewise linear and monotone in ``λ``, so ``λ`` is found exactly from its
  sorted knots.

(The ball and the luminance bound act on orthogonal components — mean-free
part and mean — so they commute, but the box couples them; grouping the
luminance with the box is what makes the final scaling below keep it.)

The solver. From ``δ = 0``, each step ascends the attacker's loss (default: the logit margin, untargeted
``max_{j≠y} z_j − z_y``, targeted ``z_t − max_{j≠t} z_j``) along the masked gradient normalized per window: every
window moves along its own gradient direction by ``step_size`` times its size ``r_b + max(|lo_b|, hi_b)·sqrt(n)`` (so
the step is scale-free: textured windows, with large balls, take proportionally longer steps than flat ones; a window
whose masked gradient is 0 does not move; a fractional mask reweights pixels *within* a window, while a window-wide
constant factor cancels in the normalization). Then ``rounds`` rounds of Dykstra's alternating projections between A
and B (which tend to the exact Euclidean projection onto A ∩ B, unlike plain alternation, which only tends to *some*
point of it). After a finite number of rounds the iterate lies in B but may lie slightly outside a ball;
:meth:`SSIMBallGeometry.make_feasible` then scales the perturbation of each such window toward 0 by the largest factor
``t ∈ (0,1)`` that puts it on its sphere, in closed form (a quadratic in ``t``). Scaling toward 0 keeps B (a convex
set containing 0), and ``t > 0`` because 0 is strictly inside the ball. Every iterate, and the returned image,
therefore satisfies every window constraint and the box; the constraint machinery runs in float64, so the only error
is the final rounding to the images' dtype (~1e-7, far below 1e-5). The attack returns the iterate with the highest
loss seen.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError, ShapeError, check_range
from ..host_syncs import on_device_path
from ..progress import steps
from .base import Attack, register_attack
from .gradients import attack_loss, check_loss
from .window_shift import mean_shift

__all__ = ["SSIMBallGeometry", "SSIMBallAttack", "auto_window", "from_windows", "luminance_interval",
           "window_contrast_structure", "window_ssim", "to_windows"]

NORM_GUARD = 1e-12
C1_K1 = 0.01  # SSIM's luminance constant C1 = (K1·L)², L = 1
LUMINANCE_MODES = ("term", "absolute")
FEASIBILITY_SHRINK = 1e-6  # relative margin kept inside a ball after the final scaling
LUMINANCE_TOL = 1e-9  # window means within beta + this count as feasible (float64 rounding)


def auto_window(height: int, width: int) -> int:
    """METHODS' choice: 4x4 windows on inputs up to 28 pixels a side, 8x8 on larger ones."""
    return 4 if max(height, width) <= 28 else 8


def resolve_window(window: int | str, height: int, width: int) -> int:
    """The window side for an image of ``height x width`` (``"auto"`` or a positive int)."""
    size = auto_window(height, width) if window == "auto" else window
    if not isinstance(size, int) or isinstance(size, bool) or size < 2:
        raise ConfigError(f"window={window!r} is invalid; valid: 'auto' or an integer >= 2")
    if size > min(height, width):
        raise ShapeError(f"window={size} is larger than the image ({height}x{width}); valid: <= {min(height, width)}")
    return size


def to_windows(t: torch.Tensor, window: int) -> torch.Tensor:
    """(N,C,H,W) -> (N,C,B,n): the non-overlapping ``window``-side blocks, row-major; the strip beyond is dropped."""
    n, c, h, w = t.shape
    bh, bw = h // window, w // window
    blocks = t[:, :, : bh * window, : bw * window].reshape(n, c, bh, window, bw, window)
    return blocks.permute(0, 1, 2, 4, 3, 5).reshape(n, c, bh * bw, window * window)


def from_windows(blocks: torch.Tensor, window: int, height: int, width: int) -> torch.Tensor:
    """Inverse of :func:`to_windows`: (N,C,B,n) -> (N,C,H,W), zeros in the uncovered strip."""
    n, c = blocks.shape[:2]
    bh, bw = height // window, width // window
    t = blocks.reshape(n, c, bh, bw, window, window).permute(0, 1, 2, 4, 3, 5).reshape(n, c, bh * window, bw * window)
    return F.pad(t, (0, width - bw * window, 0, height - bh * window))


def structure_constant(window: int, k2: float = 0.03, sample_covariance: bool = True, data_range: float = 1.0) -> float:
    """``C = (n-1)·C2`` (sample covariance) or ``n·C2`` (population covariance).

    ``C2 = (k2·data_range)²`` and ``n = window²``.
    """
    n = window * window
    return (n - 1 if sample_covariance else n) * (k2 * data_range) ** 2


def window_contrast_structure(
    x: torch.Tensor, x_adv: torch.Tensor, window: int | str = "auto", k2: float = 0.03,
    sample_covariance: bool = True,
) -> torch.Tensor:
    """SSIM's contrast-structure term ``S_b`` of every non-overlapping window, (N,C,B).

    ``S_b = (2 x̃ᵀỹ + C) / (‖x̃‖² + ‖ỹ‖² + C)`` with mean-subtracted windows
    ``x̃``, ``ỹ`` of ``x`` and ``x_adv`` and ``C`` from :func:`structure_constant`.
    """
    size = resolve_window(window, *x.shape[2:])
    xb, yb = to_windows(x, size), to_windows(x_adv, size)
    xt = xb - xb.mean(-1, keepdim=True)
    yt = yb - yb.mean(-1, keepdim=True)
    c = structure_constant(size, k2, sample_covariance)
    return (2 * (xt * yt).sum(-1) + c) / (xt.pow(2).sum(-1) + yt.pow(2).sum(-1) + c)


@dataclass
class SSIMBallGeometry:
    """The feasible set of perturbations δ around clean images ``x``: per-window balls, luminance, box, mask.

    Build with :meth:`around`. Window quantities have shape (N,C,B) or (N,C,B,n).

    Attributes:
        window: window side.
        mean_lo, mean_hi: bounds on each window's mean change, (N,C,B), ``mean_lo ≤ 0 ≤ mean_hi``.
        center: ``c_b = ((1-α)/α)·x̃_b``, (N,C,B,n).
        radius2: ``r_b²``, (N,C,B).
        lower, upper: the box on δ, (N,C,H,W): ``-x``/``1-x``, both 0 where δ must be 0.
    """

    window: int
    mean_lo: torch.Tensor
    mean_hi: torch.Tensor
    center: torch.Tensor
    radius2: torch.Tensor
    lower: torch.Tensor
    upper: torch.Tensor

    @classmethod
    def around(
        cls, x: torch.Tensor, alpha: float = 0.9, beta: float = 0.05, window: int | str = "auto",
        mask: torch.Tensor | None = None, k2: float = 0.03, sample_covariance: bool = True,
        luminance: str = "term", alpha_l: float = 0.99,
    ) -> SSIMBallGeometry:
        """The set for images ``x`` (N,C,H,W) in [0,1]; ``mask`` (broadcast to x): δ = 0 where it is 0.

        ``luminance="term"``: every window keeps SSIM's luminance term ``l_b ≥ alpha_l``;
        ``"absolute"``: ``|mean(δ_b)| ≤ beta``.
        """
        check_range("alpha", alpha, 0.0, 1.0, low_inclusive=False, high_inclusive=False)
        check_range("beta", beta, 0.0, 1.0)
        check_range("alpha_l", alpha_l, 0.0, 1.0, low_inclusive=False)
        if luminance not in LUMINANCE_MODES:
            raise ConfigError(f"luminance={luminance!r} is not valid; valid: {', '.join(LUMINANCE_MODES)}")
        size = resolve_window(window, *x.shape[2:])
        xb = to_windows(x, size)
        mu = xb.mean(-1)
        xt = xb - mu.unsqueeze(-1)
        c = structure_constant(size, k2, sample_covariance)
        radius2 = (1 - alpha**2) / alpha**2 * xt.pow(2).sum(-1) + (1 - alpha) * c / alpha
        free = from_windows(torch.ones_like(xb), size, *x.shape[2:])  # 0 on the uncovered strip
        if mask is not None:
            free = free * (mask != 0).to(x.dtype)
        lo, hi = (luminance_interval(mu, alpha_l) if luminance == "term"
                  else (torch.full_like(mu, -float(beta)), torch.full_like(mu, float(beta))))
        return cls(size, lo, hi, (1 - alpha) / alpha * xt, radius2, -x * free, (1 - x) * free)

    @property
    def scale(self) -> torch.Tensor:
        """Each window's size ``r_b + max(|lo_b|, hi_b)·sqrt(n)``: ball radius plus the largest mean shift in
        L2, (N,C,B)."""
        return self.radius2.sqrt() + torch.maximum(-self.mean_lo, self.mean_hi) * self.window

    @property
    def shape(self) -> tuple[int, int]:
        return tuple(self.lower.shape[2:])  # type: ignore[return-value]

    def project_windows(self, delta: torch.Tensor) -> torch.Tensor:
        """Exact Euclidean projection onto A: each window's mean-free part into its ball, the mean kept."""
        blocks = to_windows(delta, self.window)
        mean = blocks.mean(-1, keepdim=True)
        offset = blocks - mean - self.center
        dist = offset.norm(dim=-1, keepdim=True)
        scale = torch.clamp(self.radius2.sqrt().unsqueeze(-1) / dist.clamp_min(NORM_GUARD), max=1.0)
        return from_windows(self.center + offset * scale + mean, self.window, *self.shape)

    def project_box(self, delta: torch.Tensor) -> torch.Tensor:
        """Exact Euclidean projection onto B: the box [lower, upper] and every window's luminance bound.

        Per window, ``clip(z - λ, lo, hi)`` with ``λ = 0`` if the clipped mean is
        within ``[mean_lo, mean_hi]``, else the ``λ`` that puts the mean on the violated bound
        (:func:`~.window_shift.mean_shift`).
        """
        z = to_windows(delta, self.window)
        lo, hi = to_windows(self.lower, self.window), to_windows(self.upper, self.window)
        mean = torch.maximum(torch.minimum(z, hi), lo).mean(-1)
        goal = torch.minimum(torch.maximum(mean, self.mean_lo), self.mean_hi)
        violated = mean != goal
        if on_device_path(delta):  # every window at once: picking the few violated ones would be a host read
            lam = torch.where(violated, mean_shift(z, lo, hi, goal), torch.zeros_like(mean))
        else:  # a CPU solves only the windows off their bound (0.2% at 224 px), each as it would be among all
            lam = torch.zeros_like(mean)
            lam[violated] = mean_shift(z[violated], lo[violated], hi[violated], goal[violated])
        projected = torch.maximum(torch.minimum(z - lam.unsqueeze(-1), hi), lo)
        return from_windows(projected, self.window, *self.shape)

    def project(self, delta: torch.Tensor, rounds: int = 5) -> torch.Tensor:
        """``rounds`` rounds of Dykstra's algorithm toward the projection onto A ∩ B; the result lies in B.

        Follow with :meth:`make_feasible` to also satisfy A exactly.
        """
        p = torch.zeros_like(delta)
        q = torch.zeros_like(delta)
        current = delta
        for _ in range(rounds):
            in_a = self.project_windows(current + p)
            p = current + p - in_a
            current = self.project_box(in_a + q)
            q = in_a + q - current
        return current

    def make_feasible(self, delta: torch.Tensor) -> torch.Tensor:
        """Scale each window's δ toward 0 just enough to satisfy its ball and luminance bound.

        The ball condition on ``t·d`` (``d`` the window's mean-free part) is
        ``t²‖d‖² − 2t dᵀc + ‖c‖² − r² ≤ 0``, whose larger root is
        ``t* = (dᵀc + sqrt((dᵀc)² + ‖d‖²(r² − ‖c‖²))) / ‖d‖² > 0`` (as ``r² > ‖c‖²``);
        windows outside their ball are scaled by ``t*·(1 − 1e-6)``. A window
        mean beyond its bound by more than 1e-9 is scaled by ``bound/mean`` (the tolerance keeps
        rounding noise from zeroing a window whose bound is 0). If δ is in B the
        result is too. Computed in float64.
        """
        blocks = to_windows(delta, self.window).double()
        mean = blocks.mean(-1)
        d = blocks - mean.unsqueeze(-1)
        c = self.center.double()
        r2 = self.radius2.double()
        dd, dc = d.pow(2).sum(-1), (d * c).sum(-1)
        slack = r2 - c.pow(2).sum(-1)
        outside = (d - c).pow(2).sum(-1) > r2
        t_ball = (dc + (dc.pow(2) + dd * slack).clamp_min(0).sqrt()) / dd.clamp_min(1e-300)
        t_ball = torch.where(outside, t_ball * (1 - FEASIBILITY_SHRINK), torch.ones_like(dd))
        lo, hi = self.mean_lo.double(), self.mean_hi.double()
        t_lum = torch.ones_like(dd)
        t_lum = torch.where(mean > hi + LUMINANCE_TOL, hi / mean.clamp_min(1e-300), t_lum)
        t_lum = torch.where(mean < lo - LUMINANCE_TOL, lo / mean.clamp_max(-1e-300), t_lum)
        t = torch.minimum(t_ball, t_lum).clamp(0.0, 1.0)
        scaled = (blocks * t.unsqueeze(-1)).to(delta.dtype)
        return from_windows(scaled, self.window, *self.shape)

    def violation(self, delta: torch.Tensor) -> torch.Tensor:
        """Per image, the largest excess over all constraints (0 when feasible): ball (in units of
        ``‖δ̃−c‖² − r²``), luminance (the mean beyond ``[mean_lo, mean_hi]``), box (``δ`` outside
        [lower, upper]). Shape (N,)."""
        blocks = to_windows(delta, self.window)
        mean = blocks.mean(-1)
        ball = (blocks - mean.unsqueeze(-1) - self.center).pow(2).sum(-1) - self.radius2
        lum = torch.maximum(mean - self.mean_hi, self.mean_lo - mean)
        box = torch.maximum(delta - self.upper, self.lower - delta)
        parts = [ball.flatten(1), lum.flatten(1), box.flatten(1)]
        return torch.cat(parts, dim=1).amax(dim=1).clamp_min(0.0)


def window_ssim(
    x: torch.Tensor, x_adv: torch.Tensor, window: int | str = "auto", k1: float = C1_K1, k2: float = 0.03,
    sample_covariance: bool = True,
) -> torch.Tensor:
    """Per image, the mean over channels and non-overlapping windows of ``SSIM_b = l_b · S_b``: the SSIM the
    attack's constraint bounds (``>= alpha·alpha_l`` in every window with ``luminance="term"``), (N,)."""
    size = resolve_window(window, *x.shape[2:])
    mx, my = to_windows(x, size).mean(-1), to_windows(x_adv, size).mean(-1)
    c1 = (k1 * 1.0) ** 2
    luminance = (2 * mx * my + c1) / (mx.pow(2) + my.pow(2) + c1)
    structure = window_contrast_structure(x, x_adv, size, k2, sample_covariance)
    return (luminance * structure).flatten(1).mean(1)


def luminance_interval(mu: torch.Tensor, alpha_l: float, k1: float = C1_K1) -> tuple[torch.Tensor, torch.Tensor]:
    """The mean changes ``[lo, hi]`` keeping SSIM's luminance term ``l ≥ alpha_l`` for window means ``mu``.

    ``l(μ_y) ≥ α_l`` ⟺ ``μ_y ∈ [(μ_x − s)/α_l, (μ_x + s)/α_l]`` with
    ``s = sqrt(μ_x²(1−α_l²) + α_l(1−α_l)C1)`` (module docstring); returned as
    changes ``μ_y − μ_x``, so ``lo ≤ 0 ≤ hi``. ``alpha_l = 1`` gives ``[0, 0]``.
    """
    c1 = (k1 * 1.0) ** 2
    s = (mu.pow(2) * (1 - alpha_l**2) + alpha_l * (1 - alpha_l) * c1).clamp_min(0).sqrt()
    lo = ((mu - s) / alpha_l - mu).clamp_max(0.0)
    hi = ((mu + s) / alpha_l - mu).clamp_min(0.0)
    return lo, hi


def window_step(grad: torch.Tensor, ball: SSIMBallGeometry, step_size: float) -> torch.Tensor:
    """The step: in every window, the gradient's direction times ``step_size · ball.scale`` (0 where it is 0)."""
    blocks = to_windows(grad, ball.window)
    blocks = blocks / (blocks.norm(dim=-1, keepdim=True) + NORM_GUARD)
    return from_windows(blocks * (step_size * ball.scale).unsqueeze(-1), ball.window, *grad.shape[2:])


@register_attack("ssim-ball", "Perceptual attack: margin PGD inside per-window SSIM balls with a luminance bound")
class SSIMBallAttack(Attack):
    """Projected-gradient attack inside the per-window SSIM ball (METHODS §3; see the module docstring).

    Args:
        model: classifier on [0,1] images returning logits.
        alpha: contrast-structure bound, every window keeps ``S_b ≥ alpha``; in (0, 1).
        luminance: ``term`` (default): every window keeps SSIM's luminance term ``l_b ≥ alpha_l``, so
            ``SSIM_b ≥ alpha·alpha_l``; ``absolute``: ``|Δμ_b| ≤ beta`` (the older bound).
        alpha_l: luminance-term bound, in (0, 1].
        beta: bound on each window's mean change ``|Δμ_b|`` with ``luminance="absolute"``, in [0, 1].
        steps: gradient steps, >= 1.
        step_size: each window's step length as a fraction of its size ``r_b + (largest mean change)·sqrt(n)``, > 0.
        window: window side, or ``"auto"`` (4 up to 28 pixels, 8 above).
        rounds: Dykstra projection rounds per step, >= 1.
        loss: ``margin`` (default) or ``ce``.
        sample_covariance: ``C = (n-1)·C2`` (True, METHODS) or ``n·C2`` (population covariance).
        seed: unused (the attack is deterministic, starting from δ = 0); kept for a uniform signature.

    Examples:
        >>> import torch
        >>> from advspatial import attacks, models
        >>> model, images = models.build_model("lenet5").eval(), torch.rand(12, 1, 28, 28)  # images in [0,1]
        >>> attacks.SSIMBallAttack(model, alpha=0.9, steps=5, rounds=1)(images, model(images).argmax(1)).shape
        torch.Size([12, 1, 28, 28])
    """

    name = "ssim-ball"
    norm = "ssim"
    budget_params = {}  # its budgets are SSIM bounds (alpha, beta), set by the perceptual experiment

    def __init__(
        self, model: nn.Module, alpha: float = 0.9, beta: float = 0.05, steps: int = 50, step_size: float = 0.1,
        window: int | str = "auto", rounds: int = 5, loss: str = "margin", sample_covariance: bool = True,
        seed: int = 0, luminance: str = "term", alpha_l: float = 0.99,
    ) -> None:
        super().__init__(model, seed)
        check_range("alpha", alpha, 0.0, 1.0, low_inclusive=False, high_inclusive=False)
        check_range("beta", beta, 0.0, 1.0)
        check_range("alpha_l", alpha_l, 0.0, 1.0, low_inclusive=False)
        if luminance not in LUMINANCE_MODES:
            raise ConfigError(f"luminance={luminance!r} is not valid; valid: {', '.join(LUMINANCE_MODES)}")
        self.luminance, self.alpha_l = luminance, float(alpha_l)
        check_range("steps", steps, 1, None)
        check_range("step_size", step_size, 0.0, None, low_inclusive=False)
        check_range("rounds", rounds, 1, None)
        if window != "auto" and (not isinstance(window, int) or isinstance(window, bool) or window < 2):
            raise ConfigError(f"window={window!r} is invalid; valid: 'auto' or an integer >= 2")
        self.alpha, self.beta, self.step_size = float(alpha), float(beta), float(step_size)
        self.steps, self.rounds, self.window = int(steps), int(rounds), window
        self.loss, self.sample_covariance = check_loss(loss), bool(sample_covariance)

    def constraint(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> SSIMBallGeometry:
        """The feasible set of this attack around ``x``."""
        return SSIMBallGeometry.around(x, self.alpha, self.beta, self.window, mask,
                                       sample_covariance=self.sample_covariance, luminance=self.luminance,
                                       alpha_l=self.alpha_l)

    def _loss_and_grad(
        self, x_adv: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(per-image attack loss (N,), gradient of its sum w.r.t. x_adv)."""
        x_adv = x_adv.detach().requires_grad_(True)
        loss = attack_loss(self.model(x_adv), y, target, self.loss)
        (grad,) = torch.autograd.grad(loss.sum(), x_adv)
        return loss.detach(), grad

    def perturb(
        self, x: torch.Tensor, y: torch.Tensor, mask: torch.Tensor | None,
        target: torch.Tensor | None, sample_ids: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        x64 = x.double()  # the constraint machinery runs in float64 (not on MPS); the model sees x's dtype
        ball = self.constraint(x64, mask)
        delta = torch.zeros_like(x64)
        best_delta = delta.clone()
        best_loss = torch.full((x.shape[0],), float("-inf"), device=x.device)
        for step in steps("SSIM-ball step", self.steps + 1):  # a bar idle on a slow batch shows it
            loss, grad = self._loss_and_grad((x64 + delta).to(x.dtype), y, target)
            with torch.no_grad():
                better = loss > best_loss
                best_loss = torch.where(better, loss, best_loss)
                best_delta = torch.where(better.view(-1, 1, 1, 1), delta, best_delta)
                if step == self.steps:
                    break
                if mask is not None:
                    grad = grad * mask
                stepped = delta + window_step(grad.double(), ball, self.step_size)
                delta = ball.make_feasible(ball.project(stepped, self.rounds))
        queries = torch.full((x.shape[0],), self.steps + 1, dtype=torch.long, device=x.device)
        return (x64 + best_delta).to(x.dtype), queries
