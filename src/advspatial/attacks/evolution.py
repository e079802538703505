"""The random draws of differential evolution over pixels: uniform draws per image, distinct partners, and
the nearest allowed pixel.

Why apart from :mod:`.onepixel`: these are the search's sampling rules, each exact and tested on its own
(partners are distinct from each other and from the target, uniformly; the nearest allowed pixel matches a
brute-force search), while the attack composes them.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch


def draw_uniform(gens: Sequence[torch.Generator], shape: Sequence[int]) -> torch.Tensor:
    """(len(gens), *shape) float64 U[0,1) numbers; row i from ``gens[i]``."""
    return torch.stack([torch.rand(tuple(shape), generator=g, dtype=torch.float64) for g in gens])


def uniform_index(u: torch.Tensor, n: torch.Tensor | int) -> torch.Tensor:
    """``floor(u * n)`` as int64, kept inside ``[0, n)`` (``u`` in [0,1))."""
    n_t = torch.as_tensor(n, dtype=u.dtype, device=u.device)
    idx = torch.floor(u * n_t).long()
    return torch.minimum(idx, (n_t.long() - 1).clamp(min=0))


def distinct_others(u: torch.Tensor) -> torch.Tensor:
    """Three member indices per member, distinct from each other and from the member itself.

    ``u`` is (A, P, 3) uniform in [0,1) for P >= 4 members; returns (A, P, 3) int64. The j-th index
    is uniform over the ``P - 1 - j`` members not yet excluded: draw a rank in
    that range, then step it past each excluded index in increasing order.
    """
    a, p, _ = u.shape
    member = torch.arange(p, device=u.device).expand(a, p)
    first = _step_past(uniform_index(u[..., 0], p - 1), member)
    low, high = torch.minimum(member, first), torch.maximum(member, first)
    second = _step_past(uniform_index(u[..., 1], p - 2), low, high)
    # the three excluded indices in increasing order (a sorting network: no sort call)
    middle = torch.maximum(low, torch.minimum(high, second))
    low, high = torch.minimum(low, second), torch.maximum(high, second)
    third = _step_past(uniform_index(u[..., 2], p - 3), low, middle, high)
    return torch.stack([first, second, third], dim=-1)


def _step_past(rank: torch.Tensor, *excluded: torch.Tensor) -> torch.Tensor:
    """``rank`` moved up by one past each excluded index, visited in increasing order."""
    for index in excluded:
        rank = rank + (rank >= index).long()
    return rank


def nearest_allowed(allowed: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """(N, H*W) int64: for every pixel, the flat index of the nearest allowed pixel of its image.

    Computed with SciPy's exact Euclidean distance transform, once per image
    whose mask is neither full nor empty (identity elsewhere); a one-off set-up
    cost, not part of the search loop.
    """
    from scipy import ndimage  # on first use: a fifth of a second to import

    n = allowed.shape[0]
    table = torch.arange(height * width).repeat(n, 1)
    grid = allowed.cpu().numpy().reshape(n, height, width)
    for i in range(n):
        if grid[i].all() or not grid[i].any():
            continue
        rows, cols = ndimage.distance_transform_edt(~grid[i], return_distances=False, return_indices=True)
        table[i] = torch.from_numpy((rows * width + cols).reshape(-1))
    return table.to(allowed.device)
