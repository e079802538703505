"""The attacks' shared side of the rows (experiments/measurement/batch_images.py): a batch's values are made once
and handed to every attack while they fit the byte budget, made again past it, and the same either way."""

from __future__ import annotations

import torch

from advspatial.experiments.measurement.batch_images import BatchImages, CleanRegion, SharedBatches
from advspatial.experiments.measurement.config import MeasurementConfig


def batch_values(n: int, seed: int = 0) -> BatchImages:
    """The values of a batch of ``n`` random 8x8 importance maps and images."""
    gen = torch.Generator().manual_seed(seed)
    imp = torch.rand(n, 8, 8, generator=gen)
    clean = CleanRegion.of(imp, torch.arange(n), MeasurementConfig(fraction=0.25))
    return BatchImages(torch.rand(n, generator=gen, dtype=torch.float64),
                       {"centre": torch.rand(n, 8, 8, generator=gen)}, clean)


def test_bytes_count_every_tensor_held() -> None:
    values = batch_values(4)
    roi = values.clean.roi
    expected = (4 * 8  # composition, float64
                + 4 * 64 * 4  # the centre reference
                + 4 * 64 * 4  # the importance maps
                + values.clean.rank.numel() * values.clean.rank.element_size()
                + roi.mask.numel() + roi.threshold.numel() * roi.threshold.element_size()
                + roi.tied_at_cut.numel() * 8)
    assert values.nbytes() == expected


def test_a_batch_is_made_once_while_it_fits() -> None:
    shared, made = SharedBatches(), []

    def make(sl: slice) -> BatchImages:
        made.append((sl.start, sl.stop))
        return batch_values(sl.stop - sl.start, seed=sl.start)

    for _ in range(3):  # three attacks over the same two batches
        for sl in (slice(0, 4), slice(4, 6)):
            assert shared.get(sl, lambda sl=sl: make(sl)).composition.shape == (sl.stop - sl.start,)
    assert made == [(0, 4), (4, 6)]
    assert shared.used == sum(v.nbytes() for v in shared.held.values())


def test_past_the_budget_a_batch_is_made_again_with_the_same_values() -> None:
    first = batch_values(4).nbytes()
    shared, made = SharedBatches(budget=first), []

    def make(sl: slice) -> BatchImages:
        made.append(sl.start)
        return batch_values(4, seed=sl.start)

    got = [shared.get(sl, lambda sl=sl: make(sl)) for _ in range(2) for sl in (slice(0, 4), slice(4, 8))]
    assert made == [0, 4, 4]  # the second batch did not fit: made for each attack
    assert list(shared.held) == [(0, 4)] and shared.used == first
    assert torch.equal(got[1].composition, got[3].composition)
    assert torch.equal(got[1].clean.roi.mask, got[3].clean.roi.mask)


def test_a_batch_of_another_extent_is_not_taken_for_the_whole_one() -> None:
    """An attack on fewer images (the one-pixel attack's prefix) ends its last batch early: its values are its own."""
    shared = SharedBatches()
    whole = shared.get(slice(0, 6), lambda: batch_values(6))
    prefix = shared.get(slice(0, 4), lambda: batch_values(4))
    assert len(whole.composition) == 6 and len(prefix.composition) == 4
