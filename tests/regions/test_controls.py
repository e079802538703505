"""Random control regions: size, exclusion, stratification, and draws keyed by the global sample id."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from advspatial.errors import ConfigError, ShapeError
from advspatial.host_syncs import counting
from advspatial.regions.controls import change_strata, foreground_strata, random_regions_like
from advspatial.regions import random_region_like
from advspatial.regions.controls import RANDOM_REGION_STREAM
from advspatial.runtime import per_sample_noise, stream_seed


def _case(seed: int, n: int = 3, size: int = 9):
    gen = torch.Generator().manual_seed(seed)
    roi = torch.rand(n, size, size, generator=gen) < 0.2
    region = (torch.rand(n, size, size, generator=gen) < 0.25) & ~roi
    strata = ((torch.rand(n, size, size, generator=gen) < 0.5).long()
              + (torch.rand(n, size, size, generator=gen) < 0.3).long())
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


def _one_sort_per_stratum(region, seed, within, strata, draw, ids):
    """The definition, spelt out: per stratum, the eligible pixels with the highest keys (stable on ties)."""
    n = region.shape[0]
    keys = per_sample_noise((n, region[0].numel()), stream_seed(seed, RANDOM_REGION_STREAM, draw), ids)
    chosen = torch.zeros_like(keys, dtype=torch.bool)
    for s in strata.unique().tolist():
        pool = within.flatten(1) & (strata.flatten(1) == s)
        count = (region.flatten(1) & (strata.flatten(1) == s)).sum(1, keepdim=True)
        order = torch.where(pool, keys, torch.full_like(keys, -2.0)).argsort(dim=1, descending=True, stable=True)
        ranks = torch.empty_like(order).scatter_(1, order, torch.arange(keys.shape[1]).expand_as(order))
        chosen |= (ranks < count) & pool
    return chosen.view_as(region)


@given(seed=st.integers(0, 10_000))
@settings(max_examples=25, deadline=None)
def test_draws_computed_together_equal_the_definition_one_draw_at_a_time(seed):
    roi, region, strata = _case(seed, n=4)
    ids = torch.tensor([7, 3, 11, 0])
    draws = [0, 5, (1 << 20) + seed]
    together = random_regions_like(region, seed, within=~roi, strata=strata * 3 - 1, draws=draws, sample_ids=ids)
    assert together.shape == (3, *region.shape)
    for d, draw in enumerate(draws):
        expected = _one_sort_per_stratum(region, seed, ~roi, strata * 3 - 1, draw, ids)
        assert torch.equal(together[d], expected)
        assert torch.equal(random_region_like(region, seed, within=~roi, strata=strata * 3 - 1, draw=draw,
                                              sample_ids=ids), expected)
    with pytest.raises(ConfigError, match="number of draws"):
        random_regions_like(region, seed, draws=())


@given(seed=st.integers(0, 10_000))
@settings(max_examples=25, deadline=None)
def test_unconstrained_draws_equal_the_definition_without_a_host_read(seed):
    """Without ``within`` or ``strata`` every pixel is eligible in one stratum: nothing to read back to check."""
    _, region, _ = _case(seed, n=4)
    ids = torch.tensor([7, 3, 11, 0])
    seen: list[int] = []
    with counting(lambda: seen.append(1)):
        together = random_regions_like(region, seed, draws=(0, 9), sample_ids=ids)
    assert seen == []
    everywhere, one_stratum = torch.ones_like(region), torch.zeros(region.shape, dtype=torch.long)
    for d, draw in enumerate((0, 9)):
        assert torch.equal(together[d], _one_sort_per_stratum(region, seed, everywhere, one_stratum, draw, ids))


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 2**31), st.integers(1, 3), st.integers(1, 4), st.integers(1, 6))
def test_the_threshold_choice_equals_the_rank_choice_ties_and_empty_strata_included(seed, draws, strata, levels):
    """The one-sort threshold rule picks exactly the pixels the rank rule picks, also when keys tie (drawn here from
    a few grid values) and when a stratum wants no pixel or has none eligible."""
    from advspatial.regions.controls import _top_by_rank, _top_by_threshold

    g = torch.Generator().manual_seed(seed)
    n, p = 5, 36
    keys = (torch.randint(0, levels, (draws, n, p), generator=g).float() * 2 ** 20 + 7) / 2 ** 23 - 1
    stratum = torch.randint(0, strata, (n, p), generator=g)
    eligible = torch.rand(n, p, generator=g) < 0.7
    one_hot = torch.nn.functional.one_hot(stratum, strata).bool()
    available = (one_hot & eligible[..., None]).sum(1)
    wanted = (available.double() * torch.rand(n, strata, generator=g)).floor().long()
    above = available.flip(1).cumsum(1).flip(1) - available
    by_threshold = _top_by_threshold(keys, eligible, stratum, wanted, above)
    assert by_threshold is not None
    assert torch.equal(by_threshold, _top_by_rank(keys, eligible, stratum, wanted, above))
    assert torch.equal((by_threshold[..., None] & one_hot).sum(2), wanted.expand(draws, -1, -1))


@settings(max_examples=30, deadline=None)
@given(st.integers(0, 2**31), st.integers(1, 40), st.integers(1, 400))
def test_region_keys_lie_on_the_grid_the_threshold_rule_packs(seed, n, pixels):
    """The threshold rule packs a key as the integer ``(key + 1) * 2^23``: exact only because the uniform noise
    is ``m / 2^23 - 1`` (torch's 24-bit float draw); a torch that drew finer would fail here, not change regions."""
    keys = per_sample_noise((n, pixels), seed, list(range(n))).double()
    steps = (keys + 1) * 2.0 ** 23
    assert torch.equal(steps, steps.round())
    assert float(steps.min()) >= 0 and float(steps.max()) < 2 ** 24


def test_images_past_the_packed_index_fall_back_to_the_rank_rule():
    from advspatial.regions.controls import _top_by_threshold

    p = 2 ** 20 + 1
    keys = torch.zeros(1, 1, p)
    stratum = torch.zeros(1, p, dtype=torch.long)
    assert _top_by_threshold(keys, torch.ones(1, p, dtype=torch.bool), stratum, torch.ones(1, 1, dtype=torch.long),
                             torch.zeros(1, 1, dtype=torch.long)) is None


@settings(max_examples=40, deadline=None)
@given(n=st.integers(1, 4), side=st.integers(2, 7), levels=st.integers(1, 4), share=st.floats(0.0, 0.5),
       seed=st.integers(0, 10_000))
def test_a_devices_stratified_draw_with_known_levels_reads_nothing_and_draws_the_same(n, side, levels, share,
                                                                                      seed) -> None:
    """Strata of known levels (some absent from the batch), a region inside ``within``: the device's path (forced)
    finds the strata without reading them back and draws the regions of the CPU's path."""
    from advspatial import host_syncs
    from advspatial.passes import PassLedger

    g = torch.Generator().manual_seed(seed)
    strata = torch.randint(0, levels, (n, side, side), generator=g) * (1 + (levels > 2))  # odd levels absent
    strata = strata.clamp(max=levels - 1)
    region = torch.rand(n, side, side, generator=g) < share
    within = region | (torch.rand(n, side, side, generator=g) < 0.6)
    ids = torch.arange(3, 3 + n)
    plain = random_regions_like(region, seed, within=within, strata=strata, draws=(0, 5), sample_ids=ids)
    host_syncs.DEVICE_PATH_ON_CPU = True
    try:
        ledger = PassLedger()
        with ledger.stage("draw"):
            forced = random_regions_like(region, seed, within=within, strata=strata, draws=(0, 5), sample_ids=ids,
                                         strata_levels=levels)
            reads = ledger._current().syncs
    finally:
        host_syncs.DEVICE_PATH_ON_CPU = False
    assert reads == 0
    assert torch.equal(plain, forced)


def test_a_devices_stratified_draw_fails_its_stage_when_within_leaves_no_room(monkeypatch) -> None:
    from advspatial import host_syncs
    from advspatial.passes import PassLedger

    monkeypatch.setattr(host_syncs, "DEVICE_PATH_ON_CPU", True)
    region = torch.ones(1, 3, 3, dtype=torch.bool)
    within = torch.zeros(1, 3, 3, dtype=torch.bool)
    with pytest.raises(ConfigError, match="within has fewer pixels than region"):
        with PassLedger().stage("draw"):
            random_regions_like(region, 0, within=within, strata=torch.zeros(1, 3, 3, dtype=torch.long),
                                strata_levels=1)
