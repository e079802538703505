"""CIFAR-10 from the official python-pickle batches (``cifar-10-batches-py``).

The files are pickles, and unpickling an untrusted file can run arbitrary
code. They are therefore read with :class:`RestrictedUnpickler`, which only
resolves the few globals that a pickled NumPy array needs and refuses every
other one; containers (dict, list, bytes, int) are built by pickle opcodes
without any global lookup.
"""

from __future__ import annotations

import pickle
import tarfile
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
import torch

from ..environment import cache_dir
from ..errors import DataError
from .base import ImageDataset
from .locate import candidate_dirs, find_files
from .locate import download as fetch
from .registry import register_dataset

try:  # NumPy >= 2 moved the pickle helpers to numpy._core
    from numpy._core.multiarray import _reconstruct
    from numpy._core.numeric import _frombuffer  # type: ignore[attr-defined]  # private: not in NumPy's stubs
except ImportError:  # pragma: no cover - NumPy 1.x
    from numpy.core.multiarray import _reconstruct  # type: ignore[no-redef]
    from numpy.core.numeric import _frombuffer  # type: ignore[no-redef]

CIFAR10_CLASSES = (
    "airplane", "automobile", "bird", "cat", "deer",
    "dog", "frog", "horse", "ship", "truck",
)
FOLDER = "cifar-10-batches-py"
SPLIT_FILES = {
    "train": tuple(f"data_batch_{i}" for i in range(1, 6)),
    "test": ("test_batch",),
}
META_FILE = "batches.meta"
CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
CIFAR10_CHECKSUM = "md5:c58f30108f718f92721af3b95e74349a"
ARCHIVE_NAME = "cifar-10-python.tar.gz"
#: one CIFAR row: 1024 red, then 1024 green, then 1024 blue values, each a row-major 32x32 plane
ROW_LENGTH = 3 * 32 * 32
#: images per batch file in the official release (fake/test batches may be smaller)
OFFICIAL_BATCH_SIZE = 10000


def _latin1_encode(text: str, encoding: str = "latin1") -> bytes:
    """Stand-in for ``_codecs.encode``, which protocol-2 pickles written by Python 3 use for bytes."""
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise pickle.UnpicklingError(f"refused _codecs.encode with encoding {encoding!r}")
    return text.encode("latin1")


#: the only globals a CIFAR batch (a dict holding a NumPy array) may reference
ALLOWED_GLOBALS: dict[tuple[str, str], Any] = {
    ("numpy.core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy.core.numeric", "_frombuffer"): _frombuffer,
    ("numpy._core.numeric", "_frombuffer"): _frombuffer,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    ("_codecs", "encode"): _latin1_encode,
}


class RestrictedUnpickler(pickle.Unpickler):
    """An unpickler that resolves only :data:`ALLOWED_GLOBALS` and refuses everything else."""

    def find_class(self, module: str, name: str) -> Any:
        try:
            return ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(f"global {module}.{name} is not allowed in a CIFAR batch") from None

    def persistent_load(self, pid: Any) -> Any:
        raise pickle.UnpicklingError("persistent ids are not allowed in a CIFAR batch")


def load_pickle(path: Path) -> dict[str, Any]:
    """Unpickle a CIFAR file safely into a dict with ``str`` keys; :class:`DataError` when it is not one."""
    try:
        with path.open("rb") as fh:
            obj = RestrictedUnpickler(fh, encoding="bytes").load()
    except (pickle.UnpicklingError, EOFError, OSError, ValueError, TypeError, AttributeError, IndexError,
            KeyError) as exc:
        raise DataError(f"{path}: not a valid CIFAR pickle ({type(exc).__name__}: {exc})") from exc
    if not isinstance(obj, dict):
        raise DataError(f"{path}: a CIFAR batch must unpickle to a dict, got {type(obj).__name__}")
    return {k.decode("latin1") if isinstance(k, bytes) else str(k): v for k, v in obj.items()}


def read_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """One batch file -> (pixels (N,3,32,32) uint8, labels (N,) int64), with every field checked."""
    batch = load_pickle(path)
    if "data" not in batch or "labels" not in batch:
        raise DataError(f"{path}: CIFAR batch needs keys 'data' and 'labels', has {sorted(batch)}")
    data, labels = batch["data"], batch["labels"]
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != ROW_LENGTH:
        what = f"{data.dtype} array of shape {data.shape}" if isinstance(data, np.ndarray) else type(data).__name__
        raise DataError(f"{path}: 'data' must be a uint8 array (N, {ROW_LENGTH}) "
                        f"(N={OFFICIAL_BATCH_SIZE} in the official files), got {what}")
    try:
        labels = np.asarray(labels, dtype=np.int64)
    except (TypeError, ValueError, OverflowError) as exc:
        raise DataError(f"{path}: 'labels' must be a list of integers ({exc})") from exc
    if labels.shape != (len(data),):
        raise DataError(f"{path}: {len(data)} images but 'labels' has shape {labels.shape}")
    if labels.size and (labels.min() < 0 or labels.max() >= len(CIFAR10_CLASSES)):
        raise DataError(f"{path}: labels outside 0..{len(CIFAR10_CLASSES) - 1}")
    return data.reshape(-1, 3, 32, 32), labels


