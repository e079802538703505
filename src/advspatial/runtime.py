"""Seeds, devices, cache directories and streaming batch iteration.

Everything random in advspatial takes a seed or a :class:`torch.Generator`;
:func:`make_generator` builds one on the right device; per-sample randomness is keyed
by ``(seed, sample id)`` through :func:`sample_seed` alone. Batching is deterministic:
:func:`batch_slices` always cuts the same ranges for the same ``n`` and batch size.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import random
import tempfile
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

import numpy as np
import torch

from .errors import ConfigError, DataError, ShapeError

if TYPE_CHECKING:
    import datetime

DEFAULT_CACHE = Path.home() / ".cache" / "advspatial"


def cache_path(*parts: str) -> Path:
    """A path in the advspatial cache directory (``$ADVSPATIAL_CACHE`` or ``~/.cache/advspatial``), not created
    (for looking things up: a read-only cache, or one without that folder, is fine)."""
    return Path(os.environ.get("ADVSPATIAL_CACHE", str(DEFAULT_CACHE))).expanduser().joinpath(*parts)


def cache_dir(*parts: str) -> Path:
    """The advspatial cache directory (``$ADVSPATIAL_CACHE`` or ``~/.cache/advspatial``), created on use."""
    path = cache_path(*parts)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"cache directory {path} cannot be created ({exc.strerror or exc}); set ADVSPATIAL_CACHE "
                          "to a writable directory") from exc
    return path


def env_int(name: str, default: int, low: int, high: int, meaning: str = "") -> int:
    """The integer environment variable ``name`` (``default`` when unset or empty) within [low, high]; anything
    else is a one-line :class:`ConfigError` naming the variable, its value and the valid range. Every integer
    the environment gives advspatial (torchrun's ranks, ports, threads) is read here."""
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    shown = raw if len(raw) <= 40 else raw[:37] + "..."
    about = f" ({meaning})" if meaning else ""
    if not raw.lstrip("+-").isdigit() or len(raw) > 20:
        raise ConfigError(f"{name}={shown!r}{about} is not an integer; valid: {low}..{high}")
    value = int(raw)
    if not low <= value <= high:
        raise ConfigError(f"{name}={value}{about} is out of range; valid: {low}..{high}")
    return value


def env_hours(name: str, default: float, high: float) -> datetime.timedelta:
    """The duration in hours the environment variable ``name`` gives (``default`` when unset), a number from one
    second (a shorter one would round to a zero timeout) to ``high``; anything else is a one-line
    :class:`ConfigError`."""
    import datetime
    import math

    raw = os.environ.get(name, "").strip()
    if not raw:
        return datetime.timedelta(hours=default)
    shown = raw if len(raw) <= 40 else raw[:37] + "..."
    try:
        hours = float(raw)
    except ValueError:
        hours = math.nan
    if not (math.isfinite(hours) and 1 / 3600 <= hours <= high):
        raise ConfigError(f"{name}={shown!r} is not a number of hours in [{1 / 3600:.6f} (one second), {high:g}]")
    return datetime.timedelta(hours=hours)


#: glibc ``mallopt`` parameters (malloc.h) and the values :func:`keep_freed_memory` sets
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
_TRIM_BYTES, _MMAP_BYTES = 1 << 30, 256 << 20


def keep_freed_memory() -> bool:
    """Let glibc's allocator keep freed memory for reuse (tensors up to 256 MB from the heap, up to 1 GB kept).

    By default glibc returns large freed blocks to the system and the next tensor of that size comes back as
    fresh pages the kernel must zero: an attack step on a CPU allocates and frees the same activations over
    and over, and on a 2-core machine that cost a third of the time (SmallCNN forward and backward on 1,000
    images: 240 ms, of which 6 s of 14 s CPU in the kernel; 131 ms with the memory kept). Returns whether the
    settings were applied (False off glibc, e.g. macOS). The process may hold up to 1 GB it no longer uses.
    """
    import ctypes
    import ctypes.util

    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name) if name else None
        mallopt = getattr(libc, "mallopt", None) if libc is not None else None
    except OSError:
        return False
    if mallopt is None:
        return False
    return bool(mallopt(_M_TRIM_THRESHOLD, _TRIM_BYTES)) and bool(mallopt(_M_MMAP_THRESHOLD, _MMAP_BYTES))


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (CPU and CUDA) so that a run can be repeated."""
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def make_generator(seed: int, device: torch.device | str = "cpu") -> torch.Generator:
    """A torch generator on ``device`` seeded with ``seed``."""
    gen = torch.Generator(device=torch.device(device))
    gen.manual_seed(int(seed))
    return gen


# -- per-sample randomness: the one owner of how a (seed, sample id) becomes random numbers -----------

def sample_seed(seed: int, sample_id: int) -> int:
    """The seed of one sample's random numbers in stream ``seed``: a function of ``(seed, sample_id)`` only.

    Every per-sample draw in advspatial (attack starts and searches, map noise,
    random control regions, noise fills) goes through it, so an image's numbers
    never depend on the batch it is in or on the device.
    """
    return (int(seed) * 1_000_003 + int(sample_id)) % (2**63 - 1)


def sample_generator(seed: int, sample_id: int) -> torch.Generator:
    """The CPU generator of one sample, seeded with :func:`sample_seed` ``(seed, sample_id)``."""
    return torch.Generator().manual_seed(sample_seed(seed, sample_id))


def stream_seed(seed: int, stream: int, counter: int = 0) -> int:
    """One seed per (experiment seed, random stream, counter): independent streams of per-sample noise."""
    return (int(seed) * 1_000_033 + stream * 7919 + int(counter) * 104_729) % (2**61 - 1)


def sample_ids_or_range(n: int, sample_ids: torch.Tensor | None) -> torch.Tensor:
    """``sample_ids`` as an (n,) int64 CPU tensor, or the positions ``0..n-1`` when None."""
    ids = torch.arange(n) if sample_ids is None else torch.as_tensor(sample_ids).cpu().long()
    if ids.shape != (n,):
        raise ShapeError(f"sample_ids must have shape ({n},), got {tuple(ids.shape)}")
    return ids


def per_sample_noise(
    shape: Sequence[int], seed: int, sample_ids: torch.Tensor, kind: str = "uniform",
    device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """(N, *shape[1:]) noise; row i drawn from :func:`sample_generator` ``(seed, sample_ids[i])``.

    ``uniform`` is U[-1,1), ``normal`` is N(0,1). Drawing on the CPU makes the
    numbers the same on every device.
    """
    if kind not in ("uniform", "normal"):
        raise ConfigError(f"noise kind {kind!r} unknown; valid: uniform, normal")
    draw = (lambda g: torch.rand(tuple(shape[1:]), generator=g) * 2 - 1) if kind == "uniform" else \
        (lambda g: torch.randn(tuple(shape[1:]), generator=g))
    rows = [draw(sample_generator(seed, sid)) for sid in torch.as_tensor(sample_ids).tolist()]
    if not rows:
        return torch.empty(tuple(shape), device=device, dtype=dtype)
    return torch.stack(rows).to(device=device, dtype=dtype)


def pick_device(preference: str = "auto") -> torch.device:
    """Resolve ``auto`` to CUDA when present (``cuda:LOCAL_RANK`` under torchrun), else CPU; validate an
    explicit choice."""
    if preference == "auto":
        from .distributed import default_device

        return torch.device(default_device() or ("cuda" if torch.cuda.is_available() else "cpu"))
    try:
        device = torch.device(preference)
    except RuntimeError as exc:
        raise ConfigError(f"device={preference!r} is not a valid device; valid: auto, cpu, cuda, cuda:N") from exc
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device={preference!r} requested but CUDA is not available; valid here: auto, cpu")
    return device


def batch_slices(n: int, batch_size: int) -> Iterator[slice]:
    """Consecutive slices ``[i, i+batch_size)`` covering ``range(n)``; deterministic."""
    if batch_size < 1:
        raise ConfigError(f"batch_size={batch_size} is out of range; valid: >= 1")
    for start in range(0, n, batch_size):
        yield slice(start, min(start + batch_size, n))


def scaled_batch(count_at_28: int, height: int, width: int) -> int:
    """A per-pass image count given for 28x28 images, scaled to ``height x width`` (same pixels per pass).

    Batch limits tuned on MNIST-sized images (e.g. 2048 images per forward pass)
    exhaust memory at 224x224; scaled by the pixel count they keep the memory of a
    pass where it was: 2048 at 28x28 is 32 at 224x224. At least 1.
    """
    return max(1, int(count_at_28) * 28 * 28 // (int(height) * int(width)))


def model_device(model: torch.nn.Module) -> torch.device:
    """The device of a model's first parameter or buffer (CPU for a parameter-free model)."""
    for tensor in model.parameters():
        return tensor.device
    for tensor in model.buffers():
        return tensor.device
    return torch.device("cpu")


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

    def stage_path(self, name: str) -> Path:
        path = self.stages / f"{name}.pt"
        inner_dir(self.stages, path.parent)
        return path

    def has_stage(self, name: str) -> bool:
        return self.stage_path(name).is_file()

    def load_stage(self, name: str) -> object:
        """The saved value of stage ``name``; a :class:`DataError` naming the file when it cannot be read, or
        when it is another stage's or another run's (a file copied over it, a merged ``stages/`` folder)."""
        path = self.stage_path(name)
        stored = load_torch_file(path, f"stage file {path} of the run is unreadable",
                                 "delete it and resume to recompute it")
        if not (isinstance(stored, dict) and self.STAGE_KEY in stored):
            return stored  # written before stage files carried their identity: nothing to check
        header = stored[self.STAGE_KEY]
        if not isinstance(header, dict) or header.get("name") != name or header.get("run") != self.stage_owner():
            other = header.get("name") if isinstance(header, dict) else None
            what = f"stage {other!r}" if other != name else "another run (other settings, model or images)"
            raise DataError(f"stage file {path} holds the results of {what}, not of {name!r} of this run; delete "
                            "it and resume to recompute it")
        return stored.get("value")

    def save_stage(self, name: str, value: object) -> None:
        atomic_torch_save({self.STAGE_KEY: {"name": name, "run": self.stage_owner()}, "value": value},
                          self.stage_path(name))

    def stage_owner(self) -> str:
        """A short checksum of :attr:`identity`: the run a stage file belongs to."""
        import hashlib
        import json

        return hashlib.sha256(json.dumps(self.identity, sort_keys=True).encode()).hexdigest()[:16]

    def record(self) -> dict:  # type: ignore[type-arg]
        """The run's fingerprint (``run.json``), {} when the directory has none."""
        import json

        path = self.path / self.RECORD
        if not path.is_file():
            return {}
        try:
            value = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise DataError(f"{path} is unreadable ({first_line(exc)}); the run cannot be checked - start a new "
                            "run with another --out") from exc
        return value if isinstance(value, dict) else {}

    def write_record(self, record: dict) -> None:  # type: ignore[type-arg]
        import json

        atomic_write_text(self.path / self.RECORD, json.dumps(record, indent=2, sort_keys=True) + "\n")

    def bind_model(self, checksum: str) -> None:
        """Tie the run to the model whose weights have SHA-256 ``checksum`` (see :meth:`bind`)."""
        self.bind("model_sha256", checksum, "model weights")

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

    def cached(self, name: str, compute: "Callable[[], T]") -> "T":
        """``compute()`` once; later calls (and resumed runs) load the saved value.

        Values must be tensors, numbers, strings, or lists/dicts/tuples of them.
        """
        if self.has_stage(name):
            return self.load_stage(name)  # type: ignore[return-value]
        value = compute()
        self.save_stage(name, value)
        return value


