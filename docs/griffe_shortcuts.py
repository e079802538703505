"""Griffe extension of the API reference: the importance methods' shortcuts in ``advspatial.maps``.

``advspatial.maps`` publishes one function per importance method (``gradcam``, ``gradcam_pp``, ...), made at import
time from the method's definition (:mod:`advspatial.maps.importance`), so the static reader of the API reference
does not see them. This extension adds each one to the module, with the signature and docstring it has at run time,
and its name to the module's exports: a new method's shortcut is documented with no edit here. Named in mkdocs.yml
under mkdocstrings' ``extensions``.
"""

from __future__ import annotations

import inspect
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import griffe

MODULE = "advspatial.maps"


def shortcuts() -> dict[str, Callable[..., Any]]:
    """``{shortcut name: function}`` of every registered importance method that has one."""
    try:
        from advspatial.maps.importance import importance_functions
    except ImportError:  # not installed: fall back to the source tree beside this file
        sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))
        from advspatial.maps.importance import importance_functions
    return {fn.__name__: fn for fn in importance_functions().values()}


def annotation_text(value: Any) -> str | None:
    """An annotation as griffe shows it: its text (annotations are strings here), None where there is none."""
    if value is inspect.Parameter.empty:
        return None
    return value if isinstance(value, str) else repr(value)


def function_of(fn: Callable[..., Any], parent: griffe.Module) -> griffe.Function:
    """The griffe function of runtime function ``fn``: its signature and its docstring."""
    signature = inspect.signature(fn)
    parameters = griffe.Parameters(*(
        griffe.Parameter(p.name, annotation=annotation_text(p.annotation),
                         kind=griffe.ParameterKind(p.kind.description),
                         default=None if p.default is inspect.Parameter.empty else repr(p.default))
        for p in signature.parameters.values()))
    function = griffe.Function(fn.__name__, parameters=parameters, returns=annotation_text(signature.return_annotation),
                               parent=parent)
    function.docstring = griffe.Docstring(inspect.cleandoc(fn.__doc__ or ""), parent=function)
    return function


class ImportanceShortcuts(griffe.Extension):
    """Adds the importance methods' shortcuts to ``advspatial.maps`` once the static reader has loaded it."""

    def on_module(self, *, mod: griffe.Module, loader: griffe.GriffeLoader, **kwargs: Any) -> None:
        if mod.path != MODULE:
            return
        found = shortcuts()
        for name, fn in found.items():
            mod.set_member(name, function_of(fn, mod))
        mod.exports = [*(mod.exports or []), *(name for name in found if name not in (mod.exports or []))]
