"""The changed pixels of a k-pixel attack, extracted and applied
(:mod:`advspatial.experiments.propagation.pixel_changes`)."""

from __future__ import annotations


import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from advspatial.experiments.propagation.pixel_changes import apply_pixels, format_pixels, perturbed_pixels
from advspatial.attacks import make_attack
from advspatial.errors import ShapeError


# -- perturbed pixels --------------------------------------------------------------------


def test_perturbed_pixels_known_answer_grey_and_colour():
    x = torch.zeros(2, 3, 5, 6)
    x_adv = x.clone()
    x_adv[0, :, 4, 1] = torch.tensor([0.1, 0.2, 0.3])
    x_adv[0, 1, 0, 5] = 0.7  # one channel changed: still a changed pixel, colour = the whole pixel of x_adv
    x_adv[1, :, 2, 2] = 1.0
    pixels, colours, count = perturbed_pixels(x, x_adv, k=2)
    assert count.tolist() == [2, 1]
    assert pixels[0].tolist() == [[0, 5], [4, 1]]  # row-major order
    assert torch.allclose(colours[0], torch.tensor([[0.0, 0.7, 0.0], [0.1, 0.2, 0.3]]))
    assert pixels[1].tolist() == [[2, 2], [2, 2]]  # one change: its pixel fills both slots
    assert torch.equal(colours[1], torch.ones(2, 3))


def test_perturbed_pixels_rejects_more_changes_than_k_and_bad_shapes():
    x = torch.zeros(1, 1, 4, 4)
    x_adv = x.clone()
    x_adv[0, 0, :2, 0] = 1.0
    with pytest.raises(ShapeError, match="more than k=1"):
        perturbed_pixels(x, x_adv, k=1)
    with pytest.raises(ShapeError):
        perturbed_pixels(x, x_adv[:, :, :3], k=2)


@settings(max_examples=20, deadline=None)
@given(k=st.integers(1, 4), channels=st.sampled_from([1, 3]), seed=st.integers(0, 10_000))
def test_perturbed_pixels_round_trips_apply_pixels(k: int, channels: int, seed: int):
    """Writing k random colours at random (possibly repeated) positions and reading them back gives x_adv
    exactly; the count is the number of distinct positions whose colour differs."""
    gen = torch.Generator().manual_seed(seed)
    n, h, w = 4, 7, 5
    x = torch.rand(n, channels, h, w, generator=gen)
    pos = torch.stack((torch.randint(0, h, (n, k), generator=gen), torch.randint(0, w, (n, k), generator=gen)), -1)
    colours = torch.rand(n, k, channels, generator=gen)
    # repeated positions get one colour, so which one wins does not matter
    for i in range(n):
        for j in range(k):
            first = next(a for a in range(k) if pos[i, a].tolist() == pos[i, j].tolist())
            colours[i, j] = colours[i, first]
    x_adv = apply_pixels(x, pos, colours)
    pixels, got_colours, count = perturbed_pixels(x, x_adv, k)
    assert torch.equal(apply_pixels(x, pixels, got_colours), x_adv)
    distinct = [len({tuple(p) for p in pos[i].tolist()}) for i in range(n)]
    assert count.tolist() == distinct
    assert torch.equal(got_colours, x_adv[torch.arange(n)[:, None], :, pixels[..., 0], pixels[..., 1]])


def test_perturbed_pixels_of_a_real_kpixel_attack(tiny_cnn):
    model = tiny_cnn(size=12)
    x = torch.rand(5, 1, 12, 12, generator=torch.Generator().manual_seed(0))
    y = torch.arange(5)
    result = make_attack("kpixel", model, pixels=3, popsize=8, maxiter=2, seed=1).run(x, y)
    pixels, colours, count = perturbed_pixels(x, result.x_adv, 3)
    assert torch.equal(count, result.l0)
    assert torch.equal(apply_pixels(x, pixels, colours), result.x_adv)


def test_format_pixels():
    pos, col = format_pixels(torch.tensor([[[1, 2], [3, 4]]]), torch.tensor([[[0.5, 0.25, 1.0], [0.0, 0.0, 0.125]]]))
    assert pos == ["1:2 3:4"]
    assert col == ["0.5000/0.2500/1.0000 0.0000/0.0000/0.1250"]
