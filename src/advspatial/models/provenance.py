"""What a model was built from, observed while it was built: the files its factory read, the modules imported
on the way (by any means), and the versions of the installed distributions its code comes from.

Why: a resumed run must never combine the stages of two versions of a model. The weights and the model's own
source files are checksummed (:func:`~advspatial.models.spec.code_checksum`), but a factory may also read a data
file (an architecture JSON beside it), call an installed package (upgraded or edited between an interruption and
``--resume``) or load a helper with ``importlib.import_module(name)``, none of which static reading of the
sources finds. :func:`observe_build` watches the build itself: files opened for reading (``sys.addaudithook``
"open" events of the building thread) and modules imported (those new or replaced in ``sys.modules`` afterwards
and those named to ``__import__`` / ``importlib.import_module`` during the build, loaded before or not).
:func:`model_provenance` gives the record a run keeps in ``run.json``; :func:`provenance_changes` names, in a few
words, what differs between a saved record and the current one.
"""

from __future__ import annotations

import builtins
import contextlib
import functools
import hashlib
import importlib
import importlib.metadata as metadata
import os
import sys
import threading
import weakref
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

#: distributions every run depends on, whatever its model: recorded with their versions
CORE_DISTRIBUTIONS = ("torch", "numpy", "advspatial")
#: the most files and modules one build's record holds (a guard against a factory that walks a file system)
MAX_ENTRIES = 2000
#: suffixes of the files Python's import machinery opens (modules are recorded as modules, not as data files)
_CODE_SUFFIXES = (".py", ".pyc", ".pyo", ".so", ".pyd")


@dataclass
class BuildRecord:
    """What one build opened and imported: absolute paths of files read, and names of modules imported."""

    files: set[str] = field(default_factory=set)
    modules: set[str] = field(default_factory=set)
    thread: int = field(default_factory=threading.get_ident)


_ACTIVE: list[BuildRecord] = []
_HOOKED = False
_RECORDS: weakref.WeakKeyDictionary[nn.Module, BuildRecord] = weakref.WeakKeyDictionary()


def _audit(event: str, args: tuple) -> None:
    """The process-wide audit hook: files opened for reading by a thread that is building a model."""
    if event != "open" or not _ACTIVE:
        return
    record = _ACTIVE[-1]
    if threading.get_ident() != record.thread or len(record.files) >= MAX_ENTRIES:
        return
    path, mode, flags = (tuple(args) + (None, None, None))[:3]
    if not isinstance(path, (str, bytes, os.PathLike)) or not _reads_only(mode, flags):
        return
    record.files.add(os.path.abspath(os.fsdecode(path)))


def _reads_only(mode: object, flags: object) -> bool:
    if isinstance(mode, str):
        return not any(c in mode for c in "wax+")
    return isinstance(flags, int) and flags & os.O_ACCMODE == os.O_RDONLY


@contextlib.contextmanager
def observe_build() -> Iterator[BuildRecord]:
    """Record the files read and the modules imported by this thread while the ``with`` block runs."""
    global _HOOKED
    if not _HOOKED:
        sys.addaudithook(_audit)  # cannot be removed: it does nothing while no build is observed
        _HOOKED = True
    record = BuildRecord()
    before = dict(sys.modules)
    real_import, real_import_module = builtins.__import__, importlib.import_module

    def recording_import(name, globals=None, locals=None, fromlist=(), level=0):
        module = real_import(name, globals, locals, fromlist, level)
        if threading.get_ident() == record.thread:
            base = getattr(module, "__name__", None)  # any object may stand in sys.modules
            record.modules.add(str(base or name) if level else name)
            record.modules.update(f"{base}.{item}" for item in fromlist or () if isinstance(item, str) and base)
        return module

    def recording_import_module(name: str, package: str | None = None):
        module = real_import_module(name, package)
        if threading.get_ident() == record.thread:
            record.modules.add(str(getattr(module, "__name__", None) or name))
        return module

    _ACTIVE.append(record)
    builtins.__import__, importlib.import_module = recording_import, recording_import_module
    try:
        yield record
    finally:
        builtins.__import__, importlib.import_module = real_import, real_import_module
        _ACTIVE.remove(record)
        record.modules |= {name for name, module in list(sys.modules.items()) if before.get(name) is not module}


def remember_build(model: nn.Module, record: BuildRecord) -> nn.Module:
    """Attach ``record`` to ``model`` (read back by :func:`model_provenance`); returns ``model``."""
    _RECORDS[model] = record
    return model


