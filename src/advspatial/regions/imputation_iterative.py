"""ROAD's linear imputation solved where the images are: preconditioned conjugate gradients on a GPU.

The fill of :mod:`.imputation` is the solution of one sparse system per image, each region pixel the weighted mean
of its eight neighbours (:data:`~.road_stencil.ROAD_NEIGHBOURS`). On the CPU it is factorized exactly (a sparse LU in
float64); on a GPU that means two reads to the host per call, forward and backward, and a factorization there while
the device waits. Here the same equations are solved on the images' device: the system's matrix, restricted to the
region, is symmetric positive definite (diagonally dominant, each part of the region touching a known pixel), so
conjugate gradients with its diagonal as preconditioner converge, one stencil a step (sixteen passes over the images a
step in all), every image and channel a system of its own (its own step sizes, its own stop). Each system stops
once its residual is at most :data:`RELATIVE_RESIDUAL` of its right-hand side, checked at a first step and every few
steps after it, both growing with the image's side (:func:`check_steps`; one host read per check, for the whole
batch, and no other read; the checks fall on the same steps whatever the batch, so an image's fill does not depend on
its batch-mates); a system not converged after :data:`MAX_STEPS` steps (none seen) is solved by the LU.

Accuracy: in float64 the fill differs from the LU's by at most about 1e-9 (tested on contiguous and scattered regions
at 32 and 224 pixels), far below the float32 rounding of the model's own passes on a GPU. Each image's fill does not
depend on its batch-mates beyond the rounding of a reduction's order (a device may sum a larger batch differently).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from ..host_syncs import uncounted
from .road_stencil import neighbour_sum

#: the exact fill of (images, region), differentiable: the LU's (:mod:`.imputation`), for a system not converged
ExactFill = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
#: a system stops when its residual's norm is at most this fraction of its right-hand side's
RELATIVE_RESIDUAL = 1e-10
#: the first step whose end checks convergence, for images of :data:`CHECK_SIDE` pixels a side: the slowest image of
#: a solve needed 11-96 steps in the 234 solves of a near-free run's gates at 32 px (68 of them 30 or fewer)
FIRST_CHECK = 30
#: steps between two checks after the first at :data:`CHECK_SIDE` pixels (each check is one read to the host for the
#: whole batch): an image stops at most this many steps after its systems converged. On those 234 solves the checks
#: at 30, 45, 60, ... make 1.15 times the steps the slowest image of each solve needs, for 578 reads (every 50 steps:
#: 1.55 times, 330 reads); benchmarks/README.md, "ROAD's fill checked from step 30 every 15 steps"
CHECK_EVERY = 15
#: the image side :data:`FIRST_CHECK` and :data:`CHECK_EVERY` are set for; see :func:`check_steps` for other sides
CHECK_SIDE = 32
#: at most this many steps; a system still above :data:`RELATIVE_RESIDUAL` then goes to the exact LU
MAX_STEPS = 5000


class RegionSystems:
    """Every (image, channel) system ``M u = b`` of a batch's region ``R`` (N, 1, H, W float64, 1 in the region of an
    image not wholly covered): ``M u = R (d u - S(R u))`` with ``S`` :func:`neighbour_sum` and ``d`` the weight of
    each pixel's in-image neighbours. A wholly covered image (no known pixel: a singular system) takes no part; its
    fill is 0, as the LU's."""

    def __init__(self, region: torch.Tensor) -> None:
        n, h, w = region.shape
        covered = region.reshape(n, -1).all(dim=1)
        self.region = (region & ~covered[:, None, None])[:, None].double()
        self.covered = covered
        self.diagonal = neighbour_sum(torch.ones(1, 1, h, w, dtype=torch.float64, device=region.device))
        self.first_check, self.check_every = check_steps(max(h, w))

    def right_hand_side(self, x: torch.Tensor) -> torch.Tensor:
        """``b = R S((1 - R) x)``: each region pixel's weighted sum of its known neighbours."""
        return self.region * neighbour_sum((1 - self.region) * x)

    def solve(self, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, bool]:
        """(u, unconverged, any unconverged): ``M u = b`` per (image, channel) by Jacobi-preconditioned conjugate
        gradients, the (N, C) systems still above :data:`RELATIVE_RESIDUAL` after :data:`MAX_STEPS` steps, and
        whether there are any: the last check's read already says so (a stop before the limit: none; at the limit,
        itself a check: some), so the caller reads nothing more. At a check the images whose every system has
        stopped leave the loop (:class:`_Solving`), so a batch of easy and hard images (or a stack of a gate's
        regions) costs the steps each image needs, to the next check, not the hardest image's for all."""
        state = _Solving(self, b)
        for step in range(1, MAX_STEPS + 1):
            state.step()
            if is_check(step, self.first_check, self.check_every):
                if not state.check(last=step == MAX_STEPS):
                    return (*state.result(), False)
        return (*state.result(), True)  # the last check found systems running


