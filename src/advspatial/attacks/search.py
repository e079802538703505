"""Best-point search shared by the attacks that restart (APGD, Square): the best point per image and the driver.

An image's best point is ranked by (adversarial, loss): an adversarial point
beats any other; a loss gain within float noise is no gain (:func:`beats`), so
an image's result never depends on the other images of its batch.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, fields, replace
from typing import Any, Protocol, TypeVar

import torch

#: a relative loss gain below this is float noise, not progress (:func:`beats`)
IMPROVEMENT_TOL = 1e-5
T = TypeVar("T")
S = TypeVar("S")


class _Searching(Protocol):
    """A search's state whose rows an early stop masks: ``active``, the (n,) bool rows still searching."""

    active: torch.Tensor


R = TypeVar("R", bound=_Searching)


def beats(new: torch.Tensor, old: torch.Tensor) -> torch.Tensor:
    """``new > old + 1e-5 * (1 + |old|)`` elementwise (any finite ``new`` beats ``old = -inf``).

    A gain within float noise is no gain: the last bits of a model's outputs depend on
    the batch an image is evaluated in, and a decision on such noise (an iterate stuck
    at a corner of the ball, a Square window whose change the box clips away) would
    make an image's result depend on the other images of its batch.
    """
    threshold = torch.where(torch.isinf(old), old, old + IMPROVEMENT_TOL * (1 + old.abs()))
    return new > threshold



@dataclass
class Best:
    """The best point seen per image, ranked by (adversarial, loss): an adversarial point beats any other."""

    x: torch.Tensor
    adv: torch.Tensor
    loss: torch.Tensor

    @classmethod
    def start(cls, x: torch.Tensor) -> Best:
        n = x.shape[0]
        return cls(x.clone(), torch.zeros(n, dtype=torch.bool, device=x.device),
                   torch.full((n,), float("-inf"), device=x.device, dtype=x.dtype))

    def offer(self, idx: torch.Tensor, x: torch.Tensor, adv: torch.Tensor, loss: torch.Tensor,
              among: torch.Tensor | None = None) -> None:
        """Keep ``x`` for the images ``idx`` where it ranks above the point kept so far (only where ``among``
        holds, when given). Decided on the device: the rows ``idx`` are written back whole, with the old
        values where nothing is better, so no value is read back to the host."""
        old_adv, old_loss = self.adv[idx], self.loss[idx]
        better = (adv & ~old_adv) | ((adv == old_adv) & beats(loss, old_loss))
        if among is not None:
            better = better & among
        self.x[idx] = torch.where(better.view(-1, *([1] * (x.ndim - 1))), x, self.x[idx])
        self.adv[idx] = torch.where(better, adv, old_adv)
        self.loss[idx] = torch.where(better, loss, old_loss)


def compact(state: S, rows: torch.Tensor) -> S:
    """``state`` (a dataclass of per-row tensors, lists and Nones) restricted to the rows where the (n,) bool
    ``rows`` holds; ``state`` itself where it holds everywhere. The kept positions are read back to the host at
    once: one synchronisation for the whole state, instead of one per field indexed with the mask."""
    flags = rows.tolist()
    if all(flags):
        return state
    positions = [i for i, k in enumerate(flags) if k]
    index = torch.tensor(positions, dtype=torch.long, device=rows.device)
    on_host = index if rows.device.type == "cpu" else torch.tensor(positions, dtype=torch.long)
    out: dict[str, Any] = {}
    for f in fields(state):  # type: ignore[arg-type]
        v = getattr(state, f.name)
        if v is None or isinstance(v, list):
            out[f.name] = None if v is None else [v[i] for i in positions]
        else:  # a field kept on the host (sample ids) is indexed there
            out[f.name] = v[on_host] if v.device.type == "cpu" else v[index]
    return replace(state, **out)  # type: ignore[type-var]


def stop_early(state: R, finished: torch.Tensor, drop: bool) -> R:
    """An early stop: the rows of ``state`` where ``finished`` holds stop searching at once (``state.active``
    cleared: the step's decisions leave them alone) and leave the state (:func:`compact`) where ``drop`` holds.
    A drop reads the rows back, so a CPU drops at every step and a device only at a few points (a wait each);
    the rows still searching take the same steps either way."""
    state.active = state.active & ~finished
    return compact(state, state.active) if drop else state


def best_of_runs(
    x: torch.Tensor, eps: float, plan: Callable[[Best, torch.Tensor], Iterable[T]],
    run: Callable[[T, torch.Tensor, Best, torch.Tensor], None],
) -> tuple[torch.Tensor, torch.Tensor]:
    """The restart driver of APGD and Square: ``(best point per image, queries per image)``.

    ``plan(best, queries)`` may spend queries on the clean images first (marking
    those already adversarial in ``best``) and returns the runs; each run is
    ``run(item, rows, best, queries)`` on the batch images ``rows`` that are not
    adversarial yet, and offers its points to ``best``. Stops once every image is
    adversarial; nothing runs for ``eps == 0`` or an empty batch.
    """
    queries = torch.zeros(x.shape[0], dtype=torch.long, device=x.device)
    best = Best.start(x)
    if eps == 0 or x.shape[0] == 0:
        return best.x, queries
    for item in plan(best, queries):
        rows = (~best.adv).nonzero().flatten()
        if rows.numel() == 0:
            break
        run(item, rows, best, queries)
    return best.x, queries
