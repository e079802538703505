"""Fashion-MNIST (the default dataset) and MNIST, both in IDX format."""

from __future__ import annotations

import math
from pathlib import Path

import torch

from ..environment import cache_dir
from ..errors import DataError
from .base import ImageDataset
from .idx import read_idx
from .locate import candidate_dirs, download, find_files, resolve
from .registry import register_dataset

FASHION_CLASSES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)
DIGIT_CLASSES = tuple(str(d) for d in range(10))
IDX_FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}
FASHION_URL = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"
# Checksums of the upstream files (identical to those the Debian package ships).
FASHION_CHECKSUMS = {
    "train-images-idx3-ubyte.gz": "sha256:b0564c3eedabfbf835052cff8503ea422014ce006caf5b757f851416ee8300c7",
    "train-labels-idx1-ubyte.gz": "sha256:0ae29f65d86684f32d1b9c85147786c547b9c6aebcaf235f0400a0cce308b056",
    "t10k-images-idx3-ubyte.gz": "sha256:cc1d090a38ace84dfa1aa66e3ada7c336ef481a96936906477e6dd344da56eaa",
    "t10k-labels-idx1-ubyte.gz": "sha256:8d3605d196f4be44669e46906da9733c8131fef761fdbfec72c424d5222f1a05",
}
MNIST_URL = "https://ossci-datasets.s3.amazonaws.com/mnist/"
MNIST_CHECKSUMS = {
    "train-images-idx3-ubyte.gz": "md5:f68b3c2dcbeaaa9fbdd348bbdeb94873",
    "train-labels-idx1-ubyte.gz": "md5:d53e105ee54ea40749a09fcbcd1e9432",
    "t10k-images-idx3-ubyte.gz": "md5:9fb629c4189551a2d022fa330f9573f3",
    "t10k-labels-idx1-ubyte.gz": "md5:ec29112dd5afa0611ce80d1b7f02629c",
}
#: pixels at or below this value count as background (METHODS §4, choice tau=0.05)
BACKGROUND_THRESHOLD = 0.05


def load_idx_pair(images_path: Path, labels_path: Path, name: str, class_names: tuple[str, ...]) -> ImageDataset:
    """Read an image/label IDX pair and check they agree."""
    images = read_idx(images_path)
    labels = read_idx(labels_path)
    if images.ndim != 3:
        raise DataError(f"{images_path}: image IDX must be 3-D (N,H,W), got shape {images.shape}")
    if labels.ndim != 1:
        raise DataError(f"{labels_path}: label IDX must be 1-D (N,), got shape {labels.shape}")
    if len(images) != len(labels):
        raise DataError(f"{images_path} has {len(images)} images but {labels_path} has {len(labels)} labels")
    if len(images) == 0:
        raise DataError(f"{images_path} holds no images; valid: IDX files with at least one image")
    if labels.size and (labels.min() < 0 or labels.max() >= len(class_names)):
        raise DataError(f"{labels_path}: labels outside 0..{len(class_names) - 1}")
    pixels = torch.from_numpy(images.copy()).unsqueeze(1)
    if pixels.dtype != torch.uint8:
        pixels = pixels.to(torch.float32)
    if pixels.dtype == torch.uint8:  # x/255 > tau  <=>  x > 255*tau, compared without a float copy
        masks = pixels[:, 0] > math.floor(255 * BACKGROUND_THRESHOLD)
    else:
        masks = pixels[:, 0] > BACKGROUND_THRESHOLD  # foreground: x > tau
    return ImageDataset(name, pixels, torch.from_numpy(labels.astype("int64")), class_names, masks=masks)


def _load_idx_dataset(
    name: str, split: str, root: str | Path | None, download_ok: bool,
    class_names: tuple[str, ...], system_dir: str | None, url: str, checksums: dict[str, str],
) -> ImageDataset:
    names = list(IDX_FILES[split])
    directory = find_files(name, names, root, system_dir)
    if directory is None and download_ok:
        target = cache_dir("data", name)
        for fname in names:
            download(url + fname, target / fname, checksums.get(fname))
        directory = target
    if directory is None:
        searched = ", ".join(str(d) for d in candidate_dirs(name, root, system_dir))
        raise DataError(
            f"{name} ({split}) not found (searched: {searched}). Make it available by one of: "
            f"set ADVSPATIAL_DATA to a folder holding {name}/{names[0]} etc.; "
            + (f"install the Debian package dataset-{name} (apt-get install dataset-{name}); " if system_dir else "")
            + "or, from Python, load_dataset(..., download=True) where the network allows it (no command downloads)"
        )
    images_path, labels_path = (resolve(directory, n) for n in names)
    assert images_path is not None and labels_path is not None
    return load_idx_pair(images_path, labels_path, name, class_names)


@register_dataset("fashion-mnist", "Fashion-MNIST 28x28 grey, 10 clothing classes (default)", (1, 28, 28), 10)
def load_fashion_mnist(split: str = "test", root: str | Path | None = None, download: bool = False) -> ImageDataset:
    """Fashion-MNIST from ``root``, ``$ADVSPATIAL_DATA``, the cache, or ``/usr/share/datasets/fashion-mnist``."""
    return _load_idx_dataset(
        "fashion-mnist", split, root, download, FASHION_CLASSES,
        "/usr/share/datasets/fashion-mnist", FASHION_URL, FASHION_CHECKSUMS,
    )


@register_dataset("mnist", "MNIST 28x28 grey digits (IDX files from a path, or download)", (1, 28, 28), 10)
def load_mnist(split: str = "test", root: str | Path | None = None, download: bool = False) -> ImageDataset:
    """MNIST from ``root``, ``$ADVSPATIAL_DATA/mnist``, or the cache (download where the network allows)."""
    return _load_idx_dataset("mnist", split, root, download, DIGIT_CLASSES, None, MNIST_URL, MNIST_CHECKSUMS)
