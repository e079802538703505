"""Independent work sent to the classifier as one round (:func:`~advspatial.passes.one_round`): independent batches
as stacked calls (:func:`forward_stacked`, :func:`stacked_outputs`), and a stack of independent rows run as one (a
gate's regions × images under one attack): how many rows one run holds (:func:`run_rows`), and the model called a
CPU-sized batch at a time inside it (:class:`RowChunks`), so that each step of the run is one round on a CPU as on a
device.
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Iterable

import torch
from torch import nn

from .passes import STACK_ELEMENTS, one_round, rows_within, stack_elements
from .runtime import batch_slices


def run_rows(call_rows: int, sample: torch.Tensor) -> int:
    """Rows of one run over independent rows stacked into one batch (a gate's regions × images, attacked as one):
    as many images like ``sample`` as :data:`~advspatial.passes.STACK_ELEMENTS` input elements hold (the memory
    of one run, on any device), at least ``call_rows``. Where that is more than a call takes (``call_rows``, a
    CPU's batch), the run's calls go through :class:`RowChunks`: each step of the run is still one round.

    Example::

        >>> run_rows(100, torch.zeros(4, 3, 32, 32)), run_rows(100, torch.zeros(4, 3, 224, 224))
        (5461, 111)
    """
    return max(int(call_rows), rows_within(STACK_ELEMENTS, sample))


class RowChunks(nn.Module):
    """``model`` called at most ``rows`` images at a time, the calls of one forward being one round
    (:func:`~advspatial.passes.one_round`): a stack of independent rows run as one (a gate's regions × images
    under one attack) goes through a CPU in the batches its caches hold, and counts as the one call a device makes
    of it. Gradients flow through the chunks as through one call.

    Example::

        >>> from advspatial.passes import PassLedger
        >>> ledger, model = PassLedger(), nn.Linear(4, 2)
        >>> ledger.watch(model)
        >>> RowChunks(model, 3)(torch.rand(7, 4)).shape, ledger.outside.calls, ledger.outside.rounds
        (torch.Size([7, 2]), 3, 1)
    """

    def __init__(self, model: nn.Module, rows: int) -> None:
        super().__init__()
        if rows < 1:
            raise ValueError(f"rows must be >= 1, got {rows}")
        self.model, self.rows = model, int(rows)
        self.training = model.training

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return in_chunks(lambda sl: self.model(x[sl]), x.shape[0], self.rows)


def in_chunks(call: Callable[[slice], torch.Tensor], rows: int, per_call: int | None) -> torch.Tensor:
    """``call`` over slices of at most ``per_call`` of ``rows`` independent rows (None: all at once), the outputs
    concatenated in order; the calls are one round (:func:`~advspatial.passes.one_round`).

    >>> in_chunks(lambda sl: torch.arange(sl.start, sl.stop), 5, 2).tolist()
    [0, 1, 2, 3, 4]
    """
    if per_call is None or rows <= per_call:
        return call(slice(0, rows))
    with one_round():
        return torch.cat([call(sl) for sl in batch_slices(rows, per_call)])


def forward_stacked(model: Callable[[torch.Tensor], torch.Tensor], inputs: Iterable[torch.Tensor],
                    elements: int | None = None) -> list[torch.Tensor]:
    """The model's outputs on independent batches ``inputs`` (made one after another, each ``(B_i, ...)`` with
    the same trailing shape), in order, as **one round**: :func:`stacked_outputs` read to the end.

    Why: work that does not depend on the answer of the call before it (a gate's regions and fills, a defence's
    fractions and control draws) is a single call to a device; made as a loop of calls, a GPU waits on each.
    On a CPU each input is still its own call (:data:`~advspatial.passes.CPU_STACK_ELEMENTS`, unless ``elements``
    is given): the calls a loop made, at the batch size the CPU already runs well, so the same numbers to the bit.
    Elsewhere the inputs are concatenated into calls of at most ``elements`` input elements (default
    :data:`~advspatial.passes.STACK_ELEMENTS`; an input larger than that is a call of its own), and the outputs
    split back: the same values to the float rounding that a batch's composition moves. The inputs are made
    lazily, so at most one call's worth is held.

    Example::

        >>> from advspatial.passes import PassLedger
        >>> ledger, model = PassLedger(), nn.Linear(4, 2)
        >>> ledger.watch(model)
        >>> outs = forward_stacked(model, (torch.rand(3, 4) for _ in range(5)), elements=24)
        >>> [tuple(o.shape) for o in outs], ledger.outside.calls, ledger.outside.rounds
        ([(3, 2), (3, 2), (3, 2), (3, 2), (3, 2)], 3, 1)
    """
    return list(stacked_outputs(model, inputs, elements))


def stacked_outputs(model: Callable[[torch.Tensor], torch.Tensor], inputs: Iterable[torch.Tensor],
                    elements: int | None = None) -> Generator[torch.Tensor, None, None]:
    """:func:`forward_stacked`'s outputs one at a time, each as soon as its call is made: a caller that reduces
    them (a mean over noisy copies) holds one call's outputs, not all, and counts a progress step per output. The
    round stays open until the last output is read or the generator is closed: the caller makes no other
    classifier call in between, and reads it inside ``contextlib.closing`` so that an error ends the round."""
    pending: list[torch.Tensor] = []

    def call() -> list[torch.Tensor]:
        batches = list(pending)
        pending.clear()
        if len(batches) == 1:
            return [model(batches[0])]
        return list(model(torch.cat(batches)).split([len(t) for t in batches])) if batches else []

    with one_round():
        held = 0  # input elements pending
        for batch in inputs:
            limit = elements if elements is not None else stack_elements(batch)
            if pending and held + batch.numel() > limit:
                yield from call()
                held = 0
            pending.append(batch)
            held += batch.numel()
        yield from call()