def read_class_names(path: Path | None) -> tuple[str, ...]:
    """Class names from ``batches.meta`` when present (checked), else the standard ten."""
    if path is None or not path.is_file():
        return CIFAR10_CLASSES
    names = load_pickle(path).get("label_names")
    if not isinstance(names, list) or len(names) != len(CIFAR10_CLASSES):
        raise DataError(f"{path}: 'label_names' must be a list of {len(CIFAR10_CLASSES)} names")
    return tuple(n.decode("latin1") if isinstance(n, bytes) else str(n) for n in names)


def extract_archive(archive: Path, dest: Path) -> Path:
    """Extract the CIFAR tar.gz into ``dest`` safely; return the batches folder.

    Only regular files and folders under ``cifar-10-batches-py/`` are extracted;
    absolute names, ``..`` parts, links and devices are refused (path traversal).
    """
    try:
        with tarfile.open(archive, "r:gz") as tar:
            members = [m for m in tar.getmembers() if _safe_member(m)]
            if not any(m.isfile() for m in members):
                raise DataError(f"{archive}: no files under {FOLDER}/ in the archive")
            # the "data" filter (Python >= 3.10.12) re-checks every member; our own filter above suffices without it
            extra: dict[str, Any] = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
            tar.extractall(dest, members=members, **extra)
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise DataError(f"{archive}: corrupt CIFAR-10 archive ({exc})") from exc
    return dest / FOLDER


def _safe_member(member: tarfile.TarInfo) -> bool:
    parts = PurePosixPath(member.name).parts
    return (
        (member.isfile() or member.isdir())
        and len(parts) >= 1
        and parts[0] == FOLDER
        and not PurePosixPath(member.name).is_absolute()
        and ".." not in parts
    )


def _find_batches(split: str, root: str | Path | None) -> Path | None:
    """The folder holding the split's batch files: ``<dir>/cifar-10-batches-py`` or ``<dir>`` itself."""
    names = list(SPLIT_FILES[split])
    nested = find_files("cifar10", [f"{FOLDER}/{n}" for n in names], root)
    if nested is not None:
        return nested / FOLDER
    return find_files("cifar10", names, root)


@register_dataset("cifar10", "CIFAR-10 32x32 colour, 10 classes (python batches from a path, or download)",
                  (3, 32, 32), 10)
def load_cifar10(split: str = "test", root: str | Path | None = None, download: bool = False) -> ImageDataset:
    """CIFAR-10 from ``root``, ``$ADVSPATIAL_DATA/cifar10``, the cache, or a checked download.

    ``root`` may hold the ``cifar-10-batches-py`` folder or be that folder.
    Pixels stay uint8 (N,3,32,32); there are no foreground masks.
    """
    directory = _find_batches(split, root)
    if directory is None and download:
        target = cache_dir("data", "cifar10")
        archive = fetch(CIFAR10_URL, target / ARCHIVE_NAME, CIFAR10_CHECKSUM)
        directory = extract_archive(archive, target)
        archive.unlink(missing_ok=True)
    if directory is None:
        searched = ", ".join(str(d) for d in candidate_dirs("cifar10", root))
        raise DataError(
            f"cifar10 ({split}) not found (searched: {searched}). Make it available by one of: "
            f"use the name cifar10:PATH (root=PATH from Python; a folder holding {FOLDER}/); "
            f"set ADVSPATIAL_DATA to a folder holding cifar10/{FOLDER}/ (unpacked from {CIFAR10_URL}); "
            "or, from Python, load_dataset(..., download=True) where the network allows it (no command downloads)"
        )
    parts = [read_batch(directory / name) for name in SPLIT_FILES[split]]
    pixels = np.concatenate([p for p, _ in parts])
    labels = np.concatenate([y for _, y in parts])
    class_names = read_class_names(directory / META_FILE)
    return ImageDataset("cifar10", torch.from_numpy(pixels.copy()), torch.from_numpy(labels), class_names)


__all__ = ["CIFAR10_CLASSES", "RestrictedUnpickler", "extract_archive", "load_cifar10", "load_pickle", "read_batch"]
