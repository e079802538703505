"""The cached stages of a run: each stage owns its key format and the type its saved value loads as.

A stage is a costly step whose value is saved in the run directory (``stages/<key>.pt``), so a resumed
or sharded run (``--resume``, ``torchrun``) reads it back instead of recomputing it. Experiments name
their stages once, as module-level :class:`Stage` objects, and never format a stage key by hand::

    PREDICTIONS = Stage[torch.Tensor]("predictions")          # one value per batch: predictions/batch-00003
    PRIOR = Stage[torch.Tensor]("prior", per="run")           # one value per run: prior
    LOCALITY = Stage[dict]("locality", per="chunk")           # locality/k3/chunk-00001 with .at("k3")

    preds = PREDICTIONS.get(ctx.rundir, compute, b)

An attack on a batch is one stage kind for every experiment (:class:`AttackStage`, targeted attacks
included), run through :meth:`~advspatial.experiments.context.ExperimentContext.attack`; the clean pass
of a batch (logits and predictions) is one shared stage, :data:`CLEAN`
(:meth:`~advspatial.experiments.context.ExperimentContext.clean`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Generic, Literal, TypeVar, cast

import torch

from ..attacks.base import AttackResult
from ..passes import PassCount, PassLedger
from ..regions import MapAccumulator
from ..rundir import RunDir

T = TypeVar("T")
K = TypeVar("K")

#: the layout of the stage files; raised whenever a stage's name or saved form changes, so a run directory
#: written by an older version is refused in one line instead of failing on a file it cannot read
#: (2: stages as typed ``Stage`` objects, each owning its key; 3: the gate's columns with its positive control and
#: calibrated restricted attack; 4: the spatial baselines' and RoI-restricted attacks' outcomes hold the worst case
#: only, no per-gradient results, and a randomized defence's EOT attacks take its draws over one stacked batch of
#: both losses, another stream; 5: every batch's per-sample noise from the counter-based keyed streams, another
#: stream for every random start, EOT draw, noise fill and random region; 6: an attack's draws of a randomized
#: defence keyed by each image's sample id, not its row in the attacked batch)
STAGE_FORMAT = 6
S = TypeVar("S", bound="Stage[Any]")
Per = Literal["batch", "chunk", "run"]


class _NotStored(Exception):
    """Raised inside :meth:`Stage.stored` where a stage would be computed."""


@dataclass(frozen=True)
class Stage(Generic[T]):
    """A cached step of a run: ``{name}/batch-{b:05d}`` per batch (``per="batch"``, the default),
    ``{name}/chunk-{c:05d}`` per chunk of other work, or ``{name}`` once per run (``per="run"``).

    Subclasses say how a value is saved and loaded (:meth:`saved`, :meth:`loaded`); the base class saves it
    as it is (tensors, numbers, strings, and lists, tuples or dicts of them).
    """

    name: str
    per: Per = "batch"

    def at(self: S, *parts: object) -> S:
        """The same stage one level deeper, for one setting of a family: ``Stage("attack").at("pgd")`` is
        ``attack/pgd``; floats are written with ``:g`` so a key never depends on float formatting."""
        suffix = "/".join(f"{p:g}" if isinstance(p, float) else str(p) for p in parts)
        return dataclasses.replace(self, name=f"{self.name}/{suffix}")

    def key(self, index: int | None = None) -> str:
        """The stage file's name in the run directory (without ``.pt``) for batch or chunk ``index``."""
        if self.per == "run":
            if index is not None:
                raise ValueError(f"stage {self.name!r} has one value per run, not one per {index=}")
            return self.name
        if index is None:
            raise ValueError(f"stage {self.name!r} has one value per {self.per}: give its index")
        return f"{self.name}/{self.per}-{index:05d}"

    def saved(self, value: T) -> Any:
        """What goes into the stage file for ``value``."""
        return value

    def loaded(self, saved: Any) -> T:
        """The value a stage file holds, as the stage's type."""
        return cast(T, saved)

    def get(self, rundir: RunDir, compute: Callable[[], T], index: int | None = None) -> T:
        """The stage's value for ``index``: read back when saved, else ``compute()``d and saved."""
        return self.loaded(rundir.cached(self.key(index), lambda: self.saved(compute())))

    def get_model_work(self, rundir: RunDir, inputs: Mapping[str, Any] | Callable[[], Mapping[str, Any]],
                       compute: Callable[[], T], index: int | None = None) -> T:
        """:meth:`get` for a stage that depends only on the model and ``inputs`` (everything else it reads: the
        images, classes and settings; a callable is called only when the run has no stage file yet), reused across
        runs from the model cache (:meth:`~advspatial.rundir.RunDir.cached_model_work`)."""
        return self.loaded(rundir.cached_model_work(self.key(index), inputs, lambda: self.saved(compute())))

    def stored(self, rundir: RunDir, inputs: Mapping[str, Any] | Callable[[], Mapping[str, Any]],
               index: int | None = None) -> T | None:
        """:meth:`get_model_work`'s value when the run or the model cache holds it, else None with nothing
        computed: work that several stages share is then computed once for the stages that need it."""
        def missing() -> T:
            raise _NotStored

        try:
            return self.get_model_work(rundir, inputs, missing, index)
        except _NotStored:  # the stage's count was left unrecorded and nothing was saved
            return None

    def exists(self, rundir: RunDir, index: int | None = None) -> bool:
        """True when the value for ``index`` is saved."""
        return rundir.has_stage(self.key(index))

    def load(self, rundir: RunDir, index: int | None = None) -> T:
        """The saved value for ``index`` (a :class:`~advspatial.errors.DataError` when it is missing or foreign)."""
        return self.loaded(rundir.load_stage(self.key(index)))

    def save(self, rundir: RunDir, value: T, index: int | None = None) -> None:
        """Save ``value`` as the stage's value for ``index``."""
        rundir.save_stage(self.key(index), self.saved(value))


