"""A stack of independent rows run as one (a gate's regions × images under one attack): how many rows one run
holds (:func:`run_rows`), and the model called a CPU-sized batch at a time inside it (:class:`RowChunks`), so that
each step of the run is one round (:func:`~advspatial.passes.one_round`) on a CPU as on a device.
"""

from __future__ import annotations

import torch
from torch import nn

from .passes import STACK_ELEMENTS, one_round, rows_within
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
        if x.shape[0] <= self.rows:
            return self.model(x)
        with one_round():
            return torch.cat([self.model(x[sl]) for sl in batch_slices(x.shape[0], self.rows)])
