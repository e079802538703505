"""synthetic-shapes: determinism, exact masks, consistent concept masks, shapes and ranges."""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from advspatial.data import (
    dataset_spec,
    load_dataset,
    synthetic,  # noqa: F401  (registers synthetic-shapes)
)
from advspatial.data.synthetic import (
    BACKGROUND_MAX, COLOURS, OBJECT_MIN, SHAPES, TEXTURES, generate_shapes, inside_shape, load_synthetic_shapes,
)
from advspatial.errors import ConfigError

#: area of each shape with outer radius r, divided by r^2 (see inside_shape)
AREA_OVER_R2 = {
    "circle": np.pi,
    "ring": np.pi * (1 - 0.25),
    "square": 2.0,
    "triangle": 3 * np.sqrt(3) / 4,
    "cross": 2 * (1.9 * 0.6) - 0.6**2,
}


@pytest.fixture(scope="module")
def scenes():
    return generate_shapes(400, size=32, channels=3, seed=123)


def test_loader_shapes_ranges_and_registry() -> None:
    ds = load_dataset("synthetic-shapes", "test", n=50)
    assert len(ds) == 50 and ds.pixels.shape == (50, 3, 32, 32) and ds.pixels.dtype == torch.float32
    assert ds.class_names == SHAPES and ds.num_classes == len(SHAPES) >= 4
    x = ds.images()
    assert float(x.min()) >= 0.0 and float(x.max()) <= 1.0
    assert ds.masks.dtype == torch.bool and ds.masks.shape == (50, 32, 32)
    assert all(m.dtype == torch.bool for m in ds.concepts.values())
    spec = dataset_spec("synthetic-shapes")
    assert spec.image_shape == ds.image_shape and spec.num_classes == ds.num_classes
    grey = load_synthetic_shapes("train", n=12, size=28, channels=1)
    assert grey.pixels.shape == (12, 1, 28, 28) and grey.masks.shape == (12, 28, 28)


