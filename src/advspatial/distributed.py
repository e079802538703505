"""Scale-out under ``torchrun``: whole batches of the single-process run shared among processes.

advspatial does not launch processes itself. ``torchrun`` (one machine or many,
SLURM or any launcher) starts N copies of ``python -m advspatial run ...`` and
sets ``RANK``/``WORLD_SIZE``/``LOCAL_RANK``/``LOCAL_WORLD_SIZE``;
:func:`init_from_environment` joins them in a ``torch.distributed`` process
group (gloo on the CPU; NCCL beside gloo when CUDA is present). Without those
variables everything is a world of one process and nothing changes.

How the work is split (:func:`map_batches`): every process runs the same
experiment code. A loop over the batches of the single-process run is
``map_batches(fn, slices)``. Each process first calls ``fn`` on its own batches
(batch ``b`` belongs to rank ``b mod world size``), which writes the batch's
stage files into the shared run directory; all processes then meet
(:func:`agree`, a collective that also carries any error) and call ``fn`` on
every batch in order, which now loads the stage files the others wrote. So every
image is computed in exactly the batch it has in one process, with the same
sample-id seeds, and every process ends holding the same values: statistics are
computed from them as in one process, and rank 0 alone writes the result files.
The merged results are therefore identical to a single-process run with the same
threads per process, for any number of processes (tests/test_distributed.py).

A process that raises inside a batch still reaches the next :func:`agree`, which
raises the first error (its one line, naming the rank) in every process, so all
exit together; a process killed outright is noticed by ``torchrun``, which stops
the others. The batches already on disk are kept: ``advspatial run --resume DIR``
(with any number of processes, or none) computes only the missing ones.
"""

from __future__ import annotations

import datetime
import os
import signal
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import torch
import torch.distributed as dist

from .environment import env_hours, env_int
from .errors import AdvspatialError, ConfigError, first_line
from .progress import note, progress_bar

T = TypeVar("T")
U = TypeVar("U")
Item = TypeVar("Item")

#: the most processes (and the highest port) the environment may name
MAX_WORLD = 1 << 20
#: how long a process waits for the others at a meeting point (a rank may be training a model meanwhile), hours:
#: ``$ADVSPATIAL_DIST_TIMEOUT_HOURS``, at most a year
TIMEOUT_HOURS, MAX_TIMEOUT_HOURS = 24.0, 24.0 * 365


def timeout() -> datetime.timedelta:
    """How long a process waits at a meeting point (:data:`TIMEOUT_HOURS` unless the environment says)."""
    return env_hours("ADVSPATIAL_DIST_TIMEOUT_HOURS", TIMEOUT_HOURS, MAX_TIMEOUT_HOURS)


@dataclass(frozen=True)
class World:
    """This process's place among the processes of a run."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0
    local_size: int = 1

    @property
    def is_main(self) -> bool:
        """Rank 0: owns the run directory's lock, ``run.json`` and the result files."""
        return self.rank == 0

    @property
    def is_distributed(self) -> bool:
        return self.size > 1

    def owns(self, batch: int) -> bool:
        """Batch ``batch`` of a loop is computed by this process (round robin over ranks)."""
        return batch % self.size == self.rank


_WORLD = World()


def world() -> World:
    """The current process's :class:`World` (a world of one outside ``torchrun``)."""
    return _WORLD


def environment_world() -> World:
    """The world ``torchrun`` describes in the environment (a world of one without it)."""
    size = env_int("WORLD_SIZE", 1, 1, MAX_WORLD, "processes")
    if size > 1:
        missing = [v for v in ("RANK", "MASTER_ADDR", "MASTER_PORT") if not os.environ.get(v, "").strip()]
        if missing:
            raise ConfigError(f"WORLD_SIZE={size} without {', '.join(missing)}; launch the processes with torchrun "
                              "(which sets them all), or unset WORLD_SIZE for one process")
        env_int("MASTER_PORT", 0, 1, 65535, "port of rank 0")
    rank = env_int("RANK", 0, 0, size - 1, f"this process's rank among WORLD_SIZE={size}")
    local_size = env_int("LOCAL_WORLD_SIZE", min(size, MAX_WORLD), 1, size, "processes on this machine")
    local_rank = env_int("LOCAL_RANK", rank % local_size, 0, local_size - 1,
                         f"rank on this machine among LOCAL_WORLD_SIZE={local_size}")
    return World(rank=rank, size=size, local_rank=local_rank, local_size=local_size)


