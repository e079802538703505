"""The inference engine: exact nulls, derangements, two-sided permutation tests, corrections, verdicts."""

from __future__ import annotations

import itertools
import json
import math
from unittest import mock

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats
from statsmodels.stats.multitest import multipletests

from advspatial.errors import ConfigError, ShapeError
from advspatial.regions import STATISTICS, overlap_statistics, top_fraction_mask
from advspatial.regions.overlap import average_ranks
from advspatial.statistics.nulls import (
    NULLS, composition_strata, foreground_share, null_groups, partner_null, permutations_within,
)
from advspatial.statistics.verdicts import (
    VERDICTS, benjamini_hochberg, format_p, holm, same_conclusion, sesoi_for, verdict,
)
from advspatial.statistics.estimates import Estimate, bootstrap_mean_ci, paired_p, sign_flip_p
from advspatial.statistics.inference import (
    NullComparison, compare_to_nulls, excess_test, placement_comparison, two_sided_permutation_p, uniform_comparison,
)
from advspatial.statistics.wording import describe
from advspatial.regions.binarization import pool_to_scale
from advspatial.statistics.pixel_test import pixel_in_roi_test, poisson_binomial_pmf
from advspatial.statistics.placement import PLACEMENT_STREAM, placement_shifts, placement_table


def brute_force_null(pairs: np.ndarray, groups: list[int]) -> np.ndarray:
    """Average of pairs[π(i), i] over every within-group derangement π (NaN entries left out).

    Images alone in their group stay in place (they have no partner: NaN).
    """
    n = len(groups)
    alone = [groups.count(g) == 1 for g in groups]
    perms = [p for p in itertools.permutations(range(n))
             if all((p[i] != i or alone[i]) and groups[p[i]] == groups[i] for i in range(n))]
    out = np.full(n, np.nan)
    for i in range(n):
        vals = [pairs[p[i], i] for p in perms if not alone[i] and np.isfinite(pairs[p[i], i])]
        if vals:
            out[i] = np.mean(vals)
    return out


# -- exact partner null --------------------------------------------------------------------

@settings(max_examples=25, deadline=None)
@given(n=st.integers(2, 6), seed=st.integers(0, 10_000), n_groups=st.integers(1, 3),
       nan_share=st.sampled_from([0, 0.3]))
def test_partner_null_equals_average_over_all_derangements(n, seed, n_groups, nan_share):
    rng = np.random.default_rng(seed)
    pairs = rng.normal(size=(n, n))
    pairs[rng.random((n, n)) < nan_share] = np.nan
    groups = rng.integers(0, n_groups, n).tolist()
    got = partner_null(torch.tensor(pairs), torch.tensor(groups)).numpy()
    np.testing.assert_allclose(got, brute_force_null(pairs, groups), atol=1e-6, equal_nan=True)


def test_partner_null_by_hand():
    pairs = torch.tensor([[9.0, 1.0, 2.0], [3.0, 9.0, 4.0], [5.0, 6.0, 9.0]])
    assert partner_null(pairs, torch.zeros(3, dtype=torch.long)).tolist() == [4.0, 3.5, 3.0]
    alone = partner_null(pairs, torch.tensor([0, 0, 1]))
    assert alone[:2].tolist() == [3.0, 1.0] and math.isnan(alone[2])
    with pytest.raises(ShapeError):
        partner_null(pairs, torch.zeros(2, dtype=torch.long))
    with pytest.raises(ShapeError):
        partner_null(pairs[:2], torch.zeros(2, dtype=torch.long))


# -- permutations within groups ------------------------------------------------------------

def test_permutations_stay_in_groups_and_are_seeded():
    groups = torch.tensor([0, 1, 0, 2, 1, 1, 0, 3, 3, 0])
    d = permutations_within(groups, 500, torch.Generator().manual_seed(1))
    assert d.shape == (500, 10) and d.dtype == torch.int64
    assert (d[:, 3] == 3).all()  # alone in its group: stays itself
    assert (groups[d] == groups).all()
    assert bool((d.sort(dim=1).values == torch.arange(10)).all())  # each row a permutation
    assert torch.equal(d, permutations_within(groups, 500, torch.Generator().manual_seed(1)))


