"""The source files a model's code is made of: its own files and every file they import, directly or through
others, from outside installed packages (the user's helpers, a package of their project).

Why: a run's stages are tied to the checksum of its model's code (:func:`advspatial.models.spec.code_checksum`).
A model file that imports ``helpers.py`` runs that file's code too; an edit there between an interruption and
``--resume`` would otherwise mix the stages of two different models in one result. Imports are read from the
files' syntax (``import a.b``, ``from . import c``, ``from .d import e``), so an import inside a function that has
not run yet counts too; a module named by a string at run time (``importlib.import_module(name)``) does not.
"""

from __future__ import annotations

import ast
import site
import sys
import sysconfig
from collections.abc import Iterable, Iterator
from functools import lru_cache
from pathlib import Path

import torch

#: the most files one model's closure may hold (a guard against walking a whole file system)
MAX_FILES = 5000


def source_closure(files: Iterable[str | Path]) -> set[Path]:
    """``files`` and every Python source file they import, transitively, that is not part of an installed package
    (the standard library, site-packages), of torch or of advspatial itself."""
    todo = [Path(f) for f in files if str(f)]
    found: set[Path] = set()
    while todo and len(found) < MAX_FILES:
        file = todo.pop()
        if file in found or not file.is_file():
            continue
        found.add(file)
        todo += [p for p in imported_files(file) if p not in found and not is_installed(p)]
    return found


def imported_files(file: Path) -> Iterator[Path]:
    """The source files the imports of ``file`` name (the module, and the packages it is imported through)."""
    for name, level in import_names(file):
        yield from module_files(name, level, file)


def import_names(file: Path) -> Iterator[tuple[str, int]]:
    """(module name, relative level) of every import statement in ``file`` (``from a import b`` gives ``a`` and
    ``a.b``: ``b`` may be a submodule); nothing for a file that does not parse."""
    try:
        tree = ast.parse(file.read_bytes(), str(file))
    except (SyntaxError, ValueError, OSError, RecursionError):
        return
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from ((alias.name, 0) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if base or node.level:
                yield base, node.level
            yield from ((f"{base}.{alias.name}" if base else alias.name, node.level) for alias in node.names
                        if alias.name != "*")


def module_files(name: str, level: int, importer: Path) -> Iterator[Path]:
    """The files of module ``name`` (and of each package on the way) as imported by ``importer``: a relative import
    from ``importer``'s package, an absolute one as loaded in this process (``sys.modules``), else found in
    ``importer``'s folder (a model file is imported with its folder on the path) or on ``sys.path``."""
    parts = [p for p in name.split(".") if p]
    if level:
        base = importer.parent
        for _ in range(level - 1):
            base = base.parent
        yield from _under(base, parts, include_base=True)
        return
    loaded = sys.modules.get(name)
    origin = getattr(loaded, "__file__", None) if loaded is not None else None
    if origin:
        yield Path(origin)
        return
    for folder in (importer.parent, *map(Path, sys.path)):
        if (folder / parts[0]).is_dir() or (folder / f"{parts[0]}.py").is_file():
            yield from _under(folder, parts, include_base=False)
            return


def _under(base: Path, parts: list[str], include_base: bool) -> Iterator[Path]:
    """The ``__init__.py`` of every package from ``base`` down along ``parts`` and the module's own file."""
    if include_base:
        yield base / "__init__.py"
    current = base
    for part in parts:
        current = current / part
        yield current / "__init__.py"
    yield current.with_suffix(".py")


def is_installed(file: Path) -> bool:
    """True for a file of an installed package or of the tool itself: those are not the model's own code."""
    resolved = file.resolve()
    return any(resolved.is_relative_to(root) for root in installed_roots())


@lru_cache(maxsize=1)
def installed_roots() -> tuple[Path, ...]:
    """The folders of installed code: the standard library, site-packages, torch's and advspatial's packages."""

    paths = sysconfig.get_paths()
    roots = [paths.get(key, "") for key in ("stdlib", "platstdlib", "purelib", "platlib")]
    roots += [*site.getsitepackages(), site.getusersitepackages()]
    roots += [str(Path(torch.__file__).parent), str(Path(__file__).parents[1])]  # torch's and advspatial's folders
    return tuple(Path(r).resolve() for r in roots if r)
