"""Progress that behaves on a terminal *and* in a log file, and never leaves a long step silent.

On a terminal, :func:`progress_bar` is tqdm's bar. When stderr is not a
terminal (``nohup``, CI logs, SLURM output files), tqdm would still redraw its
bar with carriage returns thousands of times, which a log shows as one endless
line; there it prints plain lines instead - when a bar starts, at most every
:data:`LOG_INTERVAL` seconds, and when it ends.

A bar only redraws when its count moves, so a step that takes minutes inside one
batch (a check computed in one piece) would show nothing. A background ticker
therefore redraws every open bar that has been idle: in a log at least every
:data:`LOG_INTERVAL` seconds (one more line with the elapsed time), on a
terminal every :data:`TERMINAL_INTERVAL` seconds (its elapsed time keeps
moving). Steps with no bar at all get a :func:`heartbeat`: a line saying that
the step is still working whenever nothing was written for :data:`LOG_INTERVAL`
seconds. :func:`note` writes a line between the bars.
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from tqdm.auto import tqdm

#: seconds between two progress lines in a log, and the longest silence a heartbeat allows
LOG_INTERVAL = 30.0
#: seconds between two redraws of an idle bar on a terminal
TERMINAL_INTERVAL = 1.0
#: seconds between two looks of the ticker at the open bars and heartbeats
TICK = 0.5


def _now() -> float:
    return time.monotonic()


class _Activity:
    """When a progress line (a bar's redraw, a note, a heartbeat) was last written, and what the ticker watches."""

    def __init__(self) -> None:
        self.last_output = _now()
        self.bars: weakref.WeakSet[Any] = weakref.WeakSet()
        self.beats: list[_Beat] = []
        self.lock = threading.Lock()
        self.thread: threading.Thread | None = None
        #: where the innermost long loop is (:func:`steps`), shown by an idle bar or a heartbeat; None outside one
        self.step: str | None = None

    def wrote(self) -> None:
        self.last_output = _now()

    def idle_for(self) -> float:
        return _now() - self.last_output


_ACTIVITY = _Activity()


class _LogLines:
    """A file-like sink turning tqdm's carriage-return redraws into whole lines on stderr."""

    def write(self, text: str) -> None:
        line = text.replace("\r", "").strip()
        if line:
            sys.stderr.write(line + "\n")
            _ACTIVITY.wrote()

    def flush(self) -> None:
        sys.stderr.flush()


class _WatchedBar(tqdm):
    """tqdm that the ticker redraws when idle (:func:`tick`), and whose redraws count as output (a heartbeat stays
    quiet while a bar is being drawn)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.redrawn_at = _now()
        #: the postfix is a loop's place, put there by :func:`_show_step`
        self.showing_step = False
        if not self.disable:
            with _ACTIVITY.lock:
                _ACTIVITY.bars.add(self)
            _start_ticker()

    def refresh(self, nolock: bool = False, lock_args: Any = None) -> Any:
        self.redrawn_at = _now()
        _ACTIVITY.wrote()
        return super().refresh(nolock=nolock, lock_args=lock_args)

    def close(self) -> None:
        with _ACTIVITY.lock:
            _ACTIVITY.bars.discard(self)
        super().close()

    def idle_interval(self) -> float:
        """Seconds of idleness after which the ticker redraws the bar."""
        return TERMINAL_INTERVAL


class _LogBar(_WatchedBar):
    """tqdm for a log: ``set_postfix``/``set_description`` never force a redraw (tqdm's default), so a caller
    that updates its postfix every batch (training's loss) still writes one line per :data:`LOG_INTERVAL`; an idle
    bar writes a line (with its elapsed time) every :data:`LOG_INTERVAL`."""

    def idle_interval(self) -> float:
        return LOG_INTERVAL

    def set_postfix(self, ordered_dict: Any = None, refresh: bool = True, **kwargs: Any) -> None:
        super().set_postfix(ordered_dict, refresh=False, **kwargs)

    def set_description(self, desc: str | None = None, refresh: bool = True) -> None:
        super().set_description(desc, refresh=False)


def progress_bar(*args: Any, **kwargs: Any) -> tqdm:
    """``tqdm(*args, **kwargs)``, as plain sparse lines when stderr is not a terminal; an idle bar is redrawn
    (in a log: one line per :data:`LOG_INTERVAL`), so a slow batch never looks like a hang.

    ``TQDM_DISABLE=1`` in the environment (tqdm's own switch) silences every bar,
    even where the caller asked for one.
    """
    if disabled_by_environment():
        kwargs = {**kwargs, "disable": True}
    if not kwargs.get("disable") and not _stderr_is_terminal():
        kwargs = {**kwargs, "file": _LogLines(), "mininterval": LOG_INTERVAL, "ascii": True, "dynamic_ncols": False,
                  "ncols": 100}
        return _LogBar(*args, **kwargs)
    return _WatchedBar(*args, **kwargs)


def note(message: str) -> None:
    """``message`` as one line on stderr, between the bars on a terminal (tqdm clears and redraws them)."""
    if _stderr_is_terminal():
        tqdm.write(message, file=sys.stderr)
    else:
        print(message, file=sys.stderr, flush=True)
    _ACTIVITY.wrote()


def steps(label: str, total: int) -> Iterator[int]:
    """``range(total)`` that says where it is: while the loop runs, an idle bar the ticker redraws carries
    ``"LABEL i/total"`` after its count and a heartbeat's line ends with it, so a batch that runs an hour inside one
    call (a one-pixel search of 75 generations) shows how far it is, not only its elapsed time. One attribute write a
    step; the note is gone once the loop ends or is left (:func:`stepping` for a loop that is no ``for``).

    Example::

        >>> [generation for generation in steps("generation", 3)]
        [0, 1, 2]
    """
    with stepping(label, total) as show:
        for done in range(int(total)):
            show(done + 1)
            yield done


@contextlib.contextmanager
def stepping(label: str, total: int) -> Iterator[Callable[[int], None]]:
    """What :func:`steps` shows, for a loop whose steps are no ``range`` (a search that takes several iterations a
    call): inside, ``show(done)`` notes ``"LABEL done/total"`` for the idle bar and the heartbeat; the note is gone
    when the block is left.

    Example::

        >>> with stepping("query", 100) as show:
        ...     done = 0
        ...     while done < 100:
        ...         done += 4  # four iterations in one call
        ...         show(done)
    """

    def show(done: int) -> None:
        _ACTIVITY.step = f"{label} {done}/{total}"

    try:
        yield show
    finally:
        _ACTIVITY.step = None
        with _ACTIVITY.lock:
            bars = list(_ACTIVITY.bars)
        for bar in bars:  # before the bar's next line (its batch done) could still carry the last step
            _show_step(bar, None)


@dataclass
class _Beat:
    """One open :func:`heartbeat`."""

    label: str
    poll: Callable[[], Iterable[str]] | None
    interval: float
    started: float = field(default_factory=lambda: _now())
    beaten: float = field(default_factory=lambda: _now())


@contextlib.contextmanager
def heartbeat(label: str, poll: Callable[[], Iterable[str]] | None = None, *, enabled: bool = True,
              interval: float | None = None) -> Iterator[None]:
    """While inside, never more than ``interval`` seconds (default :data:`LOG_INTERVAL`) without a line: whenever
    nothing was written for that long (no bar redrawn, no note), ``"LABEL: still working, 2 min 30 s so far"``.

    ``poll``, when given, is asked at every tick for lines to print now (e.g. a stage that was just saved); an
    error inside it is ignored, as progress must never break the work it reports on. ``enabled=False`` makes it a
    no-op (a process that is not rank 0). When the block ends normally, ``poll`` is asked once more, so no line it
    had to give is lost between the last tick and the end."""
    if not enabled:
        yield
        return
    beat = _Beat(label, poll, LOG_INTERVAL if interval is None else interval)
    with _ACTIVITY.lock:
        _ACTIVITY.beats.append(beat)
    _start_ticker()
    try:
        yield
    finally:
        with _ACTIVITY.lock:
            _ACTIVITY.beats.remove(beat)
    _print_polled(beat)


def duration(seconds: float) -> str:
    """``seconds`` for a person: "45 s", "2 min 30 s", "1 h 05 min"."""
    seconds = max(0, round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    minutes, secs = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes} min {secs:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


def tick() -> None:
    """One look at the open bars and heartbeats: redraw the idle bars, print what the polls return, and a heartbeat
    line where nothing was written for its interval (the ticker thread calls this every :data:`TICK` seconds)."""
    with _ACTIVITY.lock:
        bars, beats = list(_ACTIVITY.bars), list(_ACTIVITY.beats)
    step = _ACTIVITY.step
    for bar in bars:
        if not bar.disable and _now() - bar.redrawn_at >= bar.idle_interval():
            _show_step(bar, step)
            bar.refresh()
            # as tqdm's own update does after a print, so its next timed line is an interval after this one
            bar.last_print_n, bar.last_print_t = bar.n, bar._time()
    for beat in beats:
        _print_polled(beat)
        if _ACTIVITY.idle_for() >= beat.interval and _now() - beat.beaten >= beat.interval:
            beat.beaten = _now()
            at = "" if step is None else f" ({step})"
            note(f"{beat.label}: still working, {duration(_now() - beat.started)} so far{at}")


def _show_step(bar: _WatchedBar, step: str | None) -> None:
    """The bar's postfix is the loop's place (:func:`steps`) while one runs; a postfix put there earlier is taken
    away once the loop has ended, and a postfix of the bar's own is left alone."""
    if step is not None:
        bar.set_postfix_str(step, refresh=False)
        bar.showing_step = True
    elif bar.showing_step:
        bar.set_postfix_str("", refresh=False)
        bar.showing_step = False


def _print_polled(beat: _Beat) -> None:
    """The lines ``beat``'s poll gives now, each as a :func:`note` (none when it has no poll or fails)."""
    lines: Iterable[str] = ()
    if beat.poll is not None:
        with contextlib.suppress(Exception):
            lines = list(beat.poll())
    for line in lines:
        note(line)


def _start_ticker() -> None:
    """Start the ticker thread unless it runs; it ends by itself once no bar or heartbeat is open."""
    with _ACTIVITY.lock:
        if _ACTIVITY.thread is not None and _ACTIVITY.thread.is_alive():
            return
        _ACTIVITY.thread = threading.Thread(target=_ticker, name="advspatial-progress", daemon=True)
        _ACTIVITY.thread.start()


def _ticker() -> None:
    while True:
        time.sleep(TICK)
        with _ACTIVITY.lock:
            if not _ACTIVITY.bars and not _ACTIVITY.beats:
                _ACTIVITY.thread = None
                return
        with contextlib.suppress(Exception):  # progress output must never end the work it reports on
            tick()


def disabled_by_environment() -> bool:
    """True when ``$TQDM_DISABLE`` asks for no progress bars (any value but empty, 0, false, no, off)."""
    value = os.environ.get("TQDM_DISABLE", "").strip().lower()
    return value not in ("", "0", "false", "no", "off")


def _stderr_is_terminal() -> bool:
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):  # closed or replaced streams
        return False