def init_from_environment() -> World:
    """Join the process group ``torchrun`` set up, once per process, and set this process's threads.

    Backend: gloo for the CPU meeting points, plus NCCL for CUDA tensors when
    CUDA is present. Threads per process: ``$ADVSPATIAL_THREADS`` when set (also
    without torchrun), else the cores divided by the processes on this machine
    (torchrun's own ``OMP_NUM_THREADS=1`` default is overridden).
    """
    global _WORLD
    if _WORLD.is_distributed:  # joined already
        return _WORLD
    found = environment_world()
    if not found.is_distributed:
        if os.environ.get("ADVSPATIAL_THREADS", "").strip():
            torch.set_num_threads(threads_per_process(found))
        return _WORLD

    if not dist.is_initialized():
        backend = "cpu:gloo,cuda:nccl" if torch.cuda.is_available() else "gloo"
        dist.init_process_group(backend=backend, timeout=timeout())
    _WORLD = World(rank=dist.get_rank(), size=dist.get_world_size(), local_rank=found.local_rank,
                   local_size=found.local_size)
    torch.set_num_threads(threads_per_process(_WORLD))
    if torch.cuda.is_available():
        torch.cuda.set_device(_WORLD.local_rank % torch.cuda.device_count())
    return _WORLD


def threads_per_process(current: World) -> int:
    """``$ADVSPATIAL_THREADS``, else the machine's cores shared evenly by its processes (at least 1)."""
    cores = os.cpu_count() or 1
    given = env_int("ADVSPATIAL_THREADS", 0, 1, 4 * cores, f"threads per process; this machine has {cores} cores")
    if given:
        return given
    return max(1, cores // max(1, current.local_size))


def shutdown() -> None:
    """Leave the process group (at the end of a distributed command)."""
    global _WORLD
    if _WORLD.is_distributed:
        if dist.is_initialized():
            dist.destroy_process_group()
    _WORLD = World()


def default_device() -> str | None:
    """``cuda:LOCAL_RANK`` under torchrun on a CUDA machine, else None (no preference)."""
    if _WORLD.is_distributed and torch.cuda.is_available():
        return f"cuda:{_WORLD.local_rank % torch.cuda.device_count()}"
    return None


class RankFailed(RuntimeError):
    """Another process of the run raised: its rank and its one-line error."""


#: what a process says when another one went away without reaching a meeting point (killed, out of memory)
PEER_LOST = "another process of this run ended outside a meeting point"


class Stopped(RuntimeError):
    """This process was stopped by SIGTERM under torchrun, which stops every process when one of them ends with an
    error or is killed outright (:func:`stop_on_terminate`)."""

    advspatial_shared = True  # every process is stopped alike: rank 0 alone says so


def stop_on_terminate(enabled: bool = True) -> None:
    """Under torchrun, SIGTERM raises :class:`Stopped` in this process instead of ending it without a word: when a
    process dies outside a meeting point, torchrun stops the others, and rank 0 then still prints one line (the
    batches already saved are kept for ``--resume``). ``enabled=False`` restores the default once the command's
    outcome is printed (a SIGTERM while leaving the process group then ends the process quietly)."""
    def stop(signum: int, frame: object) -> None:
        raise Stopped(f"stopped by torchrun: {PEER_LOST}, or the launch was stopped; torchrun's report below says "
                      "which process ended and how")

    signal.signal(signal.SIGTERM, stop if enabled else signal.SIG_DFL)


def on_every_rank(work: Callable[[], T]) -> T:
    """``work()`` on this process, then a meeting point of every process (:func:`agree`).

    For work each rank does on its own outside :func:`map_batches` (loading the model, probing the
    explainers on the first batch): when it fails in one rank only, every rank stops with that rank's
    one line, instead of a traceback there and gloo's 'connection closed' tracebacks in the others.
    """
    try:
        value = work()
    except Exception as exc:
        agree(exc)
        raise
    agree()
    return value


def agree(error: BaseException | None = None) -> None:
    """A meeting point of every process; raises in all of them when any arrives with an ``error``.

    The process that failed re-raises its own exception (type and exit status
    kept); the others raise the first failure's class when it is one of
    advspatial's user errors, else :class:`RankFailed`, with the failing rank's one line.
    """
    if not _WORLD.is_distributed:
        if error is not None:
            raise error
        return

    mine = None if error is None else (type(error).__name__, first_line(error, limit=500))
    everyone: list[tuple[str, str] | None] = [None] * _WORLD.size
    dist.all_gather_object(everyone, mine)
    failures = [(rank, found) for rank, found in enumerate(everyone) if found is not None]
    if not failures:
        return
    rank, (kind, message) = failures[0]
    shared = error if error is not None else _error_class(kind)(f"rank {rank} failed: {message}")
    shared.advspatial_shared = True  # type: ignore[attr-defined]  # every rank knows it: rank 0 alone prints it
    raise shared


def lost_peer(error: BaseException) -> bool:
    """True when ``error`` is the process group's report that another process went away (gloo's "connection closed
    by peer", a collective's timeout): that process failed or was killed outside any meeting point, and this one
    can only say so (the CLI prints it as one line instead of gloo's traceback)."""
    text = str(error).lower()
    return isinstance(error, dist.DistError) or isinstance(error, RuntimeError) and (
        "gloo" in text or "connection closed by peer" in text or "connection reset by peer" in text)


def is_shared(error: BaseException) -> bool:
    """True when ``error`` reached every process through :func:`agree` (rank 0 reports it; the others stay quiet)."""
    return bool(getattr(error, "advspatial_shared", False))


def _error_class(name: str) -> type[Exception]:
    """The advspatial user-error class called ``name`` (so the exit status matches), else :class:`RankFailed`."""
    todo: list[type[Exception]] = [AdvspatialError]
    while todo:
        kind = todo.pop()
        if kind.__name__ == name:
            return kind
        todo.extend(kind.__subclasses__())
    return RankFailed


def map_batches(fn: Callable[[int, Item], T], slices: Sequence[Item], desc: str = "", progress: bool = True,
                then: Callable[[int, Item, T], U] | None = None) -> list[T] | list[U]:
    """``[fn(b, slices[b]) for b in ...]``, the batches shared among the processes of the run.

    ``slices`` are usually batch slices, but may be any independent units of work
    (e.g. (configuration, batch) pairs), each computed by one process.

    ``fn(b, sl)`` must depend on nothing but its batch (seeds keyed by sample
    ids) and save what is costly in stage files named by ``b``
    (``rundir.cached(f"name/batch-{b:05d}", ...)``): under torchrun it is called
    once for each of this process's batches, then - after the processes meet -
    once for every batch in order, loading what the others saved.

    ``then(b, sl, value)``, when given, consumes each batch's value in batch order
    right after it is computed or loaded (accumulators, per-image rows), exactly
    once per batch in every process; the list of its results is returned instead
    and the values themselves are not kept, so memory does not grow with the batches.
    """

    def ordered(batches: Sequence[Item] | Any) -> list[Any]:
        out: list[Any] = []
        for b, sl in enumerate(batches):
            value = fn(b, sl)
            out.append(value if then is None else then(b, sl, value))
        return out

    if not _WORLD.is_distributed:
        return ordered(progress_bar(slices, desc=desc, disable=not progress, unit="batch"))
    mine = [b for b in range(len(slices)) if _WORLD.owns(b)]
    error: BaseException | None = None
    try:
        for b in progress_bar(mine, desc=f"{desc} [rank {_WORLD.rank}/{_WORLD.size}]",
                              disable=not (progress and _WORLD.is_main), unit="batch"):
            fn(b, slices[b])
    except Exception as exc:  # carried to every process by agree()
        error = exc
    agree(error)
    return ordered(slices)


#: the keys :func:`note_once` has noted in this process
_NOTED: set[Hashable] = set()


def note_once(key: Hashable, message: str) -> None:
    """``message`` as one line on stderr (:func:`~advspatial.progress.note`) the first time ``key`` is noted in this
    process, and from rank 0 alone under torchrun: a note that a run reaches several times (a folder listed again, a
    model loaded for each stage) or that every process reaches is read once."""
    if key in _NOTED:
        return
    _NOTED.add(key)
    if _WORLD.is_main:
        note(message)


def main_only(fn: Callable[[], T]) -> T | None:
    """``fn()`` in rank 0 (the result files); the others wait for it and get None. Errors reach everyone."""
    error: BaseException | None = None
    value: T | None = None
    if _WORLD.is_main:
        try:
            value = fn()
        except Exception as exc:
            error = exc
    agree(error)
    return value


def from_main(fn: Callable[[], T]) -> T:
    """``fn()`` computed in rank 0 and its value in every process (sent pickled: keep it small); errors reach
    everyone. Outside torchrun, ``fn()``."""
    value = main_only(fn)
    if not _WORLD.is_distributed:
        return value  # type: ignore[return-value]  # main_only is fn() in a world of one

    box: list[Any] = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]
