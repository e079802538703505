"""Folders of images (``imagefolder:PATH``), decoded lazily, fit for ImageNet.

Layouts::

    PATH/<class folder>/<image files>        class-folder layout
    PATH/<key>_<anything>.<ext>              flat layout (needs a class map), e.g. n01440764_tench.JPEG
    PATH/train/..., PATH/test/...            either layout, one folder per split

When ``PATH`` holds both a ``train/`` and a ``test/`` folder, ``split`` picks
one of them; otherwise ``PATH`` itself is used for *both* splits (there is no
held-out part then: say so when reporting accuracy). A folder with (non-hidden)
sub-folders is a class-folder layout (image files beside them are ignored); a
folder with image files and no sub-folders is a flat layout. Only files
directly inside a folder count (no recursion); hidden entries (starting with
``.``) and files with other extensions are skipped. Files are taken in sorted
order, so the dataset is deterministic. What is skipped (other extensions, files beside class
folders, folders inside them) is named once on stderr (:func:`note_skipped_files`), so a folder is
never read short in silence; GIF and TIFF files are read (:data:`IMAGE_EXTENSIONS`).

Labels. Without a class map, class names are the sub-folder names in sorted
order (label i = i-th name). With ``class_map`` (a TSV file, one line per model
output: ``index<TAB>folder name[<TAB>display name]``, see :func:`read_class_map`)
a class folder's label is the map's index for its name, ``class_names`` has one
entry per model output (its display name, else its folder name), classes
without a folder are allowed, and a folder missing from the map is an error.
In the flat layout a file's label is the map's index for the key before the
first ``_`` of its name (the whole stem when it has no ``_``).

Pixels. Nothing is decoded when the folder is loaded: the dataset holds a
:class:`LazyImages` (the file list) and decodes the images a caller asks for,
per batch, so memory does not depend on the number of files. Each image is
decoded with Pillow, converted to RGB or grey, and resampled once (bilinear,
antialiased when shrinking) to ``size x size`` uint8 pixels:

* ``fit="crop"`` (default): the central square of side
  ``shorter side * size / round(size / crop_fraction)`` (sub-pixel exact).
  This is "resize the shorter side to ``round(size / crop_fraction)``, then
  centre-crop ``size``" done in one resampling step (up to the rounding of
  the intermediate image's long side and crop offset). ``crop_fraction=1``
  (default) keeps the whole central square; ImageNet models expect
  ``crop_fraction=0.875`` (224 cut from 256; timm's ``crop_pct``). For square
  images with ``crop_fraction=1`` this equals ``stretch``.
* ``fit="stretch"``: the whole image, aspect ratio not kept.
"""

from __future__ import annotations

import hashlib
import os
import warnings
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from ..distributed import note_once
from ..environment import env_int
from ..errors import ConfigError, DataError, check_range
from .base import ImageDataset, Index
from .classmap import ClassMap, read_class_map
from .registry import register_dataset

if TYPE_CHECKING:
    from PIL.Image import Image as PILImage

#: the file extensions read as images, in any case (Pillow decodes each; an animated GIF gives its first frame)
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")
FITS = ("crop", "stretch")
DECODE_THREADS = max(1, min(8, os.cpu_count() or 1))  # Pillow releases the GIL while decoding/resizing


# --------------------------------------------------------------------------- listing


def split_root(root: Path, split: str) -> Path:
    """``root/split`` when ``root`` has both ``train/`` and ``test/`` folders, else ``root``."""
    if (root / "train").is_dir() and (root / "test").is_dir():
        return root / split
    return root


def scan_folder(folder: Path) -> tuple[list[str], list[Path], list[str]]:
    """(sorted non-hidden sub-folder names, sorted image files, names of the other non-hidden files) directly
    inside ``folder``."""
    dirs: list[str] = []
    files: list[Path] = []
    others: list[str] = []
    with os.scandir(folder) as entries:
        for entry in entries:
            if entry.name.startswith("."):
                continue
            if entry.is_dir():
                dirs.append(entry.name)
            elif entry.is_file() and os.path.splitext(entry.name)[1].lower() in IMAGE_EXTENSIONS:
                files.append(Path(entry.path))
            elif entry.is_file():
                others.append(entry.name)
    return sorted(dirs), sorted(files), sorted(others)


