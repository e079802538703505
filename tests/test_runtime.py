"""Tests for advspatial.runtime, .environment, .files and .rundir: seeds, devices, batching, the environment, safe
files, run directories."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from advspatial.environment import cache_dir
from advspatial.errors import ConfigError
from advspatial.rundir import RunDir
from advspatial.host_syncs import counting
from advspatial.runtime import batch_slices, make_generator, pick_device, seed_everything, to_host


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


def test_stages_saved_jointly_name_their_company_and_no_other_stage_does(tmp_path) -> None:
    run = RunDir(tmp_path / "run")
    run.save_stage("gate/a/chunk-00000", 1)
    with run.saving_jointly(["gate/b/chunk-00000", "gate/c/chunk-00000"]):
        run.save_stage("gate/b/chunk-00000", 2)
        run.save_stage("gate/d/chunk-00000", 4)                       # saved inside, but not one of them
        run.save_stage("gate/c/chunk-00000", 3, reused={"forward": 1})  # read from the model cache
    run.save_stage("gate/e/chunk-00000", 5)
    assert run.computed_with("gate/b/chunk-00000") == ("gate/b/chunk-00000", "gate/c/chunk-00000")
    assert [run.computed_with(f"gate/{s}/chunk-00000") for s in "acde"] == [(), (), (), ()]
    assert run.load_stage("gate/b/chunk-00000") == 2


def test_scaled_batch_keeps_the_pixels_per_pass() -> None:
    from advspatial.runtime import scaled_batch

    assert scaled_batch(2048, 28, 28) == 2048
    assert scaled_batch(2048, 224, 224) == 32
    assert scaled_batch(2048, 32, 32) == 1568
    assert scaled_batch(1, 224, 224) == 1


def test_atomic_writes_never_follow_a_planted_temp_name(tmp_path) -> None:
    """A symlink planted at the old fixed temp name (config.yaml.tmp) must not redirect the write."""
    from advspatial.files import atomic_torch_save, atomic_write_text

    victim = tmp_path / "victim.txt"
    victim.write_text("keep me")
    for name in ("config.yaml", "stage.pt"):
        (tmp_path / f"{name}.tmp").symlink_to(victim)
    atomic_write_text(tmp_path / "config.yaml", "a: 1\n")
    atomic_torch_save({"x": torch.ones(2)}, tmp_path / "stage.pt")
    assert victim.read_text() == "keep me"
    assert not (tmp_path / "config.yaml").is_symlink() and (tmp_path / "config.yaml").read_text() == "a: 1\n"
    assert not list(tmp_path.glob(".*.tmp"))


def test_a_failed_write_leaves_no_temp_file_and_names_the_file(tmp_path, monkeypatch) -> None:
    """A full disk during torch.save is an OSError naming the file (no traceback from torch's zip writer), and
    the partial temp file is removed."""
    from advspatial.files import atomic_torch_save

    def full(value, f):  # type: ignore[no-untyped-def]
        open(f, "wb").write(b"half")
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 64 vs 0")

    monkeypatch.setattr(torch, "save", full)
    with pytest.raises(OSError, match="stage.pt"):
        atomic_torch_save({"x": 1}, tmp_path / "stage.pt")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("content", [b"", b"PK\x03\x04 truncated", b"not a torch file at all",
                                     b"\x80\x02cos\nsystem\nq\x00."])
def test_an_empty_or_truncated_stage_is_one_clear_error(tmp_path, content: bytes) -> None:
    """An empty stage file used to surface as EOFError, which click reports as 'aborted' with exit 130."""
    from advspatial.errors import DataError

    run = RunDir(tmp_path / "run")
    run.save_stage("attack/batch-00000", {"x": torch.ones(3)})
    run.stage_path("attack/batch-00000").write_bytes(content)
    with pytest.raises(DataError, match=r"batch-00000\.pt.*delete it") as refused:
        run.cached("attack/batch-00000", lambda: {"x": torch.zeros(3)})
    assert "state_dict" not in str(refused.value)  # a model file's advice, not a stage file's


def test_a_directory_lock_is_exclusive_and_dies_with_its_process(tmp_path) -> None:
    """Two processes in one run directory: the second is refused in one line; the lock of a killed process
    does not block the next run."""
    import os
    import signal
    import subprocess
    import sys
    import time

    from advspatial.files import DirLock

    lock = tmp_path / ".lock"
    holder = subprocess.Popen([sys.executable, "-c", (
        "import fcntl, os, sys, time\n"
        f"fd = os.open({str(lock)!r}, os.O_RDWR | os.O_CREAT)\n"
        "fcntl.flock(fd, fcntl.LOCK_EX)\nprint('held', flush=True)\ntime.sleep(60)\n")],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        with pytest.raises(ConfigError, match="in use"):
            DirLock(lock, "the run is in use").acquire()
    finally:
        os.kill(holder.pid, signal.SIGKILL)
        holder.wait()
    time.sleep(0.1)
    with DirLock(lock, "in use"):
        with pytest.raises(ConfigError, match="busy"):
            DirLock(lock, "busy").acquire()  # another open of the same file, even in this process
    DirLock(lock, "in use").acquire().release()


def test_check_writable_dir_refuses_files_and_unwritable_places(tmp_path) -> None:
    """--out that is a file, or under a file, is one ConfigError before any work."""
    from advspatial.files import check_writable_dir

    afile = tmp_path / "afile"
    afile.write_text("x")
    with pytest.raises(ConfigError, match="is a file"):
        check_writable_dir(afile, "run directory")
    with pytest.raises(ConfigError, match="not writable"):
        check_writable_dir(afile / "sub", "run directory")
    check_writable_dir(tmp_path / "new" / "run", "run directory")
    assert (tmp_path / "new" / "run").is_dir() and not list((tmp_path / "new" / "run").iterdir())


def test_looking_data_up_never_creates_cache_folders(tmp_path, monkeypatch) -> None:
    """Looking a dataset up created <cache>/data/<name> (a read-only cache, or one under a file, failed with a
    traceback even though the data was elsewhere)."""
    from advspatial.data.locate import candidate_dirs

    afile = tmp_path / "afile"
    afile.write_text("x")
    monkeypatch.setenv("ADVSPATIAL_CACHE", str(afile / "cache"))
    dirs = candidate_dirs("fashion-mnist", None, "/usr/share/datasets/fashion-mnist")
    assert dirs[-2] == afile / "cache" / "data" / "fashion-mnist" and not dirs[-2].exists()
    monkeypatch.setenv("ADVSPATIAL_CACHE", str(tmp_path / "c"))
    candidate_dirs("mnist", None)
    assert not (tmp_path / "c").exists()
    with pytest.raises(ConfigError, match="ADVSPATIAL_CACHE"):
        monkeypatch.setenv("ADVSPATIAL_CACHE", str(afile / "cache"))
        cache_dir("models")


def test_per_sample_noise_is_the_keyed_streams_and_generators_are_keyed_by_sample_seed():
    """runtime.per_sample_noise draws every batch's noise from the counter-based streams keyed by (seed, id);
    the searches that draw as they go take runtime.sample_generator, keyed by runtime.sample_seed."""
    from advspatial.keyed_random import keyed_normal, keyed_uniform
    from advspatial.runtime import per_sample_noise, sample_generator, sample_ids_or_range, sample_seed

    assert sample_seed(3, 17) == 3 * 1_000_003 + 17 and sample_seed(2**62, 5) < 2**63 - 1
    assert torch.equal(sample_generator(3, 17).initial_seed() * torch.ones(1), sample_seed(3, 17) * torch.ones(1))
    noise = per_sample_noise((2, 4), 3, torch.tensor([17, 4]), "normal")
    assert torch.equal(noise, keyed_normal((2, 4), 3, [17, 4]))
    assert torch.equal(per_sample_noise((1, 4), 3, [4], "normal")[0], noise[1])
    assert torch.equal(per_sample_noise((2, 4), 3, [17, 4]), keyed_uniform((2, 4), 3, [17, 4]) * 2 - 1)
    assert torch.equal(sample_ids_or_range(3, None), torch.arange(3))


def test_a_stage_file_copied_over_another_or_from_another_run_is_refused(tmp_path) -> None:
    """A stage copied over another batch's (or a stages/ folder merged from another run) was loaded as this batch's
    results: a stage file carries its name and the run's identity, checked on load."""
    import shutil

    from advspatial.errors import DataError

    run = RunDir(tmp_path / "run")
    run.identity["settings"] = "a"
    run.save_stage("attack/pgd/batch-00000", {"x": torch.zeros(2)})
    run.save_stage("attack/pgd/batch-00001", {"x": torch.ones(2)})
    assert torch.equal(run.load_stage("attack/pgd/batch-00001")["x"], torch.ones(2))
    shutil.copy(run.stage_path("attack/pgd/batch-00000"), run.stage_path("attack/pgd/batch-00001"))
    with pytest.raises(DataError, match=r"batch-00001\.pt holds the results of stage 'attack/pgd/batch-00000'.*delete"):
        run.cached("attack/pgd/batch-00001", lambda: {"x": torch.ones(2)})
    other = RunDir(tmp_path / "other")
    other.identity["settings"] = "b"
    other.save_stage("attack/pgd/batch-00001", {"x": torch.full((2,), 7.0)})
    shutil.copy(other.stage_path("attack/pgd/batch-00001"), run.stage_path("attack/pgd/batch-00001"))
    with pytest.raises(DataError, match="another run"):
        run.load_stage("attack/pgd/batch-00001")


@pytest.mark.parametrize("planted", ["stages", "figures", "stages/attack"])
def test_a_planted_directory_symlink_in_a_run_directory_is_refused(tmp_path, planted: str) -> None:
    """A symlink planted for stages/, figures/ or a stage sub-folder made the run write outside its directory."""
    from advspatial.errors import ConfigError

    victim = tmp_path / "victim"
    victim.mkdir()
    (tmp_path / "run" / planted).parent.mkdir(parents=True, exist_ok=True)
    (tmp_path / "run" / planted).symlink_to(victim, target_is_directory=True)
    with pytest.raises(ConfigError, match="symbolic link"):
        RunDir(tmp_path / "run").save_stage("attack/batch-00000", {"x": torch.ones(1)})
    assert list(victim.iterdir()) == []


def test_keep_freed_memory_applies_on_glibc_and_is_harmless_elsewhere():
    import platform

    from advspatial.runtime import keep_freed_memory

    applied = keep_freed_memory()
    assert isinstance(applied, bool)
    if platform.system() == "Linux" and platform.libc_ver()[0] == "glibc":
        assert applied
    assert keep_freed_memory() == applied  # idempotent


_DTYPES = (torch.float32, torch.float64, torch.int64, torch.bool)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(_DTYPES), st.lists(st.integers(0, 4), min_size=0, max_size=3)),
                min_size=1, max_size=8), st.integers(0, 2**31))
def test_to_host_reads_once_per_dtype_and_returns_every_tensor_unchanged(specs, seed) -> None:
    g = torch.Generator().manual_seed(seed)
    tensors = {f"c{i}": (torch.randn(shape, generator=g) * 5).to(dtype) for i, (dtype, shape) in enumerate(specs)}
    reads: list[int] = []
    with counting(lambda: reads.append(1)):
        out = to_host(tensors)
    assert list(out) == list(tensors)
    for name, tensor in tensors.items():
        assert out[name].dtype == tensor.dtype and out[name].shape == tensor.shape
        assert torch.equal(out[name], tensor) and out[name].device.type == "cpu"
    assert len(reads) == len({t.dtype for t in tensors.values()})
