"""Datasets from tensors: held in this process (``memory:NAME``) or stored in files (``arrays:PATH``).

* ``memory:NAME`` - images a Python caller handed over
  (``advspatial.run(..., data=(images, labels))``), named by
  :func:`register_dataset_object`. The default name carries a checksum of the
  pixels and labels, so a run directory is never resumed with other images.
  Without a separate training set, train and test are the same images (the
  experiments then keep evaluated images out of priors and training).
* ``arrays:PATH`` - a ``.pt`` file (a tensor, a ``(images, labels)`` pair or a
  dict with ``images``/``x`` and ``labels``/``y``), a ``.npy`` array, a ``.npz``
  archive (the same keys, else its first array), or a folder of image files
  read in file-name order. Images are (N,C,H,W) or channels-last (N,H,W,C),
  uint8 in [0,255] or float in [0,1]; labels come from the file or from
  ``labels=FILE`` (``.pt``, ``.npy``, or text with one integer per line).

Loading never runs code from a file: ``torch.load(weights_only=True)`` and
``numpy.load(allow_pickle=False)``.
"""

from __future__ import annotations

import hashlib
import zipfile
from pathlib import Path
from tokenize import TokenError
from typing import Any

import numpy as np
import torch

from ..errors import ConfigError, ShapeError, first_line
from .base import ImageDataset
from .imagefolder import IMAGE_EXTENSIONS, note_skipped_files, read_full_image, scan_folder
from .registry import register_dataset

IMAGE_KEYS = ("images", "x", "x_adv", "adv", "clean")
LABEL_KEYS = ("labels", "y", "targets")

#: in-memory datasets by name: (test images, training images or None)
_OBJECTS: dict[str, tuple[ImageDataset, ImageDataset | None]] = {}


# -- in memory ----------------------------------------------------------------------------

def as_image_dataset(data: Any, name: str = "tensors") -> ImageDataset:
    """``data`` as an :class:`ImageDataset`: one already, or ``(images, labels)`` tensors/arrays."""
    if isinstance(data, ImageDataset):
        return data
    if isinstance(data, (tuple, list)) and len(data) == 2:
        images, labels = data
        pixels = to_image_tensor(images, name)
        targets = to_label_tensor(labels, len(pixels), name)
        return ImageDataset(name, pixels, targets, class_names=class_names_for(targets))
    raise ConfigError(f"data must be an ImageDataset or a pair (images, labels); got {type(data).__name__}")


def register_dataset_object(data: Any, train: Any = None, name: str | None = None) -> str:
    """Make in-memory images nameable as a dataset: returns ``memory:NAME`` for ``load_dataset``.

    ``train`` (optional) are separate training images (priors, fine-tuning);
    without them both splits are ``data``.
    """
    test = as_image_dataset(data)
    training = None if train is None else as_image_dataset(train)
    name = name or f"images-{dataset_checksum(test, training)[:16]}"
    _OBJECTS[name] = (test, training)
    return f"memory:{name}"


def dataset_checksum(*datasets: ImageDataset | None) -> str:
    """SHA-256 of the pixels, labels and ids of the datasets (None counts as absent)."""
    digest = hashlib.sha256()
    for data in datasets:
        if data is None:
            digest.update(b"none;")
            continue
        for part in (data.images(), data.labels, data.ids):
            t = part.detach().cpu().contiguous()
            digest.update(f"{t.dtype}:{tuple(t.shape)};".encode())
            digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def has_own_training_set(name: str) -> bool:
    """True when the in-memory dataset ``memory:NAME`` was given separate training images."""
    return _held(name)[1] is not None


def _held(name: str) -> tuple[ImageDataset, ImageDataset | None]:
    key = name.split(":", 1)[1] if ":" in name else name
    if key not in _OBJECTS:
        raise ConfigError(f"memory:{key} names images this Python process does not hold; pass the data again "
                          "(advspatial.run(..., data=...)) or store them in a file (arrays:PATH)")
    return _OBJECTS[key]


@register_dataset("memory", "images handed over from Python (advspatial.run(..., data=...)), by name")
def load_memory(split: str = "test", root: str | Path | None = None, download: bool = False) -> ImageDataset:
    test, train = _held(str(root))
    return train if split == "train" and train is not None else test


