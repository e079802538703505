"""The resume property (experiments/running.py, rundir.RunDir): whatever happens to a run directory and its
inputs between a run and ``advspatial run --resume`` - stage files deleted, truncated, swapped or copied over
each other (an interruption, a merge of ``stages/`` folders), the model's code, the images or the labels
edited or swapped, config.yaml edited, a data file the model's factory reads edited, an installed package it
calls upgraded or edited in place, a helper it loads by a string import edited - the resume either gives the
uninterrupted run's result on the inputs as they now are (exit 0, the same per_image.csv and metrics.json as a
fresh run), or refuses in one line (exit 2). A resume after deletions alone must complete. The run is the
cheapest there is: ``baseline`` of a linear model on twelve 8x8 images in three batches (about 20 ms). Budget
and profiles: tests/fuzzing.py."""

from __future__ import annotations

import contextlib
import io
import json
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from unittest import mock

import numpy as np
from fuzzing import assert_cli_one_line, fuzz_settings
from hypothesis import example, given
from hypothesis import strategies as st

from advspatial.cli import main
from helpers import without_timings

NETS = """import importlib
import json
from pathlib import Path

import fuzzact
import torch
from torch import nn

HELPER = importlib.import_module("fuzzhelper")  # named by a string: no static reading finds it


class Negate(nn.Module):
    def forward(self, x):
        return -x


class Scale(nn.Module):
    def __init__(self, factor):
        super().__init__()
        self.factor = factor  # not a weight: the state dict does not change with it

    def forward(self, x):
        return x * self.factor


def net():
    torch.manual_seed(0)
    factor = json.loads((Path(__file__).parent / "arch.json").read_text())["factor"] * HELPER.FACTOR
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 3), Scale(factor * fuzzact.FACTOR){tail}).eval()
"""
#: the modules the model imports besides torch: forgotten before every command, as a new process would not have them
MODEL_MODULES = ("fuzzact", "fuzzhelper")
#: model-code edits: a comment (same model), the same weights with the logits negated, other weights
CODE_EDITS = {"comment": ("", "# edited\n"), "negate": (", Negate()", ""), "reseed": ("", "")}
STAGES = [f"batch-{b:05d}.pt" for b in range(3)]


def cli(*args: str) -> tuple[int, str]:
    """(exit status, stderr) of the advspatial command run in this process (the model's own modules forgotten)."""
    import importlib

    for name in MODEL_MODULES:
        sys.modules.pop(name, None)
    importlib.invalidate_caches()  # files written within the same second are found
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()), \
            mock.patch.object(sys, "dont_write_bytecode", True):
        try:
            main(list(args))
            code = 0
        except SystemExit as exc:
            code = int(exc.code or 0) if not isinstance(exc.code, str) else 1
    return code, err.getvalue()


def write_inputs(root: Path, images_seed: int = 0, labels_seed: int = 0, code: str = "") -> None:
    rng = np.random.default_rng(images_seed)
    x = rng.random((12, 1, 8, 8)).astype(np.float32)
    y = np.random.default_rng(100 + labels_seed).integers(0, 3, 12)
    np.savez(root / "imgs.npz", x=x, y=y)
    tail, comment = CODE_EDITS.get(code, ("", ""))
    text = NETS.format(tail=tail) + comment
    if code == "reseed":
        text = text.replace("manual_seed(0)", "manual_seed(1)")
    (root / "nets.py").write_text(text)
    write_model_inputs(root)


def write_model_inputs(root: Path, factor: float = 1.0, helper: float = 1.0, version: str = "1.0",
                       package: float = 1.0) -> None:
    """What the factory reads besides its file: ``arch.json``, the helper named by a string, and the package
    ``fuzzact`` installed (with its distribution's metadata) in ``root/site``."""
    (root / "arch.json").write_text(json.dumps({"factor": factor}))
    (root / "fuzzhelper.py").write_text(f"FACTOR = {helper}\n")
    site = root / "site"
    for old in site.glob("fuzzact-*.dist-info"):
        for file in old.iterdir():
            file.unlink()
        old.rmdir()
    (site / "fuzzact").mkdir(parents=True, exist_ok=True)
    (site / "fuzzact" / "__init__.py").write_text(f"FACTOR = {package}\n")
    info = site / f"fuzzact-{version}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: fuzzact\nVersion: {version}\n")
    (info / "top_level.txt").write_text("fuzzact\n")


@contextlib.contextmanager
def installed_site(root: Path) -> Iterator[None]:
    """``root/site`` on the import path and counted as installed code (as site-packages is)."""
    from advspatial.models import sources

    roots = sources.installed_roots()
    sys.path.insert(0, str(root / "site"))
    try:
        with mock.patch.object(sources, "installed_roots", lambda: (*roots, (root / "site").resolve())):
            yield
    finally:
        sys.path.remove(str(root / "site"))
        for name in MODEL_MODULES:
            sys.modules.pop(name, None)


def fresh_run(root: Path, out: Path) -> tuple[int, str]:
    return cli("run", "baseline", "--model", f"{root}/nets.py:net", "--dataset", f"arrays:{root}/imgs.npz",
               "--n", "12", "--batch-size", "4", "--subset", "first", "--no-progress", "--out", str(out))


def results(out: Path) -> tuple[str, dict]:
    """per_image.csv and metrics.json but its wall-clock time."""
    metrics = without_timings(json.loads((out / "metrics.json").read_text()))
    return (out / "per_image.csv").read_text(), metrics


_stage = st.integers(0, 2)
_action = st.one_of(
    st.tuples(st.just("delete"), _stage),
    st.tuples(st.just("delete-results")),
    st.tuples(st.just("truncate"), _stage, st.integers(0, 400)),
    st.tuples(st.just("swap"), _stage, _stage),
    st.tuples(st.just("copy"), _stage, _stage),
    st.tuples(st.just("code"), st.sampled_from(sorted(CODE_EDITS))),
    st.tuples(st.just("images"), st.integers(1, 3)),
    st.tuples(st.just("labels"), st.integers(1, 3)),
    st.tuples(st.just("data file"), st.sampled_from([1.0, 2.0, -1.0])),
    st.tuples(st.just("helper"), st.sampled_from([1.0, 0.5])),
    st.tuples(st.just("package"), st.sampled_from(["1.0", "2.0"]), st.sampled_from([1.0, -1.0])),
    st.tuples(st.just("config"), st.sampled_from([("seed: 0", "seed: 1"), ("n: 12", "n: 8"),
                                                  ("batch_size: 4", "batch_size: 3"),
                                                  ("subset: first", "subset: random"),
                                                  ("progress: false", "progress: true")])),
)
DELETIONS = ("delete", "delete-results")


def apply(action: tuple, root: Path, run: Path) -> None:
    """One interruption, edit or swap of the run directory ``run`` or its inputs in ``root``."""
    stages = run / "stages" / "predictions"
    kind = action[0]
    if kind == "delete":
        (stages / STAGES[action[1]]).unlink(missing_ok=True)
    elif kind == "delete-results":
        for name in ("metrics.json", "per_image.csv", "report.html"):
            (run / name).unlink(missing_ok=True)
    elif kind == "truncate" and (stages / STAGES[action[1]]).is_file():
        path = stages / STAGES[action[1]]
        path.write_bytes(path.read_bytes()[: action[2]])
    elif kind in ("swap", "copy") and (stages / STAGES[action[1]]).is_file() and (stages / STAGES[action[2]]).is_file():
        a, b = stages / STAGES[action[1]], stages / STAGES[action[2]]
        first, second = a.read_bytes(), b.read_bytes()
        b.write_bytes(first)
        if kind == "swap":
            a.write_bytes(second)
    elif kind == "code":
        write_inputs(root, code=action[1])
    elif kind == "images":
        write_inputs(root, images_seed=action[1])
    elif kind == "labels":
        write_inputs(root, labels_seed=action[1])
    elif kind in ("data file", "helper", "package"):
        inputs = {"factor": 1.0, "helper": 1.0, "version": "1.0", "package": 1.0}
        if kind == "data file":
            inputs["factor"] = action[1]
        elif kind == "helper":
            inputs["helper"] = action[1]
        else:
            inputs["version"], inputs["package"] = action[1], action[2]
        write_model_inputs(root, **inputs)  # type: ignore[arg-type]
    elif kind == "config":
        config = run / "config.yaml"
        config.write_text(config.read_text().replace(*action[1]))


def check_resume(actions: list[tuple]) -> None:
    with tempfile.TemporaryDirectory() as tmp, installed_site(Path(tmp)):
        root = Path(tmp)
        write_inputs(root)
        run = root / "run"
        code, err = fresh_run(root, run)
        assert code == 0, err
        for action in actions:
            apply(action, root, run)
        code, err = cli("run", "--resume", str(run), "--no-progress")
        if code == 2:
            assert_cli_one_line(code, err)
            assert not all(a[0] in DELETIONS for a in actions), f"an interrupted run was refused: {err}"
            return
        assert code == 0, err
        fresh = root / "fresh"
        code, err = fresh_run(root, fresh)  # the uninterrupted run on the inputs as they are now
        assert code == 0, err
        assert results(run) == results(fresh), f"resume after {actions} mixed two runs"


@fuzz_settings(25)
@given(st.lists(_action, min_size=1, max_size=3))
@example([("delete", 1), ("delete-results",)])  # an interruption: resumes to the same result
@example([("code", "negate"), ("delete", 0), ("delete-results",)])  # same weights, other code
@example([("images", 1), ("delete", 2), ("delete-results",)])  # other images
@example([("copy", 0, 1), ("delete-results",)])  # a stage copied over another batch's
@example([("truncate", 2, 10), ("delete-results",)])
@example([("data file", 2.0), ("delete", 1), ("delete-results",)])  # a file the factory reads, edited
@example([("package", "2.0", -1.0), ("delete-results",)])  # an installed package upgraded
@example([("package", "1.0", -1.0), ("delete-results",)])  # ... or edited in place
@example([("helper", 0.5), ("delete", 0), ("delete-results",)])  # a helper loaded by a string import, edited
def test_resume_gives_the_uninterrupted_result_or_refuses(actions: list[tuple]) -> None:
    check_resume(actions)
