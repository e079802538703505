"""CIFAR-10 loader on small fake batches in the official pickle format; unsafe pickles refused."""

from __future__ import annotations

import io
import os
import pickle
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch

from advspatial.data import cifar10
from advspatial.data.cifar10 import CIFAR10_CLASSES, FOLDER, extract_archive, load_cifar10, load_pickle
from advspatial.errors import DataError


def fake_batch(n: int, seed: int) -> dict[bytes, object]:
    """A batch dict as in the official files: bytes keys, (n,3072) uint8 'data', list of int labels."""
    rng = np.random.default_rng(seed)
    return {
        b"batch_label": b"fake batch",
        b"labels": [int(v) for v in rng.integers(0, 10, n)],
        b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
        b"filenames": [f"img_{i}.png".encode() for i in range(n)],
    }


class _Python2Pickler(pickle._Pickler):  # type: ignore[name-defined]
    """Writes bytes as Python 2 ``str`` (SHORT_BINSTRING/BINSTRING), as cPickle did for the official files."""

    dispatch = dict(pickle._Pickler.dispatch)  # type: ignore[attr-defined]

    def save_py2_str(self, obj: bytes) -> None:
        if len(obj) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(obj)]) + obj)
        else:
            self.write(pickle.BINSTRING + len(obj).to_bytes(4, "little") + obj)
        self.memoize(obj)

    dispatch[bytes] = save_py2_str


def python2_style_dumps(obj: object) -> bytes:
    """Protocol 2, py2 strings, and NumPy 1's module path ``numpy.core.multiarray``."""
    buffer = io.BytesIO()
    _Python2Pickler(buffer, protocol=2).dump(obj)
    return buffer.getvalue().replace(b"numpy._core.multiarray\n", b"numpy.core.multiarray\n")


def dumps(obj: object, protocol: int | str) -> bytes:
    return python2_style_dumps(obj) if protocol == "py2" else pickle.dumps(obj, protocol=protocol)


def write_batches(folder: Path, sizes: dict[str, int], protocol: int | str = 2) -> dict[str, dict]:
    folder.mkdir(parents=True, exist_ok=True)
    batches = {}
    for seed, (name, n) in enumerate(sizes.items()):
        batches[name] = fake_batch(n, seed)
        (folder / name).write_bytes(dumps(batches[name], protocol))
    meta = {b"label_names": [c.encode() for c in CIFAR10_CLASSES], b"num_vis": 3072}
    (folder / "batches.meta").write_bytes(dumps(meta, protocol))
    return batches


ALL_SIZES = {**{f"data_batch_{i}": i for i in range(1, 6)}, "test_batch": 4}


@pytest.fixture
def isolated(monkeypatch, tmp_path):
    monkeypatch.delenv("ADVSPATIAL_DATA", raising=False)
    monkeypatch.setenv("ADVSPATIAL_CACHE", str(tmp_path / "cache"))
    return tmp_path


@pytest.mark.parametrize("protocol", ["py2", 2, 4, 5])
def test_test_split_layout(isolated, protocol: int | str) -> None:
    batches = write_batches(isolated / FOLDER, ALL_SIZES, protocol)
    ds = load_cifar10("test", root=isolated)
    raw = batches["test_batch"]
    assert ds.pixels.shape == (4, 3, 32, 32) and ds.pixels.dtype == torch.uint8
    assert ds.class_names == CIFAR10_CLASSES and ds.masks is None
    assert ds.labels.tolist() == raw[b"labels"]
    row = raw[b"data"][2]
    # channel planes of 1024 values each, row-major 32x32: pixel (c, y, x) = row[c*1024 + y*32 + x]
    for c, y, x in [(0, 0, 0), (1, 5, 7), (2, 31, 30), (0, 31, 31)]:
        assert int(ds.pixels[2, c, y, x]) == int(row[c * 1024 + y * 32 + x])