#: where an image folder's images are read from (what :func:`note_skipped_files` says of a folder)
CLASS_FOLDER_LAYOUT = "in the class folders, or in the folder itself when it has none"


def note_skipped_files(folder: Path, skipped: list[str], where: str = CLASS_FOLDER_LAYOUT) -> None:
    """One line on stderr, once per folder (:func:`~advspatial.distributed.note_once`), naming the files of
    ``folder`` that are not read (a few of them and their count): other extensions, or files beside class folders,
    or folders; ``where`` says where images are read from. A folder is never read short in silence."""
    if not skipped:
        return
    shown = ", ".join(skipped[:3]) + (f" and {len(skipped) - 3} more" if len(skipped) > 3 else "")
    note_once(("files not read", str(folder)),
              f"advspatial: note: image folder {folder}: {len(skipped)} file(s) not read ({shown}); read are image "
              f"files ({', '.join(IMAGE_EXTENSIONS)}) {where}")


def list_images(folder: Path, class_map: ClassMap | None = None) -> tuple[list[Path], np.ndarray, tuple[str, ...]]:
    """(files, labels, class names) in deterministic order; :class:`DataError` when empty or unlabelled."""
    if not folder.is_dir():
        raise DataError(f"image folder {folder} does not exist or is not a folder")
    dirs, flat, skipped = scan_folder(folder)
    if class_map is not None:  # a class map kept beside the images is no skipped image
        skipped = [name for name in skipped if (folder / name).resolve() != class_map.path.resolve()]
    if dirs:  # files beside the class folders are not read either
        return _list_class_folders(folder, dirs, class_map, sorted(skipped + [path.name for path in flat]))
    note_skipped_files(folder, skipped)
    if flat:
        return _list_flat(folder, flat, class_map)
    raise DataError(f"image folder {folder} has no class sub-folders and no image files; expected "
                    f"{folder}/<class name>/<images> or {folder}/<key>_<name>.<ext> with a class map "
                    f"(recognised extensions: {', '.join(IMAGE_EXTENSIONS)})")


def _list_class_folders(
    folder: Path, dirs: list[str], class_map: ClassMap | None, beside: list[str]
) -> tuple[list[Path], np.ndarray, tuple[str, ...]]:
    """Class-folder layout: label = sorted position, or the class map's index; the files ``beside`` the class
    folders, and the folders and files of other extensions inside them, are named as not read."""
    if class_map is None:
        label_of, classes = {name: i for i, name in enumerate(dirs)}, tuple(dirs)
    else:
        unknown = [name for name in dirs if name not in class_map.labels]
        if unknown:
            raise DataError(f"image folder {folder}: class folder(s) {', '.join(unknown[:10])} are not in the "
                            f"class map {class_map.path}")
        label_of, classes = class_map.labels, class_map.names
    files: list[Path] = []
    labels: list[int] = []
    empty: list[str] = []
    skipped = list(beside)
    for name in sorted(dirs, key=lambda d: label_of[d]):
        inner, found, others = scan_folder(folder / name)
        if not found:
            empty.append(name)
        files += found
        labels += [label_of[name]] * len(found)
        skipped += [f"{name}/{other}" for other in others] + [f"{name}/{sub}/" for sub in inner]
    note_skipped_files(folder, skipped)
    if empty:
        raise DataError(
            f"image folder {folder}: class folder(s) {', '.join(empty)} hold no images "
            f"(recognised extensions: {', '.join(IMAGE_EXTENSIONS)})"
        )
    return files, np.asarray(labels, dtype=np.int64), classes


def _list_flat(
    folder: Path, files: list[Path], class_map: ClassMap | None
) -> tuple[list[Path], np.ndarray, tuple[str, ...]]:
    """Flat layout: label = the class map's index for the key before the first ``_`` of the file name."""
    if class_map is None:
        raise DataError(f"image folder {folder} holds image files but no class sub-folders (a flat folder): "
                        f"pass class_map=FILE.tsv to label the files by the key before the first '_' in their names")
    labels: list[int] = []
    for path in files:
        key = path.stem.split("_", 1)[0]
        if key not in class_map.labels:
            raise DataError(f"image {path}: key {key!r} (before the first '_') is not in the class map "
                            f"{class_map.path}")
        labels.append(class_map.labels[key])
    return files, np.asarray(labels, dtype=np.int64), class_map.names


