"""ImageDataset: shape checks, float conversion, deterministic covering batches, subset/head, ids, lazy pixels."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from advspatial.data.base import ImageDataset, PixelSource
from advspatial.errors import ConfigError, ShapeError


def make(n: int, c: int = 1, h: int = 4, w: int = 5, dtype: torch.dtype = torch.uint8, seed: int = 0) -> ImageDataset:
    gen = torch.Generator().manual_seed(seed)
    if dtype == torch.uint8:
        pixels = torch.randint(0, 256, (n, c, h, w), generator=gen, dtype=torch.uint8)
    else:
        pixels = torch.rand((n, c, h, w), generator=gen).to(dtype)
    labels = torch.randint(0, 3, (n,), generator=gen, dtype=torch.int32)
    masks = pixels[:, 0] > (128 if dtype == torch.uint8 else 0.5)
    return ImageDataset("toy", pixels, labels, ("a", "b", "c"), masks=masks, concepts={"fg": masks, "bg": ~masks})


@settings(max_examples=20, deadline=None)
@given(n=st.integers(1, 30), c=st.sampled_from([1, 3]), float_pixels=st.booleans())
def test_images_are_float_in_unit_range(n: int, c: int, float_pixels: bool) -> None:
    ds = make(n, c, dtype=torch.float64 if float_pixels else torch.uint8)
    x = ds.images()
    assert x.dtype == torch.float32 and x.shape == (n, c, 4, 5)
    assert float(x.min()) >= 0.0 and float(x.max()) <= 1.0
    if not float_pixels:  # exact: k / 255
        torch.testing.assert_close(x * 255, ds.pixels.to(torch.float32), rtol=0, atol=1e-4)
    assert ds.labels.dtype == torch.int64
    assert ds.image_shape == (c, 4, 5) and ds.num_classes == 3 and len(ds) == n


@settings(max_examples=20, deadline=None)
@given(n=st.integers(1, 40), batch_size=st.integers(1, 50))
def test_batches_cover_in_order_and_repeat(n: int, batch_size: int) -> None:
    ds = make(n)
    first = list(ds.batches(batch_size))
    second = list(ds.batches(batch_size))
    assert len(first) == -(-n // batch_size)
    xs = torch.cat([x for x, _, _ in first])
    ys = torch.cat([y for _, y, _ in first])
    torch.testing.assert_close(xs, ds.images())
    assert torch.equal(ys, ds.labels)
    covered = [i for _, _, sl in first for i in range(sl.start, sl.stop)]
    assert covered == list(range(n))
    assert all(len(x) <= batch_size for x, _, _ in first)
    for (x1, y1, s1), (x2, y2, s2) in zip(first, second, strict=True):
        assert s1 == s2 and torch.equal(x1, x2) and torch.equal(y1, y2)


@settings(max_examples=20, deadline=None)
@given(n=st.integers(1, 20), data=st.data())
def test_subset_keeps_everything_aligned(n: int, data: st.DataObject) -> None:
    ds = make(n)
    index = data.draw(st.lists(st.integers(0, n - 1), max_size=10))
    sub = ds.subset(index)
    assert len(sub) == len(index)
    idx = torch.tensor(index, dtype=torch.long)
    assert torch.equal(sub.pixels, ds.pixels[idx])
    assert torch.equal(sub.labels, ds.labels[idx])
    assert torch.equal(sub.masks, ds.masks[idx])
    assert torch.equal(sub.ids, idx) and sub.ids.dtype == torch.int64
    assert set(sub.concepts) == {"fg", "bg"}
    assert torch.equal(sub.concepts["bg"], ~sub.masks)
    assert sub.class_names == ds.class_names


def test_head() -> None:
    ds = make(10)
    assert ds.head(None) is ds and ds.head(10) is ds and ds.head(99) is ds
    head = ds.head(3)
    assert len(head) == 3 and torch.equal(head.labels, ds.labels[:3]) and head.ids.tolist() == [0, 1, 2]
    with pytest.raises(ConfigError, match="out of range"):
        ds.head(0)


def test_images_with_index_forms() -> None:
    ds = make(6)
    torch.testing.assert_close(ds.images([4, 1]), ds.images()[torch.tensor([4, 1])])
    torch.testing.assert_close(ds.images(slice(2, 4)), ds.images()[2:4])
    torch.testing.assert_close(ds.images(torch.tensor([0, 5])), ds.images()[[0, 5]])


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("pixels", torch.zeros(3, 4, 5, dtype=torch.uint8), "pixels must be"),
        ("labels", torch.zeros(2, dtype=torch.int64), "labels must be"),
        ("labels", torch.zeros(3, 1, dtype=torch.int64), "labels must be"),
        ("masks", torch.zeros(3, 5, 4, dtype=torch.bool), "masks must be"),
        ("concepts", {"x": torch.zeros(2, 4, 5, dtype=torch.bool)}, "concept 'x'"),
        ("ids", torch.arange(4), "ids must be"),
    ],
)
def test_mismatched_shapes_raise(field: str, value: object, message: str) -> None:
    kwargs = {
        "name": "toy", "pixels": torch.zeros(3, 1, 4, 5, dtype=torch.uint8),
        "labels": torch.zeros(3, dtype=torch.int64), "class_names": ("a",),
    }
    kwargs[field] = value
    with pytest.raises(ShapeError, match=message):
        ImageDataset(**kwargs)


def test_ids_default_to_arange_and_follow_nested_subsets() -> None:
    ds = make(10)
    assert ds.ids.tolist() == list(range(10)) and ds.ids.dtype == torch.int64
    sub = ds.subset([7, 2, 9, 4]).subset([3, 0]).head(1)
    assert sub.ids.tolist() == [4]
    torch.testing.assert_close(sub.images(), ds.images([4]))
    ids = torch.tensor([10, 3], dtype=torch.int32)
    given = ImageDataset("toy", ds.pixels[:2], ds.labels[:2], ds.class_names, ids=ids)
    assert given.ids.tolist() == [10, 3] and given.ids.dtype == torch.int64


class CountingSource:
    """A lazy PixelSource over a stored tensor that records which rows were decoded."""

    def __init__(self, data: torch.Tensor, log: list[int]) -> None:
        self.data, self.log = data, log

    @property
    def shape(self) -> torch.Size:
        return self.data.shape

    @property
    def ndim(self) -> int:
        return self.data.ndim

    @property
    def dtype(self) -> torch.dtype:
        return self.data.dtype

    def decode(self, index=None) -> torch.Tensor:
        rows = torch.arange(len(self.data)) if index is None else torch.arange(len(self.data))[index]
        self.log.extend(rows.reshape(-1).tolist())
        return self.data[rows]

    def select(self, index) -> CountingSource:
        return CountingSource(self.data[torch.arange(len(self.data))[index].reshape(-1)], self.log)


def test_lazy_pixel_source_decodes_per_request_and_matches_a_tensor() -> None:
    eager = make(7, c=3)
    log: list[int] = []
    lazy = ImageDataset("toy", CountingSource(eager.pixels, log), eager.labels, eager.class_names, masks=eager.masks)
    assert isinstance(lazy.pixels, PixelSource) and lazy.lazy and not eager.lazy
    assert lazy.image_shape == eager.image_shape == (3, 4, 5) and len(lazy) == 7 and lazy.pixels.shape[1] == 3
    sub = lazy.subset([5, 1, 6]).head(2)
    assert log == [] and sub.lazy and sub.ids.tolist() == [5, 1]
    torch.testing.assert_close(sub.images(), eager.images([5, 1]))
    assert torch.equal(sub.masks, eager.masks[[5, 1]])
    log.clear()
    for (x, y, sl), (xe, ye, sle) in zip(lazy.batches(3), eager.batches(3), strict=True):
        assert log == list(range(sl.start, sl.stop))  # one batch decoded at a time
        log.clear()
        torch.testing.assert_close(x, xe)
        assert torch.equal(y, ye) and sl == sle
    torch.testing.assert_close(lazy.images([6, 0]), eager.images([6, 0]))
    torch.testing.assert_close(lazy.images(), eager.images())