def test_python2_style_pickle_uses_old_opcodes() -> None:
    """Guard the fixture: it must really produce py2 strings and the NumPy 1 module path."""
    import pickletools

    ops = {op.name for op, _, _ in pickletools.genops(python2_style_dumps(fake_batch(2, 0)))}
    assert {"SHORT_BINSTRING", "BINSTRING", "GLOBAL"} <= ops
    assert b"numpy.core.multiarray\n_reconstruct" in python2_style_dumps(fake_batch(2, 0))
    assert b"_codecs" not in python2_style_dumps(fake_batch(2, 0))


def test_train_split_concatenates_five_batches(isolated) -> None:
    batches = write_batches(isolated / "somewhere" / FOLDER, ALL_SIZES)
    ds = load_cifar10("train", root=isolated / "somewhere" / FOLDER)  # root may be the batches folder itself
    assert len(ds) == 1 + 2 + 3 + 4 + 5
    expected = sum((batches[f"data_batch_{i}"][b"labels"] for i in range(1, 6)), [])
    assert ds.labels.tolist() == expected


def test_found_via_env_and_registry(isolated, monkeypatch) -> None:
    from advspatial.data import load_dataset

    write_batches(isolated / "data" / "cifar10" / FOLDER, ALL_SIZES)
    monkeypatch.setenv("ADVSPATIAL_DATA", str(isolated / "data"))
    assert len(load_dataset("cifar10", "test")) == 4


def test_not_found_names_every_way(isolated) -> None:
    with pytest.raises(DataError) as info:
        load_cifar10("test", root=isolated / "empty")
    message = str(info.value)
    for needle in ("root=", "ADVSPATIAL_DATA", "download=True", str(isolated / "empty"), str(isolated / "cache")):
        assert needle in message


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({b"data": np.zeros((4, 3000), dtype=np.uint8)}, "uint8 array"),
        ({b"data": np.zeros((4, 3072), dtype=np.int16)}, "uint8 array"),
        ({b"labels": [0, 1, 2]}, "4 images"),
        ({b"labels": [0, 1, 2, 10]}, r"labels outside 0\.\.9"),
        ({b"labels": [0, 1, -1, 2]}, r"labels outside 0\.\.9"),
    ],
)
def test_corrupt_batch_fields(isolated, change: dict, message: str) -> None:
    write_batches(isolated / FOLDER, ALL_SIZES)
    batch = {**fake_batch(4, 0), **change}
    (isolated / FOLDER / "test_batch").write_bytes(pickle.dumps(batch, protocol=2))
    with pytest.raises(DataError, match=message):
        load_cifar10("test", root=isolated)


def test_truncated_and_non_dict_pickles(isolated) -> None:
    write_batches(isolated / FOLDER, ALL_SIZES)
    path = isolated / FOLDER / "test_batch"
    path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(DataError, match="not a valid CIFAR pickle"):
        load_cifar10("test", root=isolated)
    path.write_bytes(pickle.dumps([1, 2, 3]))
    with pytest.raises(DataError, match="must unpickle to a dict"):
        load_cifar10("test", root=isolated)
    path.write_bytes(pickle.dumps({b"data": 1}))
    with pytest.raises(DataError, match="needs keys"):
        load_cifar10("test", root=isolated)


class _Exploit:
    """Unpickling this would call os.system: a restricted unpickler must refuse it."""

    def __reduce__(self):
        return (os.system, ("touch pwned",))


def test_malicious_pickle_is_refused(isolated, monkeypatch) -> None:
    monkeypatch.chdir(isolated)
    write_batches(isolated / FOLDER, ALL_SIZES)
    evil = {b"labels": [0], b"data": np.zeros((1, 3072), np.uint8), b"x": _Exploit()}
    (isolated / FOLDER / "test_batch").write_bytes(pickle.dumps(evil, protocol=2))
    with pytest.raises(DataError, match=r"global (posix|os)\.system is not allowed"):
        load_cifar10("test", root=isolated)
    assert not (isolated / "pwned").exists()


