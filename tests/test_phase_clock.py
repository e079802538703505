"""The run's time outside its stages by phase (phase_clock.py): a phase's seconds are its own."""

from __future__ import annotations

import time

import pytest

from advspatial.passes import PassLedger
from advspatial.phase_clock import PHASES, Elapsed, PhaseClock
from advspatial.report.passes import PHASE_WORDS


def test_a_stage_closed_inside_a_phase_is_taken_off_it_and_off_its_parent() -> None:
    clock = PhaseClock()
    started = time.perf_counter()
    with clock.phase("other"):
        with clock.phase("statistics"):
            time.sleep(0.03)
            clock.stage_closed(Elapsed(0.0, 0.02))  # as if 0.02 s of the wait were a stage's
    block = time.perf_counter() - started
    statistics, other = clock.phases["statistics"], clock.phases["other"]
    assert statistics.wall == pytest.approx(block - 0.02, abs=0.005)
    assert abs(other.wall) < 0.005  # it did nothing of its own
    assert clock.stage_seconds == Elapsed(0.0, 0.02)


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
