"""Counting the host synchronisations a run makes outside the model: the waits a GPU would take between calls.

Why: on a GPU a run's time follows its calls, and between two calls the device waits for every value the host reads
back (``.item()``, ``if tensor.any():``, ``.tolist()``, a boolean mask's compaction): each such read is a
device->host synchronisation. The count is machine-independent, so it can be measured on a CPU, where the same reads
cost nothing (an upper bound: a read of a tensor already on the host would not synchronise anything).

How: while :func:`counting` is active, the tensor methods and functions that read a value back to the host
(:data:`SYNC_METHODS`, :data:`SYNC_FUNCTIONS`, and indexing with a boolean tensor) are wrapped, and each call made
while no watched model is running reports to the callback given. The originals are restored when the block ends;
nested blocks share one installation. Model code (whatever runs between a watched model's forward pre-hook and its
forward hook) is the model's own and is not counted, nor is a read of a tensor kept on the host on every device
(the sample ids, :func:`host_list`). A check that would read on every call (a guarded model's finiteness, an
attack's input range and logits) is held until the stage's end on a device (:func:`hold`, read by
:func:`stage_checks`): one read per stage and device for all of them instead of one per call.

Example::

    >>> import torch
    >>> seen = []
    >>> with counting(lambda: seen.append(1)):
    ...     _ = torch.ones(3).sum().item(); _ = bool(torch.ones(1).any())
    >>> len(seen)
    2
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch

#: tensor methods that read a value back to the host
SYNC_METHODS = ("item", "tolist", "numpy", "cpu", "__bool__", "__int__", "__float__", "__index__", "nonzero")
#: torch functions that read back (a comparison's answer, a data-dependent output size)
SYNC_FUNCTIONS = ("equal", "unique", "nonzero", "masked_select", "argwhere")


class _Counter:
    """The installed wrappers' state: the callbacks to report to, and how deep inside a watched model we are."""

    def __init__(self) -> None:
        self.callbacks: list[Callable[[], None]] = []
        #: (owner, name) -> the original attribute, None when the owner only inherited it
        self.originals: dict[tuple[Any, str], Any] = {}
        self.in_model = 0
        #: > 0 while :func:`host_list` reads a tensor that lives on the host on every device
        self.on_host = 0

    def report(self) -> None:
        if self.callbacks and not self.in_model and not self.on_host:
            self.callbacks[-1]()


_COUNTER = _Counter()


def _counted(original: Any) -> Any:
    @functools.wraps(original)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        _COUNTER.report()
        return original(*args, **kwargs)
    return wrapper


def _counted_indexing(original: Any) -> Any:
    @functools.wraps(original)
    def wrapper(self: torch.Tensor, index: Any) -> Any:
        if _is_mask(index):
            _COUNTER.report()
        return original(self, index)
    return wrapper


def _is_mask(index: Any) -> bool:
    """A boolean tensor index (or one inside a tuple): its result's size depends on the mask's values."""
    parts = index if isinstance(index, tuple) else (index,)
    return any(isinstance(part, torch.Tensor) and part.dtype == torch.bool and part.dim() > 0 for part in parts)


def _install() -> None:
    targets: list[tuple[Any, str, Callable[[Any], Any]]] = [
        *((torch.Tensor, name, _counted) for name in SYNC_METHODS),
        *((torch, name, _counted) for name in SYNC_FUNCTIONS),
        (torch.Tensor, "__getitem__", _counted_indexing)]
    _COUNTER.in_model = 0  # a model whose forward raised left no hook to close it
    for owner, name, wrap in targets:
        _COUNTER.originals[(owner, name)] = owner.__dict__.get(name)
        setattr(owner, name, wrap(getattr(owner, name)))


def _uninstall() -> None:
    for (owner, name), original in _COUNTER.originals.items():
        if original is None:
            delattr(owner, name)
        else:
            setattr(owner, name, original)
    _COUNTER.originals.clear()


@contextmanager
def counting(callback: Callable[[], None]) -> Iterator[None]:
    """Call ``callback()`` once per host read made in the block outside a watched model (the innermost block's
    callback when blocks nest)."""
    if not _COUNTER.callbacks:
        _install()
    _COUNTER.callbacks.append(callback)
    try:
        yield
    finally:
        _COUNTER.callbacks.pop()
        if not _COUNTER.callbacks:
            _uninstall()


def enter_model() -> None:
    """A watched model's forward began (its forward pre-hook): host reads until :func:`leave_model` are its own."""
    _COUNTER.in_model += 1


def leave_model() -> None:
    """A watched model's forward ended (its forward hook)."""
    _COUNTER.in_model = max(0, _COUNTER.in_model - 1)


@contextmanager
def uncounted() -> Iterator[None]:
    """Reads in the block wait on no device, so they are not counted: a tensor a run keeps on the host whatever
    its device (:func:`host_list`), the host copy of a tensor already read (:func:`host_numpy`), or a check made on
    a CPU only, which on another device is held until the stage's end (:func:`defer`).

    >>> seen = []
    >>> with counting(lambda: seen.append(1)):
    ...     with uncounted():
    ...         _ = torch.ones(2).tolist()
    >>> len(seen)
    0
    """
    _COUNTER.on_host += 1
    try:
        yield
    finally:
        _COUNTER.on_host -= 1


def host_list(t: torch.Tensor) -> list[Any]:
    """``t.tolist()`` for a tensor a run keeps on the host whatever its device (the images' sample ids, which
    :func:`~advspatial.runtime.sample_ids_or_range` returns on the CPU): reading it waits on no device, so it is not
    counted. A tensor on a device is read, and counted, as usual.

    >>> seen = []
    >>> with counting(lambda: seen.append(1)):
    ...     ids = host_list(torch.arange(3))
    >>> ids, len(seen)
    ([0, 1, 2], 0)
    """
    if t.device.type != "cpu":
        return t.tolist()
    with uncounted():
        return t.tolist()


def host_numpy(t: torch.Tensor, dtype: torch.dtype | None = None) -> Any:
    """``t`` as a NumPy array (in ``dtype`` when given) in one read: the copy to the host is the read a device
    waits on, counted once; the ``.numpy()`` of that copy waits on nothing and is not counted again.

    >>> seen = []
    >>> with counting(lambda: seen.append(1)):
    ...     values = host_numpy(torch.arange(3), torch.float64)
    >>> values.tolist(), len(seen)
    ([0.0, 1.0, 2.0], 1)
    """
    copy = t.detach().cpu()  # the read (counted)
    with uncounted():
        return (copy.to(dtype) if dtype is not None else copy).numpy()


