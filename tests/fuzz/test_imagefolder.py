"""Fuzzing data/imagefolder.py: malformed class maps and image folders (odd modes, sizes, names, empty classes,
non-images) give a valid dataset or a one-line DataError/ConfigError. Budget and profiles: tests/fuzzing.py."""

from __future__ import annotations

import io
import tempfile
from pathlib import Path

import pytest
from hypothesis import example, given
from hypothesis import strategies as st
from PIL import Image

from fuzzing import fuzz_settings, image_of_mode, valid_or_one_line
from advspatial.data.imagefolder import load_imagefolder
from advspatial.data.classmap import read_class_map

# -- class maps ------------------------------------------------------------------------------------------------

_index = st.one_of(st.integers(0, 12).map(str), st.sampled_from(["-1", "01", "1.0", " 3", "x", "", "٣", "99999999999"]),
                   st.integers(0, 10**30).map(str))
_name = st.one_of(st.sampled_from(["cat", "dog", "a b", "", " ", "é", "$x^$", "\\undefinedcmd", "n01440764"]),
                  st.text(max_size=8))
_line = st.one_of(
    st.tuples(_index, _name).map("\t".join),
    st.tuples(_index, _name, _name).map("\t".join),
    st.tuples(_index, _name, _name, _name).map("\t".join),
    st.sampled_from(["# comment", "", "   ", "\ufeff0\tcat"]),
    st.text(max_size=20),
)
_class_map_bytes = st.one_of(
    st.tuples(st.lists(_line, max_size=8), st.sampled_from(["\n", "\r\n", "\r"]),
              st.sampled_from(["utf-8", "utf-8-sig", "latin-1", "utf-16"]))
    .map(lambda t: t[1].join(t[0]).encode(t[2], errors="replace")),
    st.binary(max_size=64),
)


def check_class_map(path: Path) -> None:
    cmap = valid_or_one_line(read_class_map, path)
    if cmap is not None:
        assert sorted(set(cmap.labels.values())) == sorted(cmap.labels.values())  # one folder per index
        assert set(cmap.labels.values()) <= set(range(len(cmap.names)))
        assert all(name.strip() for name in cmap.labels) and all(cmap.names)


@fuzz_settings(150)
@given(_class_map_bytes)
@example(b"0\tairplane\n999999999\tzzz\n")  # range(max+1) grew toward tens of GB
@example("0\té".encode("latin-1"))  # UnicodeDecodeError
@example(bytes(range(256)))
@example("\ufeff0\tcat\n1\tdog".encode())  # a byte-order mark
def test_class_maps_parse_or_refuse_in_one_line(text: bytes) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp, "map.tsv")
        path.write_bytes(text)
        check_class_map(path)


# -- image folders ---------------------------------------------------------------------------------------------

MODES = ["1", "L", "LA", "P", "RGB", "RGBA", "CMYK", "I;16", "I", "F", "YCbCr", "HSV"]
FORMATS = {".png": "PNG", ".jpg": "JPEG", ".bmp": "BMP", ".webp": "WEBP", ".tif": "TIFF", ".gif": "GIF"}


def image_bytes(mode: str, width: int, height: int, fmt: str, seed: int) -> bytes:
    """An image of ``mode`` in ``fmt``; when Pillow cannot write that pair, the image in RGB (still a real file)."""
    img = image_of_mode(mode, width, height, seed)
    out = io.BytesIO()
    try:
        img.save(out, format=fmt)
    except (OSError, ValueError, KeyError):
        out = io.BytesIO()
        img.convert("RGB").save(out, format="PNG" if fmt in ("GIF", "TIFF") else fmt)
    return out.getvalue()


_file = st.one_of(
    st.builds(lambda mode, w, h, ext, seed, cut: (ext, image_bytes(mode, w, h, FORMATS[ext], seed), cut),
              st.sampled_from(MODES), st.integers(1, 40), st.integers(1, 40), st.sampled_from(sorted(FORMATS)),
              st.integers(0, 9), st.one_of(st.none(), st.integers(0, 60))),
    st.tuples(st.sampled_from([".png", ".jpg", ".txt", ".PNG"]), st.binary(max_size=40), st.none()),  # non-images
)
_folder_name = st.one_of(st.sampled_from(["cat", "dog", ".hidden", "a b", "é", "$x^$", "x.png", "0", "1"]),
                         st.text(st.characters(blacklist_categories=("Cs", "Cc"), blacklist_characters="/\\:"),
                                 min_size=1, max_size=6))
_layout = st.dictionaries(_folder_name, st.lists(_file, max_size=3), max_size=3)


def write_folder(root: Path, layout: dict[str, list[tuple[str, bytes, int | None]]], flat: list) -> None:
    """Class folders (``layout``) and files directly in ``root`` (``flat``); ``cut`` truncates a file."""
    root.mkdir(exist_ok=True)
    for name, files in layout.items():
        if name in (".", ".."):
            continue
        try:
            (root / name).mkdir()
        except OSError:  # a name the file system refuses
            continue
        for i, (ext, data, cut) in enumerate(files):
            (root / name / f"img{i}{ext}").write_bytes(data if cut is None else data[:cut])
    for i, (ext, data, cut) in enumerate(flat):
        (root / f"{i}_flat{ext}").write_bytes(data if cut is None else data[:cut])


def check_folder(root: Path, class_map: Path | None, size: int, channels: int, fit: str) -> None:
    data = valid_or_one_line(load_imagefolder, "test", root, size=size, channels=channels, fit=fit,
                             class_map=class_map)
    if data is None:
        return
    assert len(data) >= 1
    labels = data.labels
    assert int(labels.min()) >= 0 and int(labels.max()) < len(data.class_names)
    images = valid_or_one_line(data.images)  # decoded here: a corrupt file is refused now, in one line
    if images is not None:
        assert images.shape == (len(data), channels, size, size)
        assert images.dtype.is_floating_point and float(images.min()) >= 0 and float(images.max()) <= 1


@fuzz_settings(60)
@given(_layout, st.lists(_file, max_size=2), st.one_of(st.none(), _class_map_bytes),
       st.sampled_from([1, 7, 16]), st.sampled_from([1, 3]), st.sampled_from(["crop", "stretch"]))
def test_image_folders_load_or_refuse_in_one_line(layout, flat, class_map, size, channels, fit) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp, "images")
        write_folder(root, layout, flat)
        map_path = None
        if class_map is not None:
            map_path = Path(tmp, "map.tsv")
            map_path.write_bytes(class_map)
        check_folder(root, map_path, size, channels, fit)


def test_an_image_over_the_pixel_limit_is_refused_before_decoding(tmp_path, monkeypatch) -> None:
    """The stated limit (ADVSPATIAL_MAX_IMAGE_PIXELS) is checked from the header: one line naming the limit."""
    (tmp_path / "a").mkdir()
    Image.new("L", (300, 200)).save(tmp_path / "a" / "big.png")
    monkeypatch.setenv("ADVSPATIAL_MAX_IMAGE_PIXELS", "50000")
    data = load_imagefolder("test", tmp_path, size=8)
    with pytest.raises(Exception, match=r"300x200 = 60000 pixels, more than the limit of 50000") as info:
        data.images()
    assert type(info.value).__name__ == "DataError"
