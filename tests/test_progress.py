"""Progress output: tqdm's bar on a terminal, sparse whole lines in a log."""

from __future__ import annotations

import io
import sys

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
