"""imagefolder:PATH on tiny PNG/JPEG/BMP files written here."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from advspatial.data import imagefolder  # noqa: F401  (registers imagefolder)
from advspatial.data import load_dataset
from advspatial.data.imagefolder import load_imagefolder
from advspatial.errors import ConfigError, DataError


def solid(path: Path, rgb: tuple[int, int, int], size: tuple[int, int] = (8, 6)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    extra = {"lossless": True} if path.suffix == ".webp" else {}  # lossy WebP would shift the colour
    Image.new("RGB", size, rgb).save(path, **extra)


@pytest.fixture
def folder(tmp_path) -> Path:
    """Two classes (sorted: 'cat' before 'dog'), files in non-sorted creation order, plus clutter."""
    root = tmp_path / "imgs"
    solid(root / "dog" / "b.png", (0, 0, 255))
    solid(root / "dog" / "a.bmp", (0, 255, 0))
    solid(root / "cat" / "z.PNG", (255, 0, 0))
    solid(root / "cat" / "c.webp", (10, 20, 30))
    (root / "cat" / "notes.txt").write_text("not an image")
    (root / ".hidden").mkdir()
    return root


def test_layout_order_and_pixels(folder) -> None:
    ds = load_dataset(f"imagefolder:{folder}", "test")
    assert ds.class_names == ("cat", "dog")
    assert ds.labels.tolist() == [0, 0, 1, 1]
    assert ds.pixels.dtype == torch.uint8 and ds.pixels.shape == (4, 3, 32, 32)
    # order within class: sorted file names -> cat/c.webp, cat/z.PNG, dog/a.bmp, dog/b.png
    expected = [(10, 20, 30), (255, 0, 0), (0, 255, 0), (0, 0, 255)]
    for i, rgb in enumerate(expected):
        assert ds.pixels[i, :, 16, 16].tolist() == list(rgb)
    assert ds.masks is None
    again = load_imagefolder("test", root=folder)
    assert torch.equal(again.pixels, ds.pixels)


def test_grey_and_size(folder) -> None:
    ds = load_imagefolder(root=folder, size=20, channels=1)
    assert ds.pixels.shape == (4, 1, 20, 20)
    # ITU-R 601 luma of pure green: 0.587 * 255 = 149.7 (PIL rounds)
    assert abs(int(ds.pixels[2, 0, 10, 10]) - 150) <= 1


def test_fit_crop_keeps_the_centre(tmp_path) -> None:
    """A 12x4 image: red left third, blue middle, green right third; crop keeps only the middle."""
    array = np.zeros((4, 12, 3), dtype=np.uint8)
    array[:, :4] = (255, 0, 0)
    array[:, 4:8] = (0, 0, 255)
    array[:, 8:] = (0, 255, 0)
    (tmp_path / "k").mkdir()
    Image.fromarray(array).save(tmp_path / "k" / "x.png")
    crop = load_imagefolder(root=tmp_path, size=8, fit="crop").pixels[0]
    assert (crop[2] == 255).all() and (crop[0] == 0).all() and (crop[1] == 0).all()
    stretch = load_imagefolder(root=tmp_path, size=12, fit="stretch").pixels[0]
    assert stretch[0, 6, 0] == 255 and stretch[1, 6, 11] == 255


def test_train_test_subfolders(tmp_path) -> None:
    solid(tmp_path / "train" / "a" / "1.png", (1, 1, 1))
    solid(tmp_path / "train" / "b" / "1.png", (2, 2, 2))
    solid(tmp_path / "train" / "b" / "2.png", (2, 2, 2))
    solid(tmp_path / "test" / "a" / "1.jpg", (250, 250, 250))
    solid(tmp_path / "test" / "b" / "1.jpeg", (250, 250, 250))
    train = load_imagefolder("train", root=tmp_path)
    test = load_imagefolder("test", root=tmp_path)
    assert train.labels.tolist() == [0, 1, 1] and test.labels.tolist() == [0, 1]
    assert train.class_names == test.class_names == ("a", "b")


def test_same_folder_for_both_splits(folder) -> None:
    assert torch.equal(load_imagefolder("train", root=folder).pixels, load_imagefolder("test", root=folder).pixels)


def test_errors(tmp_path, folder) -> None:
    with pytest.raises(DataError, match="does not exist"):
        load_imagefolder(root=tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no class sub-folders"):
        load_imagefolder(root=tmp_path / "empty")
    (tmp_path / "onlytext" / "cls").mkdir(parents=True)
    (tmp_path / "onlytext" / "cls" / "a.txt").write_text("x")
    with pytest.raises(DataError, match="cls hold no images"):
        load_imagefolder(root=tmp_path / "onlytext")
    broken = folder / "dog" / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    with pytest.raises(DataError, match="broken.png"):
        load_imagefolder(root=folder)


def test_bad_parameters(folder) -> None:
    with pytest.raises(ConfigError, match="imagefolder:PATH"):
        load_imagefolder(root=None)
    with pytest.raises(ConfigError, match="channels"):
        load_imagefolder(root=folder, channels=2)
    with pytest.raises(ConfigError, match="fit"):
        load_imagefolder(root=folder, fit="pad")
    with pytest.raises(ConfigError, match="size"):
        load_imagefolder(root=folder, size=0)
    with pytest.raises(ConfigError, match="size"):
        load_imagefolder(root=folder, size=3.5)
