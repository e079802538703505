"""One-pixel and k-pixel attacks by differential evolution (Su, Vargas & Sakurai, 2019).

A candidate changes ``k`` pixels: for each one a position (row, col) and a
colour (one value per channel, in [0,1]). Differential evolution (DE) searches
the candidates of *all* images at once: every generation evaluates one batch of
``N_images * popsize`` candidates (in chunks), so the cost is a few large
batched evaluations per generation and no Python loop over images (only the
per-image random number generators are visited in a loop, which keeps a batch
attacked together identical to each image attacked alone).

DE/rand/1 as in Su et al.: for member ``i`` of an image's population, the trial
is ``p[r1] + F * (p[r2] - p[r3])`` with ``r1, r2, r3, i`` distinct and
``F = mutation = 0.5``; no crossover by default (``crossover=1.0`` takes every
component from the mutant; a smaller value is binomial crossover with the
parent); the trial replaces its parent when its fitness is no worse (greedy
selection). Fitness, minimized: the softmax probability of the true class
(untargeted) or ``1 - p(target)`` (targeted).

Budget: ``popsize`` candidates per image, evaluated once at initialization and
once per generation for ``maxiter`` generations: at most
``popsize * (maxiter + 1)`` model evaluations per image. Presets: ``paper``
(popsize 400, maxiter 75, the one-pixel attack paper) and ``quick``
(popsize 100, maxiter 20); an explicit ``popsize``/``maxiter`` overrides the
preset.

Early stop: as soon as any evaluated candidate of an image succeeds (the
prediction leaves the label, or reaches the target), the image keeps the best
such candidate and is frozen: it costs no more queries. The run ends when every
image is frozen or the generations are spent; an image that never succeeds
keeps its lowest-fitness candidate. An image that is misclassified already is
attacked like any other (its first candidates usually succeed at once), so a
success keeps ``L0 = k`` (less only when pixels coincide or a colour equals the
original value).

Choices (this project's, documented here): colours start uniform in [0,1]
(Su et al. draw RGB from a Gaussian around mid-grey); positions are continuous
coordinates in ``[0,H) x [0,W)`` floored to a pixel; after mutation a
coordinate that leaves the image is reflected back into it and a colour is
clamped to [0,1].

Masks: candidate pixels are drawn only where the mask is nonzero (in any
channel); a mutated position that lands outside is moved to the nearest
allowed pixel (Euclidean distance transform), so no candidate is wasted where
it could not act. A fractional mask value ``m`` at the chosen pixel scales the
change: the pixel becomes ``x + m * (colour - x)``. An image whose mask is
empty is returned unchanged with zero queries.

Incremental evaluation: a one-pixel candidate changes one pixel, so by
default (``incremental="auto"``: on a CPU) its logits come from
:class:`~advspatial.models.patch.forward.PatchForward` (a chain of
convolution/pooling layers) or, where convolutions remain after the chain
(residual and mobile networks),
:class:`~advspatial.models.patch.graph.GraphPatchForward` (the cone followed
through additions, strided and depthwise convolutions, padding modules): only
the pixel's cone is recomputed, the clean image's activations are reused
elsewhere. The logits equal a full forward pass up to floating-point summation
order (tested to 1e-5), the number of queries is unchanged, and a model that
neither can follow (TorchScript, several inputs, training mode) silently gets
full forward passes. k-pixel candidates always get full forward passes.
On a GPU ``"auto"`` chooses full forward passes: there the many small kernels of
the cone cost more than the whole batch's forward pass (measured on an H100:
LeNet5 16 µs per candidate by full passes against 47 µs incrementally, ResNet-20
11 against 24 µs; benchmarks/README.md).

Randomness: image ``i`` draws every random number (initial population, mutation indices, crossover) from its own
generator seeded with ``(seed, sample_ids[i])``. The batched forward passes are the only shared computation. Their
rounding is the backend's: oneDNN convolutions (6e-8 on an AMD EPYC, bit-equal on other CPUs) and MKL's sgemm (about
1e-6) can round a row differently for different batch sizes, in the incremental stem as in the model's own forward,
which could change a selection only in a near-exact tie of two fitness values. In the tests, a batch attacked
together equals each image attacked alone, bit for bit. The progress bar of a batch shows its generation.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError, check_range, unknown_name
from ..models.patch.forward import PatchForward, try_patch_forward
from ..models.patch.graph import GraphPatchForward
from ..passes import one_round
from ..progress import steps
from ..runtime import batch_slices, sample_generator
from .base import Attack, register_attack
from .evolution import distinct_others, draw_uniform, nearest_allowed, uniform_index

#: Named budgets ``(popsize, maxiter)``.
PRESETS: dict[str, tuple[int, int]] = {"paper": (400, 75), "quick": (100, 20)}


def _check_int(name: str, value: object, low: int) -> int:
    """``value`` as an int >= ``low``, else :class:`ConfigError`."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ConfigError(f"{name}={value!r} must be an integer >= {low}")
    check_range(name, int(value), low)
    return int(value)


