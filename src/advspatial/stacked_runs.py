"""Independent work sent to the classifier as one round (:func:`~advspatial.passes.one_round`): independent batches
as stacked calls (:func:`forward_stacked`, :func:`stacked_outputs`), and a stack of independent rows run as one (a
gate's regions × images under one attack): how many rows one run holds (:func:`run_rows`), and the model called a
CPU-sized batch at a time inside it (:class:`RowChunks`), so that each step of the run is one round on a CPU as on a
device.
"""

from __future__ import annotations

import math
import os
import weakref
from collections.abc import Callable, Generator, Iterable, Sequence
from typing import Any

import torch
from torch import nn
from torch.autograd.graph import saved_tensors_hooks

from .passes import one_round, uncounted
from .runtime import batch_slices


#: input elements per stacked call on a device other than the CPU
#: (:func:`~advspatial.stacked_runs.forward_stacked`): 64 MB of float32
#: inputs, a forward pass without gradients that any accelerator holds for the models this package runs
STACK_ELEMENTS = 1 << 24
#: the same on a CPU: 0, one call per batch (a CPU's cost follows its passes, not its calls)
CPU_STACK_ELEMENTS = 0


def stack_elements(sample: torch.Tensor) -> int:
    """Input elements a stacked call may hold on ``sample``'s device: :data:`CPU_STACK_ELEMENTS` on a CPU (0: one
    call per batch), :data:`STACK_ELEMENTS` elsewhere."""
    return CPU_STACK_ELEMENTS if sample.device.type == "cpu" else STACK_ELEMENTS


#: input elements of one batch of a run's per-image stages per :data:`BATCH_MEMORY` of a device's memory, when nobody
#: gave a batch size (:func:`device_batch_size`): 16 MB of float32 images, 1,365 CIFAR-10 images or 27 at 224 pixels
BATCH_ELEMENTS = 1 << 22
#: the device memory :data:`BATCH_ELEMENTS` is for (an 80 GB GPU); a device with less takes proportionally fewer
BATCH_MEMORY = 80 * 10**9


