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
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn

#: the index part of a stage key (``attack/pgd/batch-00003``): stripped to name the stage's family
_INDEX = re.compile(r"/(batch|chunk)-\d+$")


@dataclass
class PassCount:
    """Image-passes through the classifier: ``forward`` (images sent forward), ``backward`` (images whose
    gradient went back through it) and ``calls`` (forward calls, i.e. batches)."""

    forward: int = 0
    backward: int = 0
    calls: int = 0

    def add(self, other: PassCount) -> None:
        self.forward += other.forward
        self.backward += other.backward
        self.calls += other.calls

    def as_dict(self) -> dict[str, int]:
        return asdict(self)

    @classmethod
    def from_dict(cls, counts: Mapping[str, Any]) -> PassCount:
        return cls(int(counts.get("forward", 0)), int(counts.get("backward", 0)), int(counts.get("calls", 0)))


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
    #: the run's test images, which the per-image counts are per (set with the watched model)
    images: int = 0
    #: a model that takes no hooks was to be watched (TorchScript): nothing can be counted
    unwatchable: bool = False
    _open: list[PassCount] = field(default_factory=list)
    _watched: list[Any] = field(default_factory=list)
    _copies_count: bool = False

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
        self._watched.append(_Watch(model, model.register_forward_hook(self._forward_hook)))

    def unwatch(self) -> None:
        """Stop counting (the hooks are removed)."""
        for watch in self._watched:
            watch.handle.remove()
        self._watched.clear()

    def _current(self) -> PassCount:
        return self._open[-1] if self._open else self.outside

    def _forward_hook(self, module: nn.Module, args: tuple[Any, ...], output: Any) -> None:
        if not isinstance(output, torch.Tensor) or output.dim() == 0:
            return
        images = int(output.shape[0])
        count = self._current()
        count.forward += images
        count.calls += 1
        if output.requires_grad:
            output.register_hook(lambda grad: self._backward(count, images))

    @staticmethod
    def _backward(count: PassCount, images: int) -> None:
        count.backward += images

    @contextmanager
    def stage(self, key: str) -> Iterator[PassCount]:
        """Count the passes of the block as stage ``key``'s own; recorded when the block ends without error."""
        count = PassCount()
        self._open.append(count)
        try:
            yield count
        finally:
            self._open.pop()
        self.by_stage[key] = count

    def loaded(self, key: str, counts: Mapping[str, Any] | None) -> None:
        """Stage ``key`` was read back from its file, whose header holds ``counts`` (None: written without them)."""
        if counts is None:
            self.uncounted.add(key)
        elif key not in self.by_stage:
            self.by_stage[key] = PassCount.from_dict(counts)

    def total(self) -> PassCount:
        """Every stage's passes and this process's passes outside stages."""
        total = PassCount()
        for count in [*self.by_stage.values(), self.outside]:
            total.add(count)
        return total

    def by_family(self) -> dict[str, PassCount]:
        """The passes per stage family (the batches of a stage summed), in the order stages first ran."""
        families: dict[str, PassCount] = {}
        for key, count in self.by_stage.items():
            families.setdefault(stage_family(key), PassCount()).add(count)
        return families

    def summary(self) -> dict[str, Any] | None:
        """What ``metrics.json`` records (``model_passes``): totals, per test image (of :attr:`images`), per stage
        family; None when the model could not be watched."""
        if self.unwatchable:
            return None
        total, images = self.total(), self.images
        return {"images": images, **total.as_dict(),
                "forward_per_image": round(total.forward / images, 1) if images else None,
                "backward_per_image": round(total.backward / images, 1) if images else None,
                "complete": not self.uncounted,
                "outside_stages": self.outside.as_dict(),
                "stages": {name: count.as_dict() for name, count in self.by_family().items()}}


@dataclass
class _Watch:
    model: nn.Module
    handle: Any
