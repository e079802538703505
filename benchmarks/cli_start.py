"""What the command line costs before it does anything: ``advspatial --help`` against ``import torch``, its floor.

Every command (a run, ``evaluate``, ``plan``, a mistyped option) first imports what the command line imports, so this
is the wait a user has on every call, and what each of a test suite's subprocesses pays. The floor is torch's own
import: the command line cannot start without it. Each round times, in turn, ``import torch`` and ``--help`` for every
source tree given (``--src DIR``: another checkout's ``src``, e.g. ``git archive COMMIT src | tar -x -C DIR``), so a
machine's drift falls on all of them alike. Also lists the libraries the start imports that only some commands use.

    python benchmarks/cli_start.py --rounds 6                       # this checkout
    python benchmarks/cli_start.py --rounds 6 --src /tmp/before/src  # and another, in turn

Prints one line a tree: median seconds of ``--help`` and its ratio to ``import torch``'s median.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parents[1] / "src"
#: libraries some commands use and the start should not import (each costs a noticeable part of a second)
OPTIONAL = ("scipy.stats", "scipy.ndimage", "captum", "matplotlib")


def seconds(command: list[str], src: Path | None) -> float:
    """Wall seconds of ``command`` in a fresh interpreter, with ``src`` first on the import path."""
    env = dict(os.environ)
    if src is not None:
        env["PYTHONPATH"] = str(src)
    start = time.perf_counter()
    subprocess.run(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
    return time.perf_counter() - start


def imported_at_start(src: Path) -> list[str]:
    """Which of :data:`OPTIONAL` the command line and the experiments import before parsing a word."""
    probe = ("import sys; import advspatial.cli.main, advspatial.experiments; "
             f"print(' '.join(m for m in {OPTIONAL!r} if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", probe], env={**os.environ, "PYTHONPATH": str(src)},
                          capture_output=True, text=True, check=True)
    return done.stdout.split()


def measure(trees: list[Path], rounds: int) -> dict[str, dict[str, float]]:
    """{tree or "import torch": {"median": s, "ratio": median / torch's}}, rounds taken in turn."""
    times: dict[str, list[float]] = {"import torch": []} | {str(tree): [] for tree in trees}
    for _ in range(rounds):
        times["import torch"].append(seconds([sys.executable, "-c", "import torch"], None))
        for tree in trees:
            times[str(tree)].append(seconds([sys.executable, "-m", "advspatial", "--help"], tree))
    floor = statistics.median(times["import torch"])
    return {name: {"median": statistics.median(values), "ratio": statistics.median(values) / floor}
            for name, values in times.items()}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=6, help="rounds, each timing every command once")
    parser.add_argument("--src", type=Path, action="append", default=[], help="another source tree (repeatable)")
    args = parser.parse_args(argv)
    trees = [HERE, *args.src]
    for name, figures in measure(trees, args.rounds).items():
        optional = [] if name == "import torch" else imported_at_start(Path(name))
        extra = "" if name == "import torch" else f"  imports at start: {' '.join(optional) or '-'}"
        print(f"{name:>40}: median {figures['median']:.2f} s, {figures['ratio']:.2f}x import torch{extra}")


if __name__ == "__main__":
    main()
