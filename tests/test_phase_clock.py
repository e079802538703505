"""The run's time outside its stages by phase (phase_clock.py): a phase's seconds are its own."""

from __future__ import annotations

import time

import pytest

from advspatial.passes import PassLedger
from advspatial.phase_clock import PHASES, Elapsed, PhaseClock
from advspatial.report.passes import PHASE_WORDS


def test_a_stage_closed_inside_a_phase_is_taken_off_it_and_off_its_parent(monkeypatch: pytest.MonkeyPatch) -> None:
    """Known answers on a scripted clock (CPU, elapsed): no real time, so no slack for a loaded machine."""
    ticks = iter([Elapsed(0.0, 0.0), Elapsed(1.0, 1.0), Elapsed(4.0, 5.0), Elapsed(6.0, 8.0)])
    monkeypatch.setattr(Elapsed, "now", classmethod(lambda cls: next(ticks)))
    clock = PhaseClock()
    with clock.phase("other"):  # enters at (0, 0)
        with clock.phase("statistics"):  # enters at (1, 1)
            clock.stage_closed(Elapsed(1.0, 2.0))  # a stage inside it took (1, 2)
        # leaves at (4, 5): its block (3, 4) less the stage's (1, 2)
    # leaves at (6, 8): its block (6, 8) less the stage's (1, 2) and less the nested phase's (2, 2)
    assert clock.phases["statistics"] == Elapsed(2.0, 2.0)
    assert clock.phases["other"] == Elapsed(3.0, 4.0)
    assert clock.stage_seconds == Elapsed(1.0, 2.0)


def test_a_phase_on_the_real_clock_counts_at_least_its_own_wait() -> None:
    clock = PhaseClock()
    with clock.phase("figures"):
        time.sleep(0.02)
    assert clock.phases["figures"].wall >= 0.02


def test_the_recorded_seconds_are_rounded_and_never_negative() -> None:
    clock = PhaseClock(phases={"figures": Elapsed(-1e-9, 1.23456), "rows": Elapsed(0.5, -0.001)})
    assert clock.seconds() == {"figures": {"cpu_seconds": 0.0, "wall_seconds": 1.235},
                               "rows": {"cpu_seconds": 0.5, "wall_seconds": 0.0}}


def test_a_phase_not_named_in_phases_is_refused_in_one_line_even_inside_a_stage() -> None:
    clock = PhaseClock()
    with pytest.raises(ValueError, match="unknown phase 'statistic': the phases are 'setup', "):
        with clock.phase("statistic"):
            pass
    assert clock.phases == {}
    ledger = PassLedger()
    with ledger.stage("attack/pgd"), pytest.raises(ValueError, match="unknown phase 'figure'"):
        with ledger.phase("figure"):
            pass


def test_the_report_has_words_for_every_phase_and_for_no_other() -> None:
    assert set(PHASE_WORDS) == set(PHASES)
