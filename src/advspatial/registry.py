"""One registry type behind every extension kind: attacks, models, datasets, maps, fills (and experiments).

A :class:`Registry` maps names to specs of one type. Registering a name twice is
an error (two modules claiming one name would silently replace each other);
looking up an unknown name raises the project's one-line error listing the
valid names (:func:`advspatial.errors.unknown_name`)::

    ATTACKS: Registry[AttackSpec] = Registry("attack")
    ATTACKS.register("pgd", spec)          # or @ATTACKS.decorator("pgd") on a function
    ATTACKS.get("pgd")                     # the spec; ConfigError "unknown attack 'x'; valid: ..."
    ATTACKS.names(), ATTACKS.descriptions()  # sorted, for ``advspatial list``

A spec's description is its ``description`` attribute, else the first line of
its docstring (a registered function documents itself).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from .errors import ConfigError, unknown_name

S = TypeVar("S")


def first_doc_line(obj: object) -> str:
    """The first line of ``obj``'s docstring ('' when it has none)."""
    lines = (getattr(obj, "__doc__", None) or "").strip().splitlines()
    return lines[0].strip() if lines else ""


class Registry(Generic[S]):
    """Name -> spec of one kind (``kind`` names it in errors: ``"attack"``, ``"importance method"``)."""

    def __init__(self, kind: str, describe: Callable[[S], str] | None = None) -> None:
        self.kind = kind
        self._describe = describe
        self._specs: dict[str, S] = {}

    def register(self, name: str, spec: S) -> S:
        """Add ``spec`` under ``name``; a :class:`ConfigError` when the name is taken. Returns ``spec``."""
        if not isinstance(name, str) or not name:
            raise ConfigError(f"{self.kind} name must be a non-empty string, got {name!r}")
        if name in self._specs:
            raise ConfigError(f"{self.kind} {name!r} is already registered; choose another name")
        self._specs[name] = spec
        return spec

    def decorator(self, name: str) -> Callable[[S], S]:
        """``@registry.decorator(name)``: register the decorated object itself as the spec."""
        return lambda spec: self.register(name, spec)

    def get(self, name: str) -> S:
        """The spec of ``name``; the one-line 'unknown <kind>' :class:`ConfigError` listing the valid names."""
        if name not in self._specs:
            raise unknown_name(self.kind, name, self._specs)
        return self._specs[name]

    @property
    def live(self) -> dict[str, S]:
        """The registry's own dict (no checks): for tests that patch an entry in and out (``monkeypatch.setitem``)."""
        return self._specs

    def names(self) -> list[str]:
        """The registered names, sorted."""
        return sorted(self._specs)

    def items(self) -> dict[str, S]:
        """A sorted copy ``{name: spec}`` (changing it leaves the registry as it is)."""
        return {name: self._specs[name] for name in self.names()}

    def description(self, name: str) -> str:
        """One line describing ``name``: the ``describe`` function, else ``spec.description``, else its docstring."""
        spec = self.get(name)
        if self._describe is not None:
            return self._describe(spec)
        text = getattr(spec, "description", None)
        return text if isinstance(text, str) else first_doc_line(spec)

    def descriptions(self) -> dict[str, str]:
        """``{name: one-line description}``, sorted by name (``advspatial list``)."""
        return {name: self.description(name) for name in self.names()}

    def __contains__(self, name: object) -> bool:
        return name in self._specs

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._specs)

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, {self.names()})"
