"""Datasets from tensors: in memory (memory:NAME) and in files (arrays:PATH)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from advspatial.data import load_dataset, read_images, read_labels, register_dataset_object
from advspatial.data.tensors import has_own_training_set, to_image_tensor
from advspatial.errors import ConfigError, ShapeError


@pytest.fixture
def uint8_images():
    return torch.randint(0, 256, (5, 3, 8, 6), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("layout", ["pt-tensor", "pt-pair", "pt-dict", "npy-channels-last", "npz"])
def test_files_round_trip(tmp_path, uint8_images, layout):
    expected = uint8_images.float() / 255
    labels = torch.tensor([0, 3, 1, 1, 2])
    path = tmp_path / ("data.npz" if layout == "npz" else "data.npy" if layout.startswith("npy") else "data.pt")
    if layout == "pt-tensor":
        torch.save(uint8_images, path)
    elif layout == "pt-pair":
        torch.save((expected, labels), path)
    elif layout == "pt-dict":
        torch.save({"x": expected, "y": labels}, path)
    elif layout == "npy-channels-last":
        np.save(path, uint8_images.permute(0, 2, 3, 1).numpy())
    else:
        np.savez(path, images=uint8_images.numpy(), labels=labels.numpy())
    images, stored = read_images(path)
    assert torch.equal(images, expected)
    if layout in ("pt-pair", "pt-dict", "npz"):
        assert torch.equal(stored, labels)
    else:
        assert stored is None


def test_image_folder_in_name_order(tmp_path, uint8_images):
    from PIL import Image

    for i in reversed(range(5)):
        Image.fromarray(uint8_images[i].permute(1, 2, 0).numpy()).save(tmp_path / f"{i:02d}.png")
    images, labels = read_images(tmp_path)
    assert torch.equal(images, uint8_images.float() / 255) and labels is None


def test_an_image_folder_leaves_hidden_files_out_and_names_the_others(tmp_path, uint8_images, capsys, monkeypatch):
    """macOS's ``._NAME.png`` beside each image is no image: it stopped the folder with "cannot read image"; a GIF is
    read; a text file and a folder are named once on stderr, not read in silence."""
    from PIL import Image

    from advspatial import distributed

    monkeypatch.setattr(distributed, "_NOTED", set())
    for i in range(2):
        Image.fromarray(uint8_images[i].permute(1, 2, 0).numpy()).save(tmp_path / f"{i:02d}.png")
    Image.fromarray(uint8_images[2].permute(1, 2, 0).numpy()).save(tmp_path / "02.gif")
    (tmp_path / "._00.png").write_bytes(b"\x00\x05\x16\x07 AppleDouble")
    (tmp_path / "labels.txt").write_text("0\n1\n")
    (tmp_path / "more").mkdir()
    images, _ = read_images(tmp_path)
    assert images.shape[0] == 3 and torch.equal(images[:2], uint8_images[:2].float() / 255)
    read_images(tmp_path)
    (line,) = [x for x in capsys.readouterr().err.splitlines() if "not read" in x]
    assert "2 file(s) not read (labels.txt, more/)" in line and "._00.png" not in line


def test_arrays_dataset_with_a_labels_file(tmp_path, uint8_images):
    np.save(tmp_path / "x.npy", uint8_images.numpy())
    (tmp_path / "y.txt").write_text("0\n2\n1\n2\n0\n")
    data = load_dataset(f"arrays:{tmp_path / 'x.npy'}", labels=str(tmp_path / "y.txt"))
    assert data.labels.tolist() == [0, 2, 1, 2, 0] and data.num_classes == 3
    with pytest.raises(ConfigError, match="no labels"):
        load_dataset(f"arrays:{tmp_path / 'x.npy'}")
    with pytest.raises(ShapeError, match=r"labels must be \(5,\)"):
        read_labels(_write(tmp_path / "short.txt", "1\n2\n"), 5)


def _write(path, text):
    path.write_text(text)
    return path


@pytest.mark.parametrize("bad, error, match", [
    (torch.full((2, 1, 4, 4), 2.0), ConfigError, r"\[0, 1\]"),
    (torch.full((2, 1, 4, 4), float("nan")), ConfigError, "NaN"),
    (torch.zeros(2, 4, 4, dtype=torch.int32), ShapeError, "uint8 or floating"),
    (torch.zeros(4, 4), ShapeError, "must be"),
])
def test_bad_images_are_one_clear_error(bad, error, match):
    with pytest.raises(error, match=match):
        to_image_tensor(bad, "images")


def test_pickled_objects_are_refused(tmp_path):
    path = tmp_path / "evil.pt"
    import argparse

    torch.save({"images": torch.zeros(1, 1, 2, 2), "extra": argparse.Namespace(code="runs on load")}, path)
    with pytest.raises(ConfigError, match="safely"):
        read_images(path)


@settings(max_examples=25, deadline=None)
@given(n=st.integers(1, 4), c=st.sampled_from([1, 3]), h=st.integers(5, 9), w=st.integers(5, 9))
def test_channels_last_and_first_agree(n, c, h, w):
    images = torch.randint(0, 256, (n, c, h, w), dtype=torch.uint8)
    assert torch.equal(to_image_tensor(images, "x"), to_image_tensor(images.permute(0, 2, 3, 1).numpy(), "x"))


def test_memory_names_follow_the_content():
    x, y = torch.rand(4, 1, 6, 6), torch.tensor([0, 1, 0, 1])
    name = register_dataset_object((x, y))
    assert register_dataset_object((x.clone(), y.clone())) == name
    assert register_dataset_object((x, torch.tensor([1, 1, 0, 1]))) != name
    assert torch.equal(load_dataset(name).images(), x)
    assert load_dataset(name, "train") is load_dataset(name, "test") and not has_own_training_set(name)
    with_train = register_dataset_object((x, y), train=(x[:2], y[:2]))
    assert has_own_training_set(with_train) and len(load_dataset(with_train, "train")) == 2
    with pytest.raises(ConfigError, match="does not hold"):
        load_dataset("memory:images-0000")


def test_an_image_folder_of_16_bit_and_mixed_depths_keeps_its_values(tmp_path):
    """analyze read a 16-bit PNG as pure white, so a folder mixing 8- and 16-bit images gave L-inf = 1 'examples'."""
    import sys
    from pathlib import Path

    from PIL import Image

    sys.path.insert(0, str(Path(__file__).parent))
    from test_imagefolder import high_depth_images

    values = high_depth_images(tmp_path)
    Image.fromarray((values // 257).astype(np.uint8)).save(tmp_path / "e.png")  # the same picture in 8 bits
    images, labels = read_images(tmp_path)
    assert images.shape == (5, 1, 8, 8) and labels is None
    truth = torch.as_tensor(values / 65535, dtype=torch.float32)
    for i in range(4):
        assert torch.allclose(images[i, 0], truth, atol=1e-6), i
    assert float((images[4, 0] - truth).abs().max()) <= 1 / 255


def test_label_shapes_are_checked_and_a_column_is_labels(tmp_path):
    """Labels shaped (N, 1) were argmax'ed into all zeros, and analyze said the labels were given."""
    from advspatial.data.tensors import to_label_tensor

    y = np.array([3, 0, 2, 1])
    assert to_label_tensor(y[:, None], 4, "l").tolist() == [3, 0, 2, 1]
    assert to_label_tensor(y[None, :], 4, "l").tolist() == [3, 0, 2, 1]
    assert to_label_tensor(np.eye(4)[y], 4, "l").tolist() == [3, 0, 2, 1]  # one-hot rows
    assert to_label_tensor(np.eye(4, dtype=np.int64)[y], 4, "l").tolist() == [3, 0, 2, 1]
    assert to_label_tensor(np.random.default_rng(0).random((4, 5)), 4, "l").shape == (4,)  # scores
    np.save(tmp_path / "col.npy", y[:, None])
    assert read_labels(tmp_path / "col.npy", 4).tolist() == [3, 0, 2, 1]
    with pytest.raises(ShapeError, match="not one-hot"):
        to_label_tensor(np.array([[1, 2], [0, 1], [2, 2], [1, 0]]), 4, "l")
    for bad in (y[:, None, None], np.zeros((4, 1, 2)), y[:3]):
        with pytest.raises(ShapeError, match=r"labels must be \(4,\)"):
            to_label_tensor(bad, 4, "l")


