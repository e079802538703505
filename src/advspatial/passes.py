"""The model passes a run spends, stage by stage: what a verdict costs in forward and backward passes.

Why: time depends on the machine, passes do not. A run's cost is its passes through the classifier (each
image sent forward, each image's gradient sent back), and cutting cost without changing what is measured
means cutting passes: a pass budget per stage says where they go.

How they are counted: :meth:`PassLedger.watch` puts a forward hook on the run's classifier (the module
itself, so a defence wrapping it counts only the calls that reach it). Each call adds its batch size to
``forward``; when its output takes part in a graph, a hook on the output adds the batch size to
``backward`` each time a gradient flows back through it (an attack's step, a gradient map, a training
step). Calls of single layers (the incremental one-pixel evaluator) are not whole-model passes and are
not counted, nor are the passes of models a run trains (localized training's fine-tuning: the models it
evaluates are watched once trained). A deep copy of the classifier takes its hook along; its passes count
only inside :meth:`PassLedger.counting_copies` (the faithfulness gate's randomization checks, whose copies with
re-initialized weights are the same network at the same cost: uncounted, a gate's occlusion checks read 16
forward passes for 77 seconds of work).

Where they go: a stage's work is computed inside :meth:`PassLedger.stage` (``RunDir.cached`` does this), so
its passes are the stage's own (a stage computed inside another is not counted twice) and are written into
the stage file's header. A stage read back from its file (a resumed run; under torchrun, a batch another
process computed) brings its counts with it, so every process of a run and every resumed run ends with the
same totals. Passes made outside any stage are counted apart (:attr:`PassLedger.outside`, this process's).

What a GPU would wait on: on a device a run's time follows its *calls*, not its images. Besides the passes, each
stage counts its forward and backward **calls**; its **rounds**, the forward calls that could go to a device as one
(a loop that splits one logical batch into chunks for a CPU's caches runs inside :func:`one_round` and stays one
round; every other call is a round of its own); its **host synchronisations** outside the model (values read back
to the host: :mod:`advspatial.host_syncs`); and its CPU time, in total and inside the model (the watched model's
forward calls and every gradient computed in the stage), whose difference per call is the framework's own cost.
Counts are machine-independent; the two times (``*_seconds``) are this machine's. A host read of a per-process cache
filled on first use counts in the stage that first needs it, so a resumed run may count a few fewer.

Between the stages: what a run does outside every stage (loading the model and images, the forecast, the per-image
rows, the statistics, the figures, the report) is host work, and on a GPU, where the stages are fast, it is a large
part of a large run. :meth:`PassLedger.phase` names such work (:mod:`advspatial.phase_clock`), so the run's time
splits into its stages and its phases.
"""

from __future__ import annotations

import functools
import re
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import torch
from torch import nn

from .host_syncs import counting, enter_model, leave_model, stage_checks
from .phase_clock import Elapsed, PhaseClock, check_phase

#: the index part of a stage key (``attack/pgd/batch-00003``): stripped to name the stage's family
_INDEX = re.compile(r"/(batch|chunk)-\d+$")


#: the counts of :class:`PassCount` (integers); its other fields are this machine's seconds (:data:`SECONDS`)
COUNTS = ("forward", "backward", "calls", "backward_calls", "rounds", "syncs")
#: the times of :class:`PassCount`: CPU, of which inside the model, and elapsed
SECONDS = ("cpu_seconds", "model_seconds", "wall_seconds")


