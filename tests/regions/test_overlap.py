"""Overlap of regions (:mod:`advspatial.regions.overlap`): the partition, statistics with known answers, the pair
matrices, and the statistics engine's permutation test on them."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.ndimage
import scipy.stats
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from advspatial.errors import ShapeError
from advspatial.regions import STATISTICS, binarize, overlap_statistics, pairwise_statistics, segregate
from advspatial.regions.overlap import average_ranks, overlap_counts
from advspatial.statistics.inference import compare_to_nulls


def _square(n: int, size: int, top: int, left: int, side: int) -> torch.Tensor:
    mask = torch.zeros(n, size, size, dtype=torch.bool)
    mask[:, top:top + side, left:left + side] = True
    return mask


# -- segregate -----------------------------------------------------------------------

@settings(max_examples=25, deadline=None)
@given(st.integers(0, 2**31 - 1), st.floats(0.0, 1.0), st.floats(0.0, 1.0))
def test_segregate_is_a_partition(seed: int, p_roi: float, p_roa: float) -> None:
    gen = torch.Generator().manual_seed(seed)
    roi = torch.rand(3, 6, 5, generator=gen) < p_roi
    roa = torch.rand(3, 6, 5, generator=gen) < p_roa
    parts = segregate(roi, roa)
    stack = torch.stack([parts.both, parts.roi_only, parts.roa_only, parts.neither]).long()
    assert bool((stack.sum(0) == 1).all())  # disjoint and covering
    assert torch.equal(parts.both | parts.roi_only, roi) and torch.equal(parts.both | parts.roa_only, roa)
    codes = parts.codes()
    assert torch.equal(codes == 3, parts.both) and torch.equal(codes == 0, parts.neither)
    assert torch.allclose(sum(parts.fractions().values()), torch.ones(3))


def test_segregate_rejects_bad_input() -> None:
    with pytest.raises(ShapeError):
        segregate(torch.zeros(1, 2, 2, dtype=torch.bool), torch.zeros(1, 2, 3, dtype=torch.bool))
    with pytest.raises(ShapeError, match="bool"):
        segregate(torch.zeros(1, 2, 2), torch.zeros(1, 2, 2, dtype=torch.bool))


# -- statistics: known answers ------------------------------------------------------------

def test_attack_all_inside_roi() -> None:
    roi = _square(1, 10, 2, 2, 4)  # 16 pixels
    attack = torch.zeros(1, 10, 10)
    attack[0, 3:5, 3:5] = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
    roa = attack > 0
    stats = overlap_statistics(roi.float(), attack, roi, roa)
    assert float(stats["energy_in_roi"]) == 1.0 and float(stats["pointing_game"]) == 1.0
    assert float(stats["iou"]) == pytest.approx(4 / 16) and float(stats["dice"]) == pytest.approx(8 / 20)


def test_attack_none_inside_roi() -> None:
    roi = _square(1, 10, 0, 0, 3)
    attack = _square(1, 10, 6, 6, 3).float()
    stats = overlap_statistics(roi.float(), attack, roi, attack > 0)
    for name in ("energy_in_roi", "pointing_game", "iou", "dice"):
        assert float(stats[name]) == 0.0


def test_attack_half_inside_roi() -> None:
    roi = torch.zeros(1, 4, 4, dtype=torch.bool)
    roi[0, :, :2] = True
    attack = torch.ones(1, 4, 4)  # flat: every pixel is a maximum
    stats = overlap_statistics(roi.float(), attack, roi, attack > 0)
    assert float(stats["energy_in_roi"]) == 0.5
    assert float(stats["pointing_game"]) == 0.5  # fraction of tied maxima inside RoI
    assert float(stats["iou"]) == 0.5 and float(stats["dice"]) == pytest.approx(2 / 3)
    assert math.isnan(float(stats["pearson"])) and math.isnan(float(stats["spearman"]))  # constant attack map


def test_shifted_square_iou() -> None:
    roi = _square(1, 12, 2, 2, 6)  # 36 pixels
    roa = _square(1, 12, 4, 5, 6)  # shifted by (2, 3): overlap 4 x 3 = 12
    stats = overlap_statistics(roi.float(), roa.float(), roi, roa)
    assert float(stats["iou"]) == pytest.approx(12 / 60)
    assert float(stats["dice"]) == pytest.approx(24 / 72)
    assert float(stats["energy_in_roi"]) == pytest.approx(12 / 36)


def test_undefined_statistics_are_nan() -> None:
    empty = torch.zeros(1, 3, 3, dtype=torch.bool)
    stats = overlap_statistics(torch.zeros(1, 3, 3), torch.zeros(1, 3, 3), empty, empty)
    assert all(math.isnan(float(v)) for v in stats.values())
    assert set(stats) == set(STATISTICS)


def test_correlations_match_scipy() -> None:
    gen = torch.Generator().manual_seed(0)
    a = (torch.rand(5, 6, 7, generator=gen) * 4).floor()  # heavy ties
    b = a * 0.5 + (torch.rand(5, 6, 7, generator=gen) * 3).floor()
    a[4] = torch.rand(6, 7, generator=gen)
    stats = overlap_statistics(a, b, a > 1, b > 1)
    for i in range(5):
        sp = scipy.stats.spearmanr(a[i].flatten().numpy(), b[i].flatten().numpy())[0]
        pe = scipy.stats.pearsonr(a[i].flatten().double().numpy(), b[i].flatten().double().numpy())[0]
        assert float(stats["spearman"][i]) == pytest.approx(sp, abs=1e-6)
        assert float(stats["pearson"][i]) == pytest.approx(pe, abs=1e-6)
    ranks = average_ranks(a.flatten(1))
    ref = np.stack([scipy.stats.rankdata(r.numpy()) for r in a.flatten(1)])
    np.testing.assert_allclose(ranks.numpy(), ref)


def test_importance_ranks_given_give_the_same_statistics_and_a_wrong_shape_is_one_line() -> None:
    gen = torch.Generator().manual_seed(3)
    imp, att = (torch.rand(4, 5, 6, generator=gen) * 3).floor(), torch.rand(4, 5, 6, generator=gen)
    roi, roa = binarize(imp).mask, binarize(att).mask
    given_ranks = overlap_statistics(imp, att, roi, roa, importance_rank=average_ranks(imp.flatten(1)))
    for name, value in overlap_statistics(imp, att, roi, roa).items():
        assert torch.equal(given_ranks[name], value), name
    with pytest.raises(ShapeError, match=r"importance_rank must have shape \(4, 30\), got \(4, 29\)"):
        overlap_statistics(imp, att, roi, roa, importance_rank=torch.zeros(4, 29))


# -- pair matrices and the engine on real region statistics ---------------------------------

def _blobs(n: int, size: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """(N,H,W) maps with one Gaussian blob at a random position per image, and the blob centres."""
    centres = torch.randint(2, size - 2, (n, 2), generator=gen)
    yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    d2 = (yy[None] - centres[:, 0, None, None]) ** 2 + (xx[None] - centres[:, 1, None, None]) ** 2
    return torch.exp(-d2.float() / 4.0), centres


def test_pair_matrices_hold_every_statistic_of_every_pairing() -> None:
    """Entry [j, i] is the statistic of (RoI of image j, RoA of image i); the diagonal is the observed one."""
    gen = torch.Generator().manual_seed(5)
    imp, _ = _blobs(7, 10, gen)
    att, _ = _blobs(7, 10, gen)
    roi, roa = binarize(imp).mask, binarize(att).mask
    pairs = pairwise_statistics(imp, att, roi, roa, average_ranks(imp.flatten(1)), average_ranks(att.flatten(1)))
    for j in range(7):
        moved = overlap_statistics(imp[[j] * 7], att, roi[[j] * 7], roa)
        for name in STATISTICS:
            torch.testing.assert_close(pairs[name][j], moved[name], atol=1e-6, rtol=1e-6, equal_nan=True)


@pytest.mark.parametrize("precision", ["highest", "high"])
def test_overlap_counts_are_the_float64_products_digit_for_digit(precision: str) -> None:
    gen = torch.Generator().manual_seed(9)
    a = torch.rand(37, 3000, generator=gen) < 0.6
    b = torch.rand(29, 3000, generator=gen) < torch.linspace(0, 1, 29)[:, None]  # empty to full rows
    before = torch.get_float32_matmul_precision()
    try:
        torch.set_float32_matmul_precision(precision)  # below "highest" the counts are made in float64
        counts = overlap_counts(a, b)
    finally:
        torch.set_float32_matmul_precision(before)
    assert counts.dtype == torch.float64
    assert torch.equal(counts, a.double() @ b.double().T)
    assert torch.equal(counts, (a[:, None, :] & b[None, :, :]).sum(2).double())


def test_engine_finds_colocated_maps() -> None:
    gen = torch.Generator().manual_seed(1)
    imp, _ = _blobs(30, 12, gen)
    att = imp + 0.05 * torch.rand(imp.shape, generator=gen)
    roi, roa = binarize(imp).mask, binarize(att).mask
    res = compare_to_nulls(imp, att, roi, roa, torch.arange(30) % 3, n_permutations=999, seed=0)
    assert set(res) == set(STATISTICS)
    for name, by_null in res.items():
        same = by_null["same-class"]
        assert same.p == pytest.approx(0.001), name
        assert same.excess.low > 0 and same.z > 3
    assert res["energy_in_roi"]["same-class"].observed > 0.5


def test_engine_p_values_are_calibrated_for_independent_maps() -> None:
    """Independent RoI and RoA: the two-sided p of the same-class null is roughly uniform."""
    gen = torch.Generator().manual_seed(2)
    p_values = []
    for rep in range(40):
        imp, _ = _blobs(16, 10, gen)
        att, _ = _blobs(16, 10, gen)
        res = compare_to_nulls(imp, att, binarize(imp).mask, binarize(att).mask, torch.arange(16) % 2,
                               statistics=("energy_in_roi",), n_permutations=199, seed=rep)
        p_values.append(res["energy_in_roi"]["same-class"].p)
    p = np.array(p_values)
    assert 0.3 < p.mean() < 0.7
    assert (p <= 0.05).mean() <= 0.15
    assert scipy.stats.kstest(p, "uniform").pvalue > 0.01
