"""The permutation null of a pair statistic's mean excess: each permutation's mean from its definition."""

from __future__ import annotations

import numpy as np
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from advspatial.statistics.excess import permutation_means, prepare, row_nanmean
from advspatial.statistics.nulls import permutation_chunks


def _by_definition(pairs: torch.Tensor, groups: torch.Tensor, n_permutations: int, seed: int) -> np.ndarray:
    """Per permutation σ, the mean over the test's images i of ((k_i + 1) pairs[σ(i), i] - observed_i) / k_i -
    null_i, gathered one (permutation, image) at a time in the order the statistic's mean sums them."""
    prep = prepare(pairs, groups)
    perms = np.concatenate(permutation_chunks(groups, n_permutations, seed))
    cols = prep.columns
    if cols.size == 0:  # no image enters the test: no mean
        return np.full(perms.shape[0], np.nan)
    values = pairs.numpy()[perms[:, cols], cols[None, :]]  # (B, C)
    values *= prep.partners + 1
    values -= prep.observed
    values /= prep.partners
    values -= prep.null
    return row_nanmean(values) if np.isnan(values).any() else values.mean(1)


@settings(max_examples=40, deadline=None)
@given(n=st.integers(2, 40), n_groups=st.integers(1, 4), nan_share=st.sampled_from([0.0, 0.1]),
       seed=st.integers(0, 5))
def test_each_permutations_mean_is_its_definition(n: int, n_groups: int, nan_share: float, seed: int) -> None:
    """Equal to the last few bits: NumPy's sum of the same values can round apart by the array's alignment."""
    gen = torch.Generator().manual_seed(seed)
    pairs = torch.rand(n, n, generator=gen, dtype=torch.float64)
    pairs[torch.rand(n, n, generator=gen) < nan_share] = float("nan")
    groups = torch.randint(0, n_groups, (n,), generator=gen)
    (means,) = permutation_means([prepare(pairs, groups)], groups, 60, seed)
    assert means.shape == (60,)
    np.testing.assert_allclose(means, _by_definition(pairs, groups, 60, seed), rtol=1e-13, atol=1e-15)


def test_statistics_over_the_same_images_share_positions_and_keep_their_own_values() -> None:
    gen = torch.Generator().manual_seed(3)
    groups = torch.arange(30) % 3
    first, second = (torch.rand(30, 30, generator=gen, dtype=torch.float64) for _ in range(2))
    together = permutation_means([prepare(first, groups), prepare(second, groups)], groups, 50, 1)
    alone = [permutation_means([prepare(p, groups)], groups, 50, 1)[0] for p in (first, second)]
    for joint, single in zip(together, alone, strict=True):
        np.testing.assert_array_equal(joint, single)
    assert not np.array_equal(together[0], together[1])