def test_permutations_are_uniform_identity_included():
    d = permutations_within(torch.zeros(4, dtype=torch.long), 12000, torch.Generator().manual_seed(0))
    counts = {}
    for row in d.tolist():
        counts[tuple(row)] = counts.get(tuple(row), 0) + 1
    assert len(counts) == 24 and (0, 1, 2, 3) in counts  # all 4! permutations, the observed pairing among them
    assert stats.chisquare(list(counts.values())).pvalue > 1e-4


def test_groups_of_two_give_a_sign_flip_test_not_a_degenerate_one():
    """With pairs of images the only re-pairing is a swap: the null must still have spread.

    (A derangement-only null is a point mass at 0 there, so any non-zero excess got
    p = 1/(B+1): the flaw this guards against.)
    """
    pairs = random_pairs(20, 5)
    groups = torch.arange(20) // 2
    res = excess_test(pairs, groups, n_permutations=2000, seed=0)
    assert res.null_std > 0 and res.p > 0.05
    e = (pairs.diagonal() - pairs[torch.arange(20) ^ 1, torch.arange(20)]).numpy()
    flips = np.array([[1 if (b >> (i // 2)) & 1 else -1 for i in range(20)] for b in range(1024)])
    exact = float(np.mean(np.abs((flips * e).mean(1)) >= abs(e.mean()) - 1e-12))
    assert res.p == pytest.approx(exact, abs=0.03)  # Monte Carlo vs the exact sign-flip p


# -- the excess test --------------------------------------------------------------------------

def random_pairs(n: int = 60, seed: int = 0, shift: float = 0.0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    pairs = torch.rand(n, n, generator=gen, dtype=torch.float64)
    return pairs + shift * torch.eye(n, dtype=torch.float64)


def test_excess_test_two_sided_p_is_symmetric_under_sign_flip():
    pairs = random_pairs(50, seed=3)
    groups = torch.arange(50) % 3
    pos = excess_test(pairs, groups, n_permutations=999, seed=4)
    neg = excess_test(-pairs, groups, n_permutations=999, seed=4)
    assert pos.p == neg.p
    assert neg.excess.mean == pytest.approx(-pos.excess.mean, abs=1e-12)
    assert neg.z == pytest.approx(-pos.z, abs=1e-9)
    assert pos.observed == pytest.approx(-neg.observed) and pos.null_mean == pytest.approx(-neg.null_mean)


def test_planted_effect_is_found_and_a_null_one_is_not():
    groups = torch.arange(60) % 4
    up = excess_test(random_pairs(60, 1, shift=0.2), groups, n_permutations=999, seed=0)
    assert up.p < 0.01 and up.excess.low > 0 and up.z > 3 and up.ratio > 1 and up.n == 60
    assert up.excess.mean == pytest.approx(up.observed - up.null_mean)
    down = excess_test(random_pairs(60, 1, shift=-0.2), groups, n_permutations=999, seed=0)
    assert down.p < 0.01 and down.excess.high < 0
    assert verdict(down.excess, down.p, {}, sesoi=0.01) == "reversed"
    none = [excess_test(random_pairs(60, s), groups, n_permutations=199, seed=s).p for s in range(20)]
    assert sum(p < 0.05 for p in none) <= 4  # ~1 expected under the null


def test_permutation_distribution_is_centred_on_zero():
    # the mean of T_b over many permutations is 0: partner_null is the exact expectation
    pairs = random_pairs(30, 7) ** 3
    groups = torch.arange(30) % 2
    res = excess_test(pairs, groups, n_permutations=4000, seed=1)
    # z of a statistic centred at 0 with p two-sided and symmetric: |z| small for no effect
    assert abs(res.z) < 4
    assert res.n_permutations == 4000


def test_excess_test_leaves_out_images_without_partner_or_value():
    pairs = random_pairs(10, 2)
    pairs[4, 4] = math.nan
    groups = torch.tensor([0, 0, 0, 0, 0, 0, 0, 0, 0, 1])
    res = excess_test(pairs, groups, n_permutations=50)
    assert res.n == 8
    with pytest.raises(ConfigError):
        excess_test(pairs, groups, n_permutations=0)


def test_two_sided_permutation_p():
    assert two_sided_permutation_p(2.0, [0.5, -2.0, 3.0, 1.0]) == pytest.approx(3 / 5)
    assert two_sided_permutation_p(-2.0, [0.5, 2.0, -3.0, 1.0, math.nan]) == pytest.approx(3 / 5)
    assert math.isnan(two_sided_permutation_p(math.nan, [1.0]))


def test_uniform_comparison_p_is_the_sign_flip_p_of_the_mean():
    rng = np.random.default_rng(0)
    expected = rng.random(40)
    observed = expected + 0.05 + 0.01 * rng.normal(size=40)
    res = uniform_comparison(torch.tensor(observed), torch.tensor(expected), statistic="iou")
    assert res.null == "uniform" and res.n == 40 and res.statistic == "iou"
    assert res.p == pytest.approx(sign_flip_p(observed - expected))
    assert res.excess.low > 0 and res.z > 10
    assert res.ratio == pytest.approx(observed.mean() / expected.mean())


def test_paired_p_tests_the_mean_not_the_median():
    # a skewed difference with mean exactly 0 and median > 0: Wilcoxon rejects, the sign-flip test of the mean not
    d = np.concatenate([np.linspace(0.1, 0.9, 70), np.full(10, -3.5)])
    assert d.mean() == pytest.approx(0, abs=1e-12) and stats.wilcoxon(d).pvalue < 0.01
    assert paired_p(d) > 0.5
    assert paired_p(d + 0.5) < 0.01 and paired_p(-d - 0.5) == pytest.approx(paired_p(d + 0.5), abs=0.01)
    assert paired_p(np.zeros(4)) == 1.0 and math.isnan(paired_p([]))


# -- the uniform (placement) null -----------------------------------------------------------------

def test_placement_table_is_every_cyclic_shift_of_the_roi_side():
    imp, att, roi, roa, _ = toy_maps(6, 7)
    table = placement_table(imp, att, roi, roa, average_ranks(imp.flatten(1)), average_ranks(att.flatten(1)))
    for dy, dx in [(0, 0), (1, 3), (6, 6), (4, 0)]:
        rolled = overlap_statistics(torch.roll(imp, (dy, dx), (1, 2)), att, torch.roll(roi, (dy, dx), (1, 2)), roa)
        for s in STATISTICS:
            assert torch.allclose(table[s][:, dy * 7 + dx].float(), rolled[s], atol=1e-5, equal_nan=True), s


def test_placement_null_expectation_is_exact_over_all_shifts():
    imp, att, roi, roa, labels = toy_maps(12, 6)
    res = compare_to_nulls(imp, att, roi, roa, labels, n_permutations=50, nulls=("uniform",))
    table = placement_table(imp, att, roi, roa, average_ranks(imp.flatten(1)), average_ranks(att.flatten(1)))
    share = roi.flatten(1).sum(1).double() / 36
    assert res["energy_in_roi"]["uniform"].null_mean == pytest.approx(float(share.mean()))
    assert res["pointing_game"]["uniform"].null_mean == pytest.approx(float(share.mean()))
    assert res["pearson"]["uniform"].null_mean == pytest.approx(0, abs=1e-12)
    assert res["iou"]["uniform"].null_mean == pytest.approx(float(table["iou"].mean(1).mean()))
    assert res["iou"]["uniform"].observed == pytest.approx(float(table["iou"][:, 0].mean()))
    assert res["iou"]["uniform"].n_permutations == 50


def test_placement_p_detects_co_location_and_follows_sample_ids():
    imp, att, roi, roa, labels = toy_maps(40, 8)
    together = compare_to_nulls(imp, imp, roi, roi, labels, n_permutations=199, nulls=("uniform",))
    assert together["iou"]["uniform"].p == pytest.approx(1 / 200) and together["iou"]["uniform"].excess.low > 0
    ids = torch.arange(40) + 1000
    order = torch.randperm(40, generator=torch.Generator().manual_seed(1))
    a = placement_comparison(iou_table(imp, att, roi, roa), ids, 99, seed=3)
    b = placement_comparison(iou_table(imp[order], att[order], roi[order], roa[order]), ids[order], 99, seed=3)
    assert a.p == pytest.approx(b.p) and a.z == pytest.approx(b.z)  # the draws follow the image, not its position
    c = placement_comparison(iou_table(imp, att, roi, roa), ids, 99, seed=4)
    assert c.z != pytest.approx(a.z)


def test_placement_shifts_are_each_images_own_draws_read_only_and_in_range():
    """Column i is a function of (seed, sample id i) alone: the same draws in any order, beside any other images,
    equal to the stream's own draw; shared arrays cannot be written."""
    ids = torch.tensor([7, 3, 12, 5])
    shifts = placement_shifts(ids, 300, 49, seed=2)
    assert shifts.shape == (300, 4) and shifts.min() >= 0 and shifts.max() < 49
    assert not shifts.flags.writeable
    order = [2, 0, 3, 1]
    np.testing.assert_array_equal(placement_shifts(ids[order], 300, 49, seed=2), shifts[:, order])
    np.testing.assert_array_equal(placement_shifts(ids[1:2], 300, 49, seed=2)[:, 0], shifts[:, 1])
    first = np.random.default_rng([PLACEMENT_STREAM, 2, 7]).integers(0, 49, size=300)
    np.testing.assert_array_equal(shifts[:, 0], first)
    assert not np.array_equal(placement_shifts(ids, 300, 49, seed=3), shifts)


def iou_table(imp, att, roi, roa):
    return placement_table(imp, att, roi, roa, average_ranks(imp.flatten(1)), average_ranks(att.flatten(1)))["iou"]


# -- compare_to_nulls ------------------------------------------------------------------------------

def toy_maps(n: int = 24, size: int = 8, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    importance = torch.rand(n, size, size, generator=gen)
    attack = torch.rand(n, size, size, generator=gen) + 0.5 * importance  # co-located
    roi = top_fraction_mask(importance, 0.25).mask
    roa = top_fraction_mask(attack, 0.25).mask
    labels = torch.arange(n) % 3
    return importance, attack, roi, roa, labels


def test_compare_to_nulls_every_statistic_and_null():
    importance, attack, roi, roa, labels = toy_maps()
    composition = foreground_share(roa, importance > 0.5)
    res = compare_to_nulls(importance, attack, roi, roa, labels, composition, n_permutations=200, strata=2)
    assert set(res) == {"iou", "dice", "energy_in_roi", "pointing_game", "spearman", "pearson"}
    observed = overlap_statistics(importance, attack, roi, roa)
    for stat, by_null in res.items():
        assert tuple(by_null) == NULLS
        for name, comp in by_null.items():
            assert comp.statistic == stat and comp.null == name
            d = comp.as_dict()
            json.dumps(d)  # JSON-ready
            assert set(d) >= {"statistic", "null", "n", "observed", "null_mean", "excess", "ratio", "z", "p"}
        assert by_null["any-class"].observed == pytest.approx(float(observed[stat].double().mean()), abs=1e-6)
    assert res["energy_in_roi"]["uniform"].null_mean == pytest.approx(0.25)
    assert res["pearson"]["any-class"].excess.low > 0 and res["pearson"]["same-class"].p < 0.05
    no_comp = compare_to_nulls(importance, attack, roi, roa, labels, statistics=["iou"], n_permutations=20)
    assert set(no_comp) == {"iou"} and "object-conditioned" not in no_comp["iou"]
    with pytest.raises(ConfigError):
        compare_to_nulls(importance, attack, roi, roa, labels, statistics=["bogus"])


def test_object_conditioned_groups_are_balanced_within_class():
    labels = torch.tensor([0] * 8 + [1] * 5)
    composition = torch.tensor([0.9, 0.1, 0.5, 0.3, 0.7, 0.2, 0.8, 0.4, 1.0, 0.0, 0.5, 0.2, 0.1])
    strata = composition_strata(composition, labels, 4)
    assert strata[:8].tolist() == [3, 0, 2, 1, 2, 0, 3, 1]
    assert torch.bincount(strata[:8]).tolist() == [2, 2, 2, 2]
    groups = null_groups("object-conditioned", labels, composition, 4)
    assert torch.equal(groups, labels * 4 + strata)
    assert torch.equal(null_groups("any-class", labels), torch.zeros(13, dtype=torch.long))
    assert torch.equal(null_groups("same-class", labels), labels)
    with pytest.raises(ConfigError):
        null_groups("object-conditioned", labels)
    composition[[0, 9]] = math.nan  # e.g. an empty RoA: no stratum, no partner
    strata = composition_strata(composition, labels, 4)
    assert strata[0] == -1 and strata[9] == -1 and torch.bincount(strata[1:8]).tolist() == [2, 2, 2, 1]
    groups = null_groups("object-conditioned", labels, composition, 4)
    assert (torch.bincount(groups[groups >= 0]) <= 2).all()
    assert (groups[[0, 9]] < 0).all() and groups[0] != groups[9]
    assert math.isnan(float(partner_null(torch.rand(13, 13), groups)[0]))
    with pytest.raises(ConfigError):
        null_groups("uniform", labels)


# -- multiple comparisons -----------------------------------------------------------------------

@settings(max_examples=30, deadline=None)
@given(p=st.lists(st.one_of(st.floats(0, 1), st.just(math.nan), st.sampled_from([0.01, 0.05, 1.0])),
                  min_size=1, max_size=15))
def test_holm_and_bh_equal_statsmodels(p):
    p = np.array(p)
    finite = np.isfinite(p)
    for ours, method in ((holm, "holm"), (benjamini_hochberg, "fdr_bh")):
        got = ours(p)
        assert np.array_equal(np.isnan(got), ~finite)
        if finite.any():
            with mock.patch("gc.collect", return_value=0):  # statsmodels' holm runs gc.collect(): 0.3 s a call here
                ref = multipletests(p[finite], method=method)[1]
            np.testing.assert_allclose(got[finite], ref, atol=1e-12, rtol=0)
            order = np.argsort(p[finite], kind="stable")
            assert np.all(np.diff(got[finite][order]) >= -1e-15)  # monotone
            assert np.all(got[finite] <= 1) and np.all(got[finite] >= p[finite] - 1e-15)


def test_corrections_by_hand():
    np.testing.assert_allclose(holm([0.01, 0.04, 0.03, math.nan]), [0.03, 0.06, 0.06, math.nan])
    np.testing.assert_allclose(benjamini_hochberg([0.01, 0.04, 0.03, math.nan]), [0.03, 0.04, 0.04, math.nan])
    with pytest.raises(ConfigError):
        holm([1.5])


# -- verdicts --------------------------------------------------------------------------------------

@pytest.mark.parametrize("effect,p,gates,expected", [
    (Estimate(0.05, 0.02, 0.08, 100), 0.001, {"faithful": True}, "supported"),
    (Estimate(-0.05, -0.08, -0.02, 100), 0.001, {}, "reversed"),
    (Estimate(0.001, -0.004, 0.006, 100), 0.5, {}, "equivalent to null"),
    (Estimate(0.02, -0.01, 0.05, 100), 0.2, {}, "not supported"),
    (Estimate(0.05, 0.02, 0.08, 100), 0.001, {"faithful": False}, "not interpretable"),
    (Estimate(0.05, 0.02, 0.08, 10), 0.001, {"faithful": True}, "insufficient data"),
    (Estimate(0.05, 0.02, 0.08, 100), 0.2, {}, "not supported"),  # CI > 0 but not significant after correction
    (Estimate(0.05, 0.02, 0.08, 100), math.nan, {}, "not supported"),
])
def test_verdict_rules(effect, p, gates, expected):
    assert verdict(effect, p, gates, sesoi=0.01) == expected


@pytest.mark.parametrize("effect,expected", [
    (Estimate(0.004, 0.001, 0.008, 100), "negligible"),     # significant, CI inside +-sesoi
    (Estimate(-0.004, -0.008, -0.001, 100), "negligible"),
    (Estimate(0.008, 0.002, 0.014, 100), "negligible"),     # CI straddles +sesoi, estimate below it
    (Estimate(0.010, 0.004, 0.016, 100), "supported"),      # estimate at the sesoi
    (Estimate(-0.012, -0.02, -0.004, 100), "reversed"),
    (Estimate(-0.009, -0.02, -0.001, 100), "negligible"),
])
def test_a_significant_effect_below_the_sesoi_is_negligible(effect, expected):
    assert verdict(effect, 0.001, {}, sesoi=0.01) == expected
    assert verdict(effect, 0.001, {}, sesoi=0.0) in ("supported", "reversed")  # sesoi 0: the old rule
    assert verdict(effect, 0.2, {}, sesoi=0.01) in ("equivalent to null", "not supported")


def test_sesoi_per_statistic_on_its_scale():
    assert sesoi_for("energy_in_roi", 0.276) == pytest.approx(0.05 * 0.276)  # ratio 1.05
    assert sesoi_for("iou", 0.1) == pytest.approx(0.005) and sesoi_for("dice", -0.2) == pytest.approx(0.01)
    assert sesoi_for("pearson", 0.0) == 0.05 and sesoi_for("pointing_game", 0.2) == 0.05
    assert sesoi_for("success share", 0.5) == 0.01 and sesoi_for("spearman", 0, scale=2) == 0.1
    assert sesoi_for("iou", math.nan) == 0.0
    with pytest.raises(ConfigError):
        sesoi_for("iou", 0.1, scale=-1)


def test_format_p_floors_tiny_p_values():
    assert format_p(1.8e-149) == "< 1e-10" and format_p(0.0) == "< 1e-10"
    assert format_p(1.1e-10) == "1.1e-10" and format_p(0.0312) == "0.031"
    assert format_p(math.nan) == "-" and format_p(None) == "-"
    comp = NullComparison("iou", "uniform", 100, 0.3, 0.2, Estimate(0.1, 0.08, 0.12, 100), 1.5, 30.0, 1e-149)
    assert "p < 1e-10" in describe(comp, "supported")


def test_same_conclusion_joins_only_the_verdicts_within_the_margin():
    for a in VERDICTS:
        for b in VERDICTS:
            expected = a == b or {a, b} == {"negligible", "equivalent to null"}
            assert same_conclusion(a, b) == same_conclusion(b, a) == expected, (a, b)


def test_every_verdict_word_has_a_sentence():
    comp = NullComparison("iou", "any-class", 1000, 0.107, 0.116, Estimate(-0.009, -0.011, -0.007, 1000),
                          0.107 / 0.116, -7.1, 1e-4, 10_000)
    text = describe(comp, "reversed", p_adjusted=0.002)
    assert text.startswith("iou: observed 0.107 is below the any-class null 0.116")
    assert "-0.009 [-0.011, -0.007]" in text and "z = -7.1" in text and "avoids the RoI" in text
    assert "p_adj = 0.002" in text
    close = NullComparison("dice", "uniform", 50, 0.20004, 0.2, Estimate(4e-5, -1e-3, 1e-3, 50), 1.0, 0.1, 0.9)
    assert "observed 0.20004 is above the uniform null 0.2 " in describe(close, "equivalent to null")
    for word in VERDICTS:
        assert describe(comp, word)
    with pytest.raises(ConfigError):
        describe(comp, "maybe")


# -- one-pixel RoA ---------------------------------------------------------------------------------

@settings(max_examples=20, deadline=None)
@given(n=st.integers(1, 8), seed=st.integers(0, 1000))
def test_pixel_in_roi_test_equals_enumeration(n, seed):
    rng = np.random.default_rng(seed)
    shares = rng.random(n)
    hits = rng.random(n) < 0.5
    pmf = np.zeros(n + 1)
    for outcome in itertools.product([0, 1], repeat=n):
        o = np.array(outcome)
        pmf[o.sum()] += np.prod(np.where(o == 1, shares, 1 - shares))
    np.testing.assert_allclose(poisson_binomial_pmf(shares), pmf, atol=1e-12)
    k = int(hits.sum())
    expected_p = min(1.0, pmf[pmf <= pmf[k] * (1 + 1e-7)].sum())
    res = pixel_in_roi_test(torch.tensor(hits), torch.tensor(shares))
    assert res["p"] == pytest.approx(expected_p, abs=1e-12)
    assert res["observed"] == k and res["expected"] == pytest.approx(shares.sum()) and res["n"] == n


@pytest.mark.parametrize("n,k,share", [(50, 3, 0.2), (50, 18, 0.2), (40, 10, 0.25), (30, 0, 0.1), (25, 25, 0.9)])
def test_pixel_in_roi_test_equals_binomtest_for_equal_shares(n, k, share):
    hits = torch.zeros(n, dtype=torch.bool)
    hits[:k] = True
    res = pixel_in_roi_test(hits, torch.full((n,), share, dtype=torch.float64))
    assert res["p"] == pytest.approx(stats.binomtest(k, n, share).pvalue, rel=1e-9)
    assert res["ratio"] == pytest.approx(k / (n * share))
    assert res["excess"].mean == pytest.approx(k / n - share)
    with pytest.raises(ShapeError):
        pixel_in_roi_test(hits.float(), torch.full((n,), share))


# -- resolution ---------------------------------------------------------------------------------------

def test_pool_to_scale():
    maps = torch.arange(2 * 4 * 6, dtype=torch.float32).view(2, 4, 6)
    pooled = pool_to_scale(maps, (2, 3))
    assert pooled.shape == (2, 2, 3)
    assert float(pooled[0, 0, 0]) == pytest.approx(float(maps[0, :2, :2].mean()))
    mask = torch.zeros(1, 4, 4, dtype=torch.bool)
    mask[0, 0, 0] = True
    assert float(pool_to_scale(mask, (2, 2))[0, 0, 0]) == 0.25
    with pytest.raises(ShapeError):
        pool_to_scale(maps[0], (2, 2))
    with pytest.raises(ConfigError):
        pool_to_scale(maps, (5, 3))


def test_compare_to_nulls_computes_only_the_nulls_asked_for() -> None:
    gen = torch.Generator().manual_seed(3)
    imp = torch.rand(12, 6, 6, generator=gen)
    att = torch.rand(12, 6, 6, generator=gen)
    from advspatial.regions import binarize

    args = (imp, att, binarize(imp).mask, binarize(att).mask, torch.arange(12) % 2)
    one = compare_to_nulls(*args, statistics=("energy_in_roi",), n_permutations=50, nulls=("same-class",))
    full = compare_to_nulls(*args, statistics=("energy_in_roi",), n_permutations=50)
    assert set(one["energy_in_roi"]) == {"same-class"}
    assert one["energy_in_roi"]["same-class"] == full["energy_in_roi"]["same-class"]
    with pytest.raises(ConfigError, match="null"):
        compare_to_nulls(*args, nulls=("sideways",))


@pytest.mark.parametrize("n", [30, 50, 200])
def test_share_difference_ci_without_differing_images_is_the_exact_bound(n):
    """Both models wrong (or right) on every image: not a zero-width CI but +-the Clopper-Pearson upper limit of
    0 differing images of n (SciPy's exact interval), so the floor is never read as equivalence."""
    from scipy.stats import binomtest

    from advspatial.statistics.estimates import share_difference_ci

    bound = binomtest(0, n).proportion_ci(confidence_level=0.95, method="exact").high
    est = share_difference_ci(np.zeros(n))
    assert (est.mean, est.n) == (0.0, n)
    assert est.low == pytest.approx(-bound, abs=1e-12) and est.high == pytest.approx(bound, abs=1e-12)
    assert bootstrap_mean_ci(np.zeros(n)).high == 0.0  # the degenerate interval it replaces
    assert verdict(est, 1.0, {}, sesoi=0.01) == "not supported"
    assert verdict(bootstrap_mean_ci(np.zeros(n)), 1.0, {}, sesoi=0.01) == "equivalent to null"


def test_share_difference_ci_with_a_differing_image_is_the_bootstrap():
    from advspatial.statistics.estimates import share_difference_ci

    values = np.zeros(40)
    values[3] = 1.0
    assert share_difference_ci(values, seed=2) == bootstrap_mean_ci(values, seed=2)


def test_paired_accuracy_at_the_floor_is_not_equivalent():
    from advspatial.statistics.accuracy import paired_accuracy

    result = paired_accuracy(np.zeros(50), np.zeros(50))
    assert result.delta.low < -0.07 and result.delta.high > 0.07


def test_comparisons_under_the_same_groups_share_one_draw_of_permutations_and_give_the_same_numbers():
    from advspatial.statistics import nulls

    g = torch.Generator().manual_seed(5)
    n = 24
    importance, attack = torch.rand(n, 6, 6, generator=g), torch.rand(n, 6, 6, generator=g)
    roi, roa = importance > 0.7, attack > 0.7
    labels = torch.arange(n) % 3
    nulls._kept_permutations.clear()
    first = compare_to_nulls(importance, attack, roi, roa, labels, n_permutations=300, seed=4, nulls=("same-class",))
    assert len(nulls._kept_permutations) == 1
    chunks = next(iter(nulls._kept_permutations.values()))
    assert sum(c.shape[0] for c in chunks) == 300 and not chunks[0].flags.writeable
    again = compare_to_nulls(importance, attack, roi, roa, labels, n_permutations=300, seed=4, nulls=("same-class",))
    nulls._kept_permutations.clear()
    fresh = compare_to_nulls(importance, attack, roi, roa, labels, n_permutations=300, seed=4, nulls=("same-class",))
    for s in first:
        assert first[s]["same-class"].p == again[s]["same-class"].p == fresh[s]["same-class"].p
        assert first[s]["same-class"].null_std == fresh[s]["same-class"].null_std
    for seed in range(nulls.PERMUTATION_SETS + 1):
        compare_to_nulls(importance, attack, roi, roa, labels, n_permutations=50, seed=seed, nulls=("same-class",))
    assert len(nulls._kept_permutations) == nulls.PERMUTATION_SETS  # bounded


def test_a_null_of_zero_up_to_rounding_has_no_ratio() -> None:
    """A null whose mean is 0 in exact arithmetic (each row of the placement table centred on its own mean) gives
    NaN, not the quotient of rounding noise; a null away from 0 gives observed / null."""
    gen = torch.Generator().manual_seed(0)
    table = torch.rand(40, 25, generator=gen, dtype=torch.float64)
    table -= table.mean(1, keepdim=True)
    res = placement_comparison(table, torch.arange(40), n_permutations=200)
    assert abs(res.null_mean) < 1e-15 and math.isnan(res.ratio)
    shifted = placement_comparison(table + 0.5, torch.arange(40), n_permutations=200)
    assert shifted.ratio == pytest.approx(shifted.observed / shifted.null_mean)
    from advspatial.statistics.inference import ratio_to_null

    assert math.isnan(ratio_to_null(0.15, -3e-19)) and math.isnan(ratio_to_null(1.0, 0.0))
    assert ratio_to_null(2e-6, 1e-6) == pytest.approx(2.0)  # small, but far above rounding
