"""The run's time outside its stages, by named phase: where a run's host work goes between its stages.

Why: on a GPU a run's stages are fast and what it does outside them (loading the model and images, the forecast,
the per-image rows, the statistics, the figures, the report) is a large part of a large run: on an H200, ResNet-20
`spatial` at n = 2,000 spent about half its time outside every stage. The stage ledger
(:class:`~advspatial.passes.PassLedger`) times stages; this clock times the rest, split by what the run was doing.

How: a phase's CPU and elapsed seconds are those of its block less the stages computed inside it (the ledger tells
the clock each outermost stage's elapsed time as it closes, :meth:`PhaseClock.stage_closed`) and less the phases
nested in it; a phase entered again adds up. The times are this process's and this machine's.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

#: the phases a run's time outside its stages is split into, in the order a run meets them: loading the model and
#: images, the price probe, each attack batch's per-image rows, the statistics and verdicts, the figures, the
#: report, reading and writing stage files outside a stage, and the rest of the experiment. A name not listed here
#: is refused (a mistyped phase would otherwise show raw in the report's sentence)
PHASES: tuple[str, ...] = ("setup", "forecast", "rows", "statistics", "figures", "report", "stage files", "other")


@dataclass(frozen=True)
class Elapsed:
    """A pair of times: CPU (``time.process_time``) and elapsed (``time.perf_counter``) seconds."""

    cpu: float = 0.0
    wall: float = 0.0

    @classmethod
    def now(cls) -> Elapsed:
        return cls(time.process_time(), time.perf_counter())

    def plus(self, other: Elapsed) -> Elapsed:
        return Elapsed(self.cpu + other.cpu, self.wall + other.wall)

    def less(self, other: Elapsed) -> Elapsed:
        return Elapsed(self.cpu - other.cpu, self.wall - other.wall)


def check_phase(name: str) -> None:
    """Refuse a phase name that is not one of :data:`PHASES`, in one line naming them."""
    if name not in PHASES:
        raise ValueError(f"unknown phase {name!r}: the phases are {', '.join(map(repr, PHASES))}")


@dataclass
class PhaseClock:
    """The seconds of each named phase outside the stages (see the module docstring).

    Example::

        >>> clock = PhaseClock()
        >>> with clock.phase("statistics"):
        ...     clock.stage_closed(Elapsed(0.0, 0.0))  # a stage computed inside: its time is not the phase's
        >>> list(clock.seconds())
        ['statistics']
    """

    #: per phase name, its seconds outside the stages
    phases: dict[str, Elapsed] = field(default_factory=dict)
    #: the CPU and elapsed seconds of the outermost stages closed so far
    stage_seconds: Elapsed = field(default_factory=Elapsed)
    #: per open phase: the seconds (less stages) of the phases closed inside it
    _nested: list[Elapsed] = field(default_factory=list)

    def stage_closed(self, elapsed: Elapsed) -> None:
        """An outermost stage took ``elapsed``: time no open phase owns."""
        self.stage_seconds = self.stage_seconds.plus(elapsed)

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        """Time the block as phase ``name`` (one of :data:`PHASES`): its seconds less the stages closed inside it and
        its nested phases."""
        check_phase(name)
        started, stages_before = Elapsed.now(), self.stage_seconds
        self._nested.append(Elapsed())
        try:
            yield
        finally:
            outside = Elapsed.now().less(started).less(self.stage_seconds.less(stages_before))
            own = outside.less(self._nested.pop())
            self.phases[name] = self.phases.get(name, Elapsed()).plus(own)
            if self._nested:
                self._nested[-1] = self._nested[-1].plus(outside)

    def seconds(self) -> dict[str, dict[str, float]]:
        """What ``metrics.json`` records: per phase, its CPU and elapsed seconds (rounded, never negative)."""
        return {name: {"cpu_seconds": round(max(0.0, spent.cpu), 3), "wall_seconds": round(max(0.0, spent.wall), 3)}
                for name, spent in self.phases.items()}
