"""Scale-out on one machine: the default spatial run on 2 processes x 1 thread (torchrun) vs 1 process x 2 threads.

    .venv/bin/python benchmarks/bench_distributed.py            # default run (n=1000), model cached first
    .venv/bin/python benchmarks/bench_distributed.py --n 200    # lighter

Both runs use the same settings and a cached model (the model is trained or
loaded once beforehand, outside the timing). Reported: wall time of each, the
speed-up (1 process / 2 processes), peak memory of each launch (the largest sum
of the resident set sizes of the whole process tree, sampled every 0.2 s from
/proc), and whether the per-image rows agree. They agree exactly only at equal
threads per process (here 2 vs 1 thread: CPU kernels may then differ in the last
bits, so the comparison is reported, not required). Results go to
benchmarks/results/distributed.json.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


def tree_rss(root: int) -> int:
    """Resident bytes of ``root`` and every descendant (Linux /proc)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(entry.name))
    total, todo = 0, [root]
    while todo:
        pid = todo.pop()
        todo.extend(children.get(pid, []))
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) * 1024
        except OSError:
            continue
    return total


def timed(command: list[str], env: dict[str, str]) -> dict[str, float]:
    """Wall seconds and peak tree RSS (MiB) of ``command``; fails loudly when it fails."""
    started = time.perf_counter()
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    peak = 0
    while process.poll() is None:
        peak = max(peak, tree_rss(process.pid))
        time.sleep(0.2)
    output = process.stdout.read() if process.stdout else ""
    if process.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{output[-3000:]}")
    return {"wall_seconds": round(time.perf_counter() - started, 1), "peak_rss_mib": round(peak / 2**20, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1000, help="test images (default: the default run's 1000)")
    parser.add_argument("--extra", default="", help="more `advspatial run spatial` options, space-separated")
    args = parser.parse_args()
    env = {**os.environ, "TQDM_DISABLE": "1", "PYTHONWARNINGS": "ignore"}
    settings = ["--n", str(args.n), *args.extra.split()]
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run([sys.executable, "-m", "advspatial", "run", "baseline", "--n", "10", "--out", f"{tmp}/warm"],
                       env=env, check=True, capture_output=True)  # trains or loads the cached default model
        one = timed([sys.executable, "-m", "advspatial", "run", "spatial", *settings, "--out", f"{tmp}/one"],
                    {**env, "ADVSPATIAL_THREADS": "2", "OMP_NUM_THREADS": "2"})
        two = timed([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2", "-m",
                     "advspatial", "--", "run", "spatial", *settings, "--out", f"{tmp}/two"],
                    {**env, "ADVSPATIAL_THREADS": "1", "OMP_NUM_THREADS": "1"})
        same = Path(f"{tmp}/one/per_image.csv").read_text() == Path(f"{tmp}/two/per_image.csv").read_text()
    result = {"n": args.n, "extra": args.extra, "one_process_two_threads": one, "two_processes_one_thread": two,
              "speedup": round(one["wall_seconds"] / two["wall_seconds"], 3),
              "memory_ratio": round(two["peak_rss_mib"] / max(one["peak_rss_mib"], 1e-9), 3),
              "per_image_identical": same, "load_average": os.getloadavg()}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "distributed.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
