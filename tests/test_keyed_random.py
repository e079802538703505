"""Counter-based per-sample random numbers (keyed_random.py): SplitMix64 to the bit, a sample's numbers
independent of its batch, its row and the chunking, and the distributions they claim."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from advspatial import keyed_random
from advspatial.keyed_random import keyed_bits, keyed_normal, keyed_uniform

MASK = (1 << 64) - 1


def splitmix_output(z: int) -> int:
    """SplitMix64's output function on a Python int (the published constants)."""
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK
    return z ^ (z >> 31)


def reference_word(seed: int, sample_id: int, j: int) -> int:
    """Word j of a sample's stream, by the definition in the module docstring, in exact integer arithmetic."""
    key = splitmix_output(splitmix_output(seed & MASK) ^ (sample_id & MASK))
    return splitmix_output((key + (j + 1) * 0x9E3779B97F4A7C15) & MASK)


@pytest.mark.parametrize("seed", [0, 1, 2**61 - 2, 123_456_789_012])
def test_the_words_are_splitmix64_over_the_counter_to_the_bit(seed) -> None:
    ids = [0, 1, 7, 10_000_123]
    words = keyed_bits(seed, torch.tensor(ids), 5)
    for row, sid in enumerate(ids):
        assert [w & MASK for w in words[row].tolist()] == [reference_word(seed, sid, j) for j in range(5)]


def test_splitmix_reference_matches_its_published_first_output() -> None:
    # SplitMix64 seeded with 0: state 0x9E3779B97F4A7C15 after one step, first output 0xE220A8397B1DCDAF
    assert splitmix_output(0x9E3779B97F4A7C15) == 0xE220A8397B1DCDAF


@settings(max_examples=40, deadline=None)
@given(ids=st.lists(st.integers(0, 2**40), min_size=1, max_size=6, unique=True), seed=st.integers(0, 2**62),
       numel=st.integers(1, 40), chunk=st.integers(1, 64), data=st.data())
def test_a_samples_numbers_depend_on_its_id_alone(ids, seed, numel, chunk, data) -> None:
    """Any batch, any order, any chunking of the work: each row is the row its id gives alone."""
    order = data.draw(st.permutations(ids))
    for draw in (keyed_uniform, keyed_normal):
        alone = {sid: draw((1, numel), seed, [sid])[0] for sid in ids}
        with pytest.MonkeyPatch.context() as m:
            m.setattr(keyed_random, "_CHUNK_WORDS", chunk)
            batch = draw((len(order), numel), seed, torch.tensor(order))
        for row, sid in enumerate(order):
            assert torch.equal(batch[row], alone[sid])


def test_uniform_numbers_are_24_bit_values_in_the_unit_interval_and_uniform() -> None:
    u = keyed_uniform((400, 2500), seed=3, sample_ids=torch.arange(400)).flatten().double()
    assert u.min() >= 0 and u.max() < 1
    assert torch.equal(u * 2**24, (u * 2**24).round())
    assert stats.kstest(u.numpy(), "uniform").pvalue > 1e-3
    assert abs(u.mean().item() - 0.5) < 1e-3 and abs(u.var().item() - 1 / 12) < 1e-3


def test_normal_numbers_are_standard_normal_in_both_halves() -> None:
    z = keyed_normal((400, 2501), seed=5, sample_ids=torch.arange(400)).double()
    for part in (z[:, :1250], z[:, 1251:]):  # cosines and sines
        values = part.flatten().numpy()
        assert stats.kstest(values, "norm").pvalue > 1e-3
        assert abs(values.mean()) < 0.01 and abs(values.var() - 1) < 0.01
    assert z.abs().max() < math.sqrt(2 * 32 * math.log(2)) + 1e-6


def test_neighbouring_ids_seeds_and_positions_are_uncorrelated() -> None:
    a = keyed_normal((2000, 64), seed=0, sample_ids=torch.arange(2000)).double()
    b = keyed_normal((2000, 64), seed=1, sample_ids=torch.arange(2000)).double()
    pairs = [(a[:-1], a[1:]), (a, b), (a[:, :-1], a[:, 1:])]
    for x, y in pairs:
        r = np.corrcoef(x.flatten().numpy(), y.flatten().numpy())[0, 1]
        assert abs(r) < 0.01


def test_half_precision_noise_is_the_float32_noise_rounded() -> None:
    for draw in (keyed_uniform, keyed_normal):
        half = draw((4, 300), 2, torch.arange(4), dtype=torch.float16)
        assert half.dtype == torch.float16 and bool(torch.isfinite(half).all())
        assert torch.equal(half, draw((4, 300), 2, torch.arange(4)).half())


def test_shapes_dtypes_and_an_empty_batch() -> None:
    assert keyed_uniform((3, 2, 4, 4), 0, [1, 2, 3], dtype=torch.float64).dtype == torch.float64
    assert keyed_normal((3, 2, 5, 5), 0, torch.tensor([1, 2, 3])).shape == (3, 2, 5, 5)
    assert keyed_normal((0, 3), 0, torch.zeros(0, dtype=torch.long)).shape == (0, 3)
    assert keyed_uniform((0, 3), 0, []).shape == (0, 3)