def computed_jointly(rundir: RunDir, pending: Sequence[K], joint: Callable[[], tuple[Sequence[T], Sequence[int]]],
                     save: Callable[[K, Callable[[], T]], T], wanted: Sequence[K] | None = None,
                     names: Callable[[K], str] | None = None) -> dict[K, T]:
    """The values of the ``pending`` stages (keys: whatever names them to ``save``), computed as one by ``joint()``:
    independent work of several stages made as one round (a gate's regions of every explainer, the class prior's
    batches), its passes counted apart (:meth:`~advspatial.passes.PassLedger.apart`). ``joint()`` returns each stage's
    value and its weight (its share of the work); each value is then saved by ``save(key, compute)`` (a stage's
    ``get``), whose stage takes its weight's share of the passes (:meth:`~advspatial.passes.PassCount.shares`), so the
    run's totals are exact and a resumed run reads each stage back with its share. With ``wanted`` only those keys
    are saved and returned (the others were saved already): work recomputed whole where part of it was lost, so that
    each saved stage's share is the one the whole work gives it, and a resumed run counts what a run in one go does.
    With ``names`` (each key's stage name) every saved stage's header names the whole joint work
    (:meth:`~advspatial.rundir.RunDir.saving_jointly`), for a caller whose joint work is not fixed in advance to find
    what a lost stage was computed with (:meth:`~advspatial.rundir.RunDir.computed_with`)."""
    if not pending:
        return {}
    ledger: PassLedger = rundir.passes
    with ledger.apart() as count:
        values, weights = joint()
    keep = set(pending if wanted is None else wanted)
    saving = rundir.saving_jointly([names(k) for k in pending]) if names else contextlib.nullcontext()
    with saving:
        return {key: save(key, functools.partial(_charged, ledger, share, value))
                for key, value, share in zip(pending, values, count.shares(list(weights)), strict=True)
                if key in keep}


def _charged(ledger: PassLedger, share: PassCount, value: T) -> T:
    """``value``, computed jointly: the stage computing it takes its ``share`` of the joint work's passes."""
    ledger.charge(share)
    return value


@dataclass(frozen=True)
class FieldsStage(Stage[T]):
    """A dataclass value saved as a dict of its fields and loaded back as ``kind(**fields)``:
    ``FieldsStage("units", kind=UnitSums)``. Its fields must be what a stage file holds (tensors, numbers, strings,
    and lists, tuples or dicts of them)."""

    kind: type[T] = dataclasses.field(kw_only=True)

    def saved(self, value: T) -> dict[str, Any]:
        return {f.name: getattr(value, f.name) for f in dataclasses.fields(cast(Any, value))}

    def loaded(self, saved: Any) -> T:
        return self.kind(**saved)


@dataclass(frozen=True)
class AttackStage(FieldsStage[AttackResult]):
    """An attack's result on one batch, saved on the CPU as the fields of :class:`AttackResult`."""

    kind: type[AttackResult] = dataclasses.field(default=AttackResult, kw_only=True)

    def saved(self, value: AttackResult) -> dict[str, Any]:
        return super().saved(value.to("cpu"))


@dataclass(frozen=True)
class AccumulatorStage(Stage[MapAccumulator]):
    """Per-class map sums saved as :meth:`MapAccumulator.as_dict` (the classes seen only)."""

    def saved(self, value: MapAccumulator) -> dict[str, Any]:
        return value.as_dict()

    def loaded(self, saved: Any) -> MapAccumulator:
        return MapAccumulator.from_dict(saved)


@dataclass(frozen=True)
class CleanBatch:
    """The model's clean pass over one batch: logits (N, K) and predictions (N,), on the CPU."""

    logits: torch.Tensor
    pred: torch.Tensor

    def correct(self, labels: torch.Tensor) -> torch.Tensor:
        """(N,) bool: the images the model classifies correctly."""
        return self.pred == labels.to(self.pred.device)


#: the clean pass of every batch, shared by every experiment
CLEAN = FieldsStage("clean-pass", kind=CleanBatch)  # computed on the CPU by ExperimentContext.clean

#: every attack's result per batch, one family per attack: ``ATTACK.at("pgd")`` is ``attack/pgd/batch-NNNNN``
ATTACK = AttackStage("attack")
