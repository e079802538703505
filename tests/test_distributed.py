"""Scale-out under torchrun (gloo on the CPU): the batches are shared, the results are a single process's.

Every experiment runs once in one process and once under ``torchrun`` with 2
processes (3 for the cheap baseline) on a tiny configuration with one thread per
process; ``per_image.csv`` and every number of ``metrics.json`` but wall times
must be identical. Also: a run killed mid-way under torchrun and resumed without
it; an error in one rank reaching every rank as one line; two "nodes" on the
loopback; the sharding rule itself (:func:`advspatial.distributed.map_batches`).
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import torch
from conftest import CNN_ARCH, needs_fashion_mnist

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("distributed")]

#: one thread per process in both runs: results equal to the bit need the same threads per process
ENV = {"ADVSPATIAL_THREADS": "1", "OMP_NUM_THREADS": "1", "TQDM_DISABLE": "1", "PYTHONWARNINGS": "ignore"}

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def environment() -> dict[str, str]:
    return {**os.environ, **ENV}


def advspatial(args: list[str], nproc: int = 1, timeout: float = 900) -> subprocess.CompletedProcess[str]:
    """``python -m advspatial ARGS``, or under ``torchrun --standalone --nproc-per-node nproc``."""
    if nproc == 1:
        command = [sys.executable, "-m", "advspatial", *args]
    else:
        command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}",
                   "-m", "advspatial", "--", *args]
    return subprocess.run(command, capture_output=True, text=True, env=environment(), timeout=timeout)


def model_args(weights: Path) -> list[str]:
    return ["--model", str(weights), "--arch", CNN_ARCH, "--no-progress"]


def comparable_metrics(path: Path) -> Any:
    """metrics.json without wall and CPU times and the forecast (the only numbers allowed to differ, with the
    ledger's host-read counts: the processes of a run read back what they computed, and a per-process cache fills
    once per process), paths into the run directory and the run's stamp (its checksum of the findings counts the
    wall times some findings hold)."""

    def strip(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: strip(v) for k, v in value.items()
                    if "seconds" not in k
                    and k not in ("timings", "checkpoint", "run", "syncs", "syncs_per_call", "forecast")}
        if isinstance(value, list):
            return [strip(v) for v in value]
        return value

    return strip(json.loads((path / "metrics.json").read_text()))


def assert_same_results(one: Path, other: Path) -> None:
    assert (one / "per_image.csv").read_text() == (other / "per_image.csv").read_text()
    assert comparable_metrics(one) == comparable_metrics(other)


def kill_tree(root: int) -> None:
    """SIGKILL ``root`` and every descendant (torchrun's workers are not all in its process group)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo.extend(children.get(pid, []))
    for pid in found:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def experiment_args(name: str, weights: Path, tmp: Path) -> list[str]:
    if name != "analyze":
        return ["run", name, *model_args(weights), *contract_args(name)]
    clean, adv = analyze_inputs(weights, tmp)
    return ["analyze", "--model", str(weights), "--arch", CNN_ARCH, "--clean", str(clean), "--adv", str(adv),
            *contract_args(name), "--no-progress"]


def contract_args(name: str) -> list[str]:
    """The experiment's tiny contract settings (its registry line) as CLI options."""
    import advspatial.experiments  # noqa: F401  (registers every experiment)
    from advspatial.experiments.registry import EXPERIMENTS

    return EXPERIMENTS.get(name).contract_args()


def analyze_inputs(weights: Path, tmp: Path) -> tuple[Path, Path]:
    """8 test images and an L-inf change of them, as .pt files (the examples analyze reads)."""
    from advspatial.data import load_dataset

    data = load_dataset("fashion-mnist", "test").head(8)
    x = data.images()
    noise = torch.sign(torch.randn(x.shape, generator=torch.Generator().manual_seed(0))) * 0.1
    clean, adv = tmp / "clean.pt", tmp / "adv.pt"
    torch.save({"images": x, "labels": data.labels}, clean)
    torch.save({"images": (x + noise).clamp(0, 1)}, adv)
    return clean, adv


@pytest.fixture(scope="module")
def single_runs(cnn_weights, tmp_path_factory):
    """Lazily made single-process runs, one per experiment: {name: run directory}."""
    made: dict[str, Path] = {}
    root = tmp_path_factory.mktemp("single")

    def get(name: str) -> Path:
        if name not in made:
            out = root / name
            done = advspatial([*experiment_args(name, cnn_weights, root), "--out", str(out)])
            assert done.returncode == 0, done.stderr[-3000:]
            made[name] = out
        return made[name]

    return get


def registered_experiments() -> list[str]:
    import advspatial.experiments  # noqa: F401  (registers every experiment)
    from advspatial.experiments.registry import EXPERIMENTS

    return sorted(EXPERIMENTS.names())


def test_every_registered_experiment_has_contract_settings() -> None:
    """The contract below is driven by the experiment registry: a newly registered experiment fails here until its
    registry line names its tiny settings (``contract=``), and then runs the whole contract."""
    from advspatial.experiments.registry import EXPERIMENTS

    missing = [name for name in registered_experiments()
               if name != "analyze" and "n" not in EXPERIMENTS.get(name).contract]
    assert not missing, f"give these experiments tiny contract settings (n...) in their registry line: {missing}"


#: experiments whose own tests resume a run that lost stages and compare it with the uninterrupted one (in one
#: process; a torchrun run resumed by one process: test_killed_torchrun_run_resumes_without_torchrun), so the
#: contract below does not resume them a second time: every other experiment, a new one included, is resumed here
RESUMED_IN_THEIR_OWN_TESTS = {
    "localized-training": "tests/experiments/localized/test_run.py",
    "perceptual": "tests/experiments/perceptual/test_run.py",
    "propagation": "tests/experiments/propagation/test_run.py",
    "pse": "tests/experiments/pse/test_run.py",
    "spatial": "tests/experiments/spatial/test_spatial.py",
}


def test_the_experiments_resumed_elsewhere_have_their_resume_test() -> None:
    root = Path(__file__).parent.parent
    for name, path in RESUMED_IN_THEIR_OWN_TESTS.items():
        assert name in registered_experiments(), name
        assert re.search(r"def test_\w*resum", (root / path).read_text()), f"{name}: no resume test in {path}"


@needs_fashion_mnist
@pytest.mark.parametrize("name,nproc", [*((name, 2) for name in registered_experiments()), ("baseline", 3)])
def test_torchrun_results_equal_one_process(name, nproc, single_runs, cnn_weights, tmp_path) -> None:
    out = tmp_path / "run"
    done = advspatial([*experiment_args(name, cnn_weights, tmp_path), "--out", str(out)], nproc=nproc)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("results:") == 1  # rank 0 alone prints the summary
    assert_same_results(single_runs(name), out)
    assert_report_complete(out)
    if nproc == 2 and name not in RESUMED_IN_THEIR_OWN_TESTS:
        # the experiment contract: a run that lost half its stages resumes (one process) to the same result
        lose_half_of_the_stages(out)
        resumed = advspatial(["run", "--resume", str(out), "--no-progress"])
        assert resumed.returncode == 0, resumed.stderr[-3000:]
        assert_same_results(single_runs(name), out)


def lose_half_of_the_stages(run: Path) -> None:
    """Delete every other stage file and the result files, as a run killed at different points would."""
    stages = sorted((run / "stages").rglob("*.pt"))
    assert stages, f"{run} saved no stage"
    for path in stages[::2]:
        path.unlink()
    for name in ("metrics.json", "per_image.csv", "report.html"):
        (run / name).unlink()


def assert_report_complete(run: Path) -> None:
    """The report has a verdict or result section, and every figure it shows is embedded and decodable."""
    import base64
    import re

    html = (run / "report.html").read_text()
    assert "<section" in html and len(html) > 2000
    images = re.findall(r'<img[^>]*src="data:image/png;base64,([^"]+)"', html)
    for encoded in images:
        assert base64.b64decode(encoded).startswith(b"\x89PNG")
    assert len(images) == len(re.findall(r"<img", html)), "a figure that is not embedded"


@needs_fashion_mnist
def test_killed_torchrun_run_resumes_without_torchrun(single_runs, cnn_weights, tmp_path) -> None:
    out = tmp_path / "run"
    args = [*experiment_args("spatial", cnn_weights, tmp_path), "--out", str(out)]
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2", "-m",
               "advspatial", "--", *args]
    launched = subprocess.Popen(command, env=environment(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                start_new_session=True)
    deadline = time.time() + 600
    while time.time() < deadline and launched.poll() is None:
        if len(list((out / "stages" / "attack").rglob("batch-*.pt"))) >= 2:
            break
        time.sleep(0.5)
    kill_tree(launched.pid)
    launched.wait()
    assert not (out / "metrics.json").exists(), "the run finished before it could be killed"
    done = advspatial(["run", "--resume", str(out), "--no-progress"])
    assert done.returncode == 0, done.stderr[-3000:]
    assert_same_results(single_runs("spatial"), out)


@needs_fashion_mnist
def test_an_error_in_one_rank_stops_every_rank_with_one_line(cnn_weights, tmp_path) -> None:
    out = tmp_path / "run"
    done = advspatial([*experiment_args("baseline", cnn_weights, tmp_path), "--out", str(out)])
    assert done.returncode == 0, done.stderr
    (out / "stages" / "clean-pass" / "batch-00001.pt").write_bytes(b"not a stage")  # batch 1 belongs to rank 1
    (out / "metrics.json").unlink()
    failed = advspatial(["run", "--resume", str(out), "--no-progress"], nproc=2, timeout=300)
    assert failed.returncode != 0
    ours = [line for line in failed.stderr.splitlines() if line.startswith("advspatial: error:")]
    assert len(ours) == 1, failed.stderr[-3000:]
    assert "rank 1 failed" in ours[0] and "batch-00001.pt" in ours[0]


@needs_fashion_mnist
def test_two_nodes_on_the_loopback_equal_one_process(single_runs, cnn_weights, tmp_path) -> None:
    out = tmp_path / "run"
    port = free_port()
    args = [*experiment_args("baseline", cnn_weights, tmp_path), "--out", str(out)]
    launches = [subprocess.Popen(
        [sys.executable, "-m", "torch.distributed.run", "--nnodes=2", f"--node-rank={rank}", "--nproc-per-node=1",
         "--rdzv-backend=c10d", f"--rdzv-endpoint=127.0.0.1:{port}", "--rdzv-id=advspatial-test", "-m",
         "advspatial", "--", *args], env=environment(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for rank in (0, 1)]
    for launched in launches:
        _, err = launched.communicate(timeout=300)
        assert launched.returncode == 0, err[-3000:]
    assert_same_results(single_runs("baseline"), out)


def test_python_dash_m_advspatial_runs_the_cli() -> None:
    done = subprocess.run([sys.executable, "-m", "advspatial", "list", "experiments"], capture_output=True, text=True,
                          env=environment(), timeout=120)
    assert done.returncode == 0 and "spatial" in done.stdout


# -- the sharding rule, in two spawned processes -------------------------------------------------

def _shard_worker(rank: int, size: int, port: int, log_dir: str) -> None:
    os.environ.update({"RANK": str(rank), "WORLD_SIZE": str(size), "LOCAL_RANK": str(rank),
                       "LOCAL_WORLD_SIZE": str(size), "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port),
                       "ADVSPATIAL_THREADS": "1"})
    from advspatial import distributed

    distributed.init_from_environment()
    calls: list[int] = []
    consumed: list[int] = []
    slices = [slice(i, i + 1) for i in range(5)]
    values = distributed.map_batches(lambda b, sl: calls.append(b) or b * 10, slices, progress=False,
                                     then=lambda b, sl, v: consumed.append(v) or v + 1)
    Path(log_dir, f"rank{rank}.json").write_text(json.dumps({"calls": calls, "consumed": consumed, "values": values}))
    distributed.shutdown()


def test_map_batches_runs_own_batches_first_then_every_batch_in_order(tmp_path) -> None:
    torch.multiprocessing.spawn(_shard_worker, args=(2, free_port(), str(tmp_path)), nprocs=2, join=True)
    for rank in (0, 1):
        log = json.loads((tmp_path / f"rank{rank}.json").read_text())
        own = [b for b in range(5) if b % 2 == rank]
        assert log["calls"] == own + list(range(5))
        assert log["consumed"] == [b * 10 for b in range(5)]  # then() once per batch, in batch order
        assert log["values"] == [b * 10 + 1 for b in range(5)]


def test_one_process_is_a_plain_loop() -> None:
    from advspatial import distributed

    assert not distributed.world().is_distributed
    seen: list[int] = []
    assert distributed.map_batches(lambda b, sl: seen.append(b) or sl, ["a", "b"], progress=False) == ["a", "b"]
    assert seen == [0, 1]
    with pytest.raises(ValueError, match="boom"):
        distributed.agree(ValueError("boom"))


@pytest.mark.parametrize(("env", "message"), [
    ({"RANK": "abc", "WORLD_SIZE": "2"}, "RANK='abc'"),
    ({"WORLD_SIZE": "abc"}, "WORLD_SIZE='abc'"),
    ({"WORLD_SIZE": "2"}, "WORLD_SIZE=2 without RANK, MASTER_ADDR, MASTER_PORT"),
    ({"RANK": "5", "WORLD_SIZE": "2"},
     r"RANK=5 \(this process's rank among WORLD_SIZE=2\) is out of range; valid: 0..1"),
    ({"RANK": "0", "WORLD_SIZE": "2", "MASTER_PORT": "abc"}, "MASTER_PORT='abc'"),
    ({"RANK": "0", "WORLD_SIZE": "2", "MASTER_PORT": "99999"}, "MASTER_PORT=99999"),
    ({"LOCAL_WORLD_SIZE": "abc"}, "LOCAL_WORLD_SIZE='abc'"),
    ({"LOCAL_RANK": "x", "WORLD_SIZE": "1"}, "LOCAL_RANK='x'"),
    ({"ADVSPATIAL_THREADS": "abc"}, "ADVSPATIAL_THREADS='abc'"),
    ({"ADVSPATIAL_THREADS": "99999"}, "ADVSPATIAL_THREADS=99999"),
])
def test_bad_torchrun_variables_are_one_line_before_any_work(env, message, monkeypatch, capsys) -> None:
    """Non-integer ranks and sizes gave ValueError tracebacks, RANK >= WORLD_SIZE waited silently for the 24-hour
    timeout, ADVSPATIAL_THREADS=99999 ended in a segmentation fault."""
    from helpers import run_cli

    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT",
                 "ADVSPATIAL_THREADS"):
        monkeypatch.delenv(name, raising=False)
    if env.get("WORLD_SIZE") == "2" and len(env) > 1:
        monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")
        env = {"MASTER_PORT": "29500", **env}
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    code, _, err = run_cli(capsys, "list")
    assert code == 2, err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert re.search(message, err), err


def test_the_timeout_is_read_when_used_and_bounded(monkeypatch) -> None:
    """ADVSPATIAL_DIST_TIMEOUT_HOURS was parsed with int() when the module was imported: 'abc' or a value too large
    for C gave tracebacks at import."""
    import datetime

    from advspatial.distributed import timeout
    from advspatial.errors import ConfigError

    monkeypatch.delenv("ADVSPATIAL_DIST_TIMEOUT_HOURS", raising=False)
    assert timeout() == datetime.timedelta(hours=24)
    monkeypatch.setenv("ADVSPATIAL_DIST_TIMEOUT_HOURS", "0.5")
    assert timeout() == datetime.timedelta(minutes=30)
    for bad in ("abc", "99999999999", "0", "nan", "-1"):
        monkeypatch.setenv("ADVSPATIAL_DIST_TIMEOUT_HOURS", bad)
        with pytest.raises(ConfigError, match="ADVSPATIAL_DIST_TIMEOUT_HOURS"):
            timeout()


def test_on_every_rank_returns_the_value_or_raises_the_error_in_one_process() -> None:
    """Outside torchrun the meeting point is a no-op: the value comes back, an error is raised as it is (under
    torchrun the same call is tested through the model loading of tests/experiments/test_context.py)."""
    from advspatial.distributed import on_every_rank
    from advspatial.errors import ConfigError

    assert on_every_rank(lambda: 41 + 1) == 42

    def fails() -> None:
        raise ConfigError("only here")

    with pytest.raises(ConfigError, match="only here"):
        on_every_rank(fails)


STUDY_SETTINGS = ["--quick", "--n", "8", "--batch-size", "4", "--attacks", "fgsm", "--panel", "gradcam", "--gate-n",
                  "8", "--randomization-images", "2", "--figure-images", "2", "--permutations", "50", "--no-progress"]


def study_args(weights: Path, tmp: Path) -> list[str]:
    """A two-model study (the same LeNet-5 weights under two labels) at tiny settings."""
    config = tmp / "study.yaml"
    config.write_text(f"models:\n  - {{model: {weights}, arch: {CNN_ARCH}, label: a}}\n"
                      f"  - {{model: {weights}, arch: {CNN_ARCH}, label: b}}\n")
    return ["study", "--config", str(config), *STUDY_SETTINGS]


def without_column(path: Path, column: str) -> list[list[str]]:
    import csv

    rows = list(csv.reader(path.open()))
    drop = rows[0].index(column)
    return [r[:drop] + r[drop + 1:] for r in rows]


@needs_fashion_mnist
def test_a_study_under_torchrun_equals_one_process(cnn_weights, tmp_path) -> None:
    """Each model's batches are shared among the processes; the study's files are one process's."""
    outs = {}
    for nproc in (1, 2):
        out = tmp_path / f"study-{nproc}"
        done = advspatial([*study_args(cnn_weights, tmp_path), "--out", str(out)], nproc=nproc)
        assert done.returncode == 0, done.stderr[-3000:]
        outs[nproc] = out
    one, two = outs[1], outs[2]
    assert comparable_metrics(one) == comparable_metrics(two)
    assert (one / "per_image_per_model.csv").read_text() == (two / "per_image_per_model.csv").read_text()
    assert without_column(one / "per_model.csv", "wall_seconds") == without_column(two / "per_model.csv",
                                                                                   "wall_seconds")
    for label in ("a", "b"):
        assert_same_results(one / "models" / label, two / "models" / label)


#: a maps run whose gates look three times (after 50 and 100 of 120 images, then all): batches of 40, so that a look
#: ends inside a batch and the processes share each look's chunks; two gates (one fraction) with a 2-step restricted
#: attack keep it short (--quick's four gates at 5 steps took 107 s of the suite)
LOOKS_SETTINGS = ["run", "maps", "--quick", "--n", "120", "--gate-n", "120", "--panel-gate-n", "120",
                  "--batch-size", "40", "--attacks", "fgsm", "--panel", "gradcam", "--panel-fractions", "0.2",
                  "--gate-steps", "2", "--randomization-images", "2", "--no-progress"]


@needs_fashion_mnist
def test_gate_looks_under_torchrun_equal_one_process(cnn_weights, tmp_path) -> None:
    """The gate's looks are taken by every process on the same columns, so every process stops at the same look
    (none waits for a chunk another will never compute) and the results are one process's."""
    outs = {}
    for nproc in (1, 2):
        outs[nproc] = tmp_path / f"looks-{nproc}"
        done = advspatial([*LOOKS_SETTINGS, *model_args(cnn_weights), "--out", str(outs[nproc])], nproc=nproc)
        assert done.returncode == 0, done.stderr[-3000:]
    assert_same_results(outs[1], outs[2])
    gate = comparable_metrics(outs[1])["faithfulness"]["hirescam"]
    assert gate["images_planned"] == 120 and gate["images_examined"] in (50, 100, 120)
    assert (outs[2] / "stages" / "gate" / "hirescam" / "f0.2-n120-looks50").is_dir()


RANK_FAULTS = '''
import os
import time

import torch


class Net(torch.nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv = torch.nn.Conv2d(1, 4, 3)
        self.fc = torch.nn.Linear(4 * 13 * 13, 4)

    def forward(self, x):
        if len(x) > 1 and os.environ.get("RANK") == "1" and os.environ.get("FAULT", "").startswith("exit"):
            os._exit(3)  # killed outside any meeting point, no line of its own
        if len(x) > 1 and os.environ.get("RANK") == "0" and os.environ.get("FAULT") == "exit-while-busy":
            time.sleep(120)  # still working when torchrun stops it
        return self.fc(torch.max_pool2d(torch.relu(self.conv(x)), 2).flatten(1))


def good():
    return Net()


def fails_on_rank_1():
    if os.environ.get("RANK") == "1":
        raise RuntimeError("this factory fails on rank 1 only")
    return Net()
'''


def fault_fixture(tmp: Path) -> tuple[Path, Path]:
    """A file of model factories that fail on rank 1 only, and 8 images to run them on."""
    factories = tmp / "faults.py"
    factories.write_text(RANK_FAULTS)
    images = tmp / "images.pt"
    torch.manual_seed(0)
    torch.save({"images": torch.rand(8, 1, 28, 28), "labels": torch.arange(8) % 4}, images)
    return factories, images


def rank_fault(args: list[str], fault: str = "") -> tuple[subprocess.CompletedProcess[str], list[str]]:
    """A 2-process launch of ``args`` with ``FAULT`` set; its advspatial error lines (torchrun's own report beside
    them, a traceback of the launcher, is not the processes' output: torchrun prefixes theirs with [rankN])."""
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2", "-m",
               "advspatial", "--", *args]
    done = subprocess.run(command, capture_output=True, text=True, env={**environment(), "FAULT": fault},
                          timeout=240)
    assert "]: Traceback" not in done.stderr, done.stderr[-3000:]
    return done, [line for line in done.stderr.splitlines() if line.startswith("advspatial: error:")]


def test_a_study_whose_factory_fails_on_one_rank_stops_every_rank_with_one_line(tmp_path) -> None:
    """The study's preflight loaded each model on every rank on its own: rank 1's error was silent and rank 0
    ended in gloo's 'connection closed' traceback."""
    factories, images = fault_fixture(tmp_path)
    other = tmp_path / "other.py"  # its own file: the label of a model is its file's stem
    other.write_text(RANK_FAULTS)
    done, lines = rank_fault(["study", "--models", f"{factories}:good,{other}:fails_on_rank_1", "--dataset",
                              f"arrays:{images}", "--n", "8", "--quick", "--no-progress", "--out",
                              str(tmp_path / "s")])
    assert done.returncode != 0 and len(lines) == 1, done.stderr[-3000:]
    assert "rank 1 failed" in lines[0] and "fails on rank 1 only" in lines[0]


@pytest.mark.parametrize("fault", ["exit", "exit-while-busy"])
def test_a_rank_that_dies_outside_a_meeting_point_leaves_one_line(tmp_path, fault: str) -> None:
    """A process that ends without a word (os._exit, the OOM killer) left gloo's traceback in a process waiting for
    it, and nothing at all in one still working, which torchrun stops with SIGTERM."""
    factories, images = fault_fixture(tmp_path)
    started = time.monotonic()
    done, lines = rank_fault(["run", "baseline", "--model", f"{factories}:good", "--dataset", f"arrays:{images}",
                              "--n", "8", "--batch-size", "2", "--no-progress", "--out", str(tmp_path / "r")], fault)
    assert done.returncode != 0 and len(lines) == 1, done.stderr[-3000:]
    assert "another process of this run ended outside a meeting point" in lines[0]
    assert time.monotonic() - started < 100, "a process waited for one that was gone"


def test_sigterm_becomes_an_exception_until_the_outcome_is_printed() -> None:
    """torchrun stops the remaining processes with SIGTERM when one dies; rank 0 turns it into one line (the CLI
    prints :class:`Stopped` like a shared error) instead of ending without a word."""
    from advspatial.distributed import PEER_LOST, Stopped, stop_on_terminate

    stop_on_terminate()
    try:
        with pytest.raises(Stopped, match=PEER_LOST):
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(5)
    finally:
        stop_on_terminate(False)
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL
