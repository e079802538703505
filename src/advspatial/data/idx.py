"""Reader for the IDX format of MNIST and Fashion-MNIST (gzip-compressed or raw).

Format: two zero bytes, a dtype code, the number of dimensions, then one
big-endian uint32 per dimension, then the data in big-endian order.
"""

from __future__ import annotations

import gzip
import struct
import zlib
from pathlib import Path

import numpy as np

from ..errors import DataError

#: IDX dtype code -> numpy big-endian dtype
IDX_DTYPES: dict[int, np.dtype] = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}


def parse_idx(data: bytes, source: str = "<bytes>") -> np.ndarray:
    """Parse IDX bytes into an array; raise :class:`DataError` on any inconsistency."""
    if len(data) < 4:
        raise DataError(f"{source}: not an IDX file (only {len(data)} bytes)")
    zero, dtype_code, ndim = struct.unpack(">HBB", data[:4])
    if zero != 0:
        raise DataError(f"{source}: bad IDX magic number 0x{data[:4].hex()} (must start with 0x0000)")
    if dtype_code not in IDX_DTYPES:
        valid = ", ".join(f"0x{c:02X}" for c in IDX_DTYPES)
        raise DataError(f"{source}: unknown IDX dtype code 0x{dtype_code:02X}; valid: {valid}")
    if ndim == 0:
        raise DataError(f"{source}: IDX file declares 0 dimensions")
    header_end = 4 + 4 * ndim
    if len(data) < header_end:
        raise DataError(f"{source}: truncated IDX header ({len(data)} bytes, {header_end} needed)")
    dims = struct.unpack(f">{ndim}I", data[4:header_end])
    dtype = IDX_DTYPES[dtype_code]
    expected = int(np.prod(dims, dtype=np.int64)) * dtype.itemsize
    actual = len(data) - header_end
    if actual != expected:
        what = "truncated" if actual < expected else "has trailing bytes"
        raise DataError(f"{source}: IDX data {what}: {actual} bytes for dims {dims} ({expected} expected)")
    array = np.frombuffer(data, dtype=dtype, offset=header_end).reshape(dims)
    return array.astype(dtype.newbyteorder("="), copy=False)


def read_idx(path: str | Path) -> np.ndarray:
    """Read an IDX file, gzip-compressed (``.gz``, detected by content) or raw."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"IDX file not found: {path}")
    raw = path.read_bytes()
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as exc:
            raise DataError(f"{path}: corrupt or truncated gzip stream ({exc})") from exc
    return parse_idx(raw, source=str(path))


def write_idx(path: str | Path, array: np.ndarray, compress: bool | None = None) -> Path:
    """Write ``array`` as IDX (gzip when ``compress`` or the name ends in .gz). Used by tests and tools."""
    path = Path(path)
    codes = {v.newbyteorder("=").str: k for k, v in IDX_DTYPES.items()}
    native = np.asarray(array)
    key = native.dtype.newbyteorder("=").str
    if key not in codes:
        raise DataError(f"cannot write dtype {native.dtype} as IDX")
    code = codes[key]
    header = struct.pack(">HBB", 0, code, native.ndim) + struct.pack(f">{native.ndim}I", *native.shape)
    payload = header + native.astype(IDX_DTYPES[code], copy=False).tobytes()
    if compress or (compress is None and path.suffix == ".gz"):
        payload = gzip.compress(payload, mtime=0)
    path.write_bytes(payload)
    return path
