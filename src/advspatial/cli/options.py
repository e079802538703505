"""Click options generated from a config dataclass: one option per field, its default, type and help.

The experiments' ``run`` commands and ``advspatial train`` both take their options from their config
dataclasses, so a new field is a new option with nothing to add here.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Iterable, Mapping
from typing import Any

import click


def option_type(kind: Any) -> Any:
    """The click type of a field annotated ``kind``: int, float or str (``X | None`` as X), else str."""
    if isinstance(kind, types.UnionType) or typing.get_origin(kind) is typing.Union:
        kind = next((arg for arg in typing.get_args(kind) if arg is not type(None)), str)
    return kind if kind in (int, float, str) else str


def field_option(f: dataclasses.Field, kind: Any, help_text: str, **click_kwargs: Any) -> click.Option:
    """The option of field ``f``: ``--name/--no-name`` for a bool, comma-separated for a list, else typed;
    ``click_kwargs`` override what is generated (e.g. ``flags`` for another option name, ``type``)."""
    if f.default is not dataclasses.MISSING:
        default = f.default
    elif f.default_factory is not dataclasses.MISSING:
        default = f.default_factory()
    else:  # what calling the missing factory raised
        raise TypeError(f"field {f.name!r} has neither a default nor a default factory")
    default = click_kwargs.pop("default", default)  # a command whose default differs from the dataclass's
    dashed = f.name.replace("_", "-")
    flags = list(click_kwargs.pop("flags", [f"--{dashed}"]))
    if kind is bool:
        return click.Option([f"{flags[0]}/--no-{dashed}", f.name], default=default, show_default=True, help=help_text,
                            **click_kwargs)
    if isinstance(default, list):
        return click.Option([*flags, f.name], default=",".join(map(str, default)), show_default=True,
                            help=help_text + " (comma-separated)", **click_kwargs)
    # a help text that states its default in words ("(default: all)") is not followed by the raw value
    options = {"default": default, "show_default": "default:" not in help_text, "type": option_type(kind),
               "help": help_text, **click_kwargs}
    return click.Option([*flags, f.name], **options)


def quick_help(quick: Mapping[str, Any]) -> str:
    """The help of ``--quick``: what it sets, as the options that would set it (``--n 40, --attacks fgsm,pgd``)."""
    def shown(value: Any) -> str:
        return ",".join(map(str, value)) if isinstance(value, list | tuple) else str(value)

    settings = ", ".join(f"--{name.replace('_', '-')} {shown(value)}" for name, value in quick.items())
    return f"A smoke test that checks the pipeline and decides nothing; it sets {settings}."


def dataclass_options(config_cls: type, hidden: Iterable[str] = (),
                      overrides: Mapping[str, Mapping[str, Any]] | None = None) -> list[click.Parameter]:
    """An option per field of ``config_cls`` (those in ``hidden`` left out), help from the field's metadata
    (:func:`advspatial.experiments.settings.declared_help`), ``overrides`` per field name."""
    from ..experiments.settings import declared_help

    hints = typing.get_type_hints(config_cls)
    skip, extra = set(hidden), overrides or {}
    return [field_option(f, hints[f.name], declared_help(f), **extra.get(f.name, {}))
            for f in dataclasses.fields(config_cls) if f.name not in skip]