@dataclass
class _Search:
    """State of a DE run over a batch: per image (N rows), a population of P candidates (k, 2+C).

    ``found[i]``: image i has a successful candidate, ``winner[i]`` (the fittest
    successful one seen); ``queries[i]``: candidates evaluated for image i.
    """

    population: torch.Tensor  # (N, P, k, 2+C)
    fitness: torch.Tensor  # (N, P), lower is better
    found: torch.Tensor  # (N,) bool, CPU
    winner: torch.Tensor  # (N, k, 2+C)
    queries: torch.Tensor  # (N,) int64, CPU

    def record_success(self, rows: torch.Tensor, cand: torch.Tensor, fit: torch.Tensor, succ: torch.Tensor) -> None:
        """For images ``rows`` with a successful candidate in ``cand`` (A, P, k, 2+C): keep the fittest one."""
        hit = succ.any(dim=1)
        if not hit.any():
            return
        best = torch.where(succ, fit, torch.full_like(fit, float("inf"))).argmin(dim=1)
        chosen = cand[torch.arange(cand.shape[0], device=cand.device), best]
        hit_rows = rows[hit.cpu()]
        self.winner[hit_rows.to(self.winner.device)] = chosen[hit]
        self.found[hit_rows] = True

    def final(self) -> torch.Tensor:
        """(N, k, 2+C): the winner where found, else the lowest-fitness member of the population."""
        n = self.population.shape[0]
        index = self.fitness.argmin(dim=1).view(n, 1, 1, 1).expand(n, 1, *self.population.shape[2:])
        best = self.population.gather(1, index).squeeze(1)
        return torch.where(self.found.to(best.device)[:, None, None], self.winner, best)


