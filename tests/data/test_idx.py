"""IDX reader/writer: round trips for every dtype, and a DataError for every kind of damage."""

from __future__ import annotations

import gzip
import struct

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from advspatial.data.idx import IDX_DTYPES, parse_idx, read_idx, write_idx
from advspatial.errors import DataError

NATIVE_DTYPES = [dt.newbyteorder("=") for dt in IDX_DTYPES.values()]


@st.composite
def idx_arrays(draw: st.DrawFn) -> np.ndarray:
    dtype = draw(st.sampled_from(NATIVE_DTYPES))
    shape = draw(hnp.array_shapes(min_dims=1, max_dims=4, min_side=0, max_side=5))
    return draw(hnp.arrays(dtype, shape, elements={"allow_nan": False} if dtype.kind == "f" else None))


@settings(max_examples=25, deadline=None)
@given(array=idx_arrays(), compress=st.booleans())
def test_write_read_round_trip(tmp_path_factory: pytest.TempPathFactory, array: np.ndarray, compress: bool) -> None:
    path = tmp_path_factory.mktemp("idx") / ("a.idx.gz" if compress else "a.idx")
    write_idx(path, array)
    assert (path.read_bytes()[:2] == b"\x1f\x8b") == compress
    back = read_idx(path)
    assert back.dtype == array.dtype
    assert back.shape == array.shape
    np.testing.assert_array_equal(back, array)


def test_header_layout_is_big_endian() -> None:
    """Known answer: a 2x3 int32 array; header 00 00 0C 02, dims, then big-endian data."""
    array = np.arange(6, dtype=np.int32).reshape(2, 3) - 2
    raw = struct.pack(">HBB2I", 0, 0x0C, 2, 2, 3) + array.astype(">i4").tobytes()
    np.testing.assert_array_equal(parse_idx(raw), array)


def _raw(array: np.ndarray) -> bytes:
    header = struct.pack(">HBB", 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.tobytes()


GOOD = _raw(np.arange(24, dtype=np.uint8).reshape(2, 3, 4))


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"\x00\x00", "not an IDX file"),
        (b"\x01\x02" + GOOD[2:], "bad IDX magic"),
        (GOOD[:2] + b"\x07" + GOOD[3:], "unknown IDX dtype code 0x07"),
        (GOOD[:3] + b"\x00", "0 dimensions"),
        (GOOD[:10], "truncated IDX header"),
        (GOOD[:-1], "truncated"),
        (GOOD + b"\x00", "trailing bytes"),
    ],
    ids=["too-short", "bad-magic", "dtype-code", "zero-dims", "header", "data", "trailing"],
)
def test_damaged_raw_file_raises_data_error(tmp_path, data: bytes, message: str) -> None:
    path = tmp_path / "bad.idx"
    path.write_bytes(data)
    with pytest.raises(DataError, match=message) as info:
        read_idx(path)
    assert str(path) in str(info.value)


def test_damaged_gzip_raises_data_error(tmp_path) -> None:
    """Truncated gzip, a flipped CRC and corrupt deflate data all end as DataError naming the file."""
    packed = gzip.compress(bytes(range(256)) * 20, mtime=0)
    damaged = {
        "truncated": packed[:-12],
        "crc": packed[:-8] + bytes(b ^ 0xFF for b in packed[-8:-4]) + packed[-4:],
        "deflate": packed[:12] + bytes(b ^ 0x5A for b in packed[12:40]) + packed[40:],
    }
    for name, data in damaged.items():
        path = tmp_path / f"{name}.idx.gz"
        path.write_bytes(data)
        with pytest.raises(DataError, match="gzip") as info:
            read_idx(path)
        assert str(path) in str(info.value), name


def test_gzip_of_damaged_idx_reports_idx_error(tmp_path) -> None:
    path = tmp_path / "short.idx.gz"
    path.write_bytes(gzip.compress(GOOD[:-3]))
    with pytest.raises(DataError, match="truncated"):
        read_idx(path)


def test_missing_file_and_unwritable_dtype(tmp_path) -> None:
    with pytest.raises(DataError, match="not found"):
        read_idx(tmp_path / "nope.idx")
    with pytest.raises(DataError, match="cannot write dtype"):
        write_idx(tmp_path / "b.idx", np.zeros(3, dtype=np.int64))