# --------------------------------------------------------------------------- decoding


def fit_box(
    width: int, height: int, size: int, fit: str, crop_fraction: float = 1.0,
) -> tuple[float, float, float, float]:
    """The source region (left, top, right, bottom) that is resampled to ``size x size`` (module doc)."""
    if fit == "stretch":
        return (0.0, 0.0, float(width), float(height))
    side = min(width, height) * size / round(size / crop_fraction)
    left, top = (width - side) / 2, (height - side) / 2
    return (left, top, left + side, top + side)


#: default cap on the pixels of one image file (width x height), before decoding; the environment
#: variable ADVSPATIAL_MAX_IMAGE_PIXELS sets another. A 144-megapixel PNG of 140 KB (under Pillow's own
#: bomb limit) costs about 1 GB to decode; 50 MP (e.g. 8660x5773) is far above any photo a classifier needs.
MAX_IMAGE_PIXELS = 50_000_000


def max_image_pixels() -> int:
    """The pixel cap in force: ``$ADVSPATIAL_MAX_IMAGE_PIXELS`` (a positive integer, read by the one reader of
    integer environment variables) or :data:`MAX_IMAGE_PIXELS`."""
    return env_int("ADVSPATIAL_MAX_IMAGE_PIXELS", MAX_IMAGE_PIXELS, 1, 2**62, "pixels of one image file at most")


def _quiet_pillow() -> None:
    """Pillow's DecompressionBombWarning (a raw multi-line warning on stderr) is replaced by our own cap,
    checked before decoding (:func:`read_image`), so it is filtered (a filter already there is not repeated)."""
    from PIL import Image

    if not any(f[0] == "ignore" and f[2] is Image.DecompressionBombWarning for f in warnings.filters):
        warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)


@contextmanager
def opened_image(path: Path | str) -> Iterator[PILImage]:
    """The image file ``path`` opened by Pillow, its size checked against :func:`max_image_pixels` from the header
    (before anything is decoded); whatever goes wrong while the caller decodes it inside the ``with`` block
    (not an image, truncated, a decompression bomb, values outside its mode) is a :class:`DataError` naming
    the file. The one place image files are opened (image folders and ``analyze``'s folders)."""
    from PIL import Image, UnidentifiedImageError

    _quiet_pillow()
    limit = max_image_pixels()
    try:
        with Image.open(path) as img:
            if img.width * img.height > limit:
                raise DataError(f"image {path} has {img.width}x{img.height} = {img.width * img.height} pixels, "
                                f"more than the limit of {limit} (ADVSPATIAL_MAX_IMAGE_PIXELS); shrink it or "
                                "raise the limit")
            yield img
    except (UnidentifiedImageError, Image.DecompressionBombError, OSError, ValueError, SyntaxError,
            EOFError) as exc:
        raise DataError(f"cannot read image {path}: {' '.join(str(exc).split()) or type(exc).__name__}") from exc


def read_image(path: Path | str, size: int, channels: int, fit: str, crop_fraction: float = 1.0) -> np.ndarray:
    """Decode one image to uint8 (C,size,size); :class:`DataError` naming the file when unreadable or larger
    than :func:`max_image_pixels` (checked from the header, before decoding: :func:`opened_image`)."""
    from PIL import Image

    with opened_image(path) as img:
        box = fit_box(img.width, img.height, size, fit, crop_fraction)
        if img.mode in HIGH_DEPTH_MODES:  # 16-bit, 32-bit or float grey: convert() would clip it at 255
            scaled = Image.fromarray(unit_values(img, path) * np.float32(255), mode="F")
            scaled = scaled.resize((size, size), Image.Resampling.BILINEAR, box=box)
            grey = np.clip(np.rint(np.asarray(scaled)), 0, 255).astype(np.uint8)
            return np.repeat(grey[None], channels, axis=0)
        img = img.convert("RGB" if channels == 3 else "L")
        img = img.resize((size, size), Image.Resampling.BILINEAR, box=box)
        array = np.asarray(img, dtype=np.uint8)
    return array[None] if array.ndim == 2 else array.transpose(2, 0, 1)


