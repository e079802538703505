"""Class maps: which model output each class folder (or flat file key) of an image folder is.

Why a file of its own: a class-map TSV (``index<TAB>folder name[<TAB>display name]``, one line per model
output) is user input checked line by line, with one-line errors naming the line, apart from how images are
found and decoded (:mod:`.imagefolder`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from ..errors import DataError


@dataclass(frozen=True)
class ClassMap:
    """Model outputs read from a class-map TSV file.

    Attributes:
        path: the file it was read from (for error messages).
        labels: folder name (or flat-file key) -> model output index.
        names: display name of every output, ``len(names) == max index + 1``.
    """

    path: Path
    labels: dict[str, int]
    names: tuple[str, ...]


def read_class_map(path: str | Path) -> ClassMap:
    """Parse ``index<TAB>folder name[<TAB>display name]`` lines; :class:`DataError` with the line number when bad.

    Blank lines and lines starting with ``#`` are skipped. Indices are
    non-negative integers, unique, and cover ``0..max`` without gaps; folder
    names are non-empty and unique; display names may repeat (ImageNet has two
    "crane"s) and default to the folder name.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise DataError(f"class map {path} does not exist or is not a file")
    labels: dict[str, int] = {}
    names: dict[int, str] = {}
    lines_of: dict[int, int] = {}
    for lineno, line in enumerate(_class_map_text(path).splitlines(), start=1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        index, folder, display = _parse_class_line(path, lineno, line)
        if index in names:
            raise DataError(f"class map {path}, line {lineno}: index {index} repeats line {lines_of[index]}")
        if folder in labels:
            raise DataError(f"class map {path}, line {lineno}: folder name {folder!r} repeats line "
                            f"{lines_of[labels[folder]]}")
        labels[folder], names[index], lines_of[index] = index, display, lineno
    if not names:
        raise DataError(f"class map {path} has no class lines; expected index<TAB>folder name[<TAB>display name]")
    missing = _first_missing(names, 11)
    if missing:
        shown = ", ".join(map(str, missing[:10])) + (", ..." if len(missing) > 10 else "")
        raise DataError(f"class map {path}: indices must cover 0..{max(names)} (one line per model output); "
                        f"missing {shown}")
    return ClassMap(path, labels, tuple(names[i] for i in range(len(names))))


#: the largest class-map file read, in bytes (ImageNet-21k's map is about 1 MB), checked before reading it
MAX_CLASS_MAP_BYTES = 16 * 1024 * 1024


def _class_map_text(path: Path) -> str:
    """The class map's text: bounded in size before it is read, UTF-8 (a byte-order mark is dropped); a
    :class:`DataError` in one line otherwise."""
    try:
        size = path.stat().st_size
        if size > MAX_CLASS_MAP_BYTES:
            raise DataError(f"class map {path} is {size} bytes; valid: a text file of at most "
                            f"{MAX_CLASS_MAP_BYTES} bytes (one line per class)")
        raw = path.read_bytes()
    except OSError as exc:
        raise DataError(f"cannot read class map {path}: {exc.strerror or exc}") from exc
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        raise DataError(f"class map {path}, line {line}: byte 0x{raw[exc.start]:02x} is not UTF-8; valid: UTF-8 "
                        "text (save it as UTF-8)") from exc


def _first_missing(names: dict[int, str], limit: int) -> list[int]:
    """Up to ``limit`` indices in 0..max(names) that ``names`` lacks, in order, without building the whole range
    (a map naming index 999999999 must not allocate a billion numbers)."""
    missing: list[int] = []
    top = max(names)
    if top == len(names) - 1:  # unique non-negative indices: they cover 0..max exactly
        return missing
    k = 0
    while len(missing) < limit and k <= top:
        if k not in names:
            missing.append(k)
        k += 1
    return missing


def _parse_class_line(path: Path, lineno: int, line: str) -> tuple[int, str, str]:
    """(index, folder name, display name) of one class-map line."""
    fields = [f.strip() for f in line.split("\t")]
    where = f"class map {path}, line {lineno}"
    if len(fields) not in (2, 3):
        raise DataError(f"{where}: expected index<TAB>folder name[<TAB>display name], "
                        f"got {len(fields)} tab-separated field(s): {line!r}")
    if not re.fullmatch(r"[0-9]+", fields[0]):
        raise DataError(f"{where}: index {fields[0]!r} is not a non-negative integer")
    if not fields[1]:
        raise DataError(f"{where}: the folder name is empty")
    display = fields[2] if len(fields) == 3 and fields[2] else fields[1]
    return int(fields[0]), fields[1], display
