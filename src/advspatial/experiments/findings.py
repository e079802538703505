"""Typed findings: what an experiment's analysis returns, as dataclasses whose JSON form is ``metrics.json``.

An experiment's analysis returns one :class:`Findings` dataclass (per attack its outcome, gates and
claims; per experiment its own parts). The report renders from it, ``metrics.json`` is its
serialization (:meth:`Findings.to_metrics`), and a finished run's findings are read back from that
file (:meth:`Findings.from_metrics`), so ``advspatial report DIR`` re-renders a report without
running anything. Nothing travels as a dict filled in by several functions under compound string keys.

Serialization is by the fields' type hints: nested dataclasses, ``list``/``tuple``, ``dict[str, X]``,
``X | None``, numbers, strings and bools; ``Any`` passes through as it is. A field's JSON key is its name
unless ``field(metadata={"key": "..."})`` says otherwise (a key that is not an identifier, e.g.
``"l2-pgd"``); a field declared :func:`optional_part` is left out of the file when it is None (a part the run
did not compute) and reads back as None. :class:`~advspatial.statistics.claims.Claim` serializes as
its ``as_dict`` and loads back with ``Claim.from_dict``.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import types
import typing
from collections.abc import Mapping
from typing import Any, TypeVar, Union, get_args, get_origin, get_type_hints

from ..errors import DataError

F = TypeVar("F", bound="Findings")

#: keys a run adds to metrics.json beside its findings (never fields of one): ``run`` is the identity of the run
#: that computed them (:func:`advspatial.experiments.running.run_stamp`), ``forecast`` what it said it would cost
RUN_KEYS = frozenset({"wall_seconds", "cpu_seconds", "smoke_test", "model_passes", "run", "forecast"})
#: a float field whose name ends so holds a share (an accuracy, a rate, a share of images): NaN (none measured)
#: or a value in [0, 1]; so does a field of exactly one of :data:`UNIT_NAMES` (probabilities, I²)
UNIT_SUFFIXES = ("accuracy", "_acc", "rate", "_share")
UNIT_NAMES = frozenset({"p", "p_adjusted", "p_value", "q_p", "i2"})


class Findings:
    """Base of every experiment's findings dataclass: ``to_metrics`` / ``from_metrics`` round-trip."""

    def to_metrics(self) -> dict[str, Any]:
        """The findings as metrics.json's data (a dict of JSON values; NaN stays a float)."""
        return cast_dict(to_json(self))

    @classmethod
    def from_metrics(cls: type[F], metrics: Mapping[str, Any]) -> F:
        """The findings a metrics.json holds (keys the run adds, such as ``wall_seconds``, are ignored), checked
        against their declared types and ranges (:func:`check_declared_values`)."""
        findings = cast_findings(cls, from_json(cls, {k: v for k, v in metrics.items() if k not in RUN_KEYS},
                                                "metrics"))
        check_declared_values(findings, "metrics")
        return findings


def optional_part() -> Any:
    """A findings field for a part a run may not compute: None by default, and then absent from metrics.json."""
    return dataclasses.field(default=None, metadata={"omit_if_none": True})


def cast_dict(value: Any) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise TypeError(f"findings serialize to a dict, not {type(value).__name__}")
    return value


def cast_findings(cls: type[F], value: Any) -> F:
    if not isinstance(value, cls):
        raise TypeError(f"expected {cls.__name__}, got {type(value).__name__}")
    return value


def json_key(f: dataclasses.Field[Any]) -> str:
    """The JSON key of a dataclass field: its ``metadata["key"]`` or its name."""
    return str(f.metadata.get("key", f.name))


