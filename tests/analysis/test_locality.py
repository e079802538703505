"""Tests of advspatial.analysis.locality on a hand-built model with a known vulnerable block."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from advspatial.analysis.locality import locality_analysis
from advspatial.analysis.locality_placements import random_variants, ring_offsets
from advspatial.errors import ConfigError, ShapeError


class BlockDetector(nn.Module):
    """Class 1 wins iff some pixel (channel mean) in the 5x5 block centred at ``centre`` exceeds 0.9.

    Logits: [0, s, -1] with s = max over the block of mean_c x - 0.9 (class 2 never wins).
    """

    def __init__(self, centre: tuple[int, int]) -> None:
        super().__init__()
        self.centre = centre

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        r, c = self.centre
        block = x.mean(dim=1)[:, max(r - 2, 0) : r + 3, max(c - 2, 0) : c + 3]
        s = block.flatten(1).amax(dim=1) - 0.9
        return torch.stack((torch.zeros_like(s), s, -torch.ones_like(s)), dim=1)


def _clean(n: int, size: int, channels: int = 3, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, channels, size, size, generator=torch.Generator().manual_seed(seed)) * 0.5


def _rows(result) -> dict:
    return {(row.kind, row.radius): row for row in result.rows}


def test_rates_per_radius_and_random_control_at_block_centre():
    # 40 images: the CI is a cluster bootstrap over images, which needs more than a handful of them
    size, n, n_random = 20, 40, 200
    model = BlockDetector((10, 10))
    x, y = _clean(n, size), torch.zeros(n, dtype=torch.long)
    pixels = torch.tensor([[10, 10]] * n)
    colours = torch.tensor([[1.0, 1.0, 0.85]] * n)  # channel mean 0.95 > 0.9
    result = locality_analysis(model, x, y, pixels, colours, radii=(1, 2, 3), n_random=n_random)
    rows = _rows(result)
    assert rows[("original", 0)].rate == 1.0
    assert (rows[("ring", 1)].n_variants, rows[("ring", 1)].rate) == (8 * n, 1.0)
    assert (rows[("ring", 2)].n_variants, rows[("ring", 2)].rate) == (16 * n, 1.0)
    assert (rows[("ring", 3)].n_variants, rows[("ring", 3)].rate) == (24 * n, 0.0)
    random = rows[("random", None)]
    assert random.n_variants == n * n_random
    share = 24 / (size * size - 1)  # the other 24 block pixels among the 399 other positions
    assert random.ci_low <= share <= random.ci_high
    assert result.ring_counts.tolist() == [[8, 16, 24]] * n
    assert result.ring_successes.tolist() == [[8, 16, 0]] * n


def test_corner_pixel_counts_and_rates_by_hand():
    # block centred at (1,1) is clipped to rows/cols 0..3 (16 pixels); the pixel is the corner (0,0)
    size = 10
    model = BlockDetector((1, 1))
    x, y = _clean(2, size), torch.zeros(2, dtype=torch.long)
    pixels, colours = torch.tensor([[0, 0], [0, 5]]), torch.ones(2, 3)
    result = locality_analysis(model, x, y, pixels, colours, radii=(1, 2, 3, 4), n_random=0)
    # corner: (r+1)^2 - r^2 = 2r+1 positions; top edge (col 5): 2r+1 on row r plus 2r on rows 0..r-1 = 4r+1
    assert result.ring_counts.tolist() == [[3, 5, 7, 9], [5, 9, 13, 17]]
    # corner: rings 1..3 stay inside the 4x4 block, ring 4 leaves it; (0,5) is no successful attack here
    assert result.ring_successes[0].tolist() == [3, 5, 7, 0]
    assert result.original_success.tolist() == [True, False]
    assert ("random", None) not in _rows(result)


def _reference(model, x, y, pixels, colours, radius, target=None):
    """Slow per-variant loop: (variants inside, successes) per image."""
    n, _, h, w = x.shape
    out = []
    for i in range(n):
        count = wins = 0
        for dr in range(-radius, radius + 1):
            for dc in range(-radius, radius + 1):
                if max(abs(dr), abs(dc)) != radius:
                    continue
                moved = [(int(p[0]) + dr, int(p[1]) + dc) for p in pixels[i]]
                if not all(0 <= a < h and 0 <= b < w for a, b in moved):
                    continue
                img = x[i].clone()
                for (a, b), col in zip(moved, colours[i], strict=True):
                    img[:, a, b] = col
                pred = int(model(img[None]).argmax(1))
                count += 1
                wins += int(pred == int(target[i])) if target is not None else int(pred != int(y[i]))
        out.append((count, wins))
    return out


def test_k_pixel_attacks_move_together_and_match_a_slow_reference():
    size = 12
    model = BlockDetector((6, 6))
    x, y = _clean(3, size, seed=1), torch.zeros(3, dtype=torch.long)
    pixels = torch.tensor([[[6, 6], [6, 10]], [[0, 0], [0, 3]], [[9, 4], [11, 11]]])
    colours = torch.tensor([[[1.0, 1.0, 1.0], [0.2, 0.3, 0.4]], [[1.0] * 3, [1.0] * 3], [[0.95] * 3, [1.0] * 3]])
    result = locality_analysis(model, x, y, pixels, colours, radii=(1, 2, 3), n_random=5)
    for j, r in enumerate((1, 2, 3)):
        ref = _reference(model, x, y, pixels, colours, r)
        assert result.ring_counts[:, j].tolist() == [c for c, _ in ref]
        assert result.ring_successes[:, j].tolist() == [s for _, s in ref]
    # targeted at class 2 (never predicted): nothing succeeds; at class 1: same as untargeted here
    never = locality_analysis(model, x, y, pixels, colours, n_random=5, target=torch.full((3,), 2))
    assert all(row.successes == 0 for row in never.rows)
    aimed = locality_analysis(model, x, y, pixels, colours, n_random=5, target=torch.ones(3, dtype=torch.long))
    assert torch.equal(aimed.ring_successes, result.ring_successes)


@settings(max_examples=10, deadline=None)
@given(batch_size=st.integers(1, 40), seed=st.integers(0, 100))
def test_batch_size_does_not_change_results(batch_size, seed):
    model = BlockDetector((4, 5))
    x, y = _clean(4, 9, seed=seed), torch.zeros(4, dtype=torch.long)
    gen = torch.Generator().manual_seed(seed)
    pixels = torch.randint(0, 9, (4, 2), generator=gen)
    colours = torch.rand(4, 3, generator=gen) * 0.2 + 0.8
    big = locality_analysis(model, x, y, pixels, colours, n_random=20, seed=seed, batch_size=10_000)
    small = locality_analysis(model, x, y, pixels, colours, n_random=20, seed=seed, batch_size=batch_size)
    assert big.rows == small.rows
    assert torch.equal(big.ring_successes, small.ring_successes)
    assert torch.equal(big.random_successes, small.random_successes)


def test_random_positions_are_uniform_and_exclude_the_original():
    n_random = 8000
    image, positions, has_any = random_variants(torch.tensor([[[1, 1]], [[0, 2]]]), n_random, 3, 3, seed=0)
    assert has_any.all() and image.tolist() == [0] * n_random + [1] * n_random
    for i, original in enumerate(((1, 1), (0, 2))):
        flat = positions[image == i, 0, 0] * 3 + positions[image == i, 0, 1]
        counts = torch.bincount(flat, minlength=9)
        assert counts[original[0] * 3 + original[1]] == 0
        others = counts[counts > 0].double()
        assert len(others) == 8
        assert (others / n_random - 1 / 8).abs().max() < 0.02  # ~5 standard errors
    # k pixels: every shifted pattern stays inside and the zero shift is never drawn
    pattern = torch.tensor([[[0, 0], [2, 1]]])
    _, moved, _ = random_variants(pattern, 500, 4, 4, seed=1)
    assert ((moved >= 0) & (moved < 4)).all()
    assert not (moved == pattern).all(dim=-1).all(dim=-1).any()
    assert torch.equal(moved[:, 1] - moved[:, 0], torch.tensor([2, 1]).expand(500, 2))


def test_ring_offsets():
    for r in (1, 2, 3):
        off = ring_offsets(r)
        assert off.shape == (8 * r, 2) and (off.abs().amax(1) == r).all()
        assert len({tuple(o) for o in off.tolist()}) == 8 * r


def test_invalid_inputs_are_refused():
    model = BlockDetector((2, 2))
    x, y = _clean(1, 5), torch.zeros(1, dtype=torch.long)
    with pytest.raises(ConfigError, match="inside"):
        locality_analysis(model, x, y, torch.tensor([[5, 0]]), torch.ones(1, 3))
    with pytest.raises(ShapeError, match="colours"):
        locality_analysis(model, x, y, torch.tensor([[1, 1]]), torch.ones(1, 2))
    with pytest.raises(ConfigError, match="colours"):
        locality_analysis(model, x, y, torch.tensor([[1, 1]]), torch.full((1, 3), 2.0))
    with pytest.raises(ConfigError, match="radius"):
        locality_analysis(model, x, y, torch.tensor([[1, 1]]), torch.ones(1, 3), radii=(0,))
