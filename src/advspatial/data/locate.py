"""Where dataset files are looked for, and optional checked downloads."""

from __future__ import annotations

import hashlib
import os
import urllib.request
from pathlib import Path

from ..environment import cache_path
from ..errors import DataError


def candidate_dirs(dataset: str, root: str | Path | None, system_dir: str | None = None) -> list[Path]:
    """Directories searched for ``dataset``'s files, in order.

    1. an explicit ``root`` argument;
    2. ``$ADVSPATIAL_DATA/<dataset>`` (and ``$ADVSPATIAL_DATA`` itself);
    3. the cache dir ``<cache>/data/<dataset>``;
    4. a system location such as ``/usr/share/datasets/<dataset>`` (Debian packages).
    """
    dirs: list[Path] = []
    if root is not None:
        dirs.append(Path(root).expanduser())
    env = os.environ.get("ADVSPATIAL_DATA")
    if env:
        dirs += [Path(env).expanduser() / dataset, Path(env).expanduser()]
    dirs.append(cache_path("data", dataset))  # looked in, not created
    if system_dir:
        dirs.append(Path(system_dir))
    return dirs


def find_files(dataset: str, names: list[str], root: str | Path | None, system_dir: str | None = None) -> Path | None:
    """The first candidate directory holding every file in ``names`` (``.gz`` or raw), else None."""
    for directory in candidate_dirs(dataset, root, system_dir):
        if all(resolve(directory, name) is not None for name in names):
            return directory
    return None


def resolve(directory: Path, name: str) -> Path | None:
    """``directory/name``, or the same file without its ``.gz`` suffix, if either exists."""
    for candidate in (directory / name, directory / name.removesuffix(".gz")):
        if candidate.is_file():
            return candidate
    return None


def checksum_of(path: Path, algorithm: str = "sha256") -> str:
    """Hex digest of a file with ``algorithm`` (any name hashlib knows)."""
    digest = hashlib.new(algorithm)
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def download(url: str, dest: Path, checksum: str | None = None, timeout: float = 60.0) -> Path:
    """Download ``url`` to ``dest`` and verify ``checksum`` (``"sha256:<hex>"`` or ``"md5:<hex>"``).

    Raises :class:`DataError` when the download fails or the checksum does not match.
    """
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_suffix(dest.suffix + ".part")
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response, tmp.open("wb") as out:
            while chunk := response.read(1 << 20):
                out.write(chunk)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise DataError(f"download of {url} failed ({exc}); the network may not allow it here") from exc
    if checksum is not None:
        algorithm, _, expected = checksum.partition(":")
        if not expected or algorithm not in hashlib.algorithms_available:
            tmp.unlink(missing_ok=True)
            raise DataError(f"checksum {checksum!r} for {url} is malformed; valid: 'sha256:<hex>' or 'md5:<hex>'")
        if (actual := checksum_of(tmp, algorithm)) != expected:
            tmp.unlink(missing_ok=True)
            raise DataError(f"{algorithm} checksum mismatch for {url}: got {actual}, expected {expected}")
    tmp.replace(dest)
    return dest
