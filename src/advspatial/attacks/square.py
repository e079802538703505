"""Square Attack (Andriushchenko et al., ECCV 2020): score-based random search, L-inf and L2.

It needs only logits (no gradient). The current best point ``x_hat`` is changed in
one random square window per query and the change is kept when the loss
``L`` (minimized) improves by more than float noise (``1e-5 * (1 + |L|)``, see
:func:`.apgd.beats`) or the point becomes adversarial:

* ``margin`` loss: untargeted ``z_y - max_{j!=y} z_j``, targeted ``max_{j!=t} z_j - z_t``;
* ``ce`` loss: untargeted ``-CE(z, y)``, targeted ``CE(z, t)``.

Window side at iteration ``i`` (from 0): ``h = round(sqrt(p_i * H*W))`` (L-inf
at least 1; L2 at least 3 and odd), ``p_i = p_init / 2^m`` where ``m`` is the
number of the thresholds 10, 50, 200, 500, 1000, 2000, 4000, 6000, 8000 below
``int(i / n_queries * 10000)`` (the reference implementation's rescaled schedule).
The window's top-left corner is uniform over all positions ``{0..H-h} x {0..W-h}``.

L-inf: start from vertical stripes ``x + eps * s``, ``s in {-1,1}^(C,1,W)``; an
update sets the window, per channel, to ``+-eps`` (random sign): the paper's
``x_hat + 2*eps*sign`` projected back onto the ball.

L2 (paper's Algorithm 3): start from a grid of ``min(H,W)//5``-squares, each filled
with ``+-eta`` per channel, scaled to norm eps. ``eta`` is the paper's window
pattern: the top half of the window holds ``M(r,s) = sum_{k >= d(r,s)} 1/(k+1)^2``
(``d`` the Chebyshev distance to the half's centre), the bottom half ``-M``, each
half normalized, transposed with probability 1/2. An update draws two windows
W1, W2 of equal size and, per channel ``c``, sets
``delta_W2 = 0``, ``delta_W1 = nu/||nu|| * sqrt(||delta_{W1 u W2, c}||^2 + (eps^2 - ||delta||^2)/C)``
with ``nu = +-eta/||eta|| + delta_W1/||delta_W1||``: the budget of both windows
(and any unused budget) moves into W1, so ``||delta||_2`` stays eps.

Mask: every new window content is multiplied by the mask (the perturbation is
exactly 0 where the mask is 0; in L2 the budget is spent inside the mask).
Randomness: image ``i`` draws every random number from its own ``torch.Generator``
seeded by ``(seed + restart, sample_id[i])`` (the same seeding as
:func:`per_sample_noise`), in blocks of iterations, so a batch gives the same
result as each image alone. Restarts run on the images not yet fooled.

On a device (``host_syncs.on_device_path``) the few images left searching (at most :data:`SPECULATED_ROWS`, such
as the ones the gradient attacks of an ensemble left standing) take several iterations per call: each call proposes
the next ones from the point accepted so far, and the search keeps them up to and including the first any image
accepts (until then no image's point moved, so each later proposal is the one it would have made) and drops the
rest unscored, with one read back per call. The examples and query counts are those of one iteration a call (up to
the float noise of a larger batch); a window change is seldom accepted late in a search, so the 5,000 dependent calls
of an image no window fools become a few hundred. A CPU keeps one iteration a call (the dropped proposals would cost
it their passes).

``queries`` counts forward passes: one on ``x`` when ``early_stop`` (an image
adversarial there is returned as ``x``), then per restart one for the start and
one per iteration, at most ``n_queries`` per restart. ``early_stop=True`` stops
an image at its first adversarial point; with ``False`` the search continues and
keeps the lowest-loss adversarial point. Unfooled images get their lowest-loss point. While a batch searches, its
progress bar shows the query it has reached.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache

import torch
from torch import nn

from ..errors import ConfigError, check_range
from ..host_syncs import on_device_path
from ..progress import stepping
from ..runtime import sample_generator
from .search import Best, beats, best_of_runs, stop_early
from .base import Attack, call_keyed, register_attack
from .gradients import attack_loss, is_adversarial

SQUARE_LOSSES = ("margin", "ce")
P_THRESHOLDS = (10, 50, 200, 500, 1000, 2000, 4000, 6000, 8000)
BLOCK = 64          # iterations of random numbers drawn per image at once
#: on a device, with at most SPECULATED_ROWS rows still searching (where a window change is seldom accepted: the
#: images the gradient attacks left standing), one call proposes up to SPECULATION_DEPTH iterations
#: (:meth:`Square._speculate`); with more rows one iteration a call, without a read
SPECULATION_DEPTH = 32
SPECULATED_ROWS = 16
GUARD = 1e-12


def p_schedule(i: int, n_queries: int, p_init: float) -> float:
    """Fraction of pixels the window covers at iteration ``i`` (0-based) of ``n_queries``."""
    it = int(i / n_queries * 10000)
    return p_init / 2 ** sum(it > t for t in P_THRESHOLDS)


def window_side(p: float, h: int, w: int, l2: bool) -> int:
    """``round(sqrt(p*H*W))``, at least 1 (L2: at least 3 and odd), at most ``min(H, W)``."""
    s = int(round(math.sqrt(p * h * w)))
    if l2:
        s = max(s, 3)
        s += 1 - s % 2
    return max(1, min(s, h, w))


def _half_pattern(a: int, b: int) -> torch.Tensor:
    """(a,b): ``sum_{k=d}^{K-1} 1/(k+1)^2`` with ``d`` the Chebyshev distance to ``(a//2, b//2)``, unit L2."""
    rows = (torch.arange(a) - a // 2).abs()[:, None]
    cols = (torch.arange(b) - b // 2).abs()[None, :]
    dist = torch.maximum(rows, cols)
    n_rings = max(a // 2 + 1, b // 2 + 1)
    weights = 1.0 / torch.arange(1, n_rings + 1, dtype=torch.float64) ** 2
    tail = weights.flip(0).cumsum(0).flip(0)          # tail[d] = sum_{k>=d} 1/(k+1)^2
    m = tail[dist]
    return m / m.norm()


@lru_cache(maxsize=64)
def eta_pattern(s: int) -> torch.Tensor:
    """The paper's (s,s) L2 window pattern: ``+M`` on the top half, ``-M`` on the bottom, unit L2 norm.

    Cached: callers must not modify the returned tensor.
    """
    top = s // 2
    parts = [_half_pattern(s - top, s).neg()]
    if top:
        parts.insert(0, _half_pattern(top, s))
    eta = torch.cat(parts)
    return (eta / eta.norm()).float()


def _window(corner_h: torch.Tensor, corner_w: torch.Tensor, s: int, h: int, w: int) -> torch.Tensor:
    """(n,1,H,W) bool: the s x s window at each image's corner."""
    rr = torch.arange(h, device=corner_h.device)[None, :] - corner_h[:, None]
    cc = torch.arange(w, device=corner_w.device)[None, :] - corner_w[:, None]
    return (((rr >= 0) & (rr < s))[:, :, None] & ((cc >= 0) & (cc < s))[:, None, :]).unsqueeze(1)


def _corner(u: torch.Tensor, size: int, s: int) -> torch.Tensor:
    """Uniform corner in ``{0..size-s}`` from U[0,1) numbers."""
    return (u * (size - s + 1)).long().clamp_(0, size - s)


def _signs(u: torch.Tensor) -> torch.Tensor:
    return torch.where(u < 0.5, 1.0, -1.0)


def _channel_norm(t: torch.Tensor) -> torch.Tensor:
    """(n,c,1,1) L2 norm of each channel."""
    return t.pow(2).sum(dim=(2, 3), keepdim=True).sqrt()


@dataclass
class _Search:
    """State of one restart for the images still searching (row i is batch image ``idx[i]``)."""

    idx: torch.Tensor
    ids: torch.Tensor         # the rows' sample ids, on the host (a randomized model keys draws by them)
    x: torch.Tensor
    y: torch.Tensor
    target: torch.Tensor | None
    mask: torch.Tensor | None
    delta: torch.Tensor       # x_hat - x of the accepted point
    score: torch.Tensor       # attacker objective at x_hat (ascended: -L)
    adv: torch.Tensor
    gens: list[torch.Generator]
    draws: torch.Tensor       # (n, BLOCK, K) uniform numbers of the current block
    active: torch.Tensor      # still searching (an early stop drops the others, on a device at block starts)

    def __len__(self) -> int:
        return int(self.idx.shape[0])


@register_attack("square", "Square Attack: score-based random search in the L-inf ball (Andriushchenko et al. 2020)")
class Square(Attack):
    """Square Attack in the L-inf ball (algorithm in the module docstring).

    Args:
        model: classifier on [0,1] images returning logits (only its outputs are used).
        eps: L-inf radius in [0, 1].
        n_queries: forward passes per restart (start included), >= 1.
        n_restarts: restarts on the images not yet fooled, >= 1.
        p_init: initial fraction of pixels a window covers, in (0, 1].
        loss: ``margin`` (default) or ``ce``.
        early_stop: stop an image at its first adversarial point.
        seed: restart r seeds image i's generator with ``(seed + r, sample_id[i])``.

    Examples:
        >>> import torch
        >>> _ = torch.manual_seed(0)
        >>> from torch import nn
        >>> model = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),  # any nn.Module
        ...                       nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),  # taking images
        ...                       nn.Flatten(), nn.Linear(16 * 7 * 7, 10)).eval()  # in [0,1]; untrained here
        >>> images = torch.rand(12, 1, 28, 28)            # (N,C,H,W) in [0,1]
        >>> labels = model(images).argmax(1)              # (N,) labels: here the model's own predictions
        >>> from advspatial.attacks import Square
        >>> result = Square(model, eps=8 / 255, n_queries=50).run(images, labels)   # forward passes only: no gradient
        >>> bool((result.x_adv - images).abs().max() <= 8 / 255 + 1e-6)
        True
    """

    name = "square"
    norm = "linf"
    budget_params = {"eps": "eps_linf"}
    eps_max: float | None = 1.0

    def __init__(
        self, model: nn.Module, eps: float = 8 / 255, n_queries: int = 5000, n_restarts: int = 1,
        p_init: float = 0.8, loss: str = "margin", early_stop: bool = True, seed: int = 0,
    ) -> None:
        super().__init__(model, seed)
        check_range("eps", eps, 0.0, self.eps_max)
        check_range("n_queries", n_queries, 1, None)
        check_range("n_restarts", n_restarts, 1, None)
        check_range("p_init", p_init, 0.0, 1.0, low_inclusive=False)
        if loss not in SQUARE_LOSSES:
            raise ConfigError(f"loss={loss!r} is unknown; valid: {', '.join(SQUARE_LOSSES)}")
        self.eps, self.n_queries, self.n_restarts = float(eps), int(n_queries), int(n_restarts)
        self.p_init, self.loss, self.early_stop = float(p_init), loss, bool(early_stop)

    # -- norm-specific pieces (overridden by SquareL2) ------------------------------
    def n_draws(self, c: int) -> int:
        """Uniform numbers per image and iteration: a corner (2) and a sign per channel."""
        return 2 + c

    def init_delta(self, x: torch.Tensor, mask: torch.Tensor | None, gens: list[torch.Generator]) -> torch.Tensor:
        """Vertical stripes: ``eps * s``, ``s in {-1,1}`` per (channel, column), masked."""
        n, c, _, w = x.shape
        u = torch.stack([torch.rand((c, 1, w), generator=g) for g in gens]) if gens else x.new_zeros(n, c, 1, w)
        delta = self.eps * _signs(u.to(x.device, x.dtype)).expand_as(x)
        return delta if mask is None else delta * mask

    def candidate(self, st: _Search, u: torch.Tensor, p: float) -> torch.Tensor:
        """The window (random corner) set to ``+-eps`` per channel, times the mask."""
        _, c, h, w = st.x.shape
        s = window_side(p, h, w, l2=False)
        win = _window(_corner(u[:, 0], h, s), _corner(u[:, 1], w, s), s, h, w)
        value = self.eps * _signs(u[:, 2:2 + c]).view(-1, c, 1, 1)
        if st.mask is not None:
            value = value * st.mask
        return torch.where(win, value, st.delta)

    # -- the search ---------------------------------------------------------------
    def perturb(
        self, x: torch.Tensor, y: torch.Tensor, mask: torch.Tensor | None,
        target: torch.Tensor | None, sample_ids: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        def plan(best: Best, queries: torch.Tensor) -> range:
            if self.early_stop:
                with torch.no_grad():
                    best.adv |= is_adversarial(call_keyed(self.model, x, sample_ids), y, target)
                queries += 1
            return range(self.n_restarts)

        def run(r: int, rows: torch.Tensor, best: Best, queries: torch.Tensor) -> None:
            with torch.no_grad():
                self._restart(x, y, mask, target, sample_ids, self.seed + r, rows, best, queries)

        return best_of_runs(x, self.eps, plan, run)

    def _score(
        self, x_new: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None, ids: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(attacker objective, ascended; adversarial) at ``x_new`` (rows of sample ids ``ids``): one forward pass."""
        logits = call_keyed(self.model, x_new, ids)
        return attack_loss(logits, y, target, self.loss), is_adversarial(logits, y, target)

    def _restart(
        self, x: torch.Tensor, y: torch.Tensor, mask: torch.Tensor | None, target: torch.Tensor | None,
        sample_ids: torch.Tensor, seed: int, rows: torch.Tensor, best: Best, queries: torch.Tensor,
    ) -> None:
        """One search (start + up to n_queries - 1 iterations) on the batch images ``rows``."""
        xs = x[rows]
        ids = sample_ids[rows.cpu()]
        gens = [sample_generator(seed, s) for s in ids.tolist()]
        m = None if mask is None else mask[rows]
        ys, ts = y[rows], None if target is None else target[rows]
        delta = (xs + self.init_delta(xs, m, gens)).clamp(0.0, 1.0) - xs
        score, adv = self._score(xs + delta, ys, ts, ids)
        queries[rows] += 1
        best.offer(rows, xs + delta, adv, score)
        k = self.n_draws(x.shape[1])
        st = _Search(rows, ids, xs, ys, ts, m, delta, score, adv, gens, delta.new_empty(len(gens), 0, k),
                     torch.ones(len(gens), dtype=torch.bool, device=x.device))
        device = on_device_path(x)  # a device drops the rows that found one when a block starts, and speculates
        with stepping("query", self.n_queries) as show:  # a bar idle on a slow batch shows the search's query
            self._search(st, k, device, best, queries, show)

    def _search(self, st: _Search, k: int, device: bool, best: Best, queries: torch.Tensor,
                show: Callable[[int], None]) -> None:
        """The search's iterations after its start: one a call, or on a device's few rows several (speculated)."""
        i, depth = 0, 2
        while i < self.n_queries - 1:
            show(i + 1)
            if self.early_stop:
                st = stop_early(st, st.adv, not device or i % BLOCK == 0)
            if len(st) == 0:
                return
            if i % BLOCK == 0:
                st.draws = torch.stack([torch.rand((BLOCK, k), generator=g) for g in st.gens]).to(st.x.device,
                                                                                                  st.x.dtype)
            if not device or len(st) > SPECULATED_ROWS:
                self._iterate(st, i, best, queries)
                i += 1
                continue
            taken, accepted = self._speculate(st, i, min(depth, BLOCK - i % BLOCK, self.n_queries - 1 - i), best,
                                              queries)
            i += taken
            # as many iterations as the last acceptance took, twice as many after a call with none
            depth = max(2, taken) if accepted else min(SPECULATION_DEPTH, 2 * depth)

    def _iterate(self, st: _Search, i: int, best: Best, queries: torch.Tensor) -> None:
        """Iteration ``i``: propose a window change; accept it when it ranks higher by (adversarial, -loss)."""
        x_new = self._proposal(st, i)
        score, adv = self._score(x_new, st.y, st.target, st.ids)
        queries[st.idx] += st.active
        self._take(st, x_new, score, adv, self._accepts(st, score, adv), best)

    def _speculate(self, st: _Search, i: int, span: int, best: Best, queries: torch.Tensor) -> tuple[int, bool]:
        """Iterations ``i .. i + span - 1`` in one call, each proposed from the point accepted before ``i``: the
        iterations :meth:`_iterate` would make one after another, up to and including the first that any row
        accepts (until then no row's point moved, so every later proposal is the one it would have made). Returns
        (iterations taken, whether the last was accepted by a row); the proposals after it are dropped unscored."""
        n = len(st)
        proposals = torch.stack([self._proposal(st, i + j) for j in range(span)])
        targets = None if st.target is None else st.target.repeat(span)
        score, adv = self._score(proposals.flatten(0, 1), st.y.repeat(span), targets, st.ids.repeat(span))
        score, adv = score.view(span, n), adv.view(span, n)
        accept = self._accepts(st, score, adv)
        hit = accept.any(dim=1)
        first = int(torch.where(hit.any(), hit.int().argmax(), span))  # the round's one read
        taken = min(first + 1, span)
        last = taken - 1
        queries[st.idx] += st.active * taken
        self._take(st, proposals[last], score[last], adv[last], accept[last], best)
        return taken, first < span

    def _proposal(self, st: _Search, i: int) -> torch.Tensor:
        """Iteration ``i``'s proposal: the accepted point with its window changed (:meth:`candidate`), in the box."""
        u = st.draws[:, i % BLOCK]
        return (st.x + self.candidate(st, u, p_schedule(i, self.n_queries, self.p_init))).clamp_(0.0, 1.0)

    @staticmethod
    def _accepts(st: _Search, score: torch.Tensor, adv: torch.Tensor) -> torch.Tensor:
        """Where a proposal (any leading dimensions before the rows') ranks above the accepted point by
        (adversarial, -loss), on the rows still searching."""
        return ((adv & ~st.adv) | ((adv | ~st.adv) & beats(score, st.score))) & st.active

    @staticmethod
    def _take(st: _Search, x_new: torch.Tensor, score: torch.Tensor, adv: torch.Tensor, accept: torch.Tensor,
              best: Best) -> None:
        """The proposal ``x_new`` becomes the accepted point where ``accept`` holds, and is offered to ``best``."""
        st.delta = torch.where(accept.view(-1, 1, 1, 1), x_new - st.x, st.delta)
        st.score = torch.where(accept, score, st.score)
        st.adv = st.adv | (accept & adv)
        best.offer(st.idx, x_new, adv, score, among=accept)


@register_attack("square-l2", "Square Attack: score-based random search in the L2 ball")
class SquareL2(Square):
    """Square Attack in the L2 ball (same arguments as :class:`Square`; eps >= 0 is an L2 radius).

    Examples:
        >>> import torch
        >>> _ = torch.manual_seed(0)
        >>> from torch import nn
        >>> model = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),  # any nn.Module
        ...                       nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),  # taking images
        ...                       nn.Flatten(), nn.Linear(16 * 7 * 7, 10)).eval()  # in [0,1]; untrained here
        >>> images = torch.rand(12, 1, 28, 28)            # (N,C,H,W) in [0,1]
        >>> labels = model(images).argmax(1)              # (N,) labels: here the model's own predictions
        >>> from advspatial.attacks import SquareL2
        >>> x_adv = SquareL2(model, eps=1.0, n_queries=50)(images, labels)
        >>> bool((x_adv - images).flatten(1).norm(dim=1).max() <= 1.0 + 1e-4)
        True
    """

    name = "square-l2"
    norm = "l2"
    budget_params = {"eps": "eps_l2"}
    eps_max = None

    def __init__(
        self, model: nn.Module, eps: float = 0.5, n_queries: int = 5000, n_restarts: int = 1,
        p_init: float = 0.8, loss: str = "margin", early_stop: bool = True, seed: int = 0,
    ) -> None:
        super().__init__(model, eps, n_queries, n_restarts, p_init, loss, early_stop, seed)

    def n_draws(self, c: int) -> int:
        """Two corners (4), a transpose coin (1) and a sign per channel."""
        return 5 + c

    def init_delta(self, x: torch.Tensor, mask: torch.Tensor | None, gens: list[torch.Generator]) -> torch.Tensor:
        """A centred grid of ``t = min(H,W)//5`` squares holding ``+-eta`` per channel, masked, norm eps."""
        n, c, h, w = x.shape
        t = max(min(h, w) // 5, 1)
        nh, nw = h // t, w // t
        oh, ow = (h - nh * t) // 2, (w - nw * t) // 2
        u = torch.stack([torch.rand((nh, nw, c + 1), generator=g) for g in gens]).to(x.device, x.dtype)
        eta = eta_pattern(t).to(x.device, x.dtype)
        delta = torch.zeros_like(x)
        for a in range(nh):
            for b in range(nw):
                flip = (u[:, a, b, 0] < 0.5).view(-1, 1, 1, 1)
                tile = torch.where(flip, eta.T, eta) * _signs(u[:, a, b, 1:]).view(n, c, 1, 1)
                delta[:, :, oh + a * t: oh + (a + 1) * t, ow + b * t: ow + (b + 1) * t] = tile
        if mask is not None:
            delta = delta * mask
        return self.eps * delta / (delta.flatten(1).norm(dim=1).view(-1, 1, 1, 1) + GUARD)

    def candidate(self, st: _Search, u: torch.Tensor, p: float) -> torch.Tensor:
        """Algorithm 3: move the budget of windows W1 and W2 (and any unused budget) into W1."""
        n, c, h, w = st.x.shape
        s = window_side(p, h, w, l2=True)
        w1 = _window(_corner(u[:, 0], h, s), _corner(u[:, 1], w, s), s, h, w).to(st.x.dtype)
        w2 = _window(_corner(u[:, 2], h, s), _corner(u[:, 3], w, s), s, h, w).to(st.x.dtype)
        union = torch.maximum(w1, w2)
        delta = st.delta
        old = delta * w1
        nu = self._placed_eta(u, s, h, w) * _signs(u[:, 5:5 + c]).view(n, c, 1, 1)
        nu = nu + old / (_channel_norm(old) + GUARD)
        if st.mask is not None:
            nu = nu * st.mask
        unused = (self.eps**2 - delta.flatten(1).pow(2).sum(1)).clamp_min(0).view(-1, 1, 1, 1)
        avail = (_channel_norm(delta * union).pow(2) + unused / c).sqrt()
        new = delta * (1 - union) + nu / (_channel_norm(nu) + GUARD) * avail
        norm = new.flatten(1).norm(dim=1).view(-1, 1, 1, 1)
        return new * torch.where(norm > self.eps, self.eps / norm.clamp_min(GUARD), torch.ones_like(norm))

    @staticmethod
    def _placed_eta(u: torch.Tensor, s: int, h: int, w: int) -> torch.Tensor:
        """(n,1,H,W): eta (transposed where ``u[:,4] < 0.5``) at each image's W1, 0 elsewhere."""
        eta = eta_pattern(s).to(u.device, u.dtype)
        table = torch.where((u[:, 4] < 0.5).view(-1, 1, 1), eta.T, eta)                 # (n,s,s)
        rr = torch.arange(h, device=u.device)[None, :] - _corner(u[:, 0], h, s)[:, None]  # (n,H)
        cc = torch.arange(w, device=u.device)[None, :] - _corner(u[:, 1], w, s)[:, None]  # (n,W)
        inside = ((rr >= 0) & (rr < s))[:, :, None] & ((cc >= 0) & (cc < s))[:, None, :]
        vals = table[torch.arange(u.shape[0], device=u.device)[:, None, None],
                     rr.clamp(0, s - 1)[:, :, None], cc.clamp(0, s - 1)[:, None, :]]
        return (vals * inside).unsqueeze(1)


__all__ = ["Square", "SquareL2", "eta_pattern", "p_schedule", "window_side"]
