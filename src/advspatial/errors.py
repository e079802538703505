"""Errors a user can cause.

Every error that a user can trigger through bad input (a wrong path, a corrupt
file, an unknown name, a value out of range, mismatched shapes) is raised as a
subclass of :class:`AdvspatialError`. The CLI prints such an error as one line
and exits with status 2; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import reprlib
from collections.abc import Iterable


class AdvspatialError(Exception):
    """Base class of all user-facing advspatial errors."""


class ConfigError(AdvspatialError, ValueError):
    """A parameter or configuration value is invalid (unknown name, out of range)."""


class DataError(AdvspatialError):
    """A dataset cannot be found, or its files are corrupt or truncated."""


class ModelError(AdvspatialError):
    """A model cannot be built or loaded, or does not fit the data."""


class ShapeError(AdvspatialError, ValueError):
    """Tensors have shapes that do not fit together."""


def unknown_name(kind: str, name: str, valid: Iterable[str]) -> ConfigError:
    """Build the standard 'unknown X' error listing the valid choices."""
    choices = ", ".join(sorted(valid))
    return ConfigError(f"unknown {kind} {name!r}; valid: {choices}")


def images_outside(name: str = "images") -> str:
    """The one-line error of images outside [0, 1], with what to do about it (every entry point says it alike)."""
    return f"{name} must lie in [0, 1]; wrap a model that needs normalization in Normalized"


def check_range(
    name: str,
    value: float,
    low: float | None = None,
    high: float | None = None,
    *,
    low_inclusive: bool = True,
    high_inclusive: bool = True,
) -> None:
    """Raise :class:`ConfigError` naming the valid range when ``value`` lies outside it.

    NaN and infinite values lie outside every range (a NaN compares false with
    every bound, so without this check it would pass them all).
    """
    left = "[" if low_inclusive else "("
    right = "]" if high_inclusive else ")"
    lo = "-inf" if low is None else f"{low:g}"
    hi = "inf" if high is None else f"{high:g}"
    if not is_finite_number(value):
        raise ConfigError(f"{name}={value!r} is not a finite number; valid: {left}{lo}, {hi}{right}")
    too_low = low is not None and (value < low if low_inclusive else value <= low)
    too_high = high is not None and (value > high if high_inclusive else value >= high)
    if too_low or too_high:
        raise ConfigError(f"{name}={value!r} is out of range; valid: {left}{lo}, {hi}{right}")


def is_finite_number(value: object) -> bool:
    """True for an int (any size) or a finite real number (float, NumPy or 0-d tensor scalar); False for NaN,
    +-inf and non-numbers."""
    import math
    import numbers

    if isinstance(value, (bool, str, bytes)):
        return False
    if isinstance(value, numbers.Integral):
        return True
    if not isinstance(value, numbers.Real) and not hasattr(value, "__float__"):  # e.g. a 0-d tensor has one
        return False
    try:
        return math.isfinite(float(value))
    except (TypeError, ValueError, OverflowError):
        return False


#: the seeds torch accepts for its generators (and every seed derived from them stays in range)
SEED_RANGE = (0, 2**63 - 2)


def check_seed(name: str, value: int) -> None:
    """Raise :class:`ConfigError` unless ``value`` is an integer seed torch can use (0 .. 2**63-2)."""
    import numbers

    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ConfigError(f"{name}={value!r} is not an integer seed; valid: {SEED_RANGE[0]}..2**63-2")
    if not SEED_RANGE[0] <= value <= SEED_RANGE[1]:
        raise ConfigError(f"{name}={value} is out of range; valid: {SEED_RANGE[0]}..2**63-2")


def first_line(exc: BaseException, limit: int = 200) -> str:
    """The first non-empty line of an exception's message, at most ``limit`` characters (one-line errors)."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    text = lines[0] if lines else type(exc).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


def bounded_repr(value: object, limit: int = 60) -> str:
    """``repr(value)`` for a message, at most ``limit`` characters, built at a cost bounded by ``limit`` whatever
    ``value`` holds (a list expanded from a YAML alias bomb, a 5,000-digit number): containers show their first
    few items and a nesting depth of a few levels (:mod:`reprlib`), never their whole text."""
    shown = reprlib.Repr()
    shown.maxlevel, shown.maxlist, shown.maxtuple, shown.maxdict, shown.maxset = 3, 4, 4, 4, 4
    shown.maxstring = shown.maxother = shown.maxlong = max(limit, 8)
    try:
        text = shown.repr(value)
    except Exception:  # a repr that fails: an integer past Python's digit limit, a broken object
        bits = f" of {value.bit_length()} bits" if isinstance(value, int) else ""
        text = f"<{type(value).__name__}{bits}>"
    return text if len(text) <= limit else text[: limit - 3] + "..."


def load_failure(exc: BaseException, remedy: str = "save model.state_dict() instead") -> str:
    """Why loading a file with ``torch.load(..., weights_only=True)`` (ours or a library's) failed, in one line,
    without torch's advice to load it with ``weights_only=False``: that would run code from the file, and
    advspatial never does. A refused pickle is said to be one (naming the global it asked for, when given), and
    ``remedy`` follows it (a model file's, by default; "" for none: the caller says what to do)."""
    text = str(exc)
    if "weights_only" not in text and "Weights only load failed" not in text:
        return first_line(exc)
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    detail = next((line for line in lines if "GLOBAL" in line or "global" in line.lower() and "unsupported" in
                   line.lower()), "")
    detail = detail.split(" was not an allowed global")[0].rstrip(".")[:120]
    return ("the file holds Python objects besides tensors, which advspatial never unpickles (it loads weights "
            f"only){': ' + detail if detail else ''}{'; ' + remedy if remedy else ''}")
