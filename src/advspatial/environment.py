"""The environment advspatial reads: the cache directory and the ``ADVSPATIAL_*`` numeric variables.

Why: a value from the environment is user input like an option, so it gets the same one-line
:class:`ConfigError` when it is malformed or out of range, and one place says where the cache lives.
"""

from __future__ import annotations

import datetime
import math
import os
from pathlib import Path

from .errors import ConfigError

DEFAULT_CACHE = Path.home() / ".cache" / "advspatial"


def cache_path(*parts: str) -> Path:
    """A path in the advspatial cache directory (``$ADVSPATIAL_CACHE`` or ``~/.cache/advspatial``), not created
    (for looking things up: a read-only cache, or one without that folder, is fine)."""
    return Path(os.environ.get("ADVSPATIAL_CACHE", str(DEFAULT_CACHE))).expanduser().joinpath(*parts)


def model_work_root() -> Path | None:
    """Where the model-only stages of runs are kept (:mod:`advspatial.model_work`): ``$ADVSPATIAL_MODEL_WORK``, or
    ``model-work`` in the cache directory; None when that variable is ``off`` (nothing kept or reused); not
    created."""
    given = os.environ.get("ADVSPATIAL_MODEL_WORK", "")
    if given == "off":
        return None
    return Path(given).expanduser() if given else cache_path("model-work")


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
