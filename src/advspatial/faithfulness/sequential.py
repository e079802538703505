"""Sequential looks at the faithfulness gate: stop its work once every row is decided.

The gate's per-image work (every region deleted and attacked) is most of its cost, and many gates are decided long
before their last image: a map whose region does clearly *less* damage than its own shape at a random place fails
whatever the remaining images show, and a map that clearly beats every comparison needs no more images either. So
the comparisons are computed in **looks**: after :data:`FIRST_LOOK` images, then twice as many at each look, then
all planned images (:func:`look_sizes`). At an interim look with at least ``min_n`` correctly classified images,
each cell (comparison x measure) is read by the rule of its row (:mod:`advspatial.statistics.outcomes`), with a
fixed bound ``|z| >= INTERIM_Z`` in place of its CI (:func:`cell_state`):

- some faithfulness cell is **not better** (``(mean - margin) / se <= -INTERIM_Z``) where the positive control beats
  (``z >= INTERIM_Z``, or no control): the gate **fails** there (:func:`interim_decision`);
- every faithfulness cell **beats** and every specificity cell is decided (beats, does less, or equivalent by both
  one-sided bounds): the gate is **decided** there, once the fixed rule on the images so far agrees (the caller
  checks);
- otherwise the next look.

The last look applies the fixed rule unchanged (bootstrap CIs), so a gate not decided early gets exactly the
verdict and numbers of the fixed design. ``INTERIM_Z = 3.29`` is the Haybittle-Peto bound (Haybittle 1971; Peto et al.
1976: two-sided 0.001 at every interim look): the interim looks cannot raise the chance of a wrong decision by more
than about 0.0005 per look and cell. With ``gate_until_decided`` the planned images are every image of the run, so
the looks go on past the gate's usual size until every row is decided (docs/methods.md, "A gate stops once its
verdict is decided").

Once the gate fails, the randomization checks are not run (they cannot change a failed verdict); the record says
what was not run and why. ``--no-gate-sequential`` computes every check on every planned image.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from ..errors import check_range
from ..statistics.outcomes import BEATS, DOES_LESS, EQUIVALENT, FAITHFULNESS, NOT_BETTER

#: images (a prefix of the planned ones) at the first interim look; each later look doubles it
FIRST_LOOK = 50
#: |z| of a paired effect that decides a cell at an interim look (Haybittle-Peto: two-sided 0.001)
INTERIM_Z = 3.29

#: a cell at a look: its per-image differences, its margin and its rule (``faithfulness`` or ``specificity``)
CellData = tuple[torch.Tensor, float, str]


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


def effect_z(differences: torch.Tensor | np.ndarray, shift: float = 0.0) -> float:
    """``(mean - shift) / (sd / sqrt(n))`` of the finite per-image differences; +-inf when they are all equal and
    not ``shift``, NaN with fewer than two (or all equal to ``shift``)."""
    values = torch.as_tensor(differences).detach().cpu().double().reshape(-1).numpy()
    values = values[np.isfinite(values)]
    if values.size < 2:
        return math.nan
    mean = float(values.mean()) - shift
    sd = float(values.std(ddof=1))
    if sd == 0:
        return math.copysign(math.inf, mean) if mean != 0 else math.nan
    return mean / (sd / math.sqrt(values.size))


def cell_state(differences: torch.Tensor, margin: float, rule: str, bound: float = INTERIM_Z) -> str | None:
    """A cell's outcome at an interim look, or None (undecided there): the rule's outcomes with ``|z| >= bound``
    in place of the CIs."""
    if effect_z(differences) >= bound:
        return BEATS
    if rule == FAITHFULNESS:
        return NOT_BETTER if effect_z(differences, margin) <= -bound else None
    if effect_z(differences) <= -bound:
        return DOES_LESS
    if margin > 0 and effect_z(differences, margin) <= -bound and effect_z(differences, -margin) >= bound:
        return EQUIVALENT
    return None


@dataclass(frozen=True)
class InterimDecision:
    """What an interim look decides: ``verdict`` "fails", "decided" or None (look again), why in words, and the
    comparisons that decided it."""

    verdict: str | None
    reason: str = ""
    comparisons: tuple[str, ...] = ()


def interim_decision(cells: Mapping[str, Mapping[str, CellData]], n: int, min_n: int, bound: float = INTERIM_Z,
                     controls: Mapping[str, Mapping[str, CellData]] | None = None) -> InterimDecision:
    """The decision at an interim look from every comparison's cells (``{comparison: {measure: (differences,
    margin, rule)}}``, differences > 0 where the map's region does more damage) on ``n`` correctly classified
    images, the positive control's faithfulness cells beside them (``controls``, same layout; a cell without a
    control counts as judgeable). Nothing is decided below ``min_n`` images (module docstring)."""
    check_range("bound", bound, 0, low_inclusive=False)
    if n < min_n:
        return InterimDecision(None, f"{n} images < {min_n}")
    controls = controls or {}
    states = {(c, m): cell_state(d, margin, rule, bound) for c, measures in cells.items()
              for m, (d, margin, rule) in measures.items()}
    rules = {(c, m): rule for c, measures in cells.items() for m, (_, _, rule) in measures.items()}

    def judgeable(c: str, m: str) -> bool:
        if m not in controls.get(c, {}):
            return True
        d, margin, rule = controls[c][m]
        return cell_state(d, margin, rule, bound) == BEATS

    failing = [(c, m) for (c, m), s in states.items() if s == NOT_BETTER and judgeable(c, m)]
    if failing:
        c, m = failing[0]
        d, margin, _ = cells[c][m]
        return InterimDecision("fails", f"{c}: {m} not better (z = {effect_z(d, margin):+.1f} <= -{bound:g})",
                               tuple(sorted({name for name, _ in failing})))
    faithful = [s for key, s in states.items() if rules[key] == FAITHFULNESS]
    if cells and all(cells.values()) and faithful and all(s == BEATS for s in faithful) \
            and all(s is not None for s in states.values()):
        return InterimDecision("decided", f"every row decided at |z| >= {bound:g}", tuple(cells))
    return InterimDecision(None, "")


def sequential_verdict(values: np.ndarray, looks: Sequence[int], final: Callable[[np.ndarray], bool],
                       min_n: int = 30, bound: float = INTERIM_Z) -> bool:
    """One effect's verdict (True: its CI lies above 0) with interim looks at ``looks`` on the first images of
    ``values``, the last look's verdict given by ``final`` (the fixed rule): a faithfulness cell with margin 0."""
    for size in looks[:-1]:
        cells = {"effect": {"d": (torch.from_numpy(values[:size]), 0.0, FAITHFULNESS)}}
        decision = interim_decision(cells, size, min_n, bound)
        if decision.verdict == "fails":
            return False
        if decision.verdict == "decided" and final(values[:size]):
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