def test_default_sizes_balanced_and_fast() -> None:
    start = time.perf_counter()
    train = load_synthetic_shapes("train")
    elapsed = time.perf_counter() - start
    assert len(train) == 2000 and len(load_synthetic_shapes("test")) == 500
    assert torch.bincount(train.labels).tolist() == [2000 // len(SHAPES)] * len(SHAPES)
    assert elapsed < 5.0  # about 0.3 s on one core; loose bound for shared CI machines


def test_deterministic_and_split_dependent() -> None:
    a = load_synthetic_shapes("test", n=30, seed=7)
    b = load_synthetic_shapes("test", n=30, seed=7)
    assert torch.equal(a.pixels, b.pixels) and torch.equal(a.labels, b.labels) and torch.equal(a.masks, b.masks)
    assert all(torch.equal(a.concepts[k], b.concepts[k]) for k in a.concepts)
    assert not torch.equal(a.pixels, load_synthetic_shapes("train", n=30, seed=7).pixels)
    assert not torch.equal(a.pixels, load_synthetic_shapes("test", n=30, seed=8).pixels)


@settings(max_examples=10, deadline=None)
@given(seed=st.integers(0, 2**31), size=st.sampled_from([16, 28, 32, 40]), channels=st.sampled_from([1, 3]))
def test_mask_is_exactly_what_was_painted(seed: int, size: int, channels: int) -> None:
    s = generate_shapes(25, size=size, channels=channels, seed=seed)
    brightest = s.pixels.max(axis=1)
    # contrast by construction: foreground >= OBJECT_MIN in some channel, background <= BACKGROUND_MAX everywhere
    assert (brightest[s.masks] >= OBJECT_MIN - 1e-6).all()
    assert (s.pixels.transpose(1, 0, 2, 3)[:, ~s.masks] <= BACKGROUND_MAX + 1e-6).all()
    np.testing.assert_array_equal(brightest > (OBJECT_MIN + BACKGROUND_MAX) / 2, s.masks)
    # the object is one flat colour: every mask pixel equals the image's first mask pixel
    for i in range(len(s.labels)):
        inside = s.pixels[i][:, s.masks[i]]
        assert inside.shape[1] > 0
        np.testing.assert_array_equal(inside, np.repeat(inside[:, :1], inside.shape[1], axis=1))
        if channels == 3:
            np.testing.assert_allclose(inside[:, 0], list(COLOURS.values())[s.colours[i]], rtol=0, atol=1e-6)


def test_areas_match_geometry(scenes) -> None:
    """Pixel counts of the masks match the analytic area of each shape (pi r^2 for circles...)."""
    area = scenes.masks.sum(axis=(1, 2))
    expected = np.array([AREA_OVER_R2[SHAPES[k]] for k in scenes.labels]) * scenes.radii**2
    rel = area / expected - 1
    for k, shape in enumerate(SHAPES):
        sel = scenes.labels == k
        assert abs(rel[sel].mean()) < 0.03, shape
        assert np.abs(rel[sel]).max() < 0.2, shape


def test_masks_are_centred_and_inside_the_image(scenes) -> None:
    n, size, _ = scenes.masks.shape
    ys, xs = np.mgrid[0:size, 0:size] + 0.5
    area = scenes.masks.sum(axis=(1, 2))
    cx = (scenes.masks * xs).sum(axis=(1, 2)) / area
    cy = (scenes.masks * ys).sum(axis=(1, 2)) / area
    assert np.abs(cx - scenes.centres[:, 0]).max() < 0.75
    assert np.abs(cy - scenes.centres[:, 1]).max() < 0.75
    dist = np.hypot(xs - scenes.centres[:, 0, None, None], ys - scenes.centres[:, 1, None, None])
    assert (dist[scenes.masks] <= np.broadcast_to(scenes.radii[:, None, None], dist.shape)[scenes.masks] + 1e-9).all()
    border = np.zeros((size, size), dtype=bool)
    border[[0, -1], :] = border[:, [0, -1]] = True
    assert not (scenes.masks & border).any()


def test_ring_has_a_hole_and_circle_does_not(scenes) -> None:
    size = scenes.masks.shape[1]
    for k in (SHAPES.index("ring"), SHAPES.index("circle")):
        for i in np.flatnonzero(scenes.labels == k)[:10]:
            x, y = (int(v) for v in np.floor(scenes.centres[i]))
            assert 0 <= x < size
            assert scenes.masks[i, y, x] == (SHAPES[k] == "circle")


def test_inside_shape_known_points() -> None:
    r = np.array(10.0)
    u = np.array([0.0, 9.9, 7.0, 0.0, 0.0, 4.0, 8.0, 6.0])
    v = np.array([0.0, 0.0, 7.2, 9.0, -9.0, 6.0, 0.0, 0.0])
    assert inside_shape("circle", u[:3], v[:3], r).tolist() == [True, True, False]
    assert inside_shape("ring", np.array([0.0, 4.9, 5.1]), np.zeros(3), r).tolist() == [False, False, True]
    assert inside_shape("square", np.array([7.0, 7.2]), np.array([7.0, 0.0]), r).tolist() == [True, False]
    # triangle: apex up at v=-r, base at v=+r/2
    assert inside_shape("triangle", u[3:5], v[3:5], r).tolist() == [False, True]
    assert inside_shape("cross", u[5:], v[5:], r).tolist() == [False, True, True]
    with pytest.raises(ConfigError, match="unknown shape"):
        inside_shape("hexagon", u, v, r)


def test_concepts_partition_consistently() -> None:
    ds = load_synthetic_shapes("test", n=60, seed=3)
    fg, c = ds.masks, ds.concepts
    shape_sum = sum(c[f"shape:{s}"].int() for s in SHAPES)
    assert torch.equal(shape_sum, fg.int())  # every foreground pixel in exactly one shape concept
    assert torch.equal(c["background"], ~fg)
    assert torch.equal(sum(c[f"texture:{t}"].int() for t in TEXTURES), (~fg).int())
    assert torch.equal(sum(c[f"colour:{k}"].int() for k in COLOURS), fg.int())
    for k, s in enumerate(SHAPES):  # shape concept k lives only in images of class k, and fills their mask
        mine = ds.labels == k
        assert not c[f"shape:{s}"][~mine].any()
        assert torch.equal(c[f"shape:{s}"][mine], fg[mine])
    for name in [*(f"texture:{t}" for t in TEXTURES), *(f"colour:{k}" for k in COLOURS)]:
        per_image = c[name].flatten(1).any(1)
        assert per_image.any(), name  # every concept occurs in 60 images
    # each image has one texture and one colour: its background/foreground is all-or-nothing per concept
    for name, region in [*((f"texture:{t}", ~fg) for t in TEXTURES), *((f"colour:{k}", fg) for k in COLOURS)]:
        hit = c[name].flatten(1).sum(1)
        assert ((hit == 0) | (hit == region.flatten(1).sum(1))).all(), name
    grey = load_synthetic_shapes("test", n=10, channels=1)
    assert not any(k.startswith("colour:") for k in grey.concepts)
    assert {f"shape:{s}" for s in SHAPES} | {"background"} <= set(grey.concepts)


def test_subset_keeps_concepts_aligned() -> None:
    ds = load_synthetic_shapes("test", n=20)
    sub = ds.subset([3, 7])
    assert torch.equal(sub.concepts["background"], ~ds.masks[[3, 7]])


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"channels": 2}, "channels"),
        ({"size": 8}, "size"),
        ({"n": 0}, "n=0"),
        ({"n": 2.5}, "integer"),
        ({"split": "val"}, "split"),
    ],
)
def test_bad_parameters(kwargs: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_synthetic_shapes(**kwargs)