T = TypeVar("T")


def inner_dir(root: Path, directory: Path) -> None:
    """Create ``directory`` (inside ``root``, with its parents up to ``root``) as a plain folder; a symbolic link
    anywhere on the way is a one-line :class:`ConfigError`: a planted link would make the run write outside its
    directory."""
    root, directory = Path(root), Path(directory)
    parts = directory.relative_to(root).parts
    current = root
    for part in parts:
        current = current / part
        if current.is_symlink():
            raise ConfigError(f"{current} is a symbolic link; advspatial writes only inside its run directory - "
                              "remove the link (or choose another --out)")
        if not current.is_dir():
            with contextlib.suppress(FileExistsError):  # another process of a torchrun launch made it meanwhile
                current.mkdir()
            if current.is_symlink() or not current.is_dir():
                raise ConfigError(f"{current} is not a plain folder; remove it or choose another --out")


def load_torch_file(path: Path, what: str, remedy: str) -> object:
    """``torch.load(path, weights_only=True)`` on the CPU; an empty, truncated or foreign file is a one-line
    :class:`DataError` saying ``what`` (the file and its role) and ``remedy`` (what to do)."""
    import pickle

    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except (EOFError, RuntimeError, OSError, ValueError, pickle.UnpicklingError, AttributeError, TypeError) as exc:
        detail = "empty or truncated file" if isinstance(exc, EOFError) else first_line(exc)
        raise DataError(f"{what} ({type(exc).__name__}: {detail}); {remedy}") from exc


