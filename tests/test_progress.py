"""Progress output: tqdm's bar on a terminal, sparse whole lines in a log."""

from __future__ import annotations

import io
import sys
import time

import pytest

from advspatial import progress
from advspatial.progress import progress_bar


def test_log_output_is_whole_lines_without_carriage_returns(monkeypatch) -> None:
    log = io.StringIO()
    monkeypatch.setattr(sys, "stderr", log)  # a file, not a terminal
    for _ in progress_bar(range(500), desc="attack", unit="batch"):
        pass
    text = log.getvalue()
    assert "\r" not in text
    lines = text.splitlines()
    assert 1 <= len(lines) <= 3  # start, end (and at most one timed update): not one per item
    assert lines[-1].startswith("attack: 100%") and "500/500" in lines[-1]


def test_disabled_bars_print_nothing(monkeypatch) -> None:
    log = io.StringIO()
    monkeypatch.setattr(sys, "stderr", log)
    for _ in progress_bar(range(10), desc="quiet", disable=True):
        pass
    assert log.getvalue() == ""


def test_a_terminal_gets_tqdms_own_bar(monkeypatch) -> None:
    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    term = Terminal()
    monkeypatch.setattr(sys, "stderr", term)
    monkeypatch.setattr(progress, "LOG_INTERVAL", 0.0)
    bar = progress_bar(range(3), desc="bar", file=term, mininterval=0)
    for _ in bar:
        pass
    assert "\r" in term.getvalue()  # redrawn in place


def test_tqdm_disable_in_the_environment_silences_every_bar(monkeypatch) -> None:
    """TQDM_DISABLE=1 was ignored because every bar passed disable=False explicitly."""
    log = io.StringIO()
    monkeypatch.setattr(sys, "stderr", log)
    monkeypatch.setenv("TQDM_DISABLE", "1")
    for _ in progress_bar(range(10), desc="asked for", disable=False):
        pass
    assert log.getvalue() == ""
    monkeypatch.setenv("TQDM_DISABLE", "0")
    for _ in progress_bar(range(10), desc="shown", disable=False):
        pass
    assert "shown" in log.getvalue()


def test_training_progress_in_a_log_is_one_line_per_interval(monkeypatch) -> None:
    """Training updates its loss in the postfix every batch; tqdm redraws on each set_postfix, which wrote one line
    per batch into a piped log (2,345 lines for the default model)."""
    log = io.StringIO()
    monkeypatch.setattr(sys, "stderr", log)  # a file, not a terminal
    monkeypatch.delenv("TQDM_DISABLE", raising=False)
    bar = progress_bar(total=300, desc="train", unit="batch")
    for step in range(300):
        bar.update(1)
        bar.set_postfix(epoch=1, loss=f"{1 / (step + 1):.3f}")
    bar.close()
    lines = log.getvalue().splitlines()
    assert 1 <= len(lines) <= 3 and "300/300" in lines[-1] and "loss=" in lines[-1]


# -- no silent minute: idle bars are redrawn, steps without a bar get a heartbeat ------------------------------------

class Clock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch) -> Clock:
    """progress on a hand-moved clock, with no ticker thread (the test calls progress.tick itself)."""
    running = progress._ACTIVITY.thread
    if running is not None:  # a real ticker left by an earlier test ends once nothing is open
        running.join(timeout=5)
    fake = Clock()
    monkeypatch.setattr(progress, "_now", fake)
    monkeypatch.setattr(progress, "_start_ticker", lambda: None)
    monkeypatch.delenv("TQDM_DISABLE", raising=False)
    progress._ACTIVITY.wrote()
    return fake


