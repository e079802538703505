"""Fashion-MNIST / MNIST loaders on small IDX files written here, and on the real test split."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import needs_fashion_mnist

from advspatial.data import load_dataset
from advspatial.data.idx import write_idx
from advspatial.data.mnist import BACKGROUND_THRESHOLD, DIGIT_CLASSES, FASHION_CLASSES, IDX_FILES
from advspatial.errors import DataError


def write_split(folder: Path, split: str, images: np.ndarray, labels: np.ndarray, gz: bool = True) -> None:
    """Write an image/label IDX pair under the official names (raw names without .gz when gz=False)."""
    folder.mkdir(parents=True, exist_ok=True)
    image_name, label_name = IDX_FILES[split]
    if not gz:
        image_name, label_name = image_name.removesuffix(".gz"), label_name.removesuffix(".gz")
    write_idx(folder / image_name, images)
    write_idx(folder / label_name, labels)


def small_split(n: int = 7, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (n, 28, 28), dtype=np.uint8), rng.integers(0, 10, n).astype(np.uint8)


@pytest.fixture
def isolated(monkeypatch, tmp_path):
    """No ADVSPATIAL_DATA, an empty cache: only what a test writes can be found (plus the system dir)."""
    monkeypatch.delenv("ADVSPATIAL_DATA", raising=False)
    monkeypatch.setenv("ADVSPATIAL_CACHE", str(tmp_path / "cache"))
    return tmp_path


@pytest.mark.parametrize(("name", "classes"), [("mnist", DIGIT_CLASSES), ("fashion-mnist", FASHION_CLASSES)])
@pytest.mark.parametrize("gz", [True, False])
def test_load_from_root(isolated, name: str, classes: tuple[str, ...], gz: bool) -> None:
    images, labels = small_split()
    write_split(isolated / "d", "test", images, labels, gz=gz)
    ds = load_dataset(name, "test", root=isolated / "d")
    assert ds.name == name and ds.class_names == classes
    assert ds.pixels.dtype == torch.uint8 and ds.pixels.shape == (7, 1, 28, 28)
    np.testing.assert_array_equal(ds.pixels[:, 0].numpy(), images)
    np.testing.assert_array_equal(ds.labels.numpy(), labels)
    assert ds.labels.dtype == torch.int64
    # foreground masks: x > tau (METHODS section 4), x = pixel / 255
    np.testing.assert_array_equal(ds.masks.numpy(), images.astype(np.float64) / 255 > BACKGROUND_THRESHOLD)


def test_mask_threshold_boundary(isolated) -> None:
    """tau = 0.05: 12/255 = 0.047 is background, 13/255 = 0.051 is foreground."""
    images = np.zeros((1, 28, 28), dtype=np.uint8)
    images[0, 0, :4] = [0, 12, 13, 255]
    write_split(isolated / "d", "test", images, np.zeros(1, dtype=np.uint8))
    assert load_dataset("mnist", root=isolated / "d").masks[0, 0, :4].tolist() == [False, False, True, True]


def test_splits_are_distinct_files(isolated) -> None:
    write_split(isolated / "d", "train", *small_split(5, seed=1))
    write_split(isolated / "d", "test", *small_split(3, seed=2))
    assert len(load_dataset("mnist", "train", root=isolated / "d")) == 5
    assert len(load_dataset("mnist", "test", root=isolated / "d")) == 3


def test_found_through_advspatial_data(isolated, monkeypatch) -> None:
    images, labels = small_split(4)
    write_split(isolated / "data" / "mnist", "test", images, labels)
    monkeypatch.setenv("ADVSPATIAL_DATA", str(isolated / "data"))
    np.testing.assert_array_equal(load_dataset("mnist").labels.numpy(), labels)


def test_found_in_cache(isolated) -> None:
    images, labels = small_split(4)
    write_split(isolated / "cache" / "data" / "mnist", "test", images, labels)
    np.testing.assert_array_equal(load_dataset("mnist").pixels[:, 0].numpy(), images)


def test_root_wins_over_env_and_cache(isolated, monkeypatch) -> None:
    write_split(isolated / "data" / "mnist", "test", *small_split(4))
    monkeypatch.setenv("ADVSPATIAL_DATA", str(isolated / "data"))
    write_split(isolated / "mine", "test", *small_split(6))
    assert len(load_dataset("mnist", root=isolated / "mine")) == 6


def test_mismatched_counts(isolated) -> None:
    images, labels = small_split(5)
    write_split(isolated / "d", "test", images, labels[:4])
    with pytest.raises(DataError, match="5 images but .* 4 labels"):
        load_dataset("mnist", root=isolated / "d")


def test_labels_out_of_range(isolated) -> None:
    images, labels = small_split(5)
    labels[2] = 10
    write_split(isolated / "d", "test", images, labels)
    with pytest.raises(DataError, match=r"labels outside 0\.\.9"):
        load_dataset("mnist", root=isolated / "d")


def test_wrong_dimensionality(isolated) -> None:
    images, labels = small_split(5)
    write_split(isolated / "d", "test", images.reshape(5, -1), labels)
    with pytest.raises(DataError, match="3-D"):
        load_dataset("mnist", root=isolated / "d")
    write_split(isolated / "e", "test", images, labels.reshape(5, 1))
    with pytest.raises(DataError, match="1-D"):
        load_dataset("mnist", root=isolated / "e")


def test_not_found_names_every_way(isolated, monkeypatch) -> None:
    monkeypatch.setenv("ADVSPATIAL_DATA", str(isolated / "nothing"))
    with pytest.raises(DataError) as info:
        load_dataset("mnist", "test", root=isolated / "empty")
    message = str(info.value)
    assert "ADVSPATIAL_DATA" in message
    assert "download=True" in message
    assert str(isolated / "empty") in message  # the explicit root was searched
    assert str(isolated / "cache") in message  # so was the cache
    # Fashion-MNIST also names the Debian package (its system dir may exist here, so use a fake name check)
    from advspatial.data import mnist

    with pytest.raises(DataError, match="apt-get install dataset-fashion-mnist"):
        mnist._load_idx_dataset(
            "fashion-mnist", "test", isolated / "empty", False, FASHION_CLASSES,
            str(isolated / "no-system-dir"), "file:///nonexistent/", {},
        )


def test_download_from_file_url(isolated) -> None:
    """download=True fetches the files (here from a local file:// mirror) into the cache, checksums checked."""
    from advspatial.data import mnist
    from advspatial.data.locate import checksum_of

    images, labels = small_split(3)
    write_split(isolated / "mirror", "test", images, labels)
    sums = {n: "sha256:" + checksum_of(isolated / "mirror" / n) for n in IDX_FILES["test"]}
    ds = mnist._load_idx_dataset(
        "mnist", "test", None, True, DIGIT_CLASSES, None, (isolated / "mirror").as_uri() + "/", sums,
    )
    np.testing.assert_array_equal(ds.labels.numpy(), labels)
    assert (isolated / "cache" / "data" / "mnist" / IDX_FILES["test"][0]).is_file()


@needs_fashion_mnist
def test_real_fashion_mnist_test_split() -> None:
    ds = load_dataset("fashion-mnist", "test")
    assert len(ds) == 10000 and ds.image_shape == (1, 28, 28)
    assert ds.pixels.dtype == torch.uint8
    counts = torch.bincount(ds.labels, minlength=10)
    assert counts.tolist() == [1000] * 10
    x = ds.images(slice(0, 100))
    assert 0.0 <= float(x.min()) and float(x.max()) <= 1.0 and float(x.max()) > 0.9


def test_an_idx_pair_without_images_is_one_clear_error(isolated, capsys) -> None:
    """An IDX dataset with 0 images ended in 'max(): Expected reduction dim'."""
    from helpers import run_cli

    write_split(isolated / "d", "test", np.zeros((0, 28, 28), np.uint8), np.zeros(0, np.uint8))
    with pytest.raises(DataError, match="holds no images"):
        load_dataset("mnist", root=isolated / "d")
    code, _, err = run_cli(capsys, "evaluate", "--dataset", f"mnist:{isolated / 'd'}", "--model", "lenet5")
    assert code == 2 and "holds no images" in err and len(err.strip().splitlines()) == 1
