"""Regions of Importance / Attack: binarize maps, split the grid, measure overlap.

Maps are (N,H,W) float tensors (importance map I, attack map A); regions are
(N,H,W) bool (RoI from I, RoA from A). The flow (METHODS.md section 1)::

    roi = binarize(I).mask; roa = binarize(A).mask          # top 20% by default
    parts = segregate(roi, roa)                              # both/roi_only/roa_only/neither
    stats = overlap_statistics(I, A, roi, roa)               # per image, (N,) each
    tests = inference.compare_to_nulls(I, A, roi, roa, labels)  # against the hierarchy of nulls

Every statistic is "larger = more co-located". :func:`pairwise_statistics` gives
each statistic for every (RoI image j, RoA image i) pairing, the input of the
one statistics engine (:mod:`advspatial.statistics.inference`): exact nulls,
two-sided permutation p, corrections and verdicts (:mod:`.claims`); the
faithfulness gate of an RoI is :mod:`.faithfulness`. Undefined values (IoU of
two empty regions, energy of an all-zero attack map, a correlation with a
constant map) are NaN and left out of means.

Modules: :mod:`.binarization` (maps to regions), :mod:`.overlap` (segregation and
statistics), :mod:`.controls` (random and shifted control regions),
:mod:`.accumulate` (per-class region frequency), :mod:`.inference`,
:mod:`.claims`, :mod:`.faithfulness`.
"""

from .accumulate import MapAccumulator, class_mean_maps
from .binarization import BINARIZE_METHODS, Binarized, binarize, dilate, otsu_threshold, top_fraction_mask
from .controls import random_region_like, shifted_region_like
from .overlap import (
    PART_NAMES, STATISTICS, Partition, dice, energy_in_roi, iou, overlap_statistics, pairwise_statistics, pearson,
    pointing_game, segregate, spearman,
)

__all__ = [
    "BINARIZE_METHODS", "Binarized", "MapAccumulator", "PART_NAMES", "Partition", "STATISTICS", "binarize",
    "class_mean_maps", "dice", "dilate", "energy_in_roi", "iou", "otsu_threshold", "overlap_statistics",
    "pairwise_statistics", "pearson", "pointing_game", "random_region_like", "segregate", "shifted_region_like",
    "spearman", "top_fraction_mask",
]
