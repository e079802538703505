"""ROAD's neighbour weights and their stencil: what the exact (:mod:`.imputation`) and the iterative
(:mod:`.imputation_iterative`) solves of its fill share."""

from __future__ import annotations

import torch
import torch.nn.functional as F

#: ROAD's neighbour weights (row offset, column offset, weight): 1/6 edge neighbours, 1/12 corners (sum 1)
ROAD_NEIGHBOURS: tuple[tuple[int, int, float], ...] = (
    (-1, 0, 1 / 6), (1, 0, 1 / 6), (0, -1, 1 / 6), (0, 1, 1 / 6),
    (-1, -1, 1 / 12), (-1, 1, 1 / 12), (1, -1, 1 / 12), (1, 1, 1 / 12),
)


def neighbour_sum(u: torch.Tensor) -> torch.Tensor:
    """Per pixel of the (..., H, W) ``u``, the weighted sum of its in-image neighbours (zero outside the image), in
    :data:`ROAD_NEIGHBOURS` order. A symmetric operator: the weights of opposite offsets are equal.

    >>> neighbour_sum(torch.ones(1, 3, 3)).mul(12).round().int().tolist()
    [[[5, 8, 5], [8, 12, 8], [5, 8, 5]]]
    """
    h, w = u.shape[-2:]
    padded = F.pad(u, (1, 1, 1, 1))
    total = torch.zeros_like(u)
    for dr, dc, weight in ROAD_NEIGHBOURS:
        total = total + weight * padded[..., 1 + dr:1 + dr + h, 1 + dc:1 + dc + w]
    return total
