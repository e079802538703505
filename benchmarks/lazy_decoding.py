"""Peak memory and speed of reading an image folder lazily, per batch, against decoding it all at once.

Writes ``max(--n)`` random 256x256 JPEGs (smooth random colour fields plus
noise, quality 90, 10 class folders) to a temporary folder, and for every N
makes a folder of the first N (symbolic links). Each measurement runs in a
fresh Python process, which loads the folder with ``imagefolder`` at
``--size`` (``fit="crop"``, ``crop_fraction=0.875`` as for ImageNet models)
and then either

* ``lazy``: iterates ``data.batches(--batch-size)`` (decoding one batch at a
  time, with 1 decoding thread or the default number), or
* ``eager``: ``data.images()``, all images decoded at once (what the loader
  used to do, plus the float copy).

Peak RSS is ``resource.getrusage(RUSAGE_SELF).ru_maxrss`` of that process;
``base`` is the RSS after the imports, before the folder is listed, so
``peak - base`` is what the data costs. Lazy reading should not grow with N;
eager grows by about N * 3 * size**2 * 5 bytes (uint8 + float32).

    .venv/bin/python benchmarks/lazy_decoding.py            # N = 200, 2000
    .venv/bin/python benchmarks/lazy_decoding.py --n 200 2000 5000 --size 224
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

CHILD = r"""
import json, resource, sys, time
import torch
from advspatial.data import imagefolder
from advspatial.data.imagefolder import load_imagefolder

folder, size, batch_size, mode, threads = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], int(sys.argv[5])
torch.set_num_threads(1)
if threads > 0:
    imagefolder.DECODE_THREADS = threads
rss = lambda: resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB -> MiB on Linux
base = rss()
start = time.perf_counter()
data = load_imagefolder(root=folder, size=size, crop_fraction=0.875)
listed = time.perf_counter() - start
total = 0.0
if mode == "lazy":
    for x, y, sl in data.batches(batch_size):
        total += float(x.sum())
else:
    total = float(data.images().sum())
elapsed = time.perf_counter() - start
print(json.dumps({"n": len(data), "base": base, "peak": rss(), "list_s": listed, "total_s": elapsed,
                  "threads": imagefolder.DECODE_THREADS}))
"""


def write_images(root: Path, count: int, side: int = 256, seed: int = 0) -> list[Path]:
    """``count`` random JPEGs in 10 class folders; returns their paths in creation order."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    paths = []
    for i in range(count):
        coarse = Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).resize((side, side), Image.BICUBIC)
        noisy = np.asarray(coarse, dtype=np.int16) + rng.integers(-20, 21, (side, side, 3))
        path = root / f"class{i % 10}" / f"{i:05d}.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(noisy.clip(0, 255).astype(np.uint8)).save(path, quality=90)
        paths.append(path)
    return paths


def link_first(paths: list[Path], n: int, root: Path) -> Path:
    """A folder holding symbolic links to the first ``n`` images, same class layout."""
    for path in paths[:n]:
        target = root / path.parent.name / path.name
        target.parent.mkdir(parents=True, exist_ok=True)
        os.symlink(path, target)
    return root


def measure(folder: Path, size: int, batch_size: int, mode: str, threads: int) -> dict:
    """Run one measurement in a fresh interpreter and return its JSON line."""
    cmd = [sys.executable, "-c", CHILD, str(folder), str(size), str(batch_size), mode, str(threads)]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, nargs="+", default=[200, 2000])
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--no-eager", action="store_true", help="skip the decode-everything comparison")
    args = parser.parse_args()
    runs = [("lazy", 1), ("lazy", 0)] + ([] if args.no_eager else [("eager", 0)])
    with tempfile.TemporaryDirectory(prefix="advspatial-lazy-") as tmp:
        paths = write_images(Path(tmp) / "all", max(args.n))
        print(f"{max(args.n)} JPEGs 256x256 -> size {args.size}, batch {args.batch_size}, cpu count {os.cpu_count()}")
        print("| N | mode | decode threads | base RSS MiB | peak RSS MiB | peak - base MiB "
              "| list s | total s | img/s |")
        print("|---:|---|---:|---:|---:|---:|---:|---:|---:|")
        for n in args.n:
            folder = link_first(paths, n, Path(tmp) / f"n{n}")
            for mode, threads in runs:
                r = measure(folder, args.size, args.batch_size, mode, threads)
                print(f"| {r['n']} | {mode} | {r['threads']} | {r['base']:.0f} | {r['peak']:.0f} | "
                      f"{r['peak'] - r['base']:.0f} | {r['list_s']:.3f} | {r['total_s']:.2f} | "
                      f"{r['n'] / r['total_s']:.0f} |", flush=True)


if __name__ == "__main__":
    main()
