"""Sequential looks at the faithfulness gate: stop its work once the verdict is decided (issue 38).

The gate passes only when every paired effect of every comparison has its 95% bootstrap CI above 0 and the map
survives the randomization checks (:mod:`.gate`). Its per-image work (every region deleted and attacked) is most of
a gate's cost, and many gates are decided long before their last image: a map whose region does clearly *less*
damage than the image's own edges fails whatever the remaining images show. So the comparisons are computed in
**looks**: after :data:`FIRST_LOOK` images, then twice as many at each look, then all planned images
(:func:`look_sizes`). At an interim look with at least ``min_n`` correctly classified images, each paired effect's
``z = mean / (sd / sqrt(n))`` is compared with a fixed bound (:func:`interim_decision`):

- some effect with ``z <= -INTERIM_Z``: the gate **fails** there (that comparison will not be beaten);
- every effect with ``z >= INTERIM_Z`` (and the fixed rule on the images so far passes, which the caller checks):
  the comparisons **pass** there;
- otherwise the next look.

The last look applies the fixed rule unchanged (bootstrap CIs), so a gate that is not decided early gets exactly the
verdict and numbers of the fixed design. ``INTERIM_Z = 3.29`` is the Haybittle-Peto bound (Haybittle 1971; Peto et al.
1976: two-sided 0.001 at every interim look, the final analysis at its nominal level): the interim looks cannot
raise the chance of a wrong pass by more than about 0.0005 per look and effect, and a decided effect almost never
reverses by the last image. The rate at which stopping gives another verdict than computing every image is measured
by simulation (:func:`disagreement_rate`; docs/methods.md, "A gate stops once its verdict is decided"): at most
0.3-0.5% for a single effect at any effect size (normal and t3 differences), and 1 in 15,000 whole gates resampled
from 15 real gates' columns (``benchmarks/gate_sequential.py``).

Once the comparisons fail, the randomization checks are not run (the verdict is decided); the record says what was
not run and why. ``--no-gate-sequential`` computes every check on every planned image.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from ..errors import check_range

#: images (a prefix of the planned ones) at the first interim look; each later look doubles it
FIRST_LOOK = 50
#: |z| of a paired effect that decides the gate at an interim look (Haybittle-Peto: two-sided 0.001)
INTERIM_Z = 3.29


def look_sizes(planned: int, first: int = FIRST_LOOK) -> tuple[int, ...]:
    """Image counts after which the gate looks: ``first``, twice that, ... below ``planned``, then ``planned``."""
    check_range("planned", planned, 0)
    check_range("first", first, 1)
    sizes = []
    size = first
    while size < planned:
        sizes.append(size)
        size *= 2
    return (*sizes, planned)


def effect_z(differences: torch.Tensor | np.ndarray) -> float:
    """``mean / (sd / sqrt(n))`` of the finite per-image differences; +-inf when they are all equal and not 0,
    NaN with fewer than two (or all 0)."""
    values = torch.as_tensor(differences).detach().cpu().double().reshape(-1).numpy()
    values = values[np.isfinite(values)]
    if values.size < 2:
        return math.nan
    mean = float(values.mean())
    sd = float(values.std(ddof=1))
    if sd == 0:
        return math.copysign(math.inf, mean) if mean != 0 else math.nan
    return mean / (sd / math.sqrt(values.size))


@dataclass(frozen=True)
class InterimDecision:
    """What an interim look decides: ``verdict`` "fails", "passes" or None (look again), why in words, and the
    comparisons that decided it (those with an effect past the bound; every comparison when they pass)."""

    verdict: str | None
    reason: str = ""
    comparisons: tuple[str, ...] = ()


def interim_decision(differences: Mapping[str, Mapping[str, torch.Tensor]], n: int, min_n: int,
                     bound: float = INTERIM_Z) -> InterimDecision:
    """The decision at an interim look from every comparison's per-image differences (``{comparison: {measure:
    (n,) differences}}``, > 0 where the map's region does more damage) on ``n`` correctly classified images.

    Fails when some effect's z is at most ``-bound``; passes when every comparison has at least one effect and every
    effect's z is at least ``bound``; else None. Nothing is decided below ``min_n`` images.
    """
    check_range("bound", bound, 0, low_inclusive=False)
    if n < min_n:
        return InterimDecision(None, f"{n} images < {min_n}")
    zs = {(c, m): effect_z(d) for c, measures in differences.items() for m, d in measures.items()}
    failing = [(z, c, m) for (c, m), z in zs.items() if z <= -bound]
    if failing:
        z, c, m = min(failing)
        decided = tuple(sorted({name for _, name, _ in failing}))
        return InterimDecision("fails", f"{c}: {m} z = {z:+.1f} <= -{bound:g}", decided)
    if differences and all(differences.values()) and all(z >= bound for z in zs.values()):
        return InterimDecision("passes", f"every effect z >= {bound:g} (smallest {min(zs.values()):+.1f})",
                               tuple(differences))
    return InterimDecision(None, "")


def sequential_verdict(values: np.ndarray, looks: Sequence[int], final: Callable[[np.ndarray], bool],
                       min_n: int = 30, bound: float = INTERIM_Z) -> bool:
    """One effect's verdict (True: its CI lies above 0) with interim looks at ``looks`` on the first images of
    ``values``, the last look's verdict given by ``final`` (the fixed rule)."""
    for size in looks[:-1]:
        decision = interim_decision({"effect": {"d": torch.from_numpy(values[:size])}}, size, min_n, bound)
        if decision.verdict == "fails":
            return False
        if decision.verdict == "passes" and final(values[:size]):
            return True
    return final(values[: looks[-1]])


def disagreement_rate(draw: Callable[[np.random.Generator], np.ndarray], looks: Sequence[int],
                      final: Callable[[np.ndarray], bool], repeats: int, seed: int = 0, min_n: int = 30,
                      bound: float = INTERIM_Z) -> float:
    """Share of ``repeats`` samples (``draw(rng)``: the per-image differences of one gate, at least ``looks[-1]``)
    whose sequential verdict differs from the fixed rule's on all planned images: the error the looks add."""
    check_range("repeats", repeats, 1)
    rng = np.random.default_rng(seed)
    differ = 0
    for _ in range(repeats):
        values = draw(rng)
        differ += sequential_verdict(values, looks, final, min_n, bound) != final(values[: looks[-1]])
    return differ / repeats