@dataclass
class PassCount:
    """Image-passes through the classifier: ``forward`` (images sent forward), ``backward`` (images whose
    gradient went back through it), ``calls`` (forward calls, i.e. batches), ``backward_calls`` (gradients sent
    back through a call's output), ``rounds`` (forward calls a device could make as one, see :func:`one_round`),
    ``syncs`` (host synchronisations outside the model); ``cpu_seconds`` (the stage's CPU time, its nested stages
    excluded), ``model_seconds`` (of which inside the model) and ``wall_seconds`` (the stage's elapsed time, its
    nested stages excluded: on a GPU, where the host waits on the device, the time that counts), this machine's and
    left out of comparisons."""

    forward: int = 0
    backward: int = 0
    calls: int = 0
    backward_calls: int = 0
    rounds: int = 0
    syncs: int = 0
    cpu_seconds: float = field(default=0.0, compare=False)
    model_seconds: float = field(default=0.0, compare=False)
    wall_seconds: float = field(default=0.0, compare=False)

    def add(self, other: PassCount) -> None:
        for name in (*COUNTS, *SECONDS):
            setattr(self, name, getattr(self, name) + getattr(other, name))

    def as_dict(self) -> dict[str, int | float]:
        return asdict(self)

    @classmethod
    def from_dict(cls, counts: Mapping[str, Any]) -> PassCount:
        """Read back :meth:`as_dict` (a count written before it existed reads 0)."""
        count = cls()
        for name in COUNTS:
            setattr(count, name, int(counts.get(name, 0)))
        for name in SECONDS:
            setattr(count, name, float(counts.get(name, 0.0)))
        return count

    def shares(self, weights: Sequence[int]) -> list[PassCount]:
        """The count split among stages that did its work jointly, in proportion to ``weights`` (their rows): each
        integer count by largest remainders, so that the shares sum to it exactly; the seconds pro rata.

        >>> [c.rounds for c in PassCount(rounds=16).shares([9, 9, 9])]
        [6, 5, 5]
        """
        total = sum(weights)
        out = [PassCount() for _ in weights]
        for name in SECONDS:
            for count, w in zip(out, weights, strict=True):
                setattr(count, name, getattr(self, name) * w / total)
        for name in COUNTS:
            exact = [getattr(self, name) * w / total for w in weights]
            given = [int(e) for e in exact]
            for k in sorted(range(len(weights)), key=lambda i: given[i] - exact[i])[:getattr(self, name) - sum(given)]:
                given[k] += 1
            for count, value in zip(out, given, strict=True):
                setattr(count, name, value)
        return out

    def non_model_seconds_per_call(self) -> float | None:
        """CPU seconds outside the model per classifier call (forward or backward); None without calls or times."""
        calls = self.calls + self.backward_calls
        if not calls or not self.cpu_seconds:
            return None
        return max(0.0, self.cpu_seconds - self.model_seconds) / calls


class _Round:
    """The round open now (None: none; every call is a round of its own)."""

    token: object | None = None


@contextmanager
def one_round() -> Iterator[None]:
    """The classifier calls of the block are one round: work a device could do in one call, split here into chunks
    (for a CPU's caches, or a memory bound). Nested blocks stay one round.

    Example::

        >>> from torch import nn
        >>> ledger, model = PassLedger(), nn.Linear(4, 2)
        >>> ledger.watch(model)
        >>> with one_round():
        ...     _ = [model(torch.rand(3, 4)) for _ in range(5)]
        >>> ledger.outside.calls, ledger.outside.rounds
        (5, 1)
    """
    if _Round.token is not None:
        yield
        return
    _Round.token = object()
    try:
        yield
    finally:
        _Round.token = None


class _Uncounted:
    """Depth of the :func:`uncounted` blocks open (one process, one thread of work)."""

    depth = 0


@contextmanager
def uncounted() -> Iterator[None]:
    """The classifier passes of the block are counted by no ledger: a probe of the model (how much memory a row
    of a stacked run keeps, :func:`~advspatial.stacked_runs.memory_rows`), not work of the run."""
    _Uncounted.depth += 1
    try:
        yield
    finally:
        _Uncounted.depth -= 1


def stage_family(key: str) -> str:
    """The stage a key belongs to, without its batch or chunk index: ``attack/pgd/batch-00003`` -> ``attack/pgd``."""
    return _INDEX.sub("", key)


