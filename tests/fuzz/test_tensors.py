"""Fuzzing data/tensors.py, the readers behind ``analyze`` and ``arrays:PATH``: .npy/.npz/.pt files of odd
dtypes, shapes and byte orders, truncated or with damaged headers, label files of any text, and folders of
odd images give images in [0,1] and labels >= 0, or a one-line error. Budget and profiles: tests/fuzzing.py."""

from __future__ import annotations

import io
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import example, given
from hypothesis import strategies as st
from PIL import Image

from fuzzing import fuzz_settings, image_of_mode, valid_or_one_line
from advspatial.data.tensors import read_image_folder, read_images, read_labels

DTYPES = ["uint8", "int8", "<i2", ">i2", "<i4", ">i4", "<i8", ">u8", "uint16", "bool", "<f2", "<f4", ">f4", "<f8",
          ">f8", "longdouble", "complex64", "U3", "S2", "datetime64[s]", "timedelta64[s]", "V4",
          [("a", "<f4"), ("b", "<i2")]]

_shape = st.lists(st.integers(0, 4), min_size=0, max_size=5).map(tuple)
_values = st.sampled_from(["unit", "bytes", "wide", "nan", "labels", "one-hot"])


def make_array(dtype: object, shape: tuple[int, ...], values: str, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    if values == "unit":
        raw = rng.random(shape)
    elif values == "bytes":
        raw = rng.integers(0, 256, shape)
    elif values == "wide":
        raw = rng.normal(0, 1e6, shape)
    elif values == "nan":
        raw = np.where(rng.random(shape) < 0.5, np.nan, rng.random(shape))
    elif values == "labels":
        raw = rng.integers(0, 5, shape)
    else:
        raw = np.eye(3)[rng.integers(0, 3, shape[:1] or (1,))]
    try:
        with np.errstate(invalid="ignore", over="ignore"):
            return np.asarray(raw).astype(np.dtype(dtype))
    except (TypeError, ValueError):
        return np.zeros(np.asarray(raw).shape, dtype=np.dtype(dtype))


_array = st.builds(make_array, st.sampled_from(DTYPES), _shape, _values, st.integers(0, 5))
_damage = st.one_of(st.none(), st.tuples(st.just("cut"), st.integers(0, 400)),
                    st.tuples(st.just("byte"), st.integers(0, 120), st.integers(0, 255)))


def array_file(path: Path, arrays: dict[str, np.ndarray], kind: str, damage: tuple | None) -> Path:
    """Save ``arrays`` as ``kind`` (.npy: the first; .npz: all; .pt: as tensors where torch can), then damage it."""
    buffer = io.BytesIO()
    first = next(iter(arrays.values()))
    if kind == ".npy":
        np.save(buffer, first, allow_pickle=False)
    elif kind == ".npz":
        np.savez(buffer, **arrays)
    else:
        try:
            torch.save({k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in arrays.items()}, buffer)
        except (TypeError, ValueError, RuntimeError):
            torch.save({k: torch.zeros(v.shape) for k, v in arrays.items()}, buffer)
    data = bytearray(buffer.getvalue())
    if damage is not None and damage[0] == "cut":
        data = data[: damage[1]]
    elif damage is not None and damage[1] < len(data):
        data[damage[1]] = damage[2]
    path.write_bytes(bytes(data))
    return path


def check_images(path: Path) -> None:
    read = valid_or_one_line(read_images, path)
    if read is not None:
        images, labels = read
        assert images.ndim == 4 and images.dtype == torch.float32
        assert bool(torch.isfinite(images).all())
        assert images.numel() == 0 or 0 <= float(images.min()) <= float(images.max()) <= 1
        if labels is not None:
            check_label_tensor(labels, len(images))


def check_label_tensor(labels: torch.Tensor, n: int) -> None:
    assert labels.shape == (n,) and labels.dtype == torch.int64
    assert n == 0 or int(labels.min()) >= 0


@fuzz_settings(120)
@given(st.dictionaries(st.sampled_from(["x", "x_adv", "images", "labels", "y", "other"]), _array, min_size=1,
                       max_size=3), st.sampled_from([".npy", ".npz", ".pt"]), _damage)
@example({"x_adv": np.array([np.zeros(3), "x"], dtype=object)}, ".npy", None)  # object arrays
@example({"x": np.zeros((2, 1, 4, 4), ">f4")}, ".npy", None)  # big-endian
@example({"x": np.array(0, np.uint8)}, ".npy", ("byte", 64, 0))  # found: a NUL in the header, tokenize.TokenError
@example({"x": np.zeros((2, 1, 4, 4), np.longdouble)}, ".npz", ("cut", 100))  # truncated
def test_array_files_read_or_refuse_in_one_line(arrays, kind, damage) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp, f"examples{kind}")
        try:
            array_file(path, arrays, kind, damage)
        except ValueError:  # numpy refuses to save object arrays without pickle: then the file is text
            path.write_text(repr(arrays))
        check_images(path)


