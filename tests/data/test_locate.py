"""Search order of dataset folders, and checked downloads (from local file:// URLs)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from advspatial.data.locate import candidate_dirs, checksum_of, download, find_files, resolve
from advspatial.errors import DataError

PAYLOAD = b"advspatial test payload\n" * 100


@pytest.fixture
def source(tmp_path):
    path = tmp_path / "src" / "file.bin"
    path.parent.mkdir()
    path.write_bytes(PAYLOAD)
    return path


@pytest.mark.parametrize("algorithm", ["sha256", "md5"])
def test_download_with_matching_checksum(tmp_path, source, algorithm: str) -> None:
    expected = hashlib.new(algorithm, PAYLOAD).hexdigest()
    assert checksum_of(source, algorithm) == expected
    dest = download(source.as_uri(), tmp_path / "out" / "file.bin", f"{algorithm}:{expected}")
    assert dest.read_bytes() == PAYLOAD
    assert not (tmp_path / "out" / "file.bin.part").exists()


def test_download_checksum_mismatch_leaves_nothing(tmp_path, source) -> None:
    wrong = "sha256:" + hashlib.sha256(b"something else").hexdigest()
    with pytest.raises(DataError, match="checksum mismatch"):
        download(source.as_uri(), tmp_path / "out" / "file.bin", wrong)
    assert list((tmp_path / "out").iterdir()) == []


def test_download_malformed_checksum(tmp_path, source) -> None:
    for bad in ("deadbeef", "nohash:abc"):
        with pytest.raises(DataError, match="malformed"):
            download(source.as_uri(), tmp_path / "out" / "file.bin", bad)
    assert list((tmp_path / "out").iterdir()) == []


def test_download_failure_is_data_error(tmp_path) -> None:
    with pytest.raises(DataError, match="download of .* failed"):
        download((tmp_path / "missing.bin").as_uri(), tmp_path / "out" / "x.bin")
    assert list((tmp_path / "out").iterdir()) == []


def test_candidate_order_and_find(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("ADVSPATIAL_DATA", str(tmp_path / "env"))
    monkeypatch.setenv("ADVSPATIAL_CACHE", str(tmp_path / "cache"))
    dirs = candidate_dirs("toy", tmp_path / "root", "/sys-dir")
    assert dirs == [
        tmp_path / "root", tmp_path / "env" / "toy", tmp_path / "env",
        tmp_path / "cache" / "data" / "toy", Path("/sys-dir"),
    ]
    assert find_files("toy", ["a.gz", "b"], tmp_path / "root") is None
    (tmp_path / "env" / "toy").mkdir(parents=True)
    (tmp_path / "env" / "toy" / "a").write_bytes(b"1")  # raw file found for the .gz name
    (tmp_path / "env" / "toy" / "b").write_bytes(b"2")
    assert find_files("toy", ["a.gz", "b"], tmp_path / "root") == tmp_path / "env" / "toy"
    assert resolve(tmp_path / "env" / "toy", "a.gz") == tmp_path / "env" / "toy" / "a"
