"""The fuzz suite's inputs through the whole ``advspatial`` command: a few inputs of each class the other
modules of tests/fuzz/ generate, each ending in exit 2 and one line on stderr (``advspatial: error: ...``)
with no traceback, in-process and once in a subprocess (the console entry point, as a user runs it)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from fuzzing import assert_cli_one_line
from helpers import run_cli
from PIL import Image

NETS = "import torch\nfrom torch import nn\n\n\ndef net():\n    return nn.Sequential(nn.Flatten(), nn.Linear(64, 3))\n"


@pytest.fixture
def inputs(tmp_path: Path) -> Path:
    """A factory file, good arrays, and one bad input of every class in ``tmp_path``."""
    (tmp_path / "nets.py").write_text(NETS)
    np.save(tmp_path / "header.npy", np.zeros((2, 1, 8, 8), np.float32))
    raw = bytearray((tmp_path / "header.npy").read_bytes())
    raw[64] = 0  # a NUL inside the header's Python literal
    (tmp_path / "header.npy").write_bytes(bytes(raw))
    np.savez(tmp_path / "bool_labels.npz", x=np.zeros((4, 1, 8, 8), np.float32), y=np.eye(3, dtype=bool)[[0, 1, 2, 0]])
    (tmp_path / "folder").mkdir()
    Image.new("L", (8, 8)).save(tmp_path / "folder" / "a.png")
    (tmp_path / "folder" / "b.png").write_bytes(b"")
    (tmp_path / "classes" / "cat").mkdir(parents=True)
    Image.new("RGB", (8, 8)).save(tmp_path / "classes" / "cat" / "a.png")
    (tmp_path / "map.tsv").write_bytes("0\tcat\té".encode("latin-1"))
    (tmp_path / "deep.yaml").write_text("n: " + "[" * 5000 + "]" * 5000)
    return tmp_path


def base(root: Path, dataset: str) -> list[str]:
    return ["run", "baseline", "--model", f"{root}/nets.py:net", "--dataset", dataset, "--n", "4", "--no-progress",
            "--out", str(root / "out")]


CASES = {  # what goes wrong: (the command, a fragment of its one line)
    "a damaged .npy header": (lambda r: base(r, f"arrays:{r}/header.npy"), "is not a numpy array file"),
    "boolean one-hot labels": (lambda r: base(r, f"arrays:{r}/bool_labels.npz"), "booleans"),
    "a zero-byte image in an arrays folder": (lambda r: base(r, f"arrays:{r}/folder"), "cannot read image"),
    "a class map that is not UTF-8": (lambda r: [*base(r, f"imagefolder:{r}/classes"), "--class-map",
                                                 f"{r}/map.tsv"], "is not UTF-8"),
    "a YAML file nested 5000 deep": (lambda r: ["run", "--config", f"{r}/deep.yaml", "--out", str(r / "out")],
                                     "too deeply"),
    "a --param nested 3000 deep": (lambda r: ["attack", "--param", "eps=" + "[" * 3000 + "]" * 3000, "--n", "2"],
                                   "too deeply"),
    "--param components=null": (lambda r: ["attack", "--attack", "autoattack", "--param", "components=null"],
                                "components=None is not valid"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_inputs_are_one_line_exit_2(case: str, inputs: Path, capsys) -> None:
    command, fragment = CASES[case]
    code, _, err = run_cli(capsys, *command(inputs))
    assert_cli_one_line(code, err)
    assert fragment in err, err


@pytest.mark.parametrize(("variable", "value"), [("RANK", "abc"), ("ADVSPATIAL_DIST_TIMEOUT_HOURS", "1e-12"),
                                                 ("WORLD_SIZE", "2"), ("ADVSPATIAL_THREADS", "99999")])
def test_bad_environment_is_one_line_exit_2(variable: str, value: str, inputs: Path, capsys, monkeypatch) -> None:
    monkeypatch.setenv(variable, value)
    if variable == "ADVSPATIAL_DIST_TIMEOUT_HOURS":  # read where a process group is joined: a world of two
        monkeypatch.setenv("WORLD_SIZE", "2")
        for name, setting in (("RANK", "0"), ("MASTER_ADDR", "127.0.0.1"), ("MASTER_PORT", "1")):
            monkeypatch.setenv(name, setting)
    code, _, err = run_cli(capsys, "list")
    assert_cli_one_line(code, err)
    assert variable in err


def test_the_console_command_refuses_a_damaged_array_in_one_line(inputs: Path) -> None:
    """End to end as a user runs it: a separate process, its stderr one line, exit 2."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).parents[2] / "src"),
                                                        os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run([sys.executable, "-m", "advspatial", *base(inputs, f"arrays:{inputs}/header.npy")],
                          capture_output=True, text=True, timeout=120, env=env)
    assert_cli_one_line(proc.returncode, proc.stderr)
    assert "header.npy" in proc.stderr