def host_copies(tensors: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    """``[t.detach().cpu() for t in tensors]`` in one read per device and dtype: the tensors flattened into one
    buffer, copied once, cut back into their shapes (a device waits once for all of them, not once each).

    >>> seen = []
    >>> with counting(lambda: seen.append(1)):
    ...     a, b = host_copies([torch.ones(2, 3), torch.zeros(4)])
    >>> a.shape, b.tolist(), len(seen)
    (torch.Size([2, 3]), [0.0, 0.0, 0.0, 0.0], 1)
    """
    out: list[torch.Tensor | None] = [None] * len(tensors)
    groups: dict[tuple[torch.device, torch.dtype], list[int]] = {}
    for i, t in enumerate(tensors):
        groups.setdefault((t.device, t.dtype), []).append(i)
    for indices in groups.values():
        flat = torch.cat([tensors[i].detach().reshape(-1) for i in indices]).cpu()  # the read (counted)
        for i, part in zip(indices, flat.split([tensors[i].numel() for i in indices]), strict=True):
            out[i] = part.view(tensors[i].shape)
    return [t for t in out if t is not None]


# -- checks that wait for the next stage's end -------------------------------------------------------------------

#: the checks :func:`defer` holds until :func:`settle`, in order (per process)
_DEFERRED: list[Callable[[], None]] = []


def defer(check: Callable[[], None]) -> None:
    """Hold ``check`` (a callable that reads its own device-side flag and raises its own error) until
    :func:`settle`: a check made on every call of a model would be a host read a GPU waits on between calls.
    The same check held twice (an equal callable: the same object's bound method) runs once."""
    if check not in _DEFERRED:
        _DEFERRED.append(check)


def settle() -> None:
    """Run every held check (each a host read), first held first; the first that fails raises, the others stay
    held. Called at the end of every stage (before its value is kept) and before a run writes its results.

    >>> seen = []
    >>> defer(lambda: seen.append("checked"))
    >>> settle(); settle()
    >>> seen
    ['checked']
    """
    while _DEFERRED:
        check = _DEFERRED[0]
        check()
        _DEFERRED.pop(0)


# -- an input's or an output's check held to the stage's end -------------------------------------------------------

#: take the path written for a device on a CPU too (:func:`on_device_path`; tests and ledger runs of it set it)
DEVICE_PATH_ON_CPU = False


def on_device_path(t: torch.Tensor) -> bool:
    """Whether work on ``t`` takes the path written for a device, where a read back waits for the device (checks
    held to a stage's end, rows dropped at a few points instead of every step): ``t`` off the CPU, or
    :data:`DEVICE_PATH_ON_CPU`."""
    return t.device.type != "cpu" or DEVICE_PATH_ON_CPU


class _HeldChecks:
    """The stages open (:func:`stage_checks`) and, per check held in them (first held first), the count of
    offending items on its device, the items checked and the error to raise."""

    def __init__(self) -> None:
        self.stages = 0
        self.counts: dict[str, tuple[torch.Tensor, int, Callable[[int, int], Exception]]] = {}

    def read(self) -> None:
        """Every held count in one read per device; the first check whose count is not 0 raises its error."""
        held, self.counts = self.counts, {}
        values: dict[str, int] = {}
        for device in dict.fromkeys(count.device for count, _, _ in held.values()):
            keys = [key for key, (count, _, _) in held.items() if count.device == device]
            values.update(zip(keys, torch.stack([held[key][0] for key in keys]).tolist(), strict=True))
        for key, (_, items, error_of) in held.items():
            if values[key]:
                raise error_of(int(values[key]), items)


_HELD = _HeldChecks()


@contextmanager
def stage_checks() -> Iterator[None]:
    """A stage's block: the checks :func:`holds` lets wait are read at its end, with every check :func:`defer`
    holds (:func:`settle`), before the stage's value is kept."""
    _HELD.stages += 1
    try:
        yield
        settle()
    except BaseException:
        if _HELD.stages == 1:  # the run's stage failed before its end: its held counts go with it, not to the next
            _HELD.counts.clear()
        raise
    finally:
        _HELD.stages -= 1


def holds(t: torch.Tensor) -> bool:
    """Whether a check of ``t`` waits for the stage's end (:func:`hold`): inside a stage, with ``t`` on a device
    other than the CPU (a read there is a wait the device takes between calls). Elsewhere a check reads at once:
    outside a stage no end would read it; on a CPU the read costs no device a wait (:func:`check_read`)."""
    return _HELD.stages > 0 and on_device_path(t)


def hold(key: str, count: torch.Tensor, items: int, error_of: Callable[[int, int], Exception]) -> None:
    """Add the 0-dim ``count`` (offending items among ``items`` checked, on its device) to check ``key``'s totals
    held in this stage; its end raises ``error_of(offending, checked)`` where offending is not 0. All the checks
    held in a stage take one read per device.

    >>> def error(bad, checked):
    ...     return ValueError(f"{bad} of {checked} negative")
    >>> try:
    ...     with stage_checks():
    ...         for values in ([-1.0, 2.0], [-3.0]):
    ...             t = torch.tensor(values)
    ...             hold("negative", (t < 0).sum(), len(t), error)
    ... except ValueError as e:
    ...     print(e)
    2 of 3 negative
    """
    held = _HELD.counts.get(key)
    total = count.detach().reshape(()).to(torch.long)
    _HELD.counts[key] = (total, items, error_of) if held is None else (held[0] + total, held[1] + items, error_of)
    defer(_HELD.read)


def require(key: str, bad: torch.Tensor, items: int, error_of: Callable[[int, int], Exception]) -> None:
    """Raise ``error_of(offending, items)`` where the 0-dim count ``bad`` is not 0: at the stage's end where
    :func:`holds` (:func:`hold`, the check named ``key``), else at once in one read (:func:`check_read`).

    >>> require("positive", (torch.tensor([1.0, -2.0]) <= 0).sum(), 2, lambda bad, n: ValueError(f"{bad} of {n}"))
    Traceback (most recent call last):
    ...
    ValueError: 1 of 2
    """
    if holds(bad):
        hold(key, bad, items, error_of)
        return
    with check_read():
        offending = int(bad)
    if offending:
        raise error_of(offending, items)


@contextmanager
def check_read() -> Iterator[None]:
    """A check made at once where :func:`holds` says no: inside a stage that is a read a device would hold to the
    stage's end (so not counted as a wait between calls); outside every stage it is counted as any read."""
    if _HELD.stages:
        with uncounted():
            yield
    else:
        yield
