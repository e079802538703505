"""Random control regions: size, exclusion, stratification, and draws keyed by the global sample id."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from advspatial.errors import ConfigError, ShapeError
from advspatial.regions import change_strata, foreground_strata, random_region_like


def _case(seed: int, n: int = 3, size: int = 9):
    gen = torch.Generator().manual_seed(seed)
    roi = torch.rand(n, size, size, generator=gen) < 0.2
    region = (torch.rand(n, size, size, generator=gen) < 0.25) & ~roi
    strata = (torch.rand(n, size, size, generator=gen) < 0.5).long() + (torch.rand(n, size, size, generator=gen) < 0.3).long()
    return roi, region, strata


@given(seed=st.integers(0, 10_000), draw=st.integers(0, 50))
@settings(max_examples=40, deadline=None)
def test_stratified_draw_matches_counts_and_avoids_the_excluded_pixels(seed, draw):
    roi, region, strata = _case(seed)
    control = random_region_like(region, seed, within=~roi, strata=strata, draw=draw)
    assert not bool((control & roi).any())
    for s in range(3):
        assert torch.equal((control & (strata == s)).flatten(1).sum(1), (region & (strata == s)).flatten(1).sum(1))


def test_draws_are_keyed_by_global_id_not_by_batch():
    roi, region, strata = _case(1, n=6)
    ids = torch.tensor([40, 41, 42, 43, 44, 45])
    whole = random_region_like(region, 7, within=~roi, strata=strata, draw=3, sample_ids=ids)
    for i in range(6):
        alone = random_region_like(region[i:i + 1], 7, within=~roi[i:i + 1], strata=strata[i:i + 1], draw=3,
                                   sample_ids=ids[i:i + 1])
        assert torch.equal(alone[0], whole[i])
    other = random_region_like(region, 7, within=~roi, strata=strata, draw=4, sample_ids=ids)
    assert not torch.equal(other, whole)
    # draw 0 without strata is the historical unstratified control
    assert torch.equal(random_region_like(region, 7), random_region_like(region, 7, draw=0))


def test_stratified_draw_is_uniform_within_its_stratum():
    region = torch.zeros(4000, 2, 4, dtype=torch.bool)
    region[:, 0, 0] = True  # one pixel, in stratum 1 (the top row)
    strata = torch.zeros(4000, 2, 4, dtype=torch.long)
    strata[:, 0] = 1
    freq = random_region_like(region, 0, strata=strata).float().mean(0)
    assert float(freq[1].sum()) == 0  # never leaves its stratum
    assert torch.allclose(freq[0], torch.full((4,), 0.25), atol=0.03)


def test_infeasible_and_bad_inputs_raise():
    region = torch.ones(1, 2, 2, dtype=torch.bool)
    with pytest.raises(ConfigError, match="stratum"):
        random_region_like(region, 0, within=torch.zeros(1, 2, 2, dtype=torch.bool))
    with pytest.raises(ShapeError, match="strata"):
        random_region_like(region, 0, strata=torch.zeros(1, 3, 3))


def test_foreground_and_change_strata():
    x = torch.zeros(2, 3, 4, 4)
    x[:, 1, :2] = 0.5
    assert foreground_strata(x)[:, :2].all() and not foreground_strata(x)[:, 2:].any()
    filled = x.clone()
    filled[:, :, 0, 0] = 1.0  # the largest change at one pixel
    bins = change_strata(x, filled, levels=4)
    assert bins.shape == (2, 4, 4) and int(bins.max()) == 3 and bool((bins[:, 0, 0] == 3).all())
    assert torch.equal(torch.bincount(bins[0].flatten(), minlength=4), torch.full((4,), 4))  # equal-size bins
