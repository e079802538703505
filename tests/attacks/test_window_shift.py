"""The exact shift of a window's clipped mean onto a goal: the luminance part of the SSIM ball's box projection."""

from __future__ import annotations

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from advspatial.attacks.window_shift import mean_shift


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 10_000), windows=st.integers(1, 6), n=st.integers(1, 16), share=st.floats(0.0, 1.0))
def test_the_shifted_windows_clipped_mean_is_the_goal(seed, windows, n, share):
    gen = torch.Generator().manual_seed(seed)
    z = torch.randn(windows, n, generator=gen, dtype=torch.float64)
    lo = -torch.rand(windows, n, generator=gen, dtype=torch.float64)
    hi = torch.rand(windows, n, generator=gen, dtype=torch.float64)
    goal = lo.mean(-1) + share * (hi.mean(-1) - lo.mean(-1))  # reachable: between the means of the bounds
    lam = mean_shift(z, lo, hi, goal)
    reached = torch.maximum(torch.minimum(z - lam[:, None], hi), lo).mean(-1)
    assert torch.allclose(reached, goal, atol=1e-12)
    # a row's shift does not depend on the other rows (the CPU's projection solves only the violated windows)
    assert torch.equal(mean_shift(z[:1], lo[:1], hi[:1], goal[:1]), lam[:1])
