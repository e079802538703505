"""The run directory: resolved config, fingerprint, one file per finished stage, results.

Why: a long run is interrupted (a timeout, a killed job); a stage already on disk is loaded instead
of recomputed, so ``--resume`` completes a run with identical results, and the fingerprint keeps
stages of two different runs from being mixed.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from .errors import ConfigError, DataError
from .files import atomic_torch_save, atomic_write_text, inner_dir, load_torch_file, read_json
from .passes import PassCount, PassLedger

if TYPE_CHECKING:
    from .model_work import ModelWorkStore

T = TypeVar("T")


class RunDir:
    """A run directory that survives interruption.

    Layout: ``config.yaml`` (the resolved config), ``run.json`` (the settings
    and the model checksum the stages were computed with: see
    :func:`advspatial.experiments.running.open_run`), ``stages/`` (one file per
    finished unit of work, written atomically), ``metrics.json``,
    ``per_image.csv``, ``figures/``, ``report.html``. A stage already on disk is
    loaded instead of recomputed, so re-running with the same config (``--resume``)
    completes an interrupted run with identical results.
    """

    #: the fingerprint of the run: experiment, settings and model checksum its stages belong to
    RECORD = "run.json"

    #: the key of a stage file's header: the stage's name and the identity of the run it belongs to
    STAGE_KEY = "advspatial_stage"

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.stages = self.path / "stages"
        self.figures = self.path / "figures"
        self.path.mkdir(parents=True, exist_ok=True)
        for directory in (self.stages, self.figures):
            inner_dir(self.path, directory)
        #: what the run's stages were computed from (settings, checksums of the model, its code, the images):
        #: written into every stage file and checked when one is loaded (see :meth:`bind`)
        self.identity: dict[str, str] = {}
        #: the classifier's passes per stage (:mod:`advspatial.passes`): counted while a stage is computed,
        #: written into its file's header, read back with it
        self.passes = PassLedger()
        #: where stages that depend only on the model are kept across runs (:mod:`advspatial.model_work`); None:
        #: every stage is computed by the run
        self.model_work: ModelWorkStore | None = None
        #: what the run said it would cost before its first stage (:meth:`~advspatial.experiments.forecast.Forecast.
        #: record`), kept in metrics.json beside what it cost; None: it said nothing (a resumed run, a smoke test)
        self.forecast: dict[str, object] | None = None
        #: the stages of the joint computation being saved (:meth:`saving_jointly`), recorded in their headers
        self._joint: tuple[str, ...] = ()

    def stage_path(self, name: str) -> Path:
        path = self.stages / f"{name}.pt"
        inner_dir(self.stages, path.parent)
        return path

    def has_stage(self, name: str) -> bool:
        return self.stage_path(name).is_file()

    def load_stage(self, name: str) -> object:
        """The saved value of stage ``name``; a :class:`DataError` naming the file when it cannot be read, or
        when it is another stage's or another run's (a file copied over it, a merged ``stages/`` folder)."""
        return self._read_stage(name)[0]

    def _read_stage(self, name: str) -> tuple[object, dict | None]:
        """(value, header) of stage ``name``'s file (header None: written before stage files carried one)."""
        path = self.stage_path(name)
        with self.passes.phase("stage files"):
            stored = load_torch_file(path, f"stage file {path} of the run is unreadable",
                                     "delete it and resume to recompute it")
        if not (isinstance(stored, dict) and self.STAGE_KEY in stored):
            return stored, None  # written before stage files carried their identity: nothing to check
        header = stored[self.STAGE_KEY]
        if not isinstance(header, dict) or header.get("name") != name or header.get("run") != self.stage_owner():
            other = header.get("name") if isinstance(header, dict) else None
            what = f"stage {other!r}" if other != name else "another run (other settings, model or images)"
            raise DataError(f"stage file {path} holds the results of {what}, not of {name!r} of this run; delete "
                            "it and resume to recompute it")
        return stored.get("value"), header

    def save_stage(self, name: str, value: object, passes: PassCount | None = None,
                   reused: Mapping[str, Any] | None = None) -> None:
        """Save ``value`` as stage ``name`` (with the model passes it cost, when counted; ``reused``: read from the
        model cache, where an earlier run's passes for it were these counts)."""
        header: dict[str, object] = {"name": name, "run": self.stage_owner()}
        if passes is not None:
            header["passes"] = passes.as_dict()
        if reused is not None:
            header["reused"] = dict(reused)
        elif name in self._joint:
            header["joint"] = list(self._joint)
        with self.passes.phase("stage files"):  # a value still on a device is copied to the host as it is written
            atomic_torch_save({self.STAGE_KEY: header, "value": value}, self.stage_path(name))

    @contextlib.contextmanager
    def saving_jointly(self, names: Sequence[str]) -> Iterator[None]:
        """The stages ``names`` saved inside were computed as one (their headers say so, :meth:`computed_with`):
        a run stopped while saving them leaves some saved and some not, and its resume computes the lost ones
        again with the same company, so that each takes the share of the passes a run in one go gives it."""
        self._joint = tuple(names)
        try:
            yield
        finally:
            self._joint = ()

    def computed_with(self, name: str) -> tuple[str, ...]:
        """The stages that saved stage ``name`` was computed together with (itself included, :meth:`saving_jointly`);
        () when it was computed alone, read from the model cache or is not saved."""
        if not self.has_stage(name):
            return ()
        joint = self._read_stage(name)[1] or {}
        return tuple(joint.get("joint", ()))

    def stage_owner(self) -> str:
        """A short checksum of :attr:`identity`: the run a stage file belongs to."""
        return hashlib.sha256(json.dumps(self.identity, sort_keys=True).encode()).hexdigest()[:16]

    def record(self) -> dict:
        """The run's fingerprint (``run.json``), {} when the directory has none."""
        return self.record_of(self.path)

    @classmethod
    def record_of(cls, path: Path) -> dict:
        """The fingerprint (``run.json``) of the run directory ``path``, {} when it has none (nothing is created)."""
        file = Path(path) / cls.RECORD
        if not file.is_file():
            return {}
        value = read_json(file, "the run's record", "the run cannot be checked - start a new run with another --out")
        return value if isinstance(value, dict) else {}

    def write_record(self, record: dict) -> None:
        atomic_write_text(self.path / self.RECORD, json.dumps(record, indent=2, sort_keys=True) + "\n")

    def bind(self, key: str, checksum: str, what: str) -> None:
        """Tie the run to ``checksum`` of ``what`` (the model's weights, its code, the images), under ``key`` of
        ``run.json``: recorded the first time, a :class:`ConfigError` when a later (resumed) run finds another
        value under the same settings - its results would mix two models or two image sets. The checksum also
        joins :attr:`identity`, so the stage files written from now on belong to it."""
        self.identity[key] = checksum
        record = self.record()
        if not record:
            return
        saved = record.get(key)
        if saved is None:
            from .distributed import world

            if world().is_main:  # under torchrun rank 0 owns run.json
                self.write_record({**record, key: checksum})
        elif saved != checksum:
            raise ConfigError(f"{self.path} was computed with other {what} (sha256 {str(saved)[:12]}..., now "
                              f"{checksum[:12]}...); its results would mix two runs - start a new run with "
                              "another --out")

    def bind_details(self, key: str, value: dict, changes: Callable[[dict], list[str]], what: str) -> None:
        """Tie the run to ``value`` (a JSON mapping, e.g. package versions) under ``key`` of ``run.json``: recorded
        the first time; a :class:`ConfigError` naming what differs (``changes(saved)``, a list of short phrases)
        when a later (resumed) run finds a different one - its results would mix two versions of the model."""
        record = self.record()
        if not record:
            return
        saved = record.get(key)
        if not isinstance(saved, dict):
            from .distributed import world

            if world().is_main:  # under torchrun rank 0 owns run.json
                self.write_record({**record, key: value})
            return
        found = changes(saved)
        if found:
            more = f" and {len(found) - 3} more" if len(found) > 3 else ""
            raise ConfigError(f"{self.path} was computed with other {what}: {'; '.join(found[:3])}{more}; its "
                              "results would mix two versions of the model - restore it, or start a new run "
                              "with another --out")

    def has_results(self) -> bool:
        """True when the run has produced something worth keeping: a stage or the result files."""
        if (self.path / "metrics.json").is_file():
            return True
        return self.stages.is_dir() and any(p.is_file() and not p.name.startswith(".")
                                            for p in self.stages.rglob("*.pt"))

    def remove_stale_temp_files(self) -> None:
        """Temporary files left by a killed process (call with the run's lock held)."""
        for tmp in self.path.rglob(".*.tmp"):
            with contextlib.suppress(OSError):
                tmp.unlink()

    def cached(self, name: str, compute: Callable[[], T]) -> T:
        """``compute()`` once; later calls (and resumed runs) load the saved value.

        Values must be tensors, numbers, strings, or lists/dicts/tuples of them.
        """
        if self.has_stage(name):
            value, header = self._read_stage(name)
            self.passes.loaded(name, header.get("passes") if header else None)
            if header and isinstance(header.get("reused"), dict):
                self.passes.reused_from_cache(name, header["reused"])
            return value  # type: ignore[return-value]
        with self.passes.stage(name) as passes:
            value = compute()
        self.save_stage(name, value, passes)
        return value

    def cached_model_work(self, name: str, inputs: Mapping[str, Any] | Callable[[], Mapping[str, Any]],
                          compute: Callable[[], T]) -> T:
        """:meth:`cached` for a stage that depends only on the model and ``inputs`` (everything it reads besides the
        model: images, classes, settings; a callable is called only when the run has no stage file yet): read from
        the model cache when an earlier run on the same model computed it from the same inputs
        (:class:`~advspatial.model_work.ModelWorkStore`), and stored there when computed here. The run keeps its own
        stage file either way; the passes spent finding the inputs count as this run's."""
        from .model_work import Unkeyable

        store = self.model_work
        if store is None or self.has_stage(name):
            return self.cached(name, compute)
        with self.passes.stage(name) as passes:
            given = inputs() if callable(inputs) else inputs
            try:
                key: str | None = store.key(name, given)
            except Unkeyable:  # e.g. an explainer option that is an object: computed here, not kept
                key = None
            found = None if key is None else store.read(name, key)
            value = compute() if found is None else found.value
        if found is None:
            self.save_stage(name, value, passes)
            if key is not None:
                store.write(name, key, value, passes.as_dict())
        else:
            self.passes.reused_from_cache(name, found.passes)
            self.save_stage(name, value, passes, reused=found.passes or {})
        return value
