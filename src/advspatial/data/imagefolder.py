"""Folders of images, one sub-folder per class (``imagefolder:PATH``).

Layout::

    PATH/<class name>/<image files>                 same images for both splits
    PATH/train/<class name>/..., PATH/test/<class name>/...   one folder per split

When ``PATH`` holds both a ``train/`` and a ``test/`` folder, ``split`` picks
one of them; otherwise ``PATH`` itself is used for *both* splits (there is no
held-out part then: say so when reporting accuracy). Class names are the
sub-folder names in sorted order (label i = i-th name); images inside a class
are taken in sorted file-name order, so the dataset is deterministic. Only
files directly inside a class folder count (no recursion); hidden entries
(starting with ``.``) and files with other extensions are skipped.

Images are decoded with Pillow (a matplotlib dependency), converted to RGB or
grey, and resized to ``size x size`` pixels: ``fit="stretch"`` (default)
resizes the whole image, ``fit="crop"`` first cuts the central square so the
aspect ratio is kept. Pixels stay uint8.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ..errors import ConfigError, DataError, check_range
from .base import ImageDataset
from .registry import register_dataset

EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".webp")
FITS = ("stretch", "crop")


def split_root(root: Path, split: str) -> Path:
    """``root/split`` when ``root`` has both ``train/`` and ``test/`` folders, else ``root``."""
    if (root / "train").is_dir() and (root / "test").is_dir():
        return root / split
    return root


def list_images(folder: Path) -> tuple[list[Path], np.ndarray, tuple[str, ...]]:
    """(files, labels, class names) in deterministic order; :class:`DataError` when empty."""
    if not folder.is_dir():
        raise DataError(f"image folder {folder} does not exist or is not a folder")
    classes = sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not classes:
        raise DataError(f"image folder {folder} has no class sub-folders; expected {folder}/<class name>/<images>")
    files: list[Path] = []
    labels: list[int] = []
    empty: list[str] = []
    for label, name in enumerate(classes):
        found = sorted(
            p for p in (folder / name).iterdir()
            if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in EXTENSIONS
        )
        if not found:
            empty.append(name)
        files += found
        labels += [label] * len(found)
    if empty:
        raise DataError(
            f"image folder {folder}: class folder(s) {', '.join(empty)} hold no images "
            f"(recognised extensions: {', '.join(EXTENSIONS)})"
        )
    return files, np.asarray(labels, dtype=np.int64), tuple(classes)


def read_image(path: Path, size: int, channels: int, fit: str) -> np.ndarray:
    """Decode one image to uint8 (C,size,size); :class:`DataError` naming the file when unreadable."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            img = img.convert("RGB" if channels == 3 else "L")
            if fit == "crop":
                side = min(img.size)
                left, top = (img.width - side) // 2, (img.height - side) // 2
                img = img.crop((left, top, left + side, top + side))
            img = img.resize((size, size), Image.Resampling.BILINEAR)
            array = np.asarray(img, dtype=np.uint8)
    except (UnidentifiedImageError, Image.DecompressionBombError, OSError, ValueError, SyntaxError) as exc:
        raise DataError(f"cannot read image {path}: {exc}") from exc
    return array[None] if array.ndim == 2 else array.transpose(2, 0, 1)


@register_dataset("imagefolder", "class sub-folders of images: imagefolder:PATH (png/jpg/bmp/webp)")
def load_imagefolder(
    split: str = "test",
    root: str | Path | None = None,
    download: bool = False,
    size: int = 32,
    channels: int = 3,
    fit: str = "stretch",
) -> ImageDataset:
    """Load ``root`` (see the module doc for the layout) as uint8 images (N,channels,size,size).

    ``download`` is accepted for a uniform signature and ignored: the images are the user's.
    """
    if root is None:
        raise ConfigError("imagefolder needs a folder: use the name imagefolder:PATH or pass root=PATH")
    if isinstance(size, bool) or not isinstance(size, int):
        raise ConfigError(f"size={size!r} must be an integer number of pixels, e.g. 32 or 224")
    check_range("size", size, 1, 4096)
    if channels not in (1, 3):
        raise ConfigError(f"channels={channels!r} is not valid; valid: 1 (grey), 3 (RGB)")
    if fit not in FITS:
        raise ConfigError(f"fit={fit!r} is not valid; valid: {', '.join(FITS)}")
    folder = split_root(Path(root).expanduser(), split)
    files, labels, classes = list_images(folder)
    pixels = np.stack([read_image(path, size, channels, fit) for path in files])
    return ImageDataset("imagefolder", torch.from_numpy(pixels), torch.from_numpy(labels), classes)