def check_steps(side: int) -> tuple[int, int]:
    """(first check, steps between checks) for images of ``side`` pixels: :data:`FIRST_CHECK` and :data:`CHECK_EVERY`
    at :data:`CHECK_SIDE`, both scaled by the square root of ``side / CHECK_SIDE`` above it. A solve's steps grow with
    the regions' extent in pixels, and a check every I steps costs about I / 2 steps too many and S / I reads for a
    solve of S steps, which is least at I proportional to the square root of S: at 224 pixels the checks fall at 79,
    119, 159, ... (the slowest image of 57 solves of a near-free run's gates at 224 px needed 14-644 steps: 1.10
    times those steps for 346 reads, every 15 steps from 30 1.03 times for 949, every 50 1.08 times for 316).

    Example::

        >>> check_steps(32), check_steps(224)
        ((30, 15), (79, 40))
    """
    scale = max(1.0, math.sqrt(side / CHECK_SIDE))
    return round(FIRST_CHECK * scale), max(1, round(CHECK_EVERY * scale))


def is_check(step: int, first: int, every: int) -> bool:
    """Whether convergence is checked after ``step`` (counted from 1): at ``first``, every ``every`` steps after it
    (:func:`check_steps`), and at the last step allowed (:data:`MAX_STEPS`)."""
    return step == MAX_STEPS or (step >= first and (step - first) % every == 0)