def test_an_idle_bar_in_a_log_writes_a_line_every_interval(monkeypatch, clock: Clock) -> None:
    """A bar stuck on one long batch (0/1 for minutes) wrote nothing after its first line."""
    log = io.StringIO()
    monkeypatch.setattr(sys, "stderr", log)
    bar = progress_bar(total=1, desc="gate", unit="batch")
    first = len(log.getvalue().splitlines())
    clock.now += progress.LOG_INTERVAL - 1
    progress.tick()
    assert len(log.getvalue().splitlines()) == first  # not yet
    for _ in range(3):
        clock.now += progress.LOG_INTERVAL
        progress.tick()
    lines = log.getvalue().splitlines()
    assert len(lines) == first + 3 and all(line.startswith("gate:   0%") for line in lines)
    bar.update(1)
    bar.close()
    clock.now += 10 * progress.LOG_INTERVAL
    progress.tick()  # a closed bar is not redrawn
    assert len(log.getvalue().splitlines()) == first + 4 and "1/1" in log.getvalue().splitlines()[-1]


def test_an_idle_bar_on_a_terminal_is_redrawn(monkeypatch, clock: Clock) -> None:
    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    term = Terminal()
    monkeypatch.setattr(sys, "stderr", term)
    bar = progress_bar(total=2, desc="bar", file=term)
    drawn = term.getvalue().count("\r")
    clock.now += progress.TERMINAL_INTERVAL
    progress.tick()
    assert term.getvalue().count("\r") > drawn
    bar.close()


def test_a_heartbeat_speaks_only_after_a_silent_interval(monkeypatch, clock: Clock) -> None:
    log = io.StringIO()
    monkeypatch.setattr(sys, "stderr", log)
    with progress.heartbeat("study: a"):
        clock.now += progress.LOG_INTERVAL / 2
        progress.note("a line of the step itself")
        clock.now += progress.LOG_INTERVAL / 2 + 1
        progress.tick()
        assert log.getvalue().splitlines() == ["a line of the step itself"]  # 16 s of silence only
        clock.now += progress.LOG_INTERVAL
        progress.tick()
        progress.tick()  # once per interval, not per tick
        clock.now += progress.LOG_INTERVAL
        progress.tick()
    clock.now += 10 * progress.LOG_INTERVAL
    progress.tick()  # ended: silent again
    assert log.getvalue().splitlines()[1:] == ["study: a: still working, 1 min 01 s so far",
                                               "study: a: still working, 1 min 31 s so far"]


def test_a_heartbeat_prints_its_polls_lines_and_survives_a_broken_poll(monkeypatch, clock: Clock) -> None:
    log = io.StringIO()
    monkeypatch.setattr(sys, "stderr", log)
    answers = iter([["saved roi"], [], ["saved attack/pgd"]])
    with progress.heartbeat("study: a", lambda: next(answers)):
        for _ in range(4):  # the fourth poll raises StopIteration: ignored
            progress.tick()
    assert log.getvalue().splitlines() == ["saved roi", "saved attack/pgd"]
    with progress.heartbeat("off", lambda: ["never"], enabled=False):
        clock.now += 10 * progress.LOG_INTERVAL
        progress.tick()
    assert "never" not in log.getvalue() and "off" not in log.getvalue()


def test_the_ticker_thread_keeps_a_silent_step_talking_and_then_stops(monkeypatch) -> None:
    log = io.StringIO()
    monkeypatch.setattr(sys, "stderr", log)
    monkeypatch.setattr(progress, "LOG_INTERVAL", 0.2)
    monkeypatch.setattr(progress, "TICK", 0.02)
    with progress.heartbeat("slow step"):
        time.sleep(0.9)  # no output of its own
    beats = [line for line in log.getvalue().splitlines() if line.startswith("slow step: still working")]
    assert 2 <= len(beats) <= 5
    deadline = time.monotonic() + 2
    while progress._ACTIVITY.thread is not None and time.monotonic() < deadline:
        time.sleep(0.02)
    assert progress._ACTIVITY.thread is None  # nothing open: the ticker ended


@pytest.mark.parametrize(("seconds", "text"), [(0, "0 s"), (44.6, "45 s"), (60, "1 min 00 s"), (150, "2 min 30 s"),
                                               (3600, "1 h 00 min"), (3 * 3600 + 5 * 60 + 59, "3 h 05 min")])
