"""Auto-PGD (Croce & Hein, ICML 2020): PGD with momentum and a budget-aware step-size schedule.

APGD needs no step size: it starts at ``eta = 2*eps`` and halves it, per image, at checkpoints where progress stalled.
One run on an image, with attacker loss ``f`` (ascended) and projection ``P`` (onto the eps-ball around ``x``, then
the box [0,1]), for ``k = 0 .. steps-1``:

* ``z     = P(x_k + eta_k * d(grad f(x_k)))``, ``d`` the steepest-ascent direction (L-inf: ``sign(mask*g)*mask``; L2:
  ``mask*g / ||mask*g||_2``);
* ``x_k+1 = z`` for ``k = 0``, else ``x_k+1 = P(x_k + a*(z - x_k) + (1-a)*(x_k - x_k-1))`` with momentum ``a = 0.75``;
* ``x_max, f_max``: the highest-loss iterate so far (``x_0`` included).

Checkpoints ``w_j = ceil(p_j * steps)`` with ``p_0 = 0``, ``p_1 = 0.22``,
``p_j+1 = p_j + max(p_j - p_j-1 - 0.03, 0.06)`` (for 100 steps: 0, 22, 41, 57, 70, 80, 87, 93, 99). At ``k = w_j`` the
step size of an image is halved and its iterate reset to ``x_max`` (its gradient to the one at ``x_max``) when

1. fewer than ``rho * (w_j - w_j-1)`` of the steps since ``w_j-1`` increased the loss (``f(x_i+1) > f(x_i)``), or
2. its step size was not halved at ``w_j-1`` and ``f_max`` has not grown since.

(The reference implementation never applies condition 2 at the first checkpoint and uses ``<=`` in condition 1; we
follow the paper.) A loss "increases" only by more than float noise, ``1e-5 * (1 + |f|)`` (:func:`beats`), so that the
last bits of the logits, which depend on the batch, cannot change an image's trajectory.

Losses (per image; summed, never averaged, so a gradient does not depend on the batch):

* ``ce``: ``CE(z, y)`` (targeted: ``-CE(z, t)``); ``margin``: as in :mod:`.fgsm`;
* ``dlr``: ``-(z_y - max_{i!=y} z_i) / (z_pi1 - z_pi3 + 1e-12)`` (>= 3 classes), targeted
  ``-(z_y - z_t) / (z_pi1 - (z_pi3 + z_pi4)/2 + 1e-12)`` (>= 4 classes), ``z_pi1 >= z_pi2 >= ...`` the sorted logits.

Random start per image from ``(seed + restart, sample_id)`` (:func:`per_sample_noise`): L-inf ``eps * U[-1,1)``, L2
``eps * z/||z||`` with ``z ~ N(0, I)``, both masked. Restarts run only on images not yet adversarial.

What is returned per image: the first adversarial iterate (misclassified, or the target hit) when ``early_stop=True``,
which also drops the image from the batch at that point (and an image already adversarial on ``x`` is returned as
``x``); with ``early_stop=False`` every image takes every step and the result is the highest-loss adversarial iterate,
or the highest-loss iterate if none was adversarial. ``eot_iter > 1`` (randomized models): the gradient and the loss
are means over ``eot_iter`` forward+backward passes and an iterate counts as adversarial only if every pass was.
``queries``: forward+backward passes.

APGD-T (:class:`APGDT`) with ``target=`` is APGD with the targeted DLR loss; without a target it runs a targeted
attack towards each of the ``n_target_classes`` highest-scoring wrong classes on the clean image in turn (on the
images not yet misclassified), like AutoAttack's APGD-T.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import nullcontext
from dataclasses import dataclass
from typing import cast

import torch
from torch import nn

from ..errors import ConfigError, check_range
from ..host_syncs import on_device_path
from ..passes import one_round
from ..progress import steps
from ..runtime import per_sample_noise
from ..stacked_runs import RowChunks
from .base import Attack, call_keyed, draws_keyed, register_attack
from .gradients import attack_loss, dlr_loss, dlr_loss_targeted, is_adversarial, masked_sign
from .pgd import l2_direction, l2_project, rows_norm
from .search import Best, beats, best_of_runs, compact, stop_early

APGD_LOSSES = ("ce", "dlr", "margin")
MOMENTUM = 0.75
L2_GUARD = 1e-12


# -- schedule and losses ----------------------------------------------------------

def checkpoints(steps: int) -> list[int]:
    """``[w_0=0, w_1, ...]``: the iterations ``ceil(p_j*steps) <= steps`` where APGD may halve its step. ``p_j`` is
    kept in hundredths, so the arithmetic is exact (``0.22*100`` in floats is ``22.000000000000004``, whose ceiling
    would be 23). Repeated values (few steps) are dropped."""
    marks, prev, cur = [0], 0, 22
    while (w := -(-cur * steps // 100)) <= steps:
        if w > marks[-1]:
            marks.append(w)
        prev, cur = cur, cur + max(cur - prev - 3, 6)
    return marks


def apgd_loss(logits: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None, loss: str) -> torch.Tensor:
    """Per-image objective APGD ascends: ``ce``/``margin`` as :func:`.gradients.attack_loss`, or ``dlr``."""
    if loss == "dlr":
        return dlr_loss(logits, y) if target is None else dlr_loss_targeted(logits, y, target)
    return attack_loss(logits, y, target, loss)


def _rows(cond: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per-image ``where``: rows of ``a`` where ``cond`` (N,) holds, else rows of ``b``."""
    return torch.where(cond.view(-1, *([1] * (a.ndim - 1))), a, b)