_label_text = st.one_of(
    st.lists(st.one_of(st.integers(-3, 10**25).map(str), st.sampled_from(["1.0", "nan", "1e3", "a,2", " 4 ", "", "٣"]),
                       st.text(max_size=6)), max_size=6).map("\n".join),
    st.binary(max_size=30).map(lambda b: b.decode("latin-1")),
)


@fuzz_settings(80)
@given(st.one_of(_label_text.map(lambda t: ("text", t)), _array.map(lambda a: ("array", a))),
       st.sampled_from([".txt", ".csv", ".npy", ".npz"]), st.integers(0, 5))
@example(("text", "99999999999999999999999\n1\n2"), ".txt", 3)  # a label too large for int64
@example(("array", np.array(["1", "2"])), ".npy", 2)  # string labels
@example(("array", np.array([[1], [2], [0]])), ".npy", 3)  # (N, 1) labels are labels
@example(("array", np.array([[False, False, True]])), ".npy", 1)  # found: argmax() of boolean one-hot rows
def test_label_files_read_or_refuse_in_one_line(content, suffix, n) -> None:
    kind, value = content
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp, f"labels{suffix}")
        if kind == "text":
            path.write_bytes(value.encode("utf-8", errors="surrogatepass"))
        elif suffix in (".npy", ".npz"):
            array_file(path, {"labels": value}, suffix, None)
        else:
            path.write_text("\n".join(map(str, np.ravel(value).tolist())))
        labels = valid_or_one_line(read_labels, path, n)
        if labels is not None:
            check_label_tensor(labels, n)


MODES = ["1", "L", "LA", "P", "RGB", "RGBA", "CMYK", "I;16", "I", "F"]


def folder_image(mode: str, side: int, seed: int) -> bytes:
    img = image_of_mode(mode, side, side, seed)
    out = io.BytesIO()
    img.save(out, format="TIFF" if mode in ("I", "F", "CMYK") else "PNG")
    return out.getvalue()


_folder_file = st.one_of(
    st.builds(lambda mode, side, seed, ext: (ext, folder_image(mode, side, seed)), st.sampled_from(MODES),
              st.sampled_from([1, 4, 5]), st.integers(0, 3), st.sampled_from([".png", ".tif", ".jpg"])),
    st.tuples(st.sampled_from([".png", ".jpg"]), st.binary(max_size=30)),
)


@fuzz_settings(50)
@given(st.lists(_folder_file, max_size=4), st.lists(st.integers(0, 200), max_size=4))
@example([(".png", b"")], [])  # a zero-byte file named .png
def test_analyze_image_folders_read_or_refuse_in_one_line(files, cuts) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp, "adv")
        folder.mkdir()
        for i, (ext, data) in enumerate(files):
            cut = cuts[i] if i < len(cuts) else None
            (folder / f"{i:02d}{ext}").write_bytes(data if cut is None else data[:cut])
        read = valid_or_one_line(read_image_folder, folder)
        if read is not None:
            assert read.ndim == 4 and len(read) == len(files)
            assert 0 <= float(read.min()) <= float(read.max()) <= 1


def test_an_analyze_folder_image_over_the_pixel_limit_is_refused_before_decoding(tmp_path, monkeypatch) -> None:
    """The folder reader had no pixel cap and let Pillow's DecompressionBombError out."""
    from PIL import Image as PILImage

    Image.new("L", (300, 200)).save(tmp_path / "big.png")
    monkeypatch.setenv("ADVSPATIAL_MAX_IMAGE_PIXELS", "50000")
    with pytest.raises(Exception, match=r"300x200 = 60000 pixels, more than the limit of 50000") as info:
        read_image_folder(tmp_path)
    assert type(info.value).__name__ == "DataError"
    monkeypatch.setattr(PILImage, "MAX_IMAGE_PIXELS", 1000)  # Pillow's own bomb check, below ours
    monkeypatch.setenv("ADVSPATIAL_MAX_IMAGE_PIXELS", "10000000")
    with pytest.raises(Exception, match="big.png") as info:
        read_image_folder(tmp_path)
    assert type(info.value).__name__ == "DataError"
