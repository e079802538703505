"""Model-free reference maps (regions/references.py): known answers and cross-checks against SciPy."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from advspatial.errors import ShapeError
from advspatial.regions.references import (
    REFERENCE_MAPS, LayoutSums, centre_prior, edge_map, intensity_map, reference_maps, top_count_mask, top_count_masks,
)


def test_edge_map_equals_scipy_sobel_magnitude():
    ndimage = pytest.importorskip("scipy.ndimage")
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(3, 3, 13, 11, generator=gen, dtype=torch.float64)
    ours = edge_map(x).numpy()
    for i in range(3):
        grey = x[i].mean(0).numpy()
        theirs = np.hypot(ndimage.sobel(grey, axis=0, mode="reflect"), ndimage.sobel(grey, axis=1, mode="reflect"))
        np.testing.assert_allclose(ours[i], theirs, rtol=0, atol=1e-12)


def test_intensity_is_the_brightest_channel_and_the_centre_prior_peaks_in_the_middle():
    x = torch.zeros(1, 3, 4, 4)
    x[0, 2, 1, 2] = 0.9
    x[0, 0, 1, 2] = 0.3
    assert float(intensity_map(x)[0, 1, 2]) == pytest.approx(0.9)
    prior = centre_prior(2, 9, 7)
    assert prior.shape == (2, 9, 7)
    assert tuple(int(v) for v in divmod(int(prior[0].argmax()), 7)) == (4, 3)
    torch.testing.assert_close(prior[0], prior[0].flip(0).flip(1))


def test_layout_maps_leave_the_image_itself_out():
    """The class layout of image i is the mean unit-sum map of the *other* images of its class."""
    gen = torch.Generator().manual_seed(1)
    maps = torch.rand(6, 5, 5, generator=gen, dtype=torch.float64)
    labels = torch.tensor([0, 0, 1, 1, 1, 2])
    sums = LayoutSums()
    sums.add(maps[:4], labels[:4])          # streamed in two batches
    sums.add(maps[4:], labels[4:])
    class_layout, dataset_layout = sums.leave_one_out(maps, labels)
    unit = maps / maps.sum((1, 2), keepdim=True)
    torch.testing.assert_close(class_layout[0], unit[1])
    torch.testing.assert_close(class_layout[2], (unit[3] + unit[4]) / 2)
    torch.testing.assert_close(dataset_layout[5], unit[:5].mean(0))
    assert bool(class_layout[5].isnan().all())                # alone in its class: no class layout
    # the image's own map never enters: changing it changes nothing of its references
    other = maps.clone()
    other[2] = 0.0
    again = LayoutSums()
    again.add(other, labels)
    c2, d2 = again.leave_one_out(other, labels)
    torch.testing.assert_close(c2[2], class_layout[2])
    torch.testing.assert_close(d2[2], dataset_layout[2])
    with pytest.raises(ShapeError):
        LayoutSums().leave_one_out(maps, labels)


def test_reference_maps_names_and_errors():
    x = torch.rand(2, 1, 8, 8)
    sums = LayoutSums()
    sums.add(torch.rand(2, 8, 8), torch.tensor([0, 0]))
    c, d = sums.leave_one_out(torch.rand(2, 8, 8), torch.tensor([0, 0]))
    refs = reference_maps(x, {"class-layout": c, "dataset-layout": d})
    assert list(refs) == list(REFERENCE_MAPS)
    assert all(v.shape == (2, 8, 8) for v in refs.values())
    with pytest.raises(ShapeError, match="layout"):
        reference_maps(x)
    with pytest.raises(Exception, match="valid"):
        reference_maps(x, names=("sky",))


@settings(max_examples=30, deadline=None)
@given(st.integers(1, 5), st.integers(2, 9), st.integers(2, 9), st.integers(0, 2**31 - 1))
def test_top_count_mask_takes_exactly_the_count_the_largest_first_and_any_batch(n, h, w, seed):
    gen = torch.Generator().manual_seed(seed)
    maps = (torch.rand(n, h, w, generator=gen) * 4).floor()          # many ties, zeros included
    counts = torch.randint(0, h * w + 1, (n,), generator=gen)
    ids = torch.randperm(100, generator=gen)[:n]
    mask = top_count_mask(maps, counts, seed=3, sample_ids=ids)
    assert torch.equal(mask.flatten(1).sum(1), counts)
    for i in range(n):
        kept, dropped = maps[i][mask[i]], maps[i][~mask[i]]
        if kept.numel() and dropped.numel():
            assert float(kept.min()) >= float(dropped.max())
        alone = top_count_mask(maps[i:i + 1], counts[i:i + 1], seed=3, sample_ids=ids[i:i + 1])
        assert torch.equal(alone[0], mask[i])


@settings(max_examples=30, deadline=None)
@given(st.integers(1, 5), st.integers(2, 9), st.integers(2, 9), st.integers(0, 2**31 - 1))
def test_masks_sharing_one_tie_break_order_are_each_maps_own_region(n, h, w, seed):
    gen = torch.Generator().manual_seed(seed)
    maps = {"ties": (torch.rand(n, h, w, generator=gen) * 3).floor(), "flat": torch.zeros(n, h, w),
            "smooth": torch.rand(n, h, w, generator=gen, dtype=torch.float64)}
    maps["ties"][0, 0, 0] = float("nan")  # the first image's region of this map is empty
    counts = torch.randint(0, h * w + 1, (n,), generator=gen)
    ids = torch.randperm(100, generator=gen)[:n]
    together = top_count_masks(maps, counts, seed=5, sample_ids=ids)
    assert list(together) == list(maps)
    for name, one in maps.items():
        assert torch.equal(together[name], top_count_masks({name: one}, counts, seed=5, sample_ids=ids)[name])
        sizes = together[name].flatten(1).sum(1)
        assert torch.equal(sizes[1:], counts[1:]) and int(sizes[0]) == (0 if name == "ties" else int(counts[0]))
    flat = together["flat"]  # a flat map is cut by the tie-break order alone: nested regions as the count grows
    fewer = top_count_masks({"flat": maps["flat"]}, (counts - 1).clamp_min(0), seed=5, sample_ids=ids)["flat"]
    assert bool((fewer <= flat).all())


def test_masks_of_one_call_must_share_their_shape():
    with pytest.raises(ShapeError, match=r"map 'b' of the same images must have shape \(2, 4, 4\)"):
        top_count_masks({"a": torch.rand(2, 4, 4), "b": torch.rand(2, 4, 5)}, torch.tensor([3, 3]))
    with pytest.raises(ShapeError, match=r"\(N,H,W\)"):
        top_count_masks({"a": torch.rand(2, 16)}, torch.tensor([3, 3]))


def _top_count_by_sorting(flat: torch.Tensor, by_noise: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
    """The definition: sort each row's values (in the tie-break order) descending, stably; take the first count."""
    values = flat.gather(1, by_noise).nan_to_num(nan=0.0)
    taken_sorted = torch.arange(flat.shape[1])[None, :] < counts[:, None]
    taken = torch.zeros_like(taken_sorted).scatter_(1, values.argsort(dim=1, descending=True, stable=True),
                                                    taken_sorted)
    return torch.zeros_like(taken).scatter_(1, by_noise, taken) & ~flat.isnan().any(1, keepdim=True)


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 6), st.integers(1, 40), st.integers(0, 2**31 - 1))
def test_top_count_without_a_sort_takes_what_a_stable_descending_sort_takes(n, pixels, seed):
    from advspatial.regions.references import _top_count

    gen = torch.Generator().manual_seed(seed)
    flat = (torch.rand(n, pixels, generator=gen) * 4).floor() - 1  # ties, zeros, negatives
    specials = torch.tensor([-0.0, 0.0, float("inf"), -float("inf"), float("nan")])
    chosen = torch.rand(n, pixels, generator=gen) < 0.2
    flat[chosen] = specials[torch.randint(0, 5, (int(chosen.sum()),), generator=gen)]
    by_noise = torch.rand(n, pixels, generator=gen).argsort(dim=1)
    counts = torch.randint(0, pixels + 1, (n,), generator=gen)
    assert torch.equal(_top_count(flat, by_noise, counts), _top_count_by_sorting(flat, by_noise, counts))


def test_top_count_mask_of_a_nan_map_is_empty():
    maps = torch.rand(2, 4, 4)
    maps[1] = float("nan")
    mask = top_count_mask(maps, torch.tensor([5, 5]))
    assert int(mask[0].sum()) == 5 and int(mask[1].sum()) == 0