@pytest.mark.parametrize("target", [("builtins", "eval"), ("_codecs", "decode"), ("numpy", "load")])
def test_other_globals_refused(tmp_path, target: tuple[str, str]) -> None:
    module, name = target
    path = tmp_path / "p"
    path.write_bytes(b"c" + f"{module}\n{name}\n".encode() + b".")  # protocol-0 GLOBAL opcode
    with pytest.raises(DataError, match="not allowed"):
        load_pickle(path)


def test_codecs_encode_only_latin1(tmp_path) -> None:
    """Protocol-2 pickles from Python 3 encode bytes with _codecs.encode(..., 'latin1'); nothing else passes."""
    good = tmp_path / "good"
    good.write_bytes(pickle.dumps({b"k": b"\xff\x00"}, protocol=2))
    assert load_pickle(good) == {"k": b"\xff\x00"}
    evil = tmp_path / "evil"
    evil.write_bytes(pickle.dumps({b"k": b"x"}, protocol=2).replace(b"latin1", b"rot_13"))
    with pytest.raises(DataError, match="refused"):
        load_pickle(evil)


def _tar(path: Path, members: dict[str, bytes], symlink: str | None = None) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        if symlink:
            link = tarfile.TarInfo(f"{FOLDER}/link")
            link.type, link.linkname = tarfile.SYMTYPE, symlink
            tar.addfile(link)
    return path


def test_extract_archive_skips_unsafe_members(tmp_path) -> None:
    members = {
        f"{FOLDER}/test_batch": pickle.dumps(fake_batch(2, 0), protocol=2),
        f"{FOLDER}/../escaped": b"x",
        "/tmp/absolute-advspatial-test": b"x",
        "elsewhere/file": b"x",
    }
    archive = _tar(tmp_path / "a.tar.gz", members, symlink="/etc/passwd")
    out = extract_archive(archive, tmp_path / "dest")
    assert out == tmp_path / "dest" / FOLDER
    assert sorted(p.name for p in out.iterdir()) == ["test_batch"]
    assert not (tmp_path / "dest" / "escaped").exists() and not (tmp_path / "dest" / "elsewhere").exists()
    assert not Path("/tmp/absolute-advspatial-test").exists()


def test_extract_archive_errors(tmp_path) -> None:
    bad = tmp_path / "bad.tar.gz"
    bad.write_bytes(b"not a tar at all")
    with pytest.raises(DataError, match="corrupt CIFAR-10 archive"):
        extract_archive(bad, tmp_path / "d")
    with pytest.raises(DataError, match="no files under"):
        extract_archive(_tar(tmp_path / "e.tar.gz", {"other/x": b"1"}), tmp_path / "d")


def test_download_path_with_local_mirror(isolated, monkeypatch) -> None:
    """download=True fetches the tar.gz (a local file:// mirror here), checks md5, extracts, loads."""
    from advspatial.data.locate import checksum_of

    members = {f"{FOLDER}/{name}": pickle.dumps(fake_batch(n, 0), protocol=2) for name, n in ALL_SIZES.items()}
    archive = _tar(isolated / "mirror.tar.gz", members)
    monkeypatch.setattr(cifar10, "CIFAR10_URL", archive.as_uri())
    monkeypatch.setattr(cifar10, "CIFAR10_CHECKSUM", "md5:" + checksum_of(archive, "md5"))
    ds = load_cifar10("test", download=True)
    assert len(ds) == 4 and ds.class_names == CIFAR10_CLASSES
    assert (isolated / "cache" / "data" / "cifar10" / FOLDER / "test_batch").is_file()
    monkeypatch.setattr(cifar10, "CIFAR10_CHECKSUM", "md5:" + "0" * 32)
    (isolated / "cache" / "data" / "cifar10" / FOLDER / "test_batch").unlink()
    with pytest.raises(DataError, match="checksum mismatch"):
        load_cifar10("test", download=True)
