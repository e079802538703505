"""A model that fails to load in one rank of a torchrun run stops every
rank with that rank's one line (rank 0 prints ``advspatial: error: rank 1 failed: ...``), not with a traceback
in rank 1 and gloo's 'connection closed' tracebacks in rank 0. Two CPU processes (gloo), a few seconds."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np

RANKFAIL = """import os
from torch import nn


def net():
    if os.environ.get("RANK") == "1":
        raise RuntimeError("only rank 1 cannot build this model")
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 3))
"""


def test_a_model_failing_in_one_rank_stops_every_rank_with_one_line(tmp_path: Path) -> None:
    (tmp_path / "rankfail.py").write_text(RANKFAIL)
    np.savez(tmp_path / "imgs.npz", x=np.zeros((8, 1, 8, 8), np.float32), y=np.zeros(8, np.int64))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "ADVSPATIAL_THREADS": "1", "ADVSPATIAL_DIST_TIMEOUT_HOURS": "0.05",
           "PYTHONPATH": os.pathsep.join([str(Path(__file__).parents[2] / "src"), os.environ.get("PYTHONPATH", "")])}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2", "-m", "advspatial",
               "--", "run", "baseline", "--model", f"{tmp_path}/rankfail.py:net", "--dataset",
               f"arrays:{tmp_path}/imgs.npz", "--n", "8", "--batch-size", "4", "--no-progress",
               "--out", str(tmp_path / "run")]
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode != 0
    ours = [line for line in done.stderr.splitlines() if line.startswith("advspatial: error:")]
    assert len(ours) == 1, done.stderr[-3000:]
    assert "rank 1 failed" in ours[0] and "only rank 1 cannot build this model" in ours[0], ours[0]
    assert "Connection closed by peer" not in done.stderr, done.stderr[-3000:]
