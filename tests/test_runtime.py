"""Tests for advspatial.runtime: seeds, devices, batching, run directories."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from advspatial.errors import ConfigError
from advspatial.runtime import RunDir, batch_slices, cache_dir, make_generator, pick_device, seed_everything


@settings(max_examples=50, deadline=None)
@given(n=st.integers(0, 500), batch=st.integers(1, 64))
def test_batch_slices_cover_range_in_order(n: int, batch: int) -> None:
    slices = list(batch_slices(n, batch))
    covered = [i for s in slices for i in range(s.start, s.stop)]
    assert covered == list(range(n))
    assert all(0 < s.stop - s.start <= batch for s in slices)


def test_batch_slices_rejects_zero() -> None:
    with pytest.raises(ConfigError, match="batch_size"):
        list(batch_slices(10, 0))


def test_seed_everything_repeats_torch_numbers() -> None:
    seed_everything(3)
    a = torch.rand(5)
    seed_everything(3)
    assert torch.equal(a, torch.rand(5))


def test_generator_is_seeded() -> None:
    assert torch.equal(torch.rand(4, generator=make_generator(7)), torch.rand(4, generator=make_generator(7)))
    assert not torch.equal(torch.rand(4, generator=make_generator(7)), torch.rand(4, generator=make_generator(8)))


def test_pick_device() -> None:
    assert pick_device("cpu") == torch.device("cpu")
    assert pick_device("auto").type in ("cpu", "cuda")
    with pytest.raises(ConfigError, match="valid"):
        pick_device("tpu-please")
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="CUDA is not available"):
            pick_device("cuda")


def test_cache_dir_honours_env(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("ADVSPATIAL_CACHE", str(tmp_path / "c"))
    assert cache_dir("models") == tmp_path / "c" / "models"
    assert (tmp_path / "c" / "models").is_dir()


def test_rundir_cached_computes_once(tmp_path) -> None:
    calls = []

    def compute() -> dict:
        calls.append(1)
        return {"x": torch.arange(3), "name": "a"}

    first = RunDir(tmp_path / "run").cached("stage/one", compute)
    again = RunDir(tmp_path / "run").cached("stage/one", compute)
    assert len(calls) == 1
    assert torch.equal(first["x"], again["x"]) and again["name"] == "a"
    assert not list((tmp_path / "run" / "stages").rglob("*.tmp"))


def test_scaled_batch_keeps_the_pixels_per_pass() -> None:
    from advspatial.runtime import scaled_batch

    assert scaled_batch(2048, 28, 28) == 2048
    assert scaled_batch(2048, 224, 224) == 32
    assert scaled_batch(2048, 32, 32) == 1568
    assert scaled_batch(1, 224, 224) == 1