@dataclass
class PassLedger:
    """The classifier's passes of one run, per stage key (see the module docstring)."""

    by_stage: dict[str, PassCount] = field(default_factory=dict)
    #: passes made outside any stage by this process
    outside: PassCount = field(default_factory=PassCount)
    #: stages read back from files that carry no counts (written before counts existed): totals are lower bounds
    uncounted: set[str] = field(default_factory=set)
    #: stages read from the model cache (:mod:`advspatial.model_work`): the passes an earlier run made for them,
    #: not counted in this run's totals
    reused: dict[str, PassCount] = field(default_factory=dict)
    #: the run's test images, which the per-image counts are per (set with the watched model)
    images: int = 0
    #: a model that takes no hooks was to be watched (TorchScript): nothing can be counted
    unwatchable: bool = False
    _open: list[PassCount] = field(default_factory=list)
    _watched: list[Any] = field(default_factory=list)
    _copies_count: bool = False
    #: CPU and elapsed seconds of the nested stages closed inside each open stage (taken off its own times)
    _nested_seconds: list[Elapsed] = field(default_factory=list)
    #: process time at each watched forward call's start (nested watched models: the outermost counts)
    _forward_started: list[float] = field(default_factory=list)
    _round_seen: object | None = None
    #: the run's time outside its stages, by phase (:meth:`phase`), this process's
    clock: PhaseClock = field(default_factory=PhaseClock)

    def __deepcopy__(self, memo: dict[int, Any]) -> PassLedger:
        """What the hook of a deep-copied classifier counts into: this ledger inside :meth:`counting_copies`,
        else a ledger of its own that nothing reads."""
        return self if self._copies_count else PassLedger()

    @contextmanager
    def counting_copies(self) -> Iterator[None]:
        """Count the passes of the deep copies of a watched classifier made inside the block (they are made with
        its hook), as the classifier's own."""
        before, self._copies_count = self._copies_count, True
        try:
            yield
        finally:
            self._copies_count = before

    def watch(self, model: nn.Module) -> None:
        """Count the passes of ``model`` (idempotent for a model already watched); a TorchScript model takes no
        hooks, and then the run's passes are not counted at all (:meth:`summary` is None)."""
        if isinstance(model, torch.jit.ScriptModule):
            self.unwatchable = True
            return
        if any(handle.model is model for handle in self._watched):
            return
        self._watched.append(_Watch(model, model.register_forward_hook(self._forward_hook),
                                    model.register_forward_pre_hook(self._forward_pre_hook)))

    def unwatch(self) -> None:
        """Stop counting (the hooks are removed)."""
        for watch in self._watched:
            watch.handle.remove()
            watch.pre_handle.remove()
        self._watched.clear()

    def _current(self) -> PassCount:
        return self._open[-1] if self._open else self.outside

    def _forward_pre_hook(self, module: nn.Module, args: tuple[Any, ...]) -> None:
        self._forward_started.append(time.process_time())
        enter_model()

    def _forward_hook(self, module: nn.Module, args: tuple[Any, ...], output: Any) -> None:
        leave_model()
        if _Uncounted.depth:
            if self._forward_started:
                self._forward_started.pop()
            return
        count = self._current()
        if self._forward_started:
            started = self._forward_started.pop()
            if not self._forward_started:
                count.model_seconds += time.process_time() - started
        if not isinstance(output, torch.Tensor) or output.dim() == 0:
            return
        images = int(output.shape[0])
        count.forward += images
        count.calls += 1
        if _Round.token is None or _Round.token is not self._round_seen:
            count.rounds += 1
            self._round_seen = _Round.token
        if output.requires_grad:
            output.register_hook(lambda grad: self._backward(count, images))

    @staticmethod
    def _backward(count: PassCount, images: int) -> None:
        count.backward += images
        count.backward_calls += 1

    def _sync(self) -> None:
        self._current().syncs += 1

    @contextmanager
    def stage(self, key: str) -> Iterator[PassCount]:
        """Count the passes, calls, host synchronisations and CPU time of the block as stage ``key``'s own;
        recorded when the block ends without error."""
        count = PassCount()
        started = Elapsed.now()
        self._open.append(count)
        self._nested_seconds.append(Elapsed())
        try:
            with self._instrumented(), stage_checks():  # the checks held for the stage's end read in the stage
                yield count
        finally:
            self._open.pop()
            elapsed = Elapsed.now().less(started)
            own = elapsed.less(self._nested_seconds.pop())
            # rounded as recorded, so that a stage read back from its file sums to the same totals
            count.cpu_seconds, count.wall_seconds = round(max(0.0, own.cpu), 6), round(max(0.0, own.wall), 6)
            count.model_seconds = round(count.model_seconds, 6)
            if self._nested_seconds:
                self._nested_seconds[-1] = self._nested_seconds[-1].plus(elapsed)
            else:
                self.clock.stage_closed(elapsed)
        self.by_stage[key] = count

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        """Time the block as phase ``name`` of the run's work outside its stages (:class:`PhaseClock`: less the
        stages computed inside it and its nested phases). Inside an open stage the block's time is that stage's, and
        nothing is recorded.

        Example::

            >>> ledger = PassLedger()
            >>> with ledger.phase("statistics"):
            ...     with ledger.stage("attack/pgd"):
            ...         pass
            >>> list(ledger.clock.phases), list(ledger.by_stage)
            (['statistics'], ['attack/pgd'])
        """
        if self._open:
            check_phase(name)  # the clock checks it otherwise: a mistyped name fails wherever the block first runs
            yield
            return
        with self.clock.phase(name):
            yield

    @contextmanager
    def _instrumented(self) -> Iterator[None]:
        """Host reads counted and gradients timed while the outermost stage is open."""
        if len(self._open) > 1:
            yield
            return
        self._forward_started.clear()  # a forward that raised left its start behind
        with counting(self._sync), _timed_gradients(self):
            yield

    @contextmanager
    def apart(self) -> Iterator[PassCount]:
        """Count the block's work as :meth:`stage` does, recorded in no stage: work done jointly for several
        stages, each of which then takes its share (:meth:`PassCount.shares`) with :meth:`charge`."""
        with self.stage("") as count:
            yield count
        del self.by_stage[""]

    def charge(self, share: PassCount) -> None:
        """Add ``share`` of work measured :meth:`apart` to the open stage's own counts and times."""
        count = self._current()
        count.add(replace(share, cpu_seconds=0.0, wall_seconds=0.0))
        if self._nested_seconds:  # the stage's own times are its elapsed times less its nested stages'
            self._nested_seconds[-1] = self._nested_seconds[-1].less(Elapsed(share.cpu_seconds, share.wall_seconds))
        else:
            count.cpu_seconds += share.cpu_seconds
            count.wall_seconds += share.wall_seconds

    def loaded(self, key: str, counts: Mapping[str, Any] | None) -> None:
        """Stage ``key`` was read back from its file, whose header holds ``counts`` (None: written without them)."""
        if counts is None:
            self.uncounted.add(key)
        elif key not in self.by_stage:
            self.by_stage[key] = PassCount.from_dict(counts)

    def reused_from_cache(self, key: str, counts: Mapping[str, Any] | None) -> None:
        """Stage ``key`` was read from the model cache, where its computation cost ``counts`` (None: not counted)."""
        self.reused[key] = PassCount.from_dict(counts) if counts is not None else PassCount()

    def total(self) -> PassCount:
        """Every stage's passes and this process's passes outside stages."""
        total = PassCount()
        for count in [*self.by_stage.values(), self.outside]:
            total.add(count)
        return total

    def by_family(self) -> dict[str, PassCount]:
        """The passes per stage family (the batches of a stage summed), in the order stages first ran."""
        return families(self.by_stage)

    def summary(self) -> dict[str, Any] | None:
        """What ``metrics.json`` records (``model_passes``): totals, per test image (of :attr:`images`), per stage
        family; None when the model could not be watched."""
        if self.unwatchable:
            return None
        total, images = self.total(), self.images
        return {"images": images, **total.as_dict(),
                "forward_per_image": round(total.forward / images, 1) if images else None,
                "backward_per_image": round(total.backward / images, 1) if images else None,
                **call_rates(total),
                "complete": not self.uncounted,
                "outside_stages": {**self.outside.as_dict(), **call_rates(self.outside),
                                   "phase_seconds": self.clock.seconds()},
                "stages": {name: {**count.as_dict(), **call_rates(count)}
                           for name, count in self.by_family().items()},
                **({"reused_stages": {name: count.as_dict() for name, count in families(self.reused).items()}}
                   if self.reused else {})}