def read_full_image(path: Path | str) -> np.ndarray:
    """One image at its own size: uint8 (H,W) grey or (H,W,3) RGB, or float32 (H,W) in [0,1] for a
    :data:`HIGH_DEPTH_MODES` image; errors and the pixel cap as :func:`opened_image`."""
    with opened_image(path) as img:
        if img.mode in HIGH_DEPTH_MODES:  # convert() would clip it at 255
            return unit_values(img, path)
        return np.asarray(img.convert("L" if img.mode in ("L", "1") else "RGB"))


#: Pillow modes of one grey channel deeper than 8 bits (16-bit PNG/TIFF, 32-bit integer, 32-bit float)
HIGH_DEPTH_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I", "F")


def unit_values(img: PILImage, path: Path | str) -> np.ndarray:
    """The grey values of a :data:`HIGH_DEPTH_MODES` image as float32 (H,W) in [0,1]: 16-bit (and 32-bit integer)
    images are divided by 65535, float images are taken as they are; a :class:`DataError` when the values lie
    outside what the mode allows (a 32-bit image beyond 16 bits, a float image outside [0,1] or not finite)."""
    if img.mode.startswith("I;16"):
        values = np.asarray(img).astype(np.float32)
        return values / np.float32(65535)
    values = np.asarray(img).astype(np.float64)
    if img.mode == "I":
        if values.size and (values.min() < 0 or values.max() > 65535):
            raise DataError(f"image {path}: 32-bit integer values {values.min():g}..{values.max():g}; valid: "
                            "0..65535 (a 16-bit image) or an 8-bit image")
        return (values / 65535).astype(np.float32)
    if values.size and not (np.isfinite(values).all() and values.min() >= 0 and values.max() <= 1):
        raise DataError(f"image {path}: floating-point values {np.nanmin(values):g}..{np.nanmax(values):g}; "
                        "valid: [0, 1]")
    return values.astype(np.float32)


