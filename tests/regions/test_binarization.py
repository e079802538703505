"""Binarization of maps into regions (:mod:`advspatial.regions.binarization`): the top fraction with its ties,
the threshold, Otsu and dilation against scikit-image and SciPy."""

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
from advspatial.regions import binarize, dilate, otsu_threshold, top_fraction_mask


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