def model_provenance(model: nn.Module) -> dict[str, dict[str, str]]:
    """What ``model``'s results depend on besides its weights and its own source files, as kept in ``run.json``:
    ``packages`` (distribution -> version: torch's, numpy's, advspatial's and those of the model's classes and
    of the modules its build imported) and ``inputs`` ("file PATH" / "module NAME" -> sha256 of the content read:
    files its factory opened, modules its build imported outside the standard library, torch and advspatial)."""
    from .sources import is_installed

    record = _RECORDS.get(model, BuildRecord())
    classes = {klass for module in model.modules() for klass in type(module).__mro__}
    names = {str(getattr(klass, "__module__", "") or "") for klass in classes}
    names |= {name for name in record.modules if name in sys.modules}
    inputs: dict[str, str] = {}
    for name in sorted(record.modules)[:MAX_ENTRIES]:
        file = getattr(sys.modules.get(name), "__file__", None)
        if file and not _is_tool_file(Path(file)):
            inputs[f"module {name}"] = _file_sha256(Path(file))
    for path in sorted(record.files):
        file = Path(path)
        if file.suffix in _CODE_SUFFIXES or "__pycache__" in file.parts or is_installed(file):
            continue
        if not path.startswith(("/dev/", "/proc/", "/sys/")) and file.is_file():
            inputs[f"file {path}"] = _file_sha256(file)
    return {"packages": _versions(names), "inputs": inputs}


def provenance_changes(saved: Mapping[str, object], current: Mapping[str, Mapping[str, str]]) -> list[str]:
    """What differs between a saved :func:`model_provenance` and the current one, in words ("package tinyact
    1.0 -> 2.0", "file /m/arch.json changed"); [] when nothing both observed differs. An entry seen by one build
    only (a module another build in this process had loaded already) is not a change."""
    changes: list[str] = []
    for section, word in (("packages", "package"), ("inputs", "")):
        old = saved.get(section)
        old = old if isinstance(old, Mapping) else {}
        new = current.get(section, {})
        for key in sorted(set(old) & set(new)):
            if old[key] != new[key]:
                changes.append(f"{word} {key} {old[key]} -> {new[key]}" if word else f"{key} changed")
    return changes


def _versions(module_names: set[str]) -> dict[str, str]:
    """distribution -> version for :data:`CORE_DISTRIBUTIONS` and the distributions providing ``module_names``
    (outside the standard library)."""
    versions: dict[str, str] = {}
    for dist in CORE_DISTRIBUTIONS:
        with contextlib.suppress(metadata.PackageNotFoundError):
            versions[dist] = str(metadata.version(dist))
    for top in sorted({name.split(".")[0] for name in module_names if name}):
        file = getattr(sys.modules.get(top), "__file__", None)
        if top in versions or not file or _is_tool_file(Path(file)):
            continue
        with contextlib.suppress(metadata.PackageNotFoundError):  # the usual case: named as its top-level module
            versions[top] = str(metadata.version(top))
            continue
        place = Path(file).parent.parent if Path(file).name == "__init__.py" else Path(file).parent
        versions.update((name, version) for name, version, tops in _installed_in(str(place)) if top in tops)
    return dict(sorted(versions.items()))


_INSTALLED: dict[tuple[str, float], list[tuple[str, str, set[str]]]] = {}


def _installed_in(folder: str) -> list[tuple[str, str, set[str]]]:
    """(name, version, top-level modules) of the distributions whose metadata lies in ``folder`` (read again only
    when the folder changed: an install or an uninstall)."""
    key = (folder, _mtime(folder))
    if key not in _INSTALLED:
        found = []
        for info in sorted(Path(folder).glob("*.dist-info")) if Path(folder).is_dir() else []:
            meta = _read(info / "METADATA")
            fields = dict(line.split(": ", 1) for line in meta.splitlines() if ": " in line and line[0] != " ")
            listed = _read(info / "top_level.txt").split() or [line.split(",")[0].split("/")[0].removesuffix(".py")
                                                               for line in _read(info / "RECORD").splitlines()]
            found.append((fields.get("Name", info.name), fields.get("Version", "?"), set(listed)))
        _INSTALLED[key] = found
    return _INSTALLED[key]


def _read(file: Path) -> str:
    try:
        return file.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""


def _mtime(path: str) -> float:
    try:
        return os.stat(path or ".").st_mtime
    except OSError:
        return 0.0


def _is_tool_file(file: Path) -> bool:
    """True for a module of the standard library, torch or advspatial: recorded by version, not by content."""
    resolved = file.resolve()
    if any(resolved.is_relative_to(root) for root in _tool_packages()):
        return True
    installed = {"site-packages", "dist-packages"} & set(resolved.parts)
    return not installed and any(resolved.is_relative_to(root) for root in _standard_library())


@functools.lru_cache(maxsize=1)
def _tool_packages() -> tuple[Path, ...]:
    return Path(torch.__file__).parent.resolve(), Path(__file__).parents[1].resolve()


@functools.lru_cache(maxsize=1)
def _standard_library() -> tuple[Path, ...]:
    import sysconfig

    paths = sysconfig.get_paths()
    return tuple(Path(paths[key]).resolve() for key in ("stdlib", "platstdlib") if paths.get(key))


def _file_sha256(file: Path) -> str:
    digest = hashlib.sha256()
    try:
        with file.open("rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                digest.update(chunk)
    except OSError:
        return "unreadable"
    return digest.hexdigest()