@dataclass(frozen=True)
class LazyImages:
    """Image files decoded on demand: a (N,C,size,size) uint8 pixel source for :class:`ImageDataset`.

    Shaped like a tensor (``shape``, ``ndim``, ``dtype``, ``len``); ``decode``
    reads only the selected files, ``select`` makes a smaller lazy source, and
    ``lazy[i]`` / ``lazy[idx, ...]`` decode like tensor indexing (an int drops
    the first dimension).
    """

    files: tuple[str, ...] = field(repr=False)
    size: int
    channels: int
    fit: str = "crop"
    crop_fraction: float = 1.0

    def __repr__(self) -> str:
        return (f"LazyImages({len(self.files)} files, {self.channels}x{self.size}x{self.size}, "
                f"fit={self.fit!r}, crop_fraction={self.crop_fraction})")

    @property
    def shape(self) -> torch.Size:
        return torch.Size((len(self.files), self.channels, self.size, self.size))

    @property
    def ndim(self) -> int:
        return 4

    @property
    def dtype(self) -> torch.dtype:
        return torch.uint8

    def __len__(self) -> int:
        return len(self.files)

    def checksum(self) -> str:
        """SHA-256 of the bytes of every file in order (and the decoding settings): changes when an image is
        replaced, even by one of the same size and time stamp; costs one read of the files, no decoding."""
        digest = hashlib.sha256(f"{self.size};{self.channels};{self.fit};{self.crop_fraction};".encode())
        for path in self.files:
            try:
                with open(path, "rb") as handle:
                    digest.update(hashlib.file_digest(handle, "sha256").digest())
            except OSError as exc:
                raise DataError(f"cannot read image {path}: {exc.strerror or exc}") from exc
        return digest.hexdigest()

    def positions(self, index: Index | None) -> torch.Tensor:
        """The file positions ``index`` selects, with tensor indexing rules (0-d for an int)."""
        everything = torch.arange(len(self.files))
        return everything if index is None else everything[index]

    def select(self, index: Index) -> LazyImages:
        """The selected images, still undecoded (an int selects one image, keeping the first dimension)."""
        chosen = self.positions(index).reshape(-1).tolist()
        return replace(self, files=tuple(self.files[i] for i in chosen))

    def decode(self, index: Index | None = None) -> torch.Tensor:
        """uint8 pixels of the selected images (all when None); only those files are read."""
        pos = self.positions(index)
        paths = [self.files[i] for i in pos.reshape(-1).tolist()]
        out = torch.empty((len(paths), self.channels, self.size, self.size), dtype=torch.uint8)
        target = out.numpy()  # shares memory with out
        for i, array in enumerate(self._read_all(paths)):
            target[i] = array
        return out.reshape(*pos.shape, self.channels, self.size, self.size)

    def _read_all(self, paths: Sequence[str]) -> Iterable[np.ndarray]:
        """Decoded arrays in order (threads when several); the first unreadable file in order raises."""
        read = lambda p: read_image(p, self.size, self.channels, self.fit, self.crop_fraction)  # noqa: E731
        if len(paths) < 2 or DECODE_THREADS == 1:
            return map(read, paths)
        with ThreadPoolExecutor(max_workers=min(DECODE_THREADS, len(paths))) as pool:
            return list(pool.map(read, paths))

    def __getitem__(self, key: Index | tuple) -> torch.Tensor:
        """Decode like ``tensor[key]``; the first index picks the files, the rest applies to the pixels."""
        first, rest = (key[0], key[1:]) if isinstance(key, tuple) else (key, ())
        if first is Ellipsis:
            return self.decode()[key]
        decoded = self.decode(first)
        if not rest:
            return decoded
        return decoded[rest] if decoded.ndim == 3 else decoded[(slice(None), *rest)]


# --------------------------------------------------------------------------- loader


@register_dataset("imagefolder", "folders of images: imagefolder:PATH (class sub-folders, or flat with class_map)")
def load_imagefolder(
    split: str = "test",
    root: str | Path | None = None,
    download: bool = False,
    size: int = 32,
    channels: int = 3,
    fit: str = "crop",
    class_map: str | Path | None = None,
    crop_fraction: float = 1.0,
) -> ImageDataset:
    """List ``root`` (layout and options in the module doc) as a lazy dataset of (N,channels,size,size) images.

    Nothing is decoded here; ``data.images(index)`` and ``data.batches(n)``
    decode the selected files. ``download`` is accepted for a uniform signature
    and ignored: the images are the user's.
    """
    if root is None:
        raise ConfigError("imagefolder needs a folder: use the name imagefolder:PATH or pass root=PATH")
    _check_options(size, channels, fit, crop_fraction)
    cmap = None if class_map is None else read_class_map(class_map)
    folder = split_root(Path(root).expanduser(), split)
    files, labels, classes = list_images(folder, cmap)
    pixels = LazyImages(tuple(map(str, files)), size, channels, fit, float(crop_fraction))
    return ImageDataset("imagefolder", pixels, torch.from_numpy(labels), classes)


def _check_options(size: int, channels: int, fit: str, crop_fraction: float) -> None:
    """:class:`ConfigError` naming the valid values when an option is wrong."""
    if isinstance(size, bool) or not isinstance(size, int):
        raise ConfigError(f"size={size!r} must be an integer number of pixels, e.g. 32 or 224")
    check_range("size", size, 1, 4096)
    if channels not in (1, 3):
        raise ConfigError(f"channels={channels!r} is not valid; valid: 1 (grey), 3 (RGB)")
    if fit not in FITS:
        raise ConfigError(f"fit={fit!r} is not valid; valid: {', '.join(FITS)}")
    if isinstance(crop_fraction, bool) or not isinstance(crop_fraction, (int, float)):
        raise ConfigError(f"crop_fraction={crop_fraction!r} must be a number in (0, 1], e.g. 0.875 for ImageNet models")
    check_range("crop_fraction", crop_fraction, 0.0, 1.0, low_inclusive=False)
