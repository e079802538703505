"""Do different models' attacks act in the same place, and do the models look at the same place?

Per pair of models and per image both kept, the IoU of model a's region with model b's region of the same image,
against the same-class null: a's region of another image of the same class with b's of this one (the engine of
:func:`~advspatial.statistics.inference.compare_to_nulls`, with a's maps in the RoI role and b's in the RoA role).
Both models' maps are brought to a common grid first (the smaller of the two records' grids, area-weighted), and
the regions are re-taken there as the top ``fraction`` of each map, with the run's tie-breaking seeds.

RoA agreement uses the images both models' attacks fooled (with complete maps); RoI agreement the images both
classify correctly (each RoI explains the true class). RoA agreement rests on both attack maps' completeness; RoI
agreement on neither RoI failing the faithfulness gate (an undecided gate keeps the comparison).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence

import numpy as np
import torch

from ..regions import binarize
from ..regions.binarization import pool_to_scale
from ..statistics.estimates import Estimate
from ..statistics.inference import compare_to_nulls
from .analysis import Agreement
from .records import ModelRecord

STATISTIC = "iou"
NULL = "same-class"
#: fewest common images an agreement is computed on (the pair-based null needs partners)
MIN_COMMON = 3


def attack_agreement(records: Sequence[ModelRecord], attack: str, fraction: float, seed: int,
                     permutations: int) -> list[Agreement]:
    """Every pair of models' RoA agreement on ``attack`` (pairs where either did not run it are left out)."""
    out = []
    for a, b in itertools.combinations(records, 2):
        if attack not in a.attacks or attack not in b.attacks:
            continue
        ra, rb = a.attacks[attack], b.attacks[attack]
        gates = {f"{r.label}: {g}": ok for r, rec in ((a, ra), (b, rb)) for g, ok in rec.gates.items()
                 if g != "RoI faithfulness"}
        out.append(agreement(f"RoA: {attack}", a.label, b.label, (ra.ids, ra.labels, ra.attack_map),
                             (rb.ids, rb.labels, rb.attack_map), fraction, seed + 1, permutations, gates))
    return out


def roi_agreement(records: Sequence[ModelRecord], fraction: float, seed: int, permutations: int) -> list[Agreement]:
    """Every pair of models' RoI agreement on the images both classify correctly."""
    out = []
    for a, b in itertools.combinations(records, 2):
        side = [(r.roi_ids[r.roi_correct], r.roi_labels[r.roi_correct], r.roi_map[r.roi_correct]) for r in (a, b)]
        gates = {f"{r.label}: RoI faithfulness": r.roi_status != "failed" for r in (a, b)}
        out.append(agreement("RoI", a.label, b.label, side[0], side[1], fraction, seed, permutations, gates))
    return out


def agreement(subject: str, a: str, b: str, side_a: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
              side_b: tuple[torch.Tensor, torch.Tensor, torch.Tensor], fraction: float, seed: int, permutations: int,
              gates: dict[str, bool]) -> Agreement:
    """The agreement of two models' regions on the images both have (ids, labels, maps on each side)."""
    ids_a, labels_a, maps_a = side_a
    ids_b, _, maps_b = side_b
    common, ia, ib = np.intersect1d(ids_a.numpy(), ids_b.numpy(), return_indices=True)
    if common.size < MIN_COMMON:
        return Agreement(subject, a, b, int(common.size), math.nan, math.nan, Estimate(math.nan, math.nan, math.nan, 0),
                         math.nan, gates=gates)
    ids = torch.as_tensor(common)
    map_a, map_b = common_grid(maps_a[ia], maps_b[ib])
    region_a = binarize(map_a, fraction=fraction, seed=seed, sample_ids=ids).mask
    region_b = binarize(map_b, fraction=fraction, seed=seed, sample_ids=ids).mask
    result = compare_to_nulls(map_a, map_b, region_a, region_b, labels_a[ia], statistics=(STATISTIC,),
                              n_permutations=permutations, seed=seed, nulls=(NULL,), sample_ids=ids)
    c = result[STATISTIC][NULL]
    return Agreement(subject, a, b, c.n, float(c.observed), float(c.null_mean), c.excess, float(c.p), gates=gates)


def common_grid(maps_a: torch.Tensor, maps_b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Both (N,H,W) map stacks at the smaller of their two grids (area-weighted pooling of the larger)."""
    size = (min(maps_a.shape[-2], maps_b.shape[-2]), min(maps_a.shape[-1], maps_b.shape[-1]))

    def at(maps: torch.Tensor) -> torch.Tensor:
        return maps if tuple(maps.shape[-2:]) == size else pool_to_scale(maps, size)

    return at(maps_a), at(maps_b)