def families(by_stage: Mapping[str, PassCount]) -> dict[str, PassCount]:
    """``by_stage`` summed per stage family (the batches of a stage summed), in the order of its keys."""
    summed: dict[str, PassCount] = {}
    for key, count in by_stage.items():
        summed.setdefault(stage_family(key), PassCount()).add(count)
    return summed


def call_rates(count: PassCount) -> dict[str, float | None]:
    """What a device's time follows, per call: mean images per round, host synchronisations per classifier call,
    CPU seconds outside the model per classifier call (None where there is nothing to divide by)."""
    calls = count.calls + count.backward_calls
    non_model = count.non_model_seconds_per_call()
    return {"images_per_round": round(count.forward / count.rounds, 1) if count.rounds else None,
            "syncs_per_call": round(count.syncs / calls, 2) if calls else None,
            "non_model_seconds_per_call": round(non_model, 6) if non_model is not None else None}


@contextmanager
def _timed_gradients(ledger: PassLedger) -> Iterator[None]:
    """Time every gradient computed in the block (``torch.autograd.grad``, ``Tensor.backward``) as model time of
    the stage open at the time: the backward passes are the model's, the losses' own backward is negligible."""
    originals = torch.autograd.grad, torch.Tensor.backward

    def timed(original: Any) -> Any:
        @functools.wraps(original)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            count, started = ledger._current(), time.process_time()
            try:
                return original(*args, **kwargs)
            finally:
                count.model_seconds += time.process_time() - started
        return wrapper

    torch.autograd.grad, torch.Tensor.backward = timed(originals[0]), timed(originals[1])  # type: ignore[method-assign]
    try:
        yield
    finally:
        torch.autograd.grad, torch.Tensor.backward = originals  # type: ignore[method-assign]


@dataclass
class _Watch:
    model: nn.Module
    handle: Any
    pre_handle: Any
