"""Class mean maps and their streaming accumulator (:mod:`advspatial.regions.accumulate`)."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from advspatial.errors import ConfigError, ShapeError
from advspatial.regions import MapAccumulator, class_mean_maps


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