def to_json(value: Any) -> Any:
    """``value`` as JSON data: dataclasses by field (their ``as_dict`` when they have one), containers item by
    item, tensors and arrays as lists."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        if hasattr(value, "as_dict") and not isinstance(value, Findings):
            return value.as_dict()
        return {json_key(f): to_json(getattr(value, f.name)) for f in dataclasses.fields(value)
                if not (f.metadata.get("omit_if_none") and getattr(value, f.name) is None)}
    if isinstance(value, Mapping):
        return {str(k): to_json(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [to_json(v) for v in value]
    if hasattr(value, "tolist"):
        return value.tolist()
    return value


def from_json(hint: Any, data: Any, where: str) -> Any:
    """``data`` (JSON) as the type ``hint``: the inverse of :func:`to_json` for the types findings use."""
    if hint is Any or hint is object:
        return data
    origin = get_origin(hint)
    if origin in (Union, types.UnionType):
        options = [a for a in get_args(hint) if a is not type(None)]
        if data is None:
            return None
        if len(options) == 1:
            return from_json(options[0], data, where)
        return data  # a union of several types: kept as it is
    if origin is typing.Literal:
        return data
    if dataclasses.is_dataclass(hint) and isinstance(hint, type):
        return dataclass_from_json(hint, data, where)
    if origin in (list, tuple) or hint in (list, tuple):
        args = get_args(hint)
        if not isinstance(data, list):
            raise DataError(f"{where}: expected a list, found {type(data).__name__}")
        if origin is tuple and args and args[-1] is not Ellipsis:
            return tuple(from_json(a, v, f"{where}[{i}]") for i, (a, v) in enumerate(zip(args, data, strict=True)))
        item = args[0] if args else Any
        items = [from_json(item, v, f"{where}[{i}]") for i, v in enumerate(data)]
        return tuple(items) if (origin is tuple or hint is tuple) else items
    if origin in (dict, Mapping) or hint is dict:
        args = get_args(hint)
        if not isinstance(data, dict):
            raise DataError(f"{where}: expected an object, found {type(data).__name__}")
        item = args[1] if len(args) == 2 else Any
        return {k: from_json(item, v, f"{where}.{k}") for k, v in data.items()}
    if hint is float:
        return math.nan if data is None else float(data) if is_number(data) else _wrong(where, "a number", data)
    if hint is int:
        integral = is_number(data) and (isinstance(data, int) or math.isfinite(data) and data.is_integer())
        return int(data) if integral else _wrong(where, "an integer", data)
    return data


@functools.cache
def type_hints(cls: type) -> dict[str, Any]:
    """A dataclass's resolved field types (resolving string annotations compiles them: once per class)."""
    return get_type_hints(cls)


def is_number(value: Any) -> bool:
    """An int or a float (not a bool, which JSON keeps apart)."""
    return isinstance(value, int | float) and not isinstance(value, bool)


def _wrong(where: str, valid: str, found: Any) -> Any:
    shown = repr(found) if len(repr(found)) <= 40 else repr(found)[:37] + "..."
    raise DataError(f"{where}={shown} is not valid; valid: {valid}")


def check_declared_values(value: Any, where: str) -> None:
    """Every field of the dataclasses in ``value`` (nested in lists, tuples and dicts) holds a value of its declared
    type and range: an ``int`` field is a count (an integer >= 0), a ``float`` a number (a share, by its name
    (:data:`UNIT_SUFFIXES`, :data:`UNIT_NAMES`), NaN or in [0, 1]), a ``bool`` a bool, a ``str`` text. A findings
    file edited by hand or written for another run is refused in one line naming the field, instead of a report
    that shows an accuracy of 7 or a count of -3. Generic, so a record whose fields change needs no line here."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        hints = type_hints(type(value))
        for f in dataclasses.fields(value):
            item, at = getattr(value, f.name), f"{where}.{json_key(f)}"
            check_scalar(f.name, hints.get(f.name, Any), item, at)
            check_declared_values(item, at)
    elif isinstance(value, Mapping):
        for key, item in value.items():
            check_declared_values(item, f"{where}.{key}")
    elif isinstance(value, list | tuple):
        for i, item in enumerate(value):
            check_declared_values(item, f"{where}[{i}]")


def check_scalar(name: str, hint: Any, value: Any, where: str) -> None:
    """One field's value against its declared type (``hint``) and, for a number, its range (see
    :func:`check_declared_values`)."""
    if hint is int and not (is_number(value) and isinstance(value, int) and value >= 0):
        _wrong(where, "a count (an integer >= 0)", value)
    elif hint is float:
        if not is_number(value):
            _wrong(where, "a number", value)
        if (name in UNIT_NAMES or name.endswith(UNIT_SUFFIXES)) and not (math.isnan(value) or 0 <= value <= 1):
            _wrong(where, "a share in [0, 1] (or none)", value)
    elif hint is bool and not isinstance(value, bool):
        _wrong(where, "true or false", value)
    elif hint is str and not isinstance(value, str):
        _wrong(where, "text", value)


def dataclass_from_json(cls: type, data: Any, where: str) -> Any:
    """An instance of the dataclass ``cls`` from its JSON object (``cls.from_dict`` when it has one)."""
    if not isinstance(data, dict):
        raise DataError(f"{where}: expected an object for {cls.__name__}, found {type(data).__name__}")
    from_dict = getattr(cls, "from_dict", None)
    if from_dict is not None and not issubclass(cls, Findings):
        return from_dict(data)
    hints = type_hints(cls)
    values: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        key = json_key(f)
        if key in data:
            values[f.name] = from_json(hints[f.name], data[key], f"{where}.{key}")
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise DataError(f"{where}: {cls.__name__} needs {key!r}, which the file does not have")
    return cls(**values)
