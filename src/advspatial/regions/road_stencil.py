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
    """Per pixel of the (..., H, W) ``u``, the weighted sum of its in-image neighbours (zero outside the image), the
    weights of :data:`ROAD_NEIGHBOURS`. A symmetric operator: the weights of opposite offsets are equal.

    Computed as ``(corners + 2 x edges) / 12`` from the pairs above and below each pixel: seven operations on the
    whole image instead of sixteen, the cost of each step of the device's conjugate gradients
    (:mod:`.imputation_iterative`, its only user). Equal to the eight weighted terms up to float rounding.

    >>> neighbour_sum(torch.ones(1, 3, 3)).mul(12).round().int().tolist()
    [[[5, 8, 5], [8, 12, 8], [5, 8, 5]]]
    """
    padded = F.pad(u, (1, 1, 1, 1))
    vertical = padded[..., :-2, :] + padded[..., 2:, :]  # above + below, on the padded width
    total = vertical[..., :-2] + vertical[..., 2:]  # the four corners
    total.add_(vertical[..., 1:-1], alpha=2)  # the edges above and below
    total.add_(padded[..., 1:-1, :-2] + padded[..., 1:-1, 2:], alpha=2)  # the edges left and right
    return total.div_(12)