def first_line(exc: BaseException, limit: int = 200) -> str:
    """The first non-empty line of an exception's message, at most ``limit`` characters (one-line errors)."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    text = lines[0] if lines else type(exc).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _current_umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


_UMASK = _current_umask()


@contextlib.contextmanager
def _atomic_target(path: Path) -> Iterator[str]:
    """A fresh temporary file beside ``path`` (random name, created exclusively: a planted symlink is never
    followed), renamed over ``path`` when the block succeeds and removed when it fails."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o666 & ~_UMASK)  # mkstemp makes 0600; results keep the permissions of any new file
    finally:
        os.close(fd)
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file and a rename (no half-written files)."""
    with _atomic_target(path) as tmp, open(tmp, "wb") as handle:
        handle.write(data)
        handle.flush()


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` through a temporary file and a rename (no half-written files). A name
    that was not valid UTF-8 on disk (a folder ``b'caf\\xe9'``, held by Python as a lone surrogate) is written
    with the replacement character U+FFFD instead of failing the whole report."""
    import re

    atomic_write_bytes(path, re.sub("[\ud800-\udfff]", "\ufffd", text).encode("utf-8"))


def atomic_torch_save(value: object, path: Path) -> None:
    """``torch.save`` through a temporary file and a rename; a full disk is an OSError naming ``path``."""
    with _atomic_target(path) as tmp:
        try:
            torch.save(value, tmp)
        except RuntimeError as exc:  # torch's zip writer reports ENOSPC and other write errors as RuntimeError
            raise OSError(f"cannot write {path} ({first_line(exc)}); is the disk full?") from exc


