"""Regions: binarization (ties, Otsu, dilation), partition, statistics with known answers, permutation test."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.ndimage
import scipy.stats
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from advspatial.errors import ConfigError, ShapeError
from advspatial.regions import (
    STATISTICS, MapAccumulator, binarize, class_mean_maps, dilate, otsu_threshold, overlap_statistics,
    pairwise_statistics, segregate, top_fraction_mask,
)
from advspatial.regions.overlap import average_ranks
from advspatial.statistics.inference import compare_to_nulls


def _square(n: int, size: int, top: int, left: int, side: int) -> torch.Tensor:
    mask = torch.zeros(n, size, size, dtype=torch.bool)
    mask[:, top:top + side, left:left + side] = True
    return mask


# -- binarize ----------------------------------------------------------------------

def test_top_fraction_distinct_values_keeps_exactly_the_top() -> None:
    maps = torch.arange(1, 101, dtype=torch.float32).view(1, 10, 10)
    out = binarize(maps, fraction=0.2)
    assert int(out.mask.sum()) == 20 and bool(out.mask.view(-1)[80:].all())
    assert float(out.threshold) == 81.0 and int(out.tied_at_cut) == 0


def test_top_fraction_only_positive_pixels_are_eligible() -> None:
    maps = torch.zeros(2, 10, 10)
    maps[0, 0, :5] = 1.0  # 5 positive pixels < k = 20
    out = binarize(maps, fraction=0.2)
    assert out.mask[0].sum() == 5 and bool(out.mask[0, 0, :5].all())
    assert int(out.mask[1].sum()) == 0 and math.isnan(float(out.threshold[1]))
    assert out.tied_at_cut.tolist() == [0, 0] and float(out.threshold[0]) == 1.0


def test_top_fraction_ties_are_random_seeded_and_reported() -> None:
    maps = torch.zeros(1, 10, 10)
    maps[0, :5] = 1.0  # 50 tied positive pixels, k = 20
    maps[0, 9, 9] = 2.0
    a = binarize(maps, fraction=0.2, seed=0)
    b = binarize(maps, fraction=0.2, seed=0)
    c = binarize(maps, fraction=0.2, seed=1)
    assert int(a.mask.sum()) == 20 and bool(a.mask[0, 9, 9]) and int(a.tied_at_cut) == 50
    assert torch.equal(a.mask, b.mask) and not torch.equal(a.mask, c.mask)
    first_19 = torch.zeros(100, dtype=torch.bool)
    first_19[:19] = True
    assert not torch.equal(a.mask.view(-1) & (maps.view(-1) == 1), first_19)  # not pixel order


def test_top_fraction_same_region_in_any_batch() -> None:
    gen = torch.Generator().manual_seed(0)
    maps = (torch.rand(6, 8, 8, generator=gen) * 3).floor()  # many ties
    whole = binarize(maps, fraction=0.3, seed=5)
    ids = torch.arange(6)
    for i in range(6):
        alone = top_fraction_mask(maps[i:i + 1], 0.3, seed=5, sample_ids=ids[i:i + 1])
        assert torch.equal(alone.mask[0], whole.mask[i])


@settings(max_examples=20, deadline=None)
@given(st.integers(0, 2**31 - 1), st.floats(0.01, 1.0), st.integers(1, 4))
def test_top_fraction_properties(seed: int, fraction: float, levels: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    maps = (torch.rand(3, 7, 9, generator=gen) * levels).floor()
    out = top_fraction_mask(maps, fraction, seed=seed)
    k = max(1, math.floor(fraction * 63 + 0.5))
    positive = (maps > 0).flatten(1).sum(1)
    assert out.mask.flatten(1).sum(1).tolist() == torch.minimum(positive, torch.tensor(k)).tolist()
    assert bool((maps[out.mask] > 0).all())
    for i in range(3):  # every kept pixel is >= every dropped positive pixel
        kept, dropped = maps[i][out.mask[i]], maps[i][~out.mask[i] & (maps[i] > 0)]
        if len(kept) and len(dropped):
            assert float(kept.min()) >= float(dropped.max())


def test_threshold_and_errors() -> None:
    maps = torch.tensor([[[0.1, 0.5], [0.6, 0.9]]])
    assert binarize(maps, "threshold", threshold=0.5).mask.tolist() == [[[False, False], [True, True]]]
    with pytest.raises(ConfigError, match="needs threshold"):
        binarize(maps, "threshold")
    with pytest.raises(ConfigError, match="valid: otsu, threshold, top_fraction"):
        binarize(maps, "kmeans")
    with pytest.raises(ConfigError):
        binarize(maps, fraction=0.0)
    with pytest.raises(ShapeError):
        binarize(maps[0])
    with pytest.raises(ConfigError, match="NaN"):
        binarize(torch.full((1, 2, 2), math.nan))


def test_otsu_matches_skimage() -> None:
    skf = pytest.importorskip("skimage.filters")
    gen = torch.Generator().manual_seed(0)
    bimodal = torch.cat([torch.randn(4, 300, generator=gen) * 0.1 + 0.2,
                         torch.randn(4, 100, generator=gen) * 0.1 + 0.8], 1)
    maps = torch.cat([bimodal, torch.rand(3, 400, generator=gen) ** 3, torch.rand(1, 400, generator=gen) * 1e-3])
    maps = maps.view(8, 20, 20)
    ours = otsu_threshold(maps).double()
    ref = torch.tensor([skf.threshold_otsu(m.numpy().astype(np.float64)) for m in maps])
    width = (maps.flatten(1).amax(1) - maps.flatten(1).amin(1)).double() / 256
    assert bool(((ours - ref).abs() <= width * 1.01).all()), (ours, ref)  # at most one bin apart
    assert (ours - ref).abs().max() < 1e-5  # and in practice the same
    mask = binarize(maps, "otsu").mask
    assert torch.equal(mask, maps > ref.float().view(-1, 1, 1))
    assert float(otsu_threshold(torch.full((1, 3, 3), 0.4))) == pytest.approx(0.4)


@settings(max_examples=15, deadline=None)
@given(st.integers(0, 2**31 - 1), st.integers(0, 3))
def test_dilation_matches_scipy(seed: int, k: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    mask = torch.rand(2, 11, 13, generator=gen) > 0.93
    ours = dilate(mask, k)
    for i in range(2):
        ref = scipy.ndimage.binary_dilation(mask[i].numpy(), structure=np.ones((3, 3)), iterations=k) if k else mask[i]
        assert np.array_equal(ours[i].numpy(), np.asarray(ref))
    grown = binarize(torch.rand(2, 11, 13, generator=gen), fraction=0.05, dilation=1, seed=seed)
    assert int(grown.mask.sum()) > 2 * 7


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


# -- mean maps ------------------------------------------------------------------------------

def dense_class_sums(batches: list[tuple[torch.Tensor, torch.Tensor]], num_classes: int) -> torch.Tensor:
    """The definition: a dense (K,H,W) float64 table, each batch's maps added in image order."""
    table = torch.zeros(num_classes, *batches[0][0].shape[1:], dtype=torch.float64)
    for maps, labels in batches:
        table.index_add_(0, labels, maps.double())
    return table


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 2**31 - 1), st.lists(st.integers(1, 7), min_size=1, max_size=4))
def test_the_sparse_accumulator_equals_the_dense_table_to_the_bit(seed: int, sizes: list[int]) -> None:
    """Sums kept for the classes seen only: the same means as a dense table, whether the images come as updates of
    one accumulator or as batch accumulators merged (the spatial prior's parts)."""
    gen = torch.Generator().manual_seed(seed)
    k = 50
    batches = [(torch.randn(n, 3, 4, generator=gen), torch.randint(0, 6, (n,), generator=gen) * 7) for n in sizes]
    table = dense_class_sums(batches, k)
    counts = torch.bincount(torch.cat([b[1] for b in batches]), minlength=k)
    expected = torch.where(counts.view(-1, 1, 1) > 0, table / counts.double().clamp_min(1).view(-1, 1, 1),
                           torch.full_like(table, math.nan)).float()
    streamed, merged = MapAccumulator(k, (3, 4)), MapAccumulator(k, (3, 4))
    for maps, labels in batches:
        streamed.update(maps, labels)
        part = MapAccumulator(k, (3, 4))
        part.update(maps, labels)
        merged.merge(MapAccumulator.from_dict(part.as_dict()))   # as a stage file holds it
    for acc in (streamed, merged):
        assert torch.equal(acc.means().isnan(), expected.isnan())
        assert torch.equal(acc.means().nan_to_num(), expected.nan_to_num())
        assert torch.equal(acc.counts, counts)
        assert set(acc.class_sums) == set(torch.nonzero(counts).flatten().tolist())   # nothing for unseen classes
    # the prior's parts summed the dense way (0 + part, then + part ...) give the same table too
    total = torch.zeros_like(table)
    for maps, labels in batches:
        total += dense_class_sums([(maps, labels)], k)
    assert all(torch.equal(merged.class_sums[c], total[c]) for c in merged.class_sums)