# -- in files -----------------------------------------------------------------------------

@register_dataset("arrays", "images in a .pt/.npy/.npz file or a folder of image files (arrays:PATH); "
                            "labels from the file or labels=FILE")
def load_arrays(split: str = "test", root: str | Path | None = None, download: bool = False,
                labels: str = "") -> ImageDataset:
    """Both splits are the file's images (there is no separate training set)."""
    if root is None:
        raise ConfigError("arrays needs a path: arrays:PATH")
    images, stored = read_images(root)
    given = read_labels(labels, len(images)) if labels else stored
    if given is None:
        raise ConfigError(f"{root} holds no labels; give a labels file (one integer per image)")
    return ImageDataset(f"arrays:{Path(root).name}", images, given, class_names=class_names_for(given))


def read_images(path: str | Path) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(images (N,C,H,W) float in [0,1], labels (N,) or None) from a file or a folder of image files."""
    path = Path(path).expanduser()
    if path.is_dir():
        return read_image_folder(path), None
    if not path.is_file():
        raise ConfigError(f"file not found: {path}")
    suffix = path.suffix.lower()
    if suffix in (".pt", ".pth"):
        images, labels = _split_payload(_torch_load(path), path)
    elif suffix == ".npy":
        images, labels = _numpy_load(path), None
    elif suffix == ".npz":
        images, labels = _split_payload(_npz_arrays(path), path)
    else:
        raise ConfigError(f"{path}: unknown format {suffix!r}; valid: .pt, .npy, .npz, or a folder of images")
    pixels = to_image_tensor(images, str(path))
    return pixels, None if labels is None else to_label_tensor(labels, len(pixels), str(path))


def read_labels(path: str | Path, n: int) -> torch.Tensor:
    """(n,) int64 labels from a ``.pt``/``.npy``/``.npz`` file or a text file with one integer per line."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise ConfigError(f"labels file not found: {path}")
    suffix = path.suffix.lower()
    if suffix in (".pt", ".pth", ".npy", ".npz"):
        if suffix in (".pt", ".pth"):
            value = _torch_load(path)
        elif suffix == ".npy":
            value = _numpy_load(path)
        else:
            value = next(iter(_npz_arrays(path, LABEL_KEYS).values()))
        if isinstance(value, dict):
            value = value[_first_key(list(value), LABEL_KEYS, path)]
        return to_label_tensor(value, n, str(path))
    try:
        values = [int(line.split(",")[-1]) for line in path.read_text().split("\n") if line.strip()]
    except (ValueError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: labels must be one integer per line") from exc
    return to_label_tensor(values, n, str(path))


def read_image_folder(folder: Path) -> torch.Tensor:
    """Every image file of ``folder`` in file-name order, (N,C,H,W) float in [0,1]; all of one size. Each file is
    decoded by :func:`.imagefolder.read_full_image` (the pixel cap checked first, a bad file one line)."""
    files = image_files(folder)
    if not files:
        raise ConfigError(f"{folder} holds no image files ({', '.join(IMAGE_EXTENSIONS)})")
    arrays = [read_full_image(file) for file in files]
    shapes = {a.shape for a in arrays}
    if len(shapes) > 1:
        raise ShapeError(f"{folder}: images differ in size {sorted(shapes)[:3]}; give images of one size")
    if any(a.dtype != np.uint8 for a in arrays):  # every image in [0,1], whatever its depth
        arrays = [a.astype(np.float32) / np.float32(255) if a.dtype == np.uint8 else a for a in arrays]
    return to_image_tensor(np.stack(arrays), str(folder))


def image_files(folder: Path) -> list[Path]:
    """The image files directly in ``folder``, sorted by name, as an image folder lists them
    (:func:`~advspatial.data.imagefolder.scan_folder`: hidden entries, such as macOS's ``._name.png`` beside each
    image, are left out); the other files and the folders are named once on stderr."""
    dirs, files, others = scan_folder(folder)
    note_skipped_files(folder, sorted(others + [f"{name}/" for name in dirs]), where="directly in the folder")
    return files


# -- conversions --------------------------------------------------------------------------

def to_image_tensor(images: Any, what: str) -> torch.Tensor:
    """(N,C,H,W) float32 in [0,1] from uint8 [0,255] or float [0,1]; (N,H,W) gets a channel,
    channels-last (N,H,W,C with C in 1,3,4 and not N,C,H,W) is moved."""
    t = as_numeric_tensor(images, what, "images")
    if t.ndim == 3:
        t = t[:, None]
    if t.ndim != 4:
        raise ShapeError(f"{what}: images must be (N,C,H,W), (N,H,W,C) or (N,H,W); got {tuple(t.shape)}")
    if t.shape[-1] in (1, 3, 4) and t.shape[1] not in (1, 3, 4):
        t = t.permute(0, 3, 1, 2)
    if t.dtype == torch.uint8:
        return t.float() / 255
    if not t.is_floating_point():
        raise ShapeError(f"{what}: images must be uint8 or floating point, got {t.dtype}")
    t = t.float()
    if not bool(torch.isfinite(t).all()):
        raise ConfigError(f"{what}: images contain NaN or infinite values")
    if t.numel() and (float(t.min()) < 0 or float(t.max()) > 1):
        raise ConfigError(f"{what}: float images must lie in [0, 1] (found [{float(t.min()):.3g}, "
                          f"{float(t.max()):.3g}]); undo any normalization and wrap it into the model instead")
    return t.contiguous()


def to_label_tensor(labels: Any, n: int, what: str) -> torch.Tensor:
    """(n,) int64 labels >= 0 from integer (or integral float) labels shaped (n,), (n, 1) or (1, n), or from
    (n, K) rows that are one-hot or floating-point scores (reduced by argmax); any other shape, an integer
    (n, K) array that is not one-hot, or a non-numeric array is a one-line error."""
    t = as_numeric_tensor(labels, what, "labels")
    valid = f"valid: ({n},), ({n}, 1), or ({n}, classes) one-hot rows or scores"
    if t.dtype == torch.bool:  # before any reduction: argmax takes no booleans
        raise ConfigError(f"{what}: labels are booleans; valid: integer class indices")
    if t.ndim == 2 and n > 1 and (t.shape == (n, 1) or t.shape == (1, n)):
        t = t.reshape(n)  # a column (or row) of labels, not scores of one class
    elif t.ndim == 2 and t.shape[0] == n and t.shape[1] >= 2:
        one_hot = bool(((t == 0) | (t == 1)).all()) and bool((t.sum(1) == 1).all())
        if not (one_hot or t.is_floating_point()):
            raise ShapeError(f"{what}: labels {tuple(t.shape)} hold integers that are not one-hot rows; {valid}")
        t = t.argmax(1)
    if t.shape != (n,):
        raise ShapeError(f"{what}: labels must be ({n},), got {tuple(t.shape)}; {valid}")
    if t.is_floating_point() and not bool((t == t.round()).all()):
        raise ConfigError(f"{what}: labels must be integers")
    if t.is_floating_point() and n and float(t.abs().max()) >= 2**62:
        raise ConfigError(f"{what}: labels up to {float(t.abs().max()):g}; valid: class indices 0..2^62")
    t = t.long()
    if n and int(t.min()) < 0:
        raise ConfigError(f"{what}: labels must be >= 0")
    return t


def as_numeric_tensor(values: Any, what: str, role: str) -> torch.Tensor:
    """A CPU tensor of a numeric array or tensor: big-endian arrays in native order, ``longdouble`` as float64;
    strings, objects and other dtypes torch cannot hold are a one-line :class:`ConfigError` naming ``role``."""
    if isinstance(values, torch.Tensor):
        return values.detach().cpu()
    try:
        array = np.asarray(values)
    except (ValueError, TypeError, OverflowError) as exc:  # ragged lists, huge Python ints
        raise ConfigError(f"{what}: {role} are not a numeric array ({first_line(exc)})") from exc
    if array.dtype.kind not in "biuf":
        raise ConfigError(f"{what}: {role} have dtype {array.dtype} ({_KINDS.get(array.dtype.kind, 'not numbers')}); "
                          "valid: integers or floating-point numbers")
    if array.dtype.kind == "f" and array.dtype.itemsize > 8:  # longdouble: torch has no such dtype
        array = array.astype(np.float64)
    if not array.dtype.isnative:
        array = array.astype(array.dtype.newbyteorder("="))
    if array.dtype == np.uint16 or array.dtype == np.uint32 or array.dtype == np.uint64:
        array = array.astype(np.int64 if array.dtype != np.uint64 else np.float64)
    return torch.as_tensor(array)


_KINDS = {"U": "text", "S": "bytes", "O": "Python objects", "c": "complex numbers", "M": "dates", "m": "durations",
          "V": "raw records"}


def class_names_for(labels: torch.Tensor) -> tuple[str, ...]:
    """Class names ``"0".."K-1"`` covering every label."""
    return tuple(str(k) for k in range(int(labels.max()) + 1 if len(labels) else 1))


def _split_payload(value: Any, path: Path) -> tuple[Any, Any]:
    if isinstance(value, dict):
        images = value[_first_key(list(value), IMAGE_KEYS, path)]
        return images, next((value[k] for k in LABEL_KEYS if k in value), None)
    if isinstance(value, (tuple, list)) and len(value) == 2:
        return value[0], value[1]
    return value, None


def _first_key(keys: list[str], wanted: tuple[str, ...], path: Path) -> str:
    for key in wanted:
        if key in keys:
            return key
    if len(keys) == 1 or wanted is IMAGE_KEYS and keys:
        return keys[0]
    raise ConfigError(f"{path}: none of the keys {list(wanted)} in {keys}")


def _torch_load(path: Path) -> Any:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # a pickle with objects, a truncated file...
        raise ConfigError(f"{path} is not a tensor file torch can load safely: "
                          f"{str(exc).splitlines()[0] if str(exc) else type(exc).__name__}") from exc


def _numpy_load(path: Path) -> np.ndarray:
    """A ``.npy`` array; its header is checked against the file's size before anything is allocated (a header
    declaring a 5 TiB array is refused, not attempted); anything numpy cannot load safely is one line."""
    try:
        with open(path, "rb") as handle:
            version = np.lib.format.read_magic(handle)
            fmt = np.lib.format
            shape, _, dtype = (fmt.read_array_header_1_0 if version == (1, 0) else fmt.read_array_header_2_0)(handle)
            declared = int(np.prod(shape, dtype=object)) * dtype.itemsize
            left = path.stat().st_size - handle.tell()
        if dtype.hasobject:
            raise ValueError("it holds Python objects, which are not loaded (they could run code)")
        if declared > left:
            raise ValueError(f"its header declares {tuple(shape)} {dtype} ({declared} bytes) but the file holds "
                             f"{left}: truncated, or not what it says")
        return np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError, MemoryError, TypeError, SyntaxError, TokenError) as exc:
        # TokenError: numpy tokenizes the header's Python literal, and a damaged one can end mid-expression
        raise ConfigError(f"{path} is not a numpy array file numpy can load safely: {first_line(exc)}") from exc


def _npz_arrays(path: Path, keys: tuple[str, ...] | None = None) -> dict[str, np.ndarray]:
    """The arrays of a ``.npz`` archive (only ``keys``' first match when given); a truncated or mislabelled file
    (an ``.npy`` or text named ``.npz``) or object arrays are one line, not a numpy or zipfile traceback."""
    try:
        with np.load(path, allow_pickle=False) as archive:
            if not isinstance(archive, np.lib.npyio.NpzFile):
                raise ValueError("it is not a .npz archive (an .npy array named .npz?)")
            names = [_first_key(archive.files, keys, path)] if keys is not None else list(archive.files)
            return {k: archive[k] for k in names}
    except (AttributeError, TypeError) as exc:  # np.load gave an ndarray, which is no context manager
        raise ConfigError(f"{path} is not a .npz archive (an .npy array named .npz?); valid: np.savez output") from exc
    except (ValueError, OSError, EOFError, MemoryError, zipfile.BadZipFile, KeyError) as exc:
        why = "text or pickled data, which is not loaded" if "pickle" in str(exc) else first_line(exc)
        raise ConfigError(f"{path} is not a .npz archive numpy can load safely ({why}); valid: np.savez "
                          "output") from exc