class _Solving:
    """The conjugate gradients of :meth:`RegionSystems.solve` in progress, on the images still solved (``rows`` of
    the batch; None: all of them). ``r``, ``z`` and ``p`` stay 0 outside the region (``b`` is, and ``M`` maps into
    it): ``z = r / d`` needs no mask, and each update is made in place, a few whole-image operations a step (each a
    launch on a device)."""

    def __init__(self, systems: RegionSystems, b: torch.Tensor) -> None:
        self.region, self.diagonal = systems.region, systems.diagonal
        self.solution = torch.zeros_like(b)  # every image's u; the images still solved write theirs at each check
        self.rows: torch.Tensor | None = None
        self.u, self.r = self.solution, b.clone()  # u is the solution itself until the first image leaves
        self.p = self.r / self.diagonal
        self.rz = dot(self.r, self.p)
        self.scale = b.flatten(2).norm(dim=2)
        self.running = self.scale > 0

    def step(self) -> None:
        tiny = torch.finfo(self.rz.dtype).tiny
        q = torch.mul(self.diagonal, self.p).sub_(neighbour_sum(self.p)).mul_(self.region)  # M p, p in the region
        pq = dot(self.p, q)
        alpha = torch.where(self.running & (pq > 0), self.rz / pq.clamp_min(tiny), 0.0)[..., None, None]
        self.u.addcmul_(alpha, self.p)
        self.r.addcmul_(alpha, q, value=-1)
        z = self.r / self.diagonal
        rz_next = dot(self.r, z)
        beta = torch.where(self.rz > 0, rz_next / self.rz.clamp_min(tiny), 0.0)
        self.p, self.rz = z.addcmul_(beta[..., None, None], self.p), rz_next

    def check(self, last: bool) -> bool:
        """Stop the converged systems; True while any runs. One read to the host: which images still have a
        running system; those that have none leave the loop (unless this is the last check)."""
        self.running = self.running & (self.r.flatten(2).norm(dim=2) > RELATIVE_RESIDUAL * self.scale)
        alive = self.running.any(dim=1).cpu()  # the one read of a check
        with uncounted():  # the host copy just read
            if last or not bool(alive.any()) or bool(alive.all()):
                return bool(alive.any())
            keep = alive.nonzero().flatten().to(self.u.device)
        self._write_back()
        self.rows = keep if self.rows is None else self.rows[keep]
        self.u, self.r, self.p = self.u[keep], self.r[keep], self.p[keep]
        self.rz, self.scale, self.running = self.rz[keep], self.scale[keep], self.running[keep]
        self.region = self.region[keep]
        return True

    def _write_back(self) -> None:
        """The images still solved write their u into :attr:`solution` (which u is, until the first image leaves)."""
        if self.rows is not None:
            self.solution.index_copy_(0, self.rows, self.u)

    def result(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(every image's u, the (N, C) systems still running: none of an image that left)."""
        self._write_back()
        if self.rows is None:
            return self.solution, self.running
        return self.solution, self.running.new_zeros(self.solution.shape[:2]).index_copy(0, self.rows, self.running)


def dot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per (image, channel), the sum over the pixels of ``a * b``: (N, C)."""
    return (a * b).flatten(2).sum(dim=2)


class IterativeImputation(torch.autograd.Function):
    """The exact (noise-free) imputation of each image's region on its device; backward solves the same systems
    (the matrix is symmetric) for the gradient of the known pixels the fill is made of."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, region: torch.Tensor, exact: ExactFill) -> torch.Tensor:
        """``exact``: the exact fill (differentiable), for the images of a system not converged."""
        systems = RegionSystems(region)
        x64 = x.detach().double()
        u, unconverged, any_unconverged = systems.solve(systems.right_hand_side(x64))
        filled = torch.where(systems.region > 0, u, x64)
        filled = torch.where(systems.covered[:, None, None, None], 0.0, filled)
        if any_unconverged:
            filled = exact_where(filled, x, region, unconverged, exact)
        ctx.systems, ctx.region, ctx.exact = systems, region, exact
        ctx.unconverged, ctx.any_unconverged = unconverged, any_unconverged
        return filled.to(x.dtype)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        systems: RegionSystems = ctx.systems
        g = grad.double()
        z, unconverged, any_unconverged = systems.solve(systems.region * g)
        known = 1 - ctx.region[:, None].double()
        out = known * (g + neighbour_sum(systems.region * z))
        if ctx.any_unconverged or any_unconverged:
            out = exact_gradient_where(out, grad, ctx.region, ctx.unconverged | unconverged, ctx.exact)
        return out.to(grad.dtype), None, None


def exact_where(filled: torch.Tensor, x: torch.Tensor, region: torch.Tensor, unconverged: torch.Tensor,
                exact: ExactFill) -> torch.Tensor:
    """``filled`` with the images of any unconverged system replaced by the ``exact`` fill."""
    rows = unconverged.any(dim=1).nonzero().flatten()
    filled = filled.clone()
    filled[rows] = exact(x.detach()[rows].double(), region[rows]).to(filled.dtype)
    return filled


def exact_gradient_where(out: torch.Tensor, grad: torch.Tensor, region: torch.Tensor, unconverged: torch.Tensor,
                         exact: ExactFill) -> torch.Tensor:
    """``out`` with the gradient of the images of any unconverged system replaced by the ``exact`` fill's (the
    fill is linear in the images, so its gradient does not depend on them)."""
    rows = unconverged.any(dim=1).nonzero().flatten()
    with torch.enable_grad():
        x = torch.zeros_like(grad[rows], dtype=torch.float64).requires_grad_(True)
        (exact_grad,) = torch.autograd.grad(exact(x, region[rows]), x, grad[rows].double())
    out = out.clone()
    out[rows] = exact_grad.to(out.dtype)
    return out