def test_an_accumulator_of_many_classes_holds_the_seen_ones_only() -> None:
    acc = MapAccumulator(1000, (224, 224))
    acc.update(torch.rand(16, 224, 224), torch.arange(16) * 60)
    saved = acc.as_dict()
    assert saved["sums"].shape == (16, 224, 224) and len(acc.class_sums) == 16    # not (1000, 224, 224)
    assert torch.equal(MapAccumulator.from_dict(saved).means().nan_to_num(), acc.means().nan_to_num())
    with pytest.raises(ShapeError, match="merge"):
        acc.merge(MapAccumulator(10, (224, 224)))


def test_class_mean_maps_and_streaming() -> None:
    maps = torch.arange(4 * 2 * 2, dtype=torch.float32).view(4, 2, 2)
    labels = torch.tensor([0, 2, 0, 2])
    means, counts = class_mean_maps(maps, labels, num_classes=3)
    torch.testing.assert_close(means[0], (maps[0] + maps[2]) / 2)
    assert bool(means[1].isnan().all()) and counts.tolist() == [2, 0, 2]
    acc = MapAccumulator(3, (2, 2))
    acc.update(maps[:1], labels[:1])
    acc.update(maps[1:], labels[1:])
    torch.testing.assert_close(acc.means()[2], means[2])
    torch.testing.assert_close(acc.dataset_mean(), maps.mean(0))
    with pytest.raises(ConfigError):
        acc.update(maps, torch.tensor([0, 1, 2, 3]))
