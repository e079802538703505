"""ROAD's neighbour stencil: the weighted sum of each pixel's in-image neighbours, as the eight weights define it."""

from __future__ import annotations

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from advspatial.regions.road_stencil import ROAD_NEIGHBOURS, neighbour_sum


def _eight_terms(u: torch.Tensor) -> torch.Tensor:
    """The definition, term by term: each in-image neighbour at its offset times its weight."""
    h, w = u.shape[-2:]
    out = torch.zeros_like(u)
    for dr, dc, weight in ROAD_NEIGHBOURS:
        rows, cols = slice(max(0, -dr), h - max(0, dr)), slice(max(0, -dc), w - max(0, dc))
        source_rows, source_cols = slice(rows.start + dr, rows.stop + dr), slice(cols.start + dc, cols.stop + dc)
        out[..., rows, cols] += weight * u[..., source_rows, source_cols]
    return out


@settings(max_examples=60, deadline=None)
@given(h=st.integers(1, 9), w=st.integers(1, 9), lead=st.integers(1, 3), seed=st.integers(0, 2**16))
def test_the_stencil_is_the_eight_weighted_neighbours(h, w, lead, seed):
    u = torch.randn(lead, 2, h, w, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    assert torch.allclose(neighbour_sum(u), _eight_terms(u), rtol=0, atol=1e-14 * float(u.abs().max()))


def test_the_stencil_is_symmetric():
    """<S a, b> = <a, S b>: the conjugate gradients' matrix needs it."""
    gen = torch.Generator().manual_seed(0)
    a, b = (torch.randn(3, 11, 7, generator=gen, dtype=torch.float64) for _ in range(2))
    assert abs(float((neighbour_sum(a) * b).sum() - (a * neighbour_sum(b)).sum())) < 1e-12


def test_the_stencil_leaves_its_input_unchanged():
    u = torch.randn(2, 5, 5, dtype=torch.float64)
    before = u.clone()
    neighbour_sum(u)
    assert torch.equal(u, before)
