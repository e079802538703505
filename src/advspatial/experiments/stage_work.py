"""How the forecast reads a reference run's work (:mod:`.forecast`, :mod:`.cost_references`): a stage group's
counts in each reference run, followed between their n (a group whose images a setting caps: their mean), the name
of such a group, and the iterations an attack stage's work follows.

Apart from the reference data, which ``benchmarks/cost_reference.py`` writes, so that the hand-written reading and the
generated numbers each stay one module of one concept.

Example::

    >>> StageWork(((50, 100, 0, 2, 0), (200, 400, 0, 8, 0))).at(100)
    (200.0, 0.0, 4.0, 0.0)
    >>> StageWork(((50, 100, 0, 2, 0), (200, 40, 0, 1, 0))).at(5000)  # past the last run a falling count holds
    (40.0, 0.0, 1.0, 0.0)
    >>> sized_setting(sized_group("attack/pgd", "ensemble_n"))
    'ensemble_n'
"""

from __future__ import annotations

import bisect
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

#: one reference run's counts of a stage group: (n, forward images, backward images, forward calls, backward calls)
Point = tuple[float, float, float, float, float]


@dataclass(frozen=True)
class StageWork:
    """A stage group's counts in each reference run (:data:`Point`, ascending in n), read at any n by following the
    straight segments between them (:func:`follow`), or as their mean (:meth:`typical`: a sized group's)."""

    points: tuple[Point, ...]

    def at(self, n: int) -> tuple[float, float, float, float]:
        """(forward images, backward images, forward calls, backward calls) on ``n`` images."""
        forward, backward, calls, backward_calls = follow(self.points, n)
        return forward, backward, calls, backward_calls

    def typical(self) -> tuple[float, float, float, float]:
        """The mean of the reference runs' counts, whatever the n: what a sized group holds (per capped image, per
        batch of them) depends on which images the runs drew, not on n, so a trend between runs is their noise
        (``spatial``'s JPEG baseline: 140 to 661 forward images per image at n = 100 to 500, on 50 images each)."""
        forward, backward, calls, backward_calls = (statistics.fmean(point[i] for point in self.points)
                                                    for i in range(1, 5))
        return forward, backward, calls, backward_calls


def counts_at(group: str, work: StageWork, n: int) -> tuple[float, float, float, float]:
    """Stage group ``group``'s counts for a run of ``n`` images: a sized group's (:func:`sized_setting`) the
    :meth:`~StageWork.typical` ones, per capped image and batch; any other group's followed to ``n``."""
    return work.typical() if sized_setting(group) is not None else work.at(n)


def follow(points: Sequence[Sequence[float]], n: float) -> tuple[float, ...]:
    """The values of ``points`` (``(n, value, ...)`` per reference run, ascending in n) at ``n``: on the straight
    segment between the runs around it, the first or last segment beyond them, one run's values for one run; never
    below 0. Past the last run a value that falls on the last segment holds the last run's: work that shrinks
    with n (a sequential gate that decides sooner on more images) does not shrink to nothing (``perceptual``'s
    gate comparisons fell from 27,400 forward images at n = 200 to 6,850 at 400, which the segment continued puts
    at 0 from n = 467)."""
    if len(points) == 1:
        return tuple(max(0.0, value) for value in points[0][1:])
    ns = [point[0] for point in points]
    right = min(max(bisect.bisect_left(ns, n), 1), len(ns) - 1)
    (n0, *low), (n1, *high) = points[right - 1], points[right]
    share = (n - n0) / (n1 - n0)
    past_last = n > ns[-1]
    return tuple(float(b) if past_last and b < a else max(0.0, a + share * (b - a))
                 for a, b in zip(low, high, strict=True))


#: what joins a stage group's name and the setting that caps its images: ``attack/pgd~ensemble_n`` holds the work
#: per image of ``min(n, ensemble_n)`` (the experiment's ``sized_by``), read at the run's n and priced at its images
SIZED_MARK = "~"


def sized_group(group: str, setting: str) -> str:
    """The name of stage group ``group`` whose images ``setting`` caps (:data:`SIZED_MARK`)."""
    return f"{group}{SIZED_MARK}{setting}"


def sized_setting(group: str) -> str | None:
    """The setting that caps the images of stage group ``group`` (``attack/pgd~ensemble_n`` -> ``ensemble_n``);
    None for a group whose counts are the run's (they follow n)."""
    return group.split(SIZED_MARK, 1)[1] if SIZED_MARK in group else None


def unsized(group: str) -> str:
    """The stage group a sized group's images are of (``attack/pgd~ensemble_n`` -> ``attack/pgd``); any other group
    itself."""
    return group.split(SIZED_MARK, 1)[0]


def iteration_count(spec: str, value_of: Callable[[str], Any]) -> float:
    """The iterations an entry ``spec`` of an experiment's ``steps_by`` names, with ``value_of`` reading a setting:
    a setting's value (``steps``), or a setting's plus a constant (``maxiter+1``: a differential evolution's
    generations and its initial population, so that no generations still price the population).

    >>> iteration_count("maxiter+1", {"maxiter": 20}.__getitem__), iteration_count("steps", {"steps": 50}.get)
    (21.0, 50.0)
    """
    name, _, extra = spec.partition("+")
    return float(value_of(name)) + (float(extra) if extra else 0.0)


def iteration_setting(spec: str) -> str:
    """The setting an entry ``spec`` of ``steps_by`` reads (``maxiter+1`` -> ``maxiter``)."""
    return spec.partition("+")[0]


def sized_images(n: int, cap: int | None, batch_size: int) -> tuple[int, int]:
    """(images, batches) of a stage whose images ``cap`` caps on a run of ``n`` images in batches of
    ``batch_size``: ``min(n, cap)`` (every image for a cap of None) and the batches they fill. The reference keeps a
    sized group's counts per image and per batch of these; the forecast multiplies them back by the run's own."""
    images = n if cap is None else min(n, int(cap))
    return images, -(-images // max(1, int(batch_size)))