def device_batch_size(cpu_batch: int, image_shape: Sequence[int], images: int, processes: int = 1,
                      memory: int = BATCH_MEMORY) -> int:
    """Images per batch of a run's per-image stages (attacks, maps, defences) on a GPU of ``memory`` bytes when
    nobody gave a batch size: as many images of ``image_shape`` (C, H, W) as :data:`BATCH_ELEMENTS` per
    :data:`BATCH_MEMORY` of the device's memory hold, at most each process's share of the run's ``images`` (every
    process of a torchrun launch keeps a batch), at least ``cpu_batch`` (a preset's, sized for a CPU's caches).
    Why: a GPU's cost follows its calls; an attack of 200 steps on batches of 100 makes 200 calls per batch, one
    batch after another. Results do not depend on the batch size (seeds keyed by the images' ids), so this changes
    only how many calls a run makes.

    >>> device_batch_size(100, (3, 32, 32), 2000), device_batch_size(100, (3, 32, 32), 200)
    (1365, 200)
    >>> device_batch_size(16, (3, 224, 224), 40), device_batch_size(16, (3, 224, 224), 40, memory=24 * 10**9)
    (27, 16)
    """
    per_image = max(1, math.prod(int(side) for side in image_shape))
    elements = BATCH_ELEMENTS * max(0, int(memory)) // BATCH_MEMORY
    share = -(-int(images) // max(1, int(processes)))
    return max(int(cpu_batch), min(elements // per_image, share))


def rows_within(elements: int, sample: torch.Tensor) -> int:
    """How many images like ``sample`` (one image or a batch; its first dimension is the batch) ``elements`` input
    elements hold.

    >>> rows_within(1 << 24, torch.zeros(4, 3, 32, 32))
    5461
    """
    per_image = max(1, sample[0].numel()) if sample.ndim and len(sample) else 1
    return elements // per_image


def device_rows(cpu_rows: int, sample: torch.Tensor) -> int:
    """Rows per call for independent rows stacked into one batch (a gate's regions × images, attacked together):
    ``cpu_rows`` on a CPU (:data:`CPU_STACK_ELEMENTS` 0), elsewhere as many images like ``sample`` (one image or a
    batch; its first dimension is the batch) as :data:`STACK_ELEMENTS` input elements hold, at least ``cpu_rows``.

    Example::

        >>> device_rows(32, torch.zeros(4, 3, 32, 32))
        32
    """
    limit = stack_elements(sample)
    return max(int(cpu_rows), rows_within(limit, sample)) if limit else int(cpu_rows)


def run_rows(call_rows: int, sample: torch.Tensor, model: nn.Module | None = None) -> int:
    """Rows of one run over independent rows stacked into one batch (a gate's regions × images, attacked as one):
    as many images like ``sample`` as :data:`STACK_ELEMENTS` input elements hold and, with
    ``model``, as many as the activations a gradient through the whole run keeps fit in memory
    (:func:`memory_rows`); at least ``call_rows``, and a whole number of calls of ``call_rows``, so that the calls
    of a run are the same images whatever its size. Where that is more than a call takes (``call_rows``, a CPU's
    batch), the run's calls go through :class:`RowChunks`: each step of the run is still one round.

    Example::

        >>> run_rows(100, torch.zeros(4, 3, 32, 32)), run_rows(100, torch.zeros(4, 3, 224, 224))
        (5400, 100)
    """
    call_rows = int(call_rows)
    rows = rows_within(STACK_ELEMENTS, sample)
    if model is not None:
        rows = min(rows, memory_rows(model, sample))
    return max(call_rows, rows - rows % call_rows)


def gradient_call_rows(cpu_rows: int, sample: torch.Tensor, model: nn.Module) -> int:
    """Rows per model call of a stacked run that takes gradients through ``model`` (a gate's restricted attack,
    the budget's calibration): on a CPU ``cpu_rows``; elsewhere :func:`device_rows`, at most
    :func:`memory_rows` (a device's memory bounds a call's activations, not its inputs), at least ``cpu_rows``.

    Example::

        >>> gradient_call_rows(32, torch.zeros(4, 3, 32, 32), nn.Flatten())
        32
    """
    rows = device_rows(cpu_rows, sample)
    return rows if rows == int(cpu_rows) else max(int(cpu_rows), min(rows, memory_rows(model, sample)))


#: the share of the device's memory (a CPU's: the machine's, divided among the processes on it) that the
#: activations kept by one stacked run's gradient may take; the rest holds the model, the run's inputs and results
RUN_MEMORY_SHARE = 0.25
#: the memory assumed of a machine that does not say (no ``os.sysconf``): 8 GB
FALLBACK_MEMORY = 8 << 30
#: each model's bytes kept per row, per input shape, dtype and device (measured once: :func:`memory_rows`)
_KEPT_BYTES: weakref.WeakKeyDictionary[nn.Module, dict[tuple[Any, ...], int]] = weakref.WeakKeyDictionary()


def memory_rows(model: nn.Module, sample: torch.Tensor) -> int:
    """How many rows like ``sample`` a run whose gradient flows through all of them at once may stack on
    ``sample``'s device: :data:`RUN_MEMORY_SHARE` of the device's memory (:func:`device_memory`) over the bytes
    the model's autograd graph keeps per row (:func:`kept_bytes_per_row`, measured once per model and shape); at
    least 1. Deterministic on a machine: the device's total memory, not what happens to be free.

    Example::

        >>> memory_rows(nn.Linear(4, 2), torch.zeros(1, 4)) > 1_000_000
        True
    """
    key = (tuple(sample.shape[1:]), sample.dtype, str(sample.device))
    known = _KEPT_BYTES.setdefault(model, {})
    if key not in known:
        known[key] = kept_bytes_per_row(model, sample)
    return max(1, int(RUN_MEMORY_SHARE * device_memory(sample.device)) // max(1, known[key]))


def kept_bytes_per_row(model: nn.Module, sample: torch.Tensor) -> int:
    """Bytes the autograd graph of ``model`` (in eval mode) keeps for backward per input row like ``sample``: the
    tensors saved by a forward pass of two rows less those of one (the parameters and buffers it saves cancel), each
    storage counted once. Two forward passes of one and two rows, counted by no ledger (:func:`uncounted`)."""
    first = sample[:1].detach()

    def kept(rows: int) -> int:
        storages: dict[int, int] = {}

        def pack(t: torch.Tensor) -> torch.Tensor:
            storage = t.untyped_storage()
            storages[storage.data_ptr()] = storage.nbytes()
            return t

        x = first.expand(rows, *first.shape[1:]).clone().requires_grad_(True)
        with torch.enable_grad(), saved_tensors_hooks(pack, lambda t: t), uncounted():
            model(x)
        return sum(storages.values())

    modes = {m: m.training for m in model.modules()}  # each restored as it was (a model may mix modes)
    model.eval()
    try:
        return max(1, kept(2) - kept(1))
    finally:
        for module, mode in modes.items():
            module.training = mode


def device_memory(device: torch.device) -> int:
    """Bytes of memory of ``device``: a GPU's total, or the machine's physical memory (:data:`FALLBACK_MEMORY` where
    the system does not say) divided among the processes started on it (``LOCAL_WORLD_SIZE`` under torchrun)."""
    if device.type == "cuda":
        return int(torch.cuda.get_device_properties(device).total_memory)
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):  # no sysconf (Windows) or no such name: assume a small machine
        total = FALLBACK_MEMORY
    return total // max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1")))


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

    def input_gradient(self, x: torch.Tensor, objective: Callable[[torch.Tensor, slice], torch.Tensor]
                       ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(gradient of the summed objective w.r.t. x, logits)``, each call's forward and backward before the
        next's: the run keeps one call's activations, not the whole run's (a stack of 224-pixel images under a
        gradient attack held gigabytes). ``objective(logits, rows)`` is the part of the objective of the rows
        ``rows`` of ``x`` and depends on those rows alone, so the gradient is the same calls' gradient taken all at
        once, to the bit; the calls stay one round.

        >>> model = RowChunks(nn.Linear(4, 2), 3)
        >>> x = torch.rand(7, 4)
        >>> grad, logits = model.input_gradient(x, lambda z, rows: z.square().sum())
        >>> whole = x.clone().requires_grad_(True)
        >>> bool((grad == torch.autograd.grad(model(whole).square().sum(), whole)[0]).all()), tuple(logits.shape)
        (True, (7, 2))
        """
        grads, logits = [], []
        with one_round(), torch.enable_grad():
            for sl in list(batch_slices(x.shape[0], self.rows)) or [slice(0, 0)]:  # no rows: one empty call, as forward
                rows = x[sl].detach().requires_grad_(True)
                out = self.model(rows)
                (grad,) = torch.autograd.grad(objective(out, sl), rows)
                grads.append(grad)
                logits.append(out.detach())
        return torch.cat(grads), torch.cat(logits)


def input_gradient(model: nn.Module, x: torch.Tensor, objective: Callable[[torch.Tensor, slice], torch.Tensor]
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """``(gradient of the summed objective w.r.t. x, logits)`` of a per-row ``objective(logits, rows)`` (the part of
    the rows ``rows`` of ``x``, depending on those rows alone): through a :class:`RowChunks` model each call's
    gradient before the next call's forward (:meth:`RowChunks.input_gradient`: one call's activations held, not a
    run's), else one forward and one backward. Only the input takes a gradient.

    >>> grad, logits = input_gradient(nn.Linear(4, 2), torch.ones(3, 4), lambda z, rows: z.sum())
    >>> tuple(grad.shape), tuple(logits.shape)
    ((3, 4), (3, 2))
    """
    if isinstance(model, RowChunks):
        return model.input_gradient(x, objective)
    point = x.detach().requires_grad_(True)
    with torch.enable_grad():
        logits = model(point)
        (grad,) = torch.autograd.grad(objective(logits, slice(0, x.shape[0])), point)
    return grad, logits.detach()


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
    On a CPU each input is still its own call (:data:`CPU_STACK_ELEMENTS`, unless ``elements``
    is given): the calls a loop made, at the batch size the CPU already runs well, so the same numbers to the bit.
    Elsewhere the inputs are concatenated into calls of at most ``elements`` input elements (default
    :data:`STACK_ELEMENTS`; an input larger than that is a call of its own), and the outputs
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
