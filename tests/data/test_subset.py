"""subset_indices / select: first, random and stratified draws (properties and known answers)."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from advspatial.data.base import ImageDataset
from advspatial.data.subset import SUBSET_MODES, class_quotas, select, subset_indices
from advspatial.errors import ConfigError

labels_strategy = st.lists(st.integers(0, 6), min_size=1, max_size=80).map(lambda v: torch.tensor(v, dtype=torch.int64))


@settings(max_examples=60, deadline=None)
@given(labels=labels_strategy, n=st.integers(1, 100), mode=st.sampled_from(SUBSET_MODES), seed=st.integers(0, 2**31))
def test_indices_are_sorted_unique_in_range_and_repeatable(labels: torch.Tensor, n: int, mode: str, seed: int) -> None:
    idx = subset_indices(labels, n, mode, seed)
    assert idx.dtype == torch.int64 and idx.shape == (min(n, len(labels)),)
    assert idx.unique().numel() == len(idx)
    assert torch.equal(idx, idx.sort().values)
    assert len(idx) == 0 or (0 <= int(idx.min()) and int(idx.max()) < len(labels))
    assert torch.equal(idx, subset_indices(labels, n, mode, seed))
    if mode == "first":
        assert torch.equal(idx, torch.arange(min(n, len(labels))))


@settings(max_examples=80, deadline=None)
@given(labels=labels_strategy, n=st.integers(1, 100), seed=st.integers(0, 2**31))
def test_stratified_shares_are_as_equal_as_possible(labels: torch.Tensor, n: int, seed: int) -> None:
    idx = subset_indices(labels, n, "stratified", seed)
    classes, available = torch.unique(labels, return_counts=True)
    taken = torch.stack([(labels[idx] == c).sum() for c in classes])
    not_exhausted = taken < available
    if not_exhausted.any():
        open_counts = taken[not_exhausted]
        assert int(open_counts.max() - open_counts.min()) <= 1
        # an exhausted class gave all it had, at most one more than any class with images left
        assert int(taken.max()) <= int(open_counts.min()) + 1


def test_stratified_known_answers() -> None:
    labels = torch.tensor([0] * 2 + [1] * 10 + [2] * 10)
    counts = lambda idx: torch.bincount(labels[idx], minlength=3).tolist()  # noqa: E731
    assert counts(subset_indices(labels, 12, "stratified", 0)) == [2, 5, 5]  # class 0 gives its remainder away
    assert counts(subset_indices(labels, 6, "stratified", 0)) == [2, 2, 2]
    assert counts(subset_indices(labels, 99, "stratified", 0)) == [2, 10, 10]
    plus_one = {tuple(counts(subset_indices(labels, 7, "stratified", seed))) for seed in range(30)}
    assert plus_one == {(2, 3, 2), (2, 2, 3)}  # the seed decides which class gets the extra image
    draws = {tuple(subset_indices(labels, 6, "stratified", seed).tolist()) for seed in range(10)}
    assert len(draws) > 1  # images within a class are drawn by the seed, not taken first-come


def test_class_quotas_sum_and_caps() -> None:
    gen = torch.Generator().manual_seed(0)
    quotas = class_quotas(torch.tensor([1, 50, 3, 50]), 20, gen)
    assert quotas.tolist() == [1, 8, 3, 8]
    quotas = class_quotas(torch.tensor([4, 4, 4]), 10, gen)
    assert sorted(quotas.tolist()) == [3, 3, 4] and int(quotas.sum()) == 10


def test_random_depends_on_the_seed_and_covers_all_when_n_is_large() -> None:
    labels = torch.zeros(50, dtype=torch.int64)
    a, b = subset_indices(labels, 10, "random", 1), subset_indices(labels, 10, "random", 2)
    assert not torch.equal(a, b)
    assert torch.equal(subset_indices(labels, 80, "random", 1), torch.arange(50))


@pytest.mark.parametrize(
    ("n", "mode", "message"),
    [(0, "first", "n=0"), (-3, "random", "n=-3"), (2.5, "first", "n=2.5"), (True, "first", "n=True"),
     (5, "balanced", "'balanced'")],
)
def test_bad_arguments(n: object, mode: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        subset_indices(torch.zeros(4, dtype=torch.int64), n, mode, 0)  # type: ignore[arg-type]


def test_select_keeps_ids_and_alignment() -> None:
    gen = torch.Generator().manual_seed(0)
    pixels = torch.rand(30, 1, 3, 3, generator=gen)
    labels = torch.arange(30) % 3
    data = ImageDataset("toy", pixels, labels, ("a", "b", "c")).subset(torch.arange(29, -1, -1))  # ids reversed
    chosen = select(data, 9, "stratified", seed=4)
    idx = subset_indices(data.labels, 9, "stratified", 4)
    assert torch.equal(chosen.ids, data.ids[idx]) and torch.equal(chosen.labels, labels[chosen.ids])
    assert torch.bincount(chosen.labels).tolist() == [3, 3, 3]
    torch.testing.assert_close(chosen.images(), pixels[chosen.ids])