@pytest.mark.parametrize("name", ["object.npz", "npy_named.npz", "text.npz", "truncated.npz", "huge_header.npy",
                                  "big_endian.npy", "longdouble.npy", "string_labels.npy", "huge_label.txt"])
def test_malformed_array_files_are_one_clear_error_or_read(tmp_path, name):
    """Object arrays, mislabelled or truncated .npz files, a header declaring a 5 TiB array, string labels and
    labels beyond int64 gave numpy/torch/zipfile tracebacks; big-endian and long double arrays are read."""
    x = np.random.default_rng(0).random((4, 1, 8, 8)).astype(np.float32)
    path = tmp_path / name
    if name == "object.npz":
        np.savez(path, x_adv=np.array([x, "x"], dtype=object))
    elif name == "npy_named.npz":
        with open(path, "wb") as handle:
            np.save(handle, x)
    elif name == "text.npz":
        path.write_text("hello")
    elif name == "truncated.npz":
        np.savez(tmp_path / "whole.npz", images=x)
        path.write_bytes((tmp_path / "whole.npz").read_bytes()[:60])
    elif name == "huge_header.npy":
        with open(path, "wb") as handle:
            np.lib.format.write_array_header_1_0(handle, {"descr": "<f4", "fortran_order": False,
                                                          "shape": (10**7, 3, 224, 224)})
            handle.write(b"0" * 64)
    elif name == "big_endian.npy":
        np.save(path, x.astype(">f4"))
    elif name == "longdouble.npy":
        np.save(path, x.astype(np.longdouble))
    elif name == "string_labels.npy":
        np.save(path, np.array(["1", "2", "0", "1"]))
    else:
        path.write_text("1\n2\n99999999999999999999999\n0\n")
    if name in ("big_endian.npy", "longdouble.npy"):
        assert torch.allclose(read_images(path)[0], torch.as_tensor(x))
        return
    with pytest.raises(ConfigError) as info:
        read_labels(path, 4) if "label" in name else read_images(path)
    assert "\n" not in str(info.value) and "allow_pickle" not in str(info.value)
