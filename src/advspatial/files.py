"""Files written safely: atomic writes, directory locks, plain folders inside a run, checked torch loads.

Why: a run is interrupted and resumed, and several torchrun processes share one directory. A file is
therefore always written through a temporary file and a rename (never half-written), a directory is
worked in by one process at a time, and a planted symbolic link never makes a run write outside it.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import pickle
import re
import tempfile
from collections.abc import Hashable, Iterator
from pathlib import Path

import torch
import yaml

from .errors import ConfigError, DataError, first_line, load_failure


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


def inner_file(root: Path, path: Path, what: str) -> Path:
    """``path`` when it names a regular file inside ``root`` reached without a symbolic link or a ``..`` on the way;
    anything else is a one-line :class:`DataError` naming ``what`` (the file's role): a report embeds only what its
    own run wrote, never a file a planted link or a crafted name points to outside it."""
    root, path = Path(os.path.abspath(root)), Path(os.path.abspath(path))  # '..' resolved by name: the file read
    try:                                                                     # is the one checked here
        parts = path.relative_to(root).parts
    except ValueError:
        parts = ("..",)
    current = root
    for part in parts:
        current = current / part
        if part == ".." or current.is_symlink():
            raise DataError(f"{what} {path} lies outside {root} or is reached through a symbolic link; valid: a "
                            f"file the run wrote inside {root} - remove the link or the file, or run again")
    if not current.is_file():
        raise DataError(f"{what} {path} is not a regular file; valid: a file the run wrote inside {root}")
    return current


def read_json(path: Path, what: str, remedy: str) -> object:
    """The JSON value in ``path``; a missing, unreadable, invalid or too deeply nested file is a one-line
    :class:`DataError` saying ``what`` (the file's role) and ``remedy`` (what to do)."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except RecursionError as exc:  # the decoder recurses into nested arrays and objects
        raise DataError(f"{what} {path} nests arrays or objects too deeply; {remedy}") from exc
    except (OSError, ValueError) as exc:  # ValueError: invalid JSON or UTF-8
        detail = exc.strerror if isinstance(exc, OSError) and exc.strerror else first_line(exc)
        raise DataError(f"{what} {path} is unreadable ({detail}); {remedy}") from exc


class YAMLAliasError(yaml.composer.ComposerError):
    """A YAML alias (``*name``) where advspatial reads settings: refused, as one alias can stand for a value
    built from others, and a few hundred bytes of them expand to gigabytes (a "billion laughs" file)."""


class YAMLDuplicateKeyError(yaml.constructor.ConstructorError):
    """A key given twice in one mapping: refused, as PyYAML keeps the last silently (``n: 8`` then ``n: 10`` ran
    with 10, whichever the user meant)."""


class _NoAliasLoader(yaml.SafeLoader):
    """PyYAML's safe loader (plain data, no ``!!python`` tags) that refuses aliases before expanding any, and keys
    given twice in a mapping."""

    def construct_mapping(self, node, deep=False):  # PyYAML's own signature
        seen: set[object] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            if not isinstance(key, Hashable):
                continue  # PyYAML's own error names a key that cannot be one
            if key in seen:
                raise YAMLDuplicateKeyError(None, None, f"the key {key!r} is given twice; give each key once",
                                            key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep)

    def compose_node(self, parent, index):  # PyYAML's own signature
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise YAMLAliasError(None, None, f"aliases ({event.anchor and '*' + event.anchor}) are not accepted; "
                                             "write each value out", event.start_mark)
        return super().compose_node(parent, index)


def load_yaml_text(text: str) -> object:
    """The plain data in the YAML ``text`` (what ``yaml.safe_load`` returns), with aliases refused
    (:class:`YAMLAliasError`, a ``yaml.YAMLError``): every YAML advspatial reads goes through here, so a small
    file never expands to exhaust memory or a terminal."""
    return yaml.load(text, Loader=_NoAliasLoader)  # a SafeLoader subclass: plain data only


def load_torch_file(path: Path, what: str, remedy: str) -> object:
    """``torch.load(path, weights_only=True)`` on the CPU; an empty, truncated or foreign file is a one-line
    :class:`DataError` saying ``what`` (the file and its role) and ``remedy`` (what to do)."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except (EOFError, RuntimeError, OSError, ValueError, pickle.UnpicklingError, AttributeError, TypeError) as exc:
        detail = "empty or truncated file" if isinstance(exc, EOFError) else load_failure(exc, remedy="")
        raise DataError(f"{what} ({type(exc).__name__}: {detail}); {remedy}") from exc


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

    def acquire(self) -> DirLock:
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

    def __enter__(self) -> DirLock:
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