#: at most this many input elements go through one batched EOT call on a GPU (bounds its activation memory)
EOT_BATCH_ELEMENTS = 1 << 22
#: on a CPU large batches fall out of the caches: on the default model (smallcnn, 50 Fashion-MNIST images, EOT 20)
#: all 20 draws in one call were 1.5-1.9x slower than one draw per call, ~3 draws per call (~150 images) within
#: noise of one (0.93-1.05x; benchmarks/bench_eot.py): batching draws pays on a GPU (unmeasured), not here
EOT_BATCH_ELEMENTS_CPU = 1 << 17


def eot_chunks(passes: int, x: torch.Tensor) -> list[int]:
    """Draw counts of the batched EOT calls for ``passes`` passes over images ``x``: as many draws per call as
    fit in :data:`EOT_BATCH_ELEMENTS` input elements (:data:`EOT_BATCH_ELEMENTS_CPU` on a CPU; at least one),
    the last call taking the rest."""
    budget = EOT_BATCH_ELEMENTS_CPU if x.device.type == "cpu" else EOT_BATCH_ELEMENTS
    per_call = max(1, budget // max(1, x.numel()))
    full, rest = divmod(passes, per_call)
    return [per_call] * full + ([rest] if rest else [])


# -- per-image bookkeeping ----------------------------------------------------------

@dataclass
class _Run:
    """State of one APGD run for the images still taking steps (row i is batch image ``idx[i]``)."""

    idx: torch.Tensor
    ids: torch.Tensor                  # the rows' sample ids, on the host (a randomized model keys draws by them)
    x: torch.Tensor
    y: torch.Tensor
    loss_target: torch.Tensor | None   # target used by the loss (APGD-T: the current target class)
    goal: torch.Tensor | None          # target that counts as success (None: any wrong class)
    mask: torch.Tensor | None
    cur: torch.Tensor                  # x_k
    prev: torch.Tensor                 # x_k-1
    grad: torch.Tensor                 # gradient at x_k
    loss: torch.Tensor                 # f(x_k)
    best_x: torch.Tensor               # x_max
    best_grad: torch.Tensor
    best_loss: torch.Tensor            # f_max
    step: torch.Tensor                 # eta per image
    n_up: torch.Tensor                 # loss increases since the last checkpoint
    last_best: torch.Tensor            # f_max at the last checkpoint
    reduced: torch.Tensor              # step halved at the last checkpoint
    active: torch.Tensor               # still searching (an early stop drops the others, on a device at checkpoints)

    def __len__(self) -> int:
        return int(self.idx.shape[0])


# -- the attack -------------------------------------------------------------------

@register_attack("apgd-dlr", "Auto-PGD in the L-inf ball on the DLR loss (Croce & Hein 2020)", loss="dlr")
@register_attack("apgd-ce", "Auto-PGD in the L-inf ball on cross-entropy (Croce & Hein 2020)", loss="ce")
class APGD(Attack):
    """Auto-PGD in the L-inf ball (see the module docstring for the algorithm).

    Args:
        model: classifier on [0,1] images returning logits.
        eps: radius of the L-inf ball, in [0, 1].
        steps: gradient steps per run, >= 1.
        n_restarts: runs from different random starts (only on images not yet fooled), >= 1.
        loss: ``ce``, ``dlr`` (>= 3 classes; targeted >= 4) or ``margin``.
        rho: condition-1 threshold, in (0, 1].
        eot_iter: forward+backward passes averaged per gradient (randomized models), >= 1.
        early_stop: stop an image at its first adversarial iterate (use False for randomized models).
        seed: seed of the random starts (restart r uses ``seed + r``).

    Examples:
        >>> import torch
        >>> from advspatial import attacks, models
        >>> _ = torch.manual_seed(0)
        >>> model, images = models.build_model("lenet5").eval(), torch.rand(12, 1, 28, 28)  # images in [0,1]
        >>> labels = model(images).argmax(1)   # untrained here: its own predictions are the labels
        >>> attacks.APGD(model, eps=8 / 255, steps=10)(images, labels).shape
        torch.Size([12, 1, 28, 28])
    """

    name = "apgd"
    norm = "linf"
    budget_params = {"eps": "eps_linf", "steps": "steps"}
    eps_max: float | None = 1.0

    def __init__(
        self, model: nn.Module, eps: float = 8 / 255, steps: int = 100, n_restarts: int = 1,
        loss: str = "ce", rho: float = 0.75, eot_iter: int = 1, early_stop: bool = True, seed: int = 0,
    ) -> None:
        super().__init__(model, seed)
        check_range("eps", eps, 0.0, self.eps_max)
        check_range("steps", steps, 1, None)
        check_range("n_restarts", n_restarts, 1, None)
        check_range("rho", rho, 0.0, 1.0, low_inclusive=False)
        check_range("eot_iter", eot_iter, 1, None)
        if loss not in APGD_LOSSES:
            raise ConfigError(f"loss={loss!r} is unknown; valid: {', '.join(APGD_LOSSES)}")
        self.eps, self.steps, self.n_restarts = float(eps), int(steps), int(n_restarts)
        self.loss, self.rho, self.eot_iter = loss, float(rho), int(eot_iter)
        self.early_stop = bool(early_stop)

    # -- norm-specific pieces (overridden by APGDL2) --------------------------------
    def direction(self, grad: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        """Steepest-ascent direction of unit L-inf size: ``sign(mask*g)*mask``."""
        return masked_sign(grad, mask)

    def project(self, x: torch.Tensor, x_new: torch.Tensor) -> torch.Tensor:
        """Onto the eps-ball around x, then the box [0,1]."""
        return (x + (x_new - x).clamp(-self.eps, self.eps)).clamp_(0.0, 1.0)

    def random_start(self, x: torch.Tensor, mask: torch.Tensor | None, ids: torch.Tensor, seed: int) -> torch.Tensor:
        """``x + eps*U[-1,1)*mask``, clipped to the box; row i from ``(seed, ids[i])``."""
        noise = per_sample_noise(x.shape, seed, ids, "uniform", x.device, x.dtype) * self.eps
        return (x + (noise if mask is None else noise * mask)).clamp_(0.0, 1.0)

    # -- runs ---------------------------------------------------------------------
    def runs(
        self, y: torch.Tensor, target: torch.Tensor | None, clean_logits: torch.Tensor | None
    ) -> Iterator[tuple[int, torch.Tensor | None]]:
        """``(seed, loss target)`` of each run in order; APGD: one per restart, seeds ``seed + r``."""
        for r in range(self.n_restarts):
            yield self.seed + r, target

    def needs_clean_logits(self, target: torch.Tensor | None) -> bool:
        """Whether to evaluate x first (1 query): to return images already adversarial there as x."""
        return self.early_stop

    def perturb(
        self, x: torch.Tensor, y: torch.Tensor, mask: torch.Tensor | None,
        target: torch.Tensor | None, sample_ids: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        def plan(best: Best, queries: torch.Tensor) -> Iterator[tuple[int, torch.Tensor | None]]:
            clean_logits = None
            if self.needs_clean_logits(target):
                with torch.no_grad():
                    clean_logits = self._forward(x, torch.arange(x.shape[0], device=x.device), sample_ids)
                queries += 1
                if self.early_stop:
                    best.adv |= is_adversarial(clean_logits, y, target)
            return self.runs(y, target, clean_logits)

        def run(item: tuple[int, torch.Tensor | None], rows: torch.Tensor, best: Best, queries: torch.Tensor) -> None:
            seed, loss_target = item
            self._run(x, y, loss_target, target, mask, sample_ids, seed, rows, best, queries)

        return best_of_runs(x, self.eps, plan, run)

    def _evaluate(self, x_adv: torch.Tensor, y: torch.Tensor, loss_target: torch.Tensor | None,
                  goal: torch.Tensor | None, idx: torch.Tensor,
                  ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(mean loss, mean gradient, adversarial on every pass) at ``x_adv`` (batch rows ``idx``, sample ids ``ids``
        on the host), ``eot_iter`` passes.

        A model with ``forward_draws(x, k)`` (the randomized defences of :mod:`advspatial.defence`) gets its
        passes in batches of draws (:func:`eot_chunks`): the same draws in the same order as one pass at a
        time, so the same attack in fewer calls; any other model gets one forward pass per call.
        """
        batched = self.eot_iter > 1 and hasattr(self.model, "forward_draws")
        n = x_adv.shape[0]
        loss_sum = torch.zeros(n, device=x_adv.device, dtype=x_adv.dtype)
        grad_sum = torch.zeros_like(x_adv)
        adv = torch.ones(n, dtype=torch.bool, device=x_adv.device)
        with one_round() if batched else nullcontext():  # the chunks of one batched draw are one round
            for k in (eot_chunks(self.eot_iter, x_adv) if batched else [1] * self.eot_iter):
                loss, grad, fooled = self._draws(x_adv, y, loss_target, goal, idx, ids, k, batched)
                loss_sum += loss
                grad_sum += grad
                adv &= fooled
        return loss_sum / self.eot_iter, grad_sum / self.eot_iter, adv

    def _draws(self, x_adv: torch.Tensor, y: torch.Tensor, loss_target: torch.Tensor | None, goal: torch.Tensor | None,
               idx: torch.Tensor, ids: torch.Tensor, k: int,
               batched: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(summed loss, summed gradient, adversarial on all) over ``k`` passes at ``x_adv`` in one call."""
        n = x_adv.shape[0]
        if not batched and isinstance(self.model, RowChunks) and type(self)._forward is APGD._forward:
            return self._chunked_draw(x_adv, y, loss_target, goal, idx)
        with torch.enable_grad():
            xr = x_adv.detach().requires_grad_(True)
            logits = (draws_keyed(self.model, xr, k, ids) if batched
                      else self._forward(xr, idx, ids)[None]).reshape(k * n, -1)
            per_pass = self._loss(logits, y.repeat(k), None if loss_target is None else loss_target.repeat(k),
                                  idx.repeat(k)).view(k, n)
            (grad,) = torch.autograd.grad(per_pass.sum(), xr)
        fooled = is_adversarial(logits.detach(), y.repeat(k), None if goal is None else goal.repeat(k))
        return per_pass.detach().sum(0), grad, fooled.view(k, n).all(0)

    def _chunked_draw(self, x_adv: torch.Tensor, y: torch.Tensor, loss_target: torch.Tensor | None,
                      goal: torch.Tensor | None, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """:meth:`_draws`' one pass through a model that calls a large run a batch at a time (:class:`RowChunks`),
        each batch's gradient taken before the next's forward: the run holds one batch's activations; the loss is
        per row, so loss, gradient and success are the whole graph's."""
        losses: list[torch.Tensor] = []
        model = cast(RowChunks, self.model)

        def objective(logits: torch.Tensor, rows: slice) -> torch.Tensor:
            per_row = self._loss(logits, y[rows], None if loss_target is None else loss_target[rows], idx[rows])
            losses.append(per_row.detach())
            return per_row.sum()

        with torch.enable_grad():
            grad, logits = model.input_gradient(x_adv, objective)
        return torch.cat(losses), grad, is_adversarial(logits, y, goal)

    def _forward(self, x: torch.Tensor, idx: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        """The logits of the batch rows ``idx`` (sample ids ``ids``): :func:`~.base.call_keyed` (a stacked run
        routes its copies' rows)."""
        return call_keyed(self.model, x, ids)

    def _loss(self, logits: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None,
              idx: torch.Tensor) -> torch.Tensor:
        """Per-row objective of the logits of the batch rows ``idx``: :func:`apgd_loss` with the attack's loss."""
        return apgd_loss(logits, y, target, self.loss)

    def _run(
        self, x: torch.Tensor, y: torch.Tensor, loss_target: torch.Tensor | None, goal: torch.Tensor | None,
        mask: torch.Tensor | None, sample_ids: torch.Tensor, seed: int, rows: torch.Tensor,
        best: Best, queries: torch.Tensor,
    ) -> None:
        """One APGD run on the batch images ``rows``; offers every iterate to ``best``."""
        st = self._initial_state(x, y, loss_target, goal, mask, sample_ids, seed, rows, best, queries)
        marks, j = checkpoints(self.steps), 1
        drop_every_step = not on_device_path(x)  # a device drops the broken rows at the checkpoints only
        for k in steps("APGD step", self.steps):  # a bar idle on a slow batch shows the step
            if len(st) == 0:
                return
            with torch.no_grad():
                new = self._step(st, first=k == 0)
            loss, grad, adv = self._evaluate(new, st.y, st.loss_target, st.goal, st.idx, st.ids)
            queries[st.idx] += self.eot_iter * st.active
            best.offer(st.idx, new, adv, loss, among=st.active)
            self._advance(st, new, loss, grad)
            checkpoint = j < len(marks) and k + 1 == marks[j]
            if checkpoint:
                self._checkpoint(st, marks[j] - marks[j - 1])
                j += 1
            if self.early_stop:
                st = stop_early(st, adv, drop_every_step or checkpoint)

    def _initial_state(
        self, x: torch.Tensor, y: torch.Tensor, loss_target: torch.Tensor | None, goal: torch.Tensor | None,
        mask: torch.Tensor | None, sample_ids: torch.Tensor, seed: int, rows: torch.Tensor,
        best: Best, queries: torch.Tensor,
    ) -> _Run:
        """Random start ``x_0`` for the images ``rows``, evaluated; adversarial starts leave under early stop."""
        xs, ys = x[rows], y[rows]
        m = None if mask is None else mask[rows]
        lt = None if loss_target is None else loss_target[rows]
        g = None if goal is None else goal[rows]
        ids = sample_ids[rows.cpu()]
        start = self.random_start(xs, m, ids, seed)
        loss, grad, adv = self._evaluate(start, ys, lt, g, rows, ids)
        queries[rows] += self.eot_iter
        best.offer(rows, start, adv, loss)
        n = rows.numel()
        st = _Run(
            idx=rows, ids=ids, x=xs, y=ys, loss_target=lt, goal=g, mask=m,
            cur=start, prev=start, grad=grad, loss=loss, best_x=start, best_grad=grad, best_loss=loss.clone(),
            step=torch.full((n,), 2 * self.eps, device=x.device, dtype=x.dtype),
            n_up=torch.zeros(n, dtype=torch.long, device=x.device), last_best=loss.clone(),
            reduced=torch.zeros(n, dtype=torch.bool, device=x.device),
            active=torch.ones(n, dtype=torch.bool, device=x.device),
        )
        return compact(st, ~adv) if self.early_stop else st

    def _step(self, st: _Run, first: bool) -> torch.Tensor:
        """``x_k+1`` from ``x_k``: a projected ascent step, then (after the first step) momentum 0.75."""
        step = st.step.view(-1, *([1] * (st.x.ndim - 1)))
        z = self.project(st.x, st.cur + step * self.direction(st.grad, st.mask))
        if first:
            return z
        return self.project(st.x, st.cur + MOMENTUM * (z - st.cur) + (1 - MOMENTUM) * (st.cur - st.prev))

    @staticmethod
    def _advance(st: _Run, new: torch.Tensor, loss: torch.Tensor, grad: torch.Tensor) -> None:
        """Count a loss increase, update ``x_max``, and move the iterate to ``new``."""
        st.n_up += beats(loss, st.loss).long()
        up = beats(loss, st.best_loss)
        st.best_x = _rows(up, new, st.best_x)
        st.best_grad = _rows(up, grad, st.best_grad)
        st.best_loss = torch.where(up, loss, st.best_loss)
        st.prev, st.cur, st.grad, st.loss = st.cur, new, grad, loss

    def _checkpoint(self, st: _Run, window: int) -> None:
        """Halve the step and restart from ``x_max`` where condition 1 or 2 holds."""
        stalled = st.n_up < self.rho * window
        flat = ~st.reduced & (st.best_loss <= st.last_best)
        halve = stalled | flat
        st.step = torch.where(halve, st.step / 2, st.step)
        st.cur = _rows(halve, st.best_x, st.cur)
        st.grad = _rows(halve, st.best_grad, st.grad)
        st.loss = torch.where(halve, st.best_loss, st.loss)
        st.reduced, st.last_best = halve, st.best_loss.clone()
        st.n_up = torch.zeros_like(st.n_up)


@register_attack("apgd-l2-dlr", "Auto-PGD in the L2 ball on the DLR loss", loss="dlr")
@register_attack("apgd-l2", "Auto-PGD in the L2 ball (cross-entropy by default)")
class APGDL2(APGD):
    """Auto-PGD in the L2 ball (same arguments as :class:`APGD`; eps >= 0 is an L2 radius).

    The step direction is the masked gradient over its L2 norm, so a step spends its
    whole length inside the mask; projection scales ``x' - x`` by ``min(1, eps/||x' - x||)``.

    Examples:
        >>> import torch
        >>> from advspatial import attacks, models
        >>> _ = torch.manual_seed(0)
        >>> model, images = models.build_model("lenet5").eval(), torch.rand(12, 1, 28, 28)  # images in [0,1]
        >>> labels = model(images).argmax(1)   # untrained here: its own predictions are the labels
        >>> attacks.APGDL2(model, eps=1.0, steps=10)(images, labels).shape
        torch.Size([12, 1, 28, 28])
    """

    name = "apgd-l2"
    norm = "l2"
    budget_params = {"eps": "eps_l2", "steps": "steps"}
    eps_max = None

    def __init__(
        self, model: nn.Module, eps: float = 0.5, steps: int = 100, n_restarts: int = 1,
        loss: str = "ce", rho: float = 0.75, eot_iter: int = 1, early_stop: bool = True, seed: int = 0,
    ) -> None:
        super().__init__(model, eps, steps, n_restarts, loss, rho, eot_iter, early_stop, seed)

    def direction(self, grad: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        """``mask*g / (||mask*g||_2 + 1e-12)``."""
        return l2_direction(grad, mask, L2_GUARD)

    def project(self, x: torch.Tensor, x_new: torch.Tensor) -> torch.Tensor:
        """Scale ``x_new - x`` by ``min(1, eps/||x_new - x||)``, then clip to [0,1]."""
        return l2_project(x, x_new, self.eps)

    def random_start(self, x: torch.Tensor, mask: torch.Tensor | None, ids: torch.Tensor, seed: int) -> torch.Tensor:
        """``x + eps * (mask*z)/||mask*z||`` with ``z ~ N(0, I)`` from ``(seed, ids[i])``, clipped to the box."""
        z = per_sample_noise(x.shape, seed, ids, "normal", x.device, x.dtype)
        if mask is not None:
            z = z * mask
        return (x + self.eps * z / (rows_norm(z) + L2_GUARD)).clamp_(0.0, 1.0)


__all__ = ["APGD", "APGDL2", "Best", "apgd_loss", "beats", "checkpoints", "dlr_loss", "dlr_loss_targeted"]