class OnePixel(Attack):
    """k-pixel attack (k = ``pixels``) by batched differential evolution.

    Args:
        model: classifier taking images in [0,1].
        pixels: number of pixels a candidate changes (k).
        popsize: candidates per image (default from ``preset``).
        maxiter: generations after the initial population (default from ``preset``).
        preset: ``paper`` (400, 75) or ``quick`` (100, 20), used where popsize/maxiter are None.
        mutation: DE differential weight F.
        crossover: probability that a trial component comes from the mutant
            (binomial crossover); 1.0 = no crossover, as in Su et al.
        max_batch: most perturbed images per full forward pass (bounds memory);
            default 256 on a CPU (cache-friendly: faster per image than 1024)
            and 4096 on a GPU.
        incremental: ``"auto"`` (default): incremental forward passes for one-pixel
            candidates on a CPU where the model allows (see the module docstring),
            full forward passes on a GPU; True: incremental on any device; False:
            always full forward passes.
        seed: seed of the per-sample generators.

    Examples:
        >>> import torch
        >>> from advspatial import attacks, models
        >>> _ = torch.manual_seed(0)
        >>> model, images = models.build_model("lenet5").eval(), torch.rand(12, 1, 28, 28)  # images in [0,1]
        >>> labels = model(images).argmax(1)   # untrained here: its own predictions are the labels
        >>> result = attacks.OnePixel(model, popsize=20, maxiter=3).run(images, labels)
        >>> int(result.l0.max())                           # pixel positions changed per image
        1
    """

    name = "onepixel"
    norm = "l0"
    budget_params = {"popsize": "onepixel_popsize", "maxiter": "onepixel_steps"}
    supports_targeted = True

    def __init__(
        self, model: nn.Module, pixels: int = 1, popsize: int | None = None, maxiter: int | None = None,
        preset: str = "paper", mutation: float = 0.5, crossover: float = 1.0, max_batch: int | None = None,
        incremental: bool | str = "auto", seed: int = 0,
    ) -> None:
        super().__init__(model, seed)
        if preset not in PRESETS:
            raise unknown_name("preset", preset, PRESETS)
        self.preset = preset
        self.pixels = _check_int("pixels", pixels, 1)
        self.popsize = _check_int("popsize", PRESETS[preset][0] if popsize is None else popsize, 4)
        self.maxiter = _check_int("maxiter", PRESETS[preset][1] if maxiter is None else maxiter, 0)
        check_range("mutation", float(mutation), 0.0, 2.0, low_inclusive=False)
        check_range("crossover", float(crossover), 0.0, 1.0)
        self.mutation = float(mutation)
        self.crossover = float(crossover)
        self.max_batch = None if max_batch is None else _check_int("max_batch", max_batch, 1)
        if incremental not in (True, False, "auto"):
            raise ConfigError(f"incremental={incremental!r} is not valid; valid: 'auto', True, False")
        self.incremental = incremental
        self._prebuilt: tuple[torch.Tensor, PatchForward | GraphPatchForward | None] | None = None  # run's, for perturb

    def _release(self) -> None:
        """Drops the incremental evaluator built for the clean predictions (the search's, then the verdict's)."""
        self._prebuilt = None

    def _clean_logits(self, x: torch.Tensor) -> torch.Tensor:
        """The chain evaluator's clean logits (its stem and tail are the model's own layers on the same batch:
        equal to ``model(x)`` bit for bit), which also keeps the evaluator for :meth:`perturb`; else ``model(x)``."""
        evaluator = self._evaluator(x)
        self._prebuilt = (x, evaluator)
        if isinstance(evaluator, PatchForward):
            return evaluator.clean_logits
        return self.model(x)

    def _adversarial_logits(self, x_adv: torch.Tensor) -> torch.Tensor:
        """The chain evaluator's full forward pass (not its incremental one): the model's layers on the whole
        images, equal to ``model(x_adv)`` bit for bit, with max pooling by the exact and faster two maxima."""
        evaluator = None if self._prebuilt is None else self._prebuilt[1]
        if isinstance(evaluator, PatchForward):
            return evaluator.full_logits(x_adv)
        return self.model(x_adv)

    def _evaluator(self, x: torch.Tensor) -> PatchForward | GraphPatchForward | None:
        """The incremental evaluator for images ``x``, or None where full forward passes are used."""
        if self._prebuilt is not None and self._prebuilt[0] is x:
            return self._prebuilt[1]
        incremental = x.device.type == "cpu" if self.incremental == "auto" else self.incremental
        return try_patch_forward(self.model, x) if incremental and self.pixels == 1 else None

    @classmethod
    def quick(cls, model: nn.Module, **kwargs: object) -> OnePixel:
        """The attack with the ``quick`` budget (popsize 100, maxiter 20)."""
        return cls(model, preset="quick", **kwargs)  # type: ignore[arg-type]

    # -- the search ---------------------------------------------------------------
    def perturb(
        self, x: torch.Tensor, y: torch.Tensor, mask: torch.Tensor | None,
        target: torch.Tensor | None, sample_ids: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Run DE on every image whose mask allows at least one pixel; see the module docstring."""
        n, _, height, width = x.shape
        check_range("pixels", self.pixels, 1, height * width)  # an image has H x W pixels to change
        allowed = (torch.ones(n, height * width, dtype=torch.bool, device=x.device) if mask is None
                   else (mask != 0).any(dim=1).flatten(1))
        runnable = allowed.any(dim=1).cpu()
        if not runnable.any():
            return x.clone(), torch.zeros(n, dtype=torch.long)
        snap = None if mask is None else nearest_allowed(allowed, height, width)
        gens = [sample_generator(self.seed, int(s)) for s in sample_ids.tolist()]
        goal = y if target is None else target
        with torch.no_grad():
            score = self._scorer(x, mask, goal, target is not None)
            search = self._start(score, x, runnable, allowed, gens)
            for _ in steps("generation", self.maxiter):  # a batch at the paper's budget can take an hour
                rows = (runnable & ~search.found).nonzero().squeeze(1)
                if rows.numel() == 0:
                    break  # every image is fooled: stop the whole run
                trial = self._trial(search.population[rows.to(x.device)], [gens[i] for i in rows.tolist()],
                                    None if snap is None else snap[rows.to(x.device)], height, width)
                self._select(search, rows, trial, *score(rows, trial))
            rows = runnable.nonzero().squeeze(1).to(x.device)
            x_adv = x.clone()
            x_adv[rows] = self._apply(x, mask, rows, search.final()[rows])
        return x_adv, search.queries

    def _start(
        self, score: _Scorer, x: torch.Tensor, runnable: torch.Tensor, allowed: torch.Tensor,
        gens: list[torch.Generator],
    ) -> _Search:
        """Draw and evaluate the initial population of every runnable image."""
        rows = runnable.nonzero().squeeze(1)
        pop = self._initial_population([gens[i] for i in rows.tolist()], allowed[rows.to(x.device)], x)
        fit, succ = score(rows, pop)
        n, dev = x.shape[0], x.device
        search = _Search(
            population=torch.zeros((n, *pop.shape[1:]), dtype=x.dtype, device=dev),
            fitness=torch.full((n, self.popsize), float("inf"), dtype=fit.dtype, device=dev),
            found=torch.zeros(n, dtype=torch.bool),
            winner=torch.zeros((n, *pop.shape[2:]), dtype=x.dtype, device=dev),
            queries=torch.zeros(n, dtype=torch.long),
        )
        search.population[rows.to(dev)], search.fitness[rows.to(dev)] = pop, fit
        search.queries[rows] += self.popsize
        search.record_success(rows, pop, fit, succ)
        return search

    def _select(
        self, search: _Search, rows: torch.Tensor, trial: torch.Tensor, fit: torch.Tensor, succ: torch.Tensor,
    ) -> None:
        """Greedy selection: each trial replaces its parent when no worse; count queries, record successes."""
        dev_rows = rows.to(trial.device)
        better = fit <= search.fitness[dev_rows]
        search.population[dev_rows] = torch.where(better[..., None, None], trial, search.population[dev_rows])
        search.fitness[dev_rows] = torch.where(better, fit, search.fitness[dev_rows])
        search.queries[rows] += self.popsize
        search.record_success(rows, trial, fit, succ)

    def _initial_population(self, gens: list[torch.Generator], allowed: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """(A, P, k, 2+C) candidates: positions uniform over each image's allowed pixels, colours U[0,1].

        Random numbers are drawn and turned into positions on the CPU in float64,
        then cast to the image dtype and moved to its device.
        """
        channels, width = x.shape[1], x.shape[3]
        u = draw_uniform(gens, (self.popsize, self.pixels, 3 + channels))
        allowed = allowed.cpu()
        rank = uniform_index(u[..., 0], allowed.sum(dim=1).view(-1, 1, 1).to(u.dtype))
        flat = torch.searchsorted(allowed.long().cumsum(dim=1), (rank + 1).flatten(1)).view_as(rank)
        # a sub-pixel offset in (0.005, 0.995): stays inside the pixel after a cast to float32
        row = (flat // width).to(u.dtype) + 0.5 + 0.99 * (u[..., 1] - 0.5)
        col = (flat % width).to(u.dtype) + 0.5 + 0.99 * (u[..., 2] - 0.5)
        pop = torch.cat([row[..., None], col[..., None], u[..., 3:]], dim=-1)
        return pop.to(device=x.device, dtype=x.dtype)

    def _trial(
        self, parents: torch.Tensor, gens: list[torch.Generator], snap: torch.Tensor | None,
        height: int, width: int,
    ) -> torch.Tensor:
        """DE/rand/1 trial vectors (optionally crossed with the parents), repaired into the valid set."""
        a, p = parents.shape[:2]
        dims = parents[0, 0].numel()
        extra = dims + 1 if self.crossover < 1.0 else 0
        u = draw_uniform(gens, (p, 3 + extra))
        r = distinct_others(u[..., :3]).to(parents.device)
        r1, r2, r3 = (parents.gather(1, r[..., j].view(a, p, 1, 1).expand_as(parents)) for j in range(3))
        trial = r1 + self.mutation * (r2 - r3)
        if extra:
            take = u[..., 3:3 + dims] < self.crossover
            take = take | F.one_hot(uniform_index(u[..., -1], dims), dims).bool()
            trial = torch.where(take.to(parents.device).view_as(trial), trial, parents)
        return self._repair(trial, snap, height, width)

    @staticmethod
    def _repair(trial: torch.Tensor, snap: torch.Tensor | None, height: int, width: int) -> torch.Tensor:
        """Reflect positions into the image, move them to the nearest allowed pixel, clamp colours."""
        pos = trial[..., :2]
        size = torch.tensor([height, width], dtype=trial.dtype, device=trial.device)
        pos = torch.where(pos < 0, -pos, pos)
        pos = torch.where(pos >= size, 2 * size - pos, pos).clamp(min=0)
        pos = torch.minimum(pos, size)
        if snap is not None:
            pix = torch.minimum(pos.floor().long(), size.long() - 1)
            flat = (pix[..., 0] * width + pix[..., 1])
            moved_to = snap.gather(1, flat.flatten(1)).view_as(flat)
            target = torch.stack([moved_to // width, moved_to % width], dim=-1).to(trial.dtype) + 0.5
            pos = torch.where((moved_to != flat)[..., None], target, pos)
        return torch.cat([pos, trial[..., 2:].clamp(0.0, 1.0)], dim=-1)

    @staticmethod
    def _apply(x: torch.Tensor, mask: torch.Tensor | None, rows: torch.Tensor, cand: torch.Tensor) -> torch.Tensor:
        """Images ``x[rows]`` with the k pixels of ``cand`` (B, k, 2+C) set; rows repeat freely."""
        out = x[rows].clone()
        batch = torch.arange(out.shape[0], device=x.device)
        for j in range(cand.shape[1]):
            r, c, colour = _pixel_change(x, mask, rows, cand[:, j])
            out[batch, :, r, c] = colour
        return out

    def _scorer(self, x: torch.Tensor, mask: torch.Tensor | None, goal: torch.Tensor, targeted: bool) -> _Scorer:
        """The fitness function of this run, incremental where the model and ``pixels`` allow."""
        patch_forward = self._evaluator(x)
        max_batch = self.max_batch or (256 if x.device.type == "cpu" else 4096)
        return _Scorer(self.model, x, mask, goal, targeted, max_batch, patch_forward)


def _pixel_change(
    x: torch.Tensor, mask: torch.Tensor | None, rows: torch.Tensor, pixel: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Row, column and new (B, C) colour of one pixel (B, 2+C) of each candidate; masks scale the change."""
    height, width = x.shape[2:]
    r = pixel[:, 0].floor().long().clamp(0, height - 1)
    c = pixel[:, 1].floor().long().clamp(0, width - 1)
    colour = pixel[:, 2:]
    if mask is not None:
        old = x[rows, :, r, c]
        colour = old + mask[rows, :, r, c] * (colour - old)
    return r, c, colour


@dataclass
class _Scorer:
    """Fitness (to minimize) and success of candidates, by full or incremental forward passes in chunks."""

    model: nn.Module
    x: torch.Tensor
    mask: torch.Tensor | None
    goal: torch.Tensor
    targeted: bool
    max_batch: int
    patch_forward: PatchForward | GraphPatchForward | None

    def __call__(self, rows: torch.Tensor, cand: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(A, P) fitness and success for candidates ``cand`` (A, P, k, 2+C) of images ``rows`` (A,)."""
        a, p = cand.shape[:2]
        img = rows.to(self.x.device).repeat_interleave(p)
        flat = cand.reshape(a * p, *cand.shape[2:])
        fits, succs = [], []
        with one_round():  # a population's chunks are one round
            for part in batch_slices(a * p, self.chunk):
                logits = self.logits(img[part], flat[part])
                goal = self.goal[img[part]]
                prob = logits.softmax(dim=1).gather(1, goal[:, None]).squeeze(1)
                pred = logits.argmax(dim=1)
                fits.append(1.0 - prob if self.targeted else prob)
                succs.append(pred == goal if self.targeted else pred != goal)
        return torch.cat(fits).view(a, p), torch.cat(succs).view(a, p)

    @property
    def chunk(self) -> int:
        """Candidates per pass: ``max_batch`` for full passes; for incremental ones, by working set.

        Incremental passes are cheap per candidate and memory-bound: on a CPU
        they run best in batches whose activations stay in cache, about 2**21
        floats of stem output (2675 candidates for a 16x7x7 stem output, 668
        for 64x7x7); a GPU takes 16 times more. Kept within [256, 65536].
        """
        if self.patch_forward is None:
            return self.max_batch
        per_candidate = self.patch_forward.working_set
        budget = 2**21 if self.x.device.type == "cpu" else 2**25
        return min(65536, max(256, budget // max(per_candidate, 1)))

    def logits(self, img: torch.Tensor, cand: torch.Tensor) -> torch.Tensor:
        """Logits of the images ``x[img]`` changed by candidates ``cand`` (B, k, 2+C)."""
        if self.patch_forward is None:
            return self.model(OnePixel._apply(self.x, self.mask, img, cand))
        r, c, colour = _pixel_change(self.x, self.mask, img, cand[:, 0])
        return self.patch_forward(img, r, c, colour[:, :, None, None])


register_attack("onepixel", "one-pixel attack by differential evolution (Su et al.), L0 = 1", pixels=1)(OnePixel)


@register_attack("kpixel", "k-pixel attack by differential evolution (default k = 3), L0 = k")
class KPixel(OnePixel):
    """:class:`OnePixel` with ``pixels=3`` by default (registered as ``kpixel``).

    Examples:
        >>> import torch
        >>> from advspatial import attacks, models
        >>> _ = torch.manual_seed(0)
        >>> model, images = models.build_model("lenet5").eval(), torch.rand(12, 1, 28, 28)  # images in [0,1]
        >>> labels = model(images).argmax(1)   # untrained here: its own predictions are the labels
        >>> result = attacks.KPixel(model, popsize=20, maxiter=3).run(images, labels)
        >>> int(result.l0.max()) <= 3
        True
    """

    name = "kpixel"

    def __init__(
        self, model: nn.Module, pixels: int = 3, popsize: int | None = None, maxiter: int | None = None,
        preset: str = "paper", mutation: float = 0.5, crossover: float = 1.0, max_batch: int | None = None,
        incremental: bool | str = "auto", seed: int = 0,
    ) -> None:
        super().__init__(model, pixels, popsize, maxiter, preset, mutation, crossover, max_batch, incremental, seed)
