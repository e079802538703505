"""Progress bars that behave on a terminal *and* in a log file.

On a terminal, :func:`progress_bar` is tqdm's bar. When stderr is not a
terminal (``nohup``, CI logs, SLURM output files), tqdm would still redraw its
bar with carriage returns thousands of times, which a log shows as one endless
line; there it prints plain lines instead - when a bar starts, at most every
:data:`LOG_INTERVAL` seconds, and when it ends.
"""

from __future__ import annotations

import os
import sys
from typing import Any

from tqdm.auto import tqdm

#: seconds between two progress lines in a log
LOG_INTERVAL = 30.0


class _LogLines:
    """A file-like sink turning tqdm's carriage-return redraws into whole lines on stderr."""

    def write(self, text: str) -> None:
        line = text.replace("\r", "").strip()
        if line:
            sys.stderr.write(line + "\n")

    def flush(self) -> None:
        sys.stderr.flush()


class _LogBar(tqdm):
    """tqdm for a log: ``set_postfix``/``set_description`` never force a redraw (tqdm's default), so a caller
    that updates its postfix every batch (training's loss) still writes one line per :data:`LOG_INTERVAL`."""

    def set_postfix(self, ordered_dict: Any = None, refresh: bool = True, **kwargs: Any) -> None:
        super().set_postfix(ordered_dict, refresh=False, **kwargs)

    def set_description(self, desc: str | None = None, refresh: bool = True) -> None:
        super().set_description(desc, refresh=False)


def progress_bar(*args: Any, **kwargs: Any) -> tqdm:
    """``tqdm(*args, **kwargs)``, as plain sparse lines when stderr is not a terminal.

    ``TQDM_DISABLE=1`` in the environment (tqdm's own switch) silences every bar,
    even where the caller asked for one.
    """
    if disabled_by_environment():
        kwargs = {**kwargs, "disable": True}
    if not kwargs.get("disable") and not _stderr_is_terminal():
        kwargs = {**kwargs, "file": _LogLines(), "mininterval": LOG_INTERVAL, "ascii": True, "dynamic_ncols": False,
                  "ncols": 100}
        return _LogBar(*args, **kwargs)
    return tqdm(*args, **kwargs)


def disabled_by_environment() -> bool:
    """True when ``$TQDM_DISABLE`` asks for no progress bars (any value but empty, 0, false, no, off)."""
    value = os.environ.get("TQDM_DISABLE", "").strip().lower()
    return value not in ("", "0", "false", "no", "off")


def _stderr_is_terminal() -> bool:
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):  # closed or replaced streams
        return False