def test_durations_read_as_a_person_says_them(seconds: float, text: str) -> None:
    assert progress.duration(seconds) == text


def test_a_bar_redrawn_when_idle_is_not_drawn_again_by_its_next_update(monkeypatch, clock: Clock) -> None:
    """tqdm's own timed line came a few seconds after the ticker's, two lines in one interval."""
    log = io.StringIO()
    monkeypatch.setattr(sys, "stderr", log)
    seconds = [0.0]
    bar = progress_bar(total=10, desc="maps", unit="map")
    monkeypatch.setattr(bar, "_time", lambda: seconds[0])
    bar.last_print_t = bar.start_t = 0.0
    drawn = len(log.getvalue().splitlines())
    clock.now += progress.LOG_INTERVAL
    seconds[0] += progress.LOG_INTERVAL
    progress.tick()
    seconds[0] += 2
    bar.update(1)  # two seconds after the ticker's line: no second line
    assert len(log.getvalue().splitlines()) == drawn + 1
    seconds[0] += progress.LOG_INTERVAL
    bar.update(1)  # an interval later: tqdm's own line
    assert len(log.getvalue().splitlines()) == drawn + 2 and "2/10" in log.getvalue().splitlines()[-1]
    bar.close()


def test_an_idle_bar_shows_where_a_long_loop_is_and_forgets_it_when_the_loop_ends(monkeypatch, clock: Clock) -> None:
    """A one-pixel search of 75 generations inside one batch: the bar said 0/1 and the elapsed time only."""
    log = io.StringIO()
    monkeypatch.setattr(sys, "stderr", log)
    bar = progress_bar(total=1, desc="1-pixel attack", unit="batch")
    for generation in progress.steps("generation", 75):
        if generation == 11:
            clock.now += progress.LOG_INTERVAL
            progress.tick()
            assert log.getvalue().splitlines()[-1].endswith("generation 12/75]")
        if generation == 41:
            break  # every image fooled: the search stops early
    assert progress._ACTIVITY.step is None
    bar.update(1)
    bar.close()
    assert "generation" not in log.getvalue().splitlines()[-1]  # the batch's last line carries no stale step


def test_a_heartbeat_says_where_a_long_loop_is(monkeypatch, clock: Clock) -> None:
    log = io.StringIO()
    monkeypatch.setattr(sys, "stderr", log)
    with progress.heartbeat("propagation"):
        for _ in progress.steps("generation", 3):
            clock.now += progress.LOG_INTERVAL + 1
            progress.tick()
    assert log.getvalue().splitlines() == [f"propagation: still working, {t} so far (generation {k}/3)"
                                           for k, t in ((1, "31 s"), (2, "1 min 02 s"), (3, "1 min 33 s"))]


def test_a_bars_own_postfix_is_left_alone_when_no_loop_runs(monkeypatch, clock: Clock) -> None:
    log = io.StringIO()
    monkeypatch.setattr(sys, "stderr", log)
    bar = progress_bar(total=2, desc="train", unit="batch")
    bar.set_postfix_str("loss 0.31", refresh=False)
    clock.now += progress.LOG_INTERVAL
    progress.tick()
    assert log.getvalue().splitlines()[-1].endswith("loss 0.31]")
    bar.close()


def test_a_loop_of_uneven_steps_shows_the_step_it_set_and_forgets_it_when_left(monkeypatch, clock: Clock) -> None:
    """A search that takes several iterations a call says where it is by :func:`progress.stepping`."""
    log = io.StringIO()
    monkeypatch.setattr(sys, "stderr", log)
    bar = progress_bar(total=1, desc="square", unit="batch")
    with progress.stepping("query", 1000) as show:
        for done in (1, 5, 13):
            show(done)
        clock.now += progress.LOG_INTERVAL
        progress.tick()
        assert log.getvalue().splitlines()[-1].endswith("query 13/1000]")
    assert progress._ACTIVITY.step is None
    bar.update(1)
    bar.close()
    assert "query" not in log.getvalue().splitlines()[-1]