class DirLock:
    """An exclusive advisory lock (``fcntl.flock``) on ``path``: one process at a time works in a directory.

    The operating system releases it when the process ends, however it ends, so
    a lock left by a killed process never blocks the next run.
    """

    def __init__(self, path: Path, busy_message: str) -> None:
        self.path, self.busy_message, self.fd = Path(path), busy_message, -1

    def acquire(self) -> "DirLock":
        flags = os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0)
        self.fd = os.open(self.path, flags, 0o644)
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as exc:
            os.close(self.fd)
            self.fd = -1
            raise ConfigError(self.busy_message) from exc
        return self

    def release(self) -> None:
        if self.fd >= 0:
            with contextlib.suppress(OSError):
                fcntl.flock(self.fd, fcntl.LOCK_UN)
            os.close(self.fd)
            self.fd = -1

    def __enter__(self) -> "DirLock":
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


def check_writable_dir(path: Path, what: str) -> None:
    """Create ``path`` (a directory) if needed and check a file can be created in it, before any work.

    Raises :class:`ConfigError` in one line when it is a file, cannot be created or is not writable.
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise ConfigError(f"{what} {path} is a file; valid: a directory")
    try:
        path.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=path, prefix=".write-test.", suffix=".tmp")
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise ConfigError(f"{what} {path} is not writable ({exc.strerror or exc})") from exc
