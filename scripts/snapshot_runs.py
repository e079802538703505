"""Snapshot every experiment's results, and compare two snapshots: "nothing a user sees changed".

Why: a refactoring of the experiments must leave what a run writes unchanged. This runs every
registered experiment on fixed settings with the code of the Python that runs it, and compares two
such snapshots file by file: every ``.csv`` of a run byte for byte, ``metrics.json`` as data with
its wall times left out. Run from the repository root::

    # before the change (a worktree of the old commit), then after it
    PYTHONPATH=/path/to/old/src python scripts/snapshot_runs.py run /tmp/snap-before
    python scripts/snapshot_runs.py run /tmp/snap-after
    python scripts/snapshot_runs.py compare /tmp/snap-before /tmp/snap-after

Settings (``--setting``): ``default`` is the embedded default (Fashion-MNIST, the cached small
CNN); ``resnet20`` is the pretrained CIFAR-10 ResNet-20 on the CIFAR-10 test JPEGs of
``$ADVSPATIAL_DATA`` (skipped with a message when it is absent). Every experiment runs its
``--quick`` preset; ``--main`` adds the README's main job (``advspatial run`` at its defaults,
about 5 minutes on 2 cores).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from advspatial.files import load_yaml_text

EXPERIMENTS = ("analyze", "baseline", "localized-training", "maps", "perceptual", "propagation", "pse", "spatial")
SETTINGS = ("default", "resnet20")
ANALYZE_IMAGES = 24
IGNORED_KEY = re.compile(r"(^|_)(wall|seconds|elapsed|timings|forecast)($|_)")


def data_root() -> Path | None:
    """The shared real data, or None (the ``resnet20`` setting is then skipped)."""
    root = Path(os.environ.get("ADVSPATIAL_DATA", "../shared/data"))
    return root if (root / "cifar10-test-jpeg").is_dir() else None


def setting_args(setting: str) -> list[str]:
    """The model and data options of a setting."""
    if setting == "default":
        return []
    root = data_root()
    assert root is not None
    return ["--dataset", f"imagefolder:{root / 'cifar10-test-jpeg'}", "--model", "cifar10-resnet20"]


def analyze_inputs(setting: str, folder: Path) -> list[str]:
    """Test images spread over the classes, a fixed random-sign L-inf change of them and their labels, as .pt
    files for ``analyze``; in the default setting also the cached default model as a state-dict file."""
    import torch

    from advspatial.data import load_dataset
    from advspatial.model_cache import resolve_model

    name = "fashion-mnist" if setting == "default" else f"imagefolder:{data_root() / 'cifar10-test-jpeg'}"
    data = load_dataset(name, "test")
    picked = data.subset(list(range(0, len(data), len(data) // ANALYZE_IMAGES))[:ANALYZE_IMAGES])
    clean_images = picked.images()
    signs = torch.sign(torch.randn(clean_images.shape, generator=torch.Generator().manual_seed(0)))
    folder.mkdir(parents=True, exist_ok=True)
    files = {part: folder / f"{part}.pt" for part in ("clean", "adv", "labels", "model")}
    torch.save(clean_images, files["clean"])
    torch.save((clean_images + 8 / 255 * signs).clamp(0, 1), files["adv"])
    torch.save(picked.labels, files["labels"])
    args = ["--clean", str(files["clean"]), "--adv", str(files["adv"]), "--labels", str(files["labels"])]
    if setting != "default":
        return [*args, "--model", "cifar10-resnet20"]
    torch.save(resolve_model("fashion-mnist", progress=False).state_dict(), files["model"])
    return [*args, "--model", str(files["model"]), "--arch", "smallcnn"]


def command(experiment: str, setting: str, out: Path) -> list[str]:
    """The advspatial command line of one experiment in one setting."""
    base = [sys.executable, "-m", "advspatial"]
    if experiment == "analyze":
        inputs = analyze_inputs(setting, out.parent / "analyze-inputs")
        return [*base, "analyze", *inputs, "--quick", "--no-progress", "--out", str(out)]
    return [*base, "run", experiment, *setting_args(setting), "--quick", "--no-progress", "--out", str(out)]


def run_snapshot(root: Path, settings: list[str], experiments: list[str], main_job: bool) -> int:
    """Run each experiment in each setting into ``root/SETTING/EXPERIMENT``; the number that failed."""
    if root.exists() and any(root.iterdir()):
        raise SystemExit(f"{root} is not empty: a snapshot goes into a new directory")
    failed = 0
    for setting in settings:
        if setting == "resnet20" and data_root() is None:
            print("resnet20: skipped, no cifar10-test-jpeg under $ADVSPATIAL_DATA or ../shared/data")
            continue
        jobs = [(name, command(name, setting, root / setting / name)) for name in experiments]
        if main_job and setting == "default":
            out = root / setting / "main"
            jobs.append(("main", [sys.executable, "-m", "advspatial", "run", "--no-progress", "--out", str(out)]))
        for name, argv in jobs:
            start = time.perf_counter()
            rc = subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
            print(f"{setting}/{name}: exit {rc.returncode} in {time.perf_counter() - start:.0f} s", flush=True)
            if rc.returncode:
                failed += 1
                print(rc.stderr[-2000:], file=sys.stderr)
    return failed


def comparable(value: Any, root: Path | None = None) -> Any:
    """``value`` as compared, recursively: every key that names a duration (wall_seconds, elapsed, timings, ...)
    or the forecast said before the run (its price timed on the machine) left out, and the snapshot's own directory
    ``root`` in any string written as ``<snapshot>`` (a checkpoint path names its run directory)."""
    if isinstance(value, dict):
        return {k: comparable(v, root) for k, v in value.items() if not IGNORED_KEY.search(k)}
    if isinstance(value, list):
        return [comparable(v, root) for v in value]
    if isinstance(value, str) and root is not None:
        return value.replace(str(root), "<snapshot>")
    return value


def differences(before: Any, after: Any, path: str = "") -> list[str]:
    """Paths at which two JSON values differ (NaN equals NaN)."""
    if isinstance(before, dict) and isinstance(after, dict):
        found = [f"{path}/{k}: only before" for k in before.keys() - after.keys()]
        found += [f"{path}/{k}: only after" for k in after.keys() - before.keys()]
        for key in sorted(before.keys() & after.keys()):
            found += differences(before[key], after[key], f"{path}/{key}")
        return found
    if isinstance(before, list) and isinstance(after, list):
        if len(before) != len(after):
            return [f"{path}: length {len(before)} before, {len(after)} after"]
        return [d for i, (b, a) in enumerate(zip(before, after, strict=True)) for d in differences(b, a, f"{path}/{i}")]
    same = before == after or (before != before and after != after)
    return [] if same else [f"{path}: {before!r} before, {after!r} after"]


def compare_run(before: Path, after: Path, roots: tuple[Path, Path] | None = None) -> list[str]:
    """What differs between two run directories: csv files byte for byte, metrics.json and config.yaml as data
    (paths inside the snapshot ``roots`` compared as relative)."""
    found = []
    for csv in sorted(p.name for p in before.glob("*.csv")):
        if not (after / csv).is_file():
            found.append(f"{csv}: missing after")
        elif (before / csv).read_bytes() != (after / csv).read_bytes():
            found.append(f"{csv}: bytes differ")
    old_root, new_root = roots if roots is not None else (None, None)
    for name in ("metrics.json", "config.yaml"):
        if not (before / name).is_file():
            continue
        if not (after / name).is_file():
            return [*found, f"{name}: missing after"]
        old, new = comparable(run_data(before / name), old_root), comparable(run_data(after / name), new_root)
        found += [f"{name}{d}" for d in differences(old, new)]
    return found


def run_data(path: Path) -> Any:
    """A run's metrics.json (without its checksums) or config.yaml, as data."""
    text = path.read_text()
    return without_hashes(json.loads(text)) if path.suffix == ".json" else load_yaml_text(text)


def without_hashes(metrics: Any) -> Any:
    """``metrics`` without the run's two checksums, ``run.id`` (of the resolved settings, whose paths name the
    snapshot's directory) and ``run.findings`` (of the findings as written, durations included): what they
    summarize is compared itself, the settings in ``config.yaml`` and the findings field by field."""
    if isinstance(metrics, dict) and isinstance(metrics.get("run"), dict):
        run = {k: v for k, v in metrics["run"].items() if k not in ("id", "findings")}
        return {**metrics, "run": run}
    return metrics


def compare_snapshots(before: Path, after: Path) -> int:
    """Print what differs run by run; the number of runs that differ or are missing."""
    runs = sorted(p.parent.relative_to(before) for p in before.glob("*/*/run.json"))
    bad = 0
    for run in runs:
        found = compare_run(before / run, after / run, (before, after)) if (after / run).is_dir() else ["missing after"]
        print(f"{run}: {'same' if not found else f'{len(found)} differences'}")
        for line in found[:10]:
            print(f"    {line}")
        bad += bool(found)
    print(f"{len(runs) - bad} of {len(runs)} runs the same")
    return bad


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run every experiment into a snapshot directory")
    run.add_argument("out", type=Path)
    run.add_argument("--setting", choices=[*SETTINGS, "all"], default="all")
    run.add_argument("--only", default="", help="comma-separated experiments (default: all)")
    run.add_argument("--main", action="store_true", help="also the README's main job at its defaults")
    cmp = sub.add_parser("compare", help="compare two snapshot directories")
    cmp.add_argument("before", type=Path)
    cmp.add_argument("after", type=Path)
    args = parser.parse_args(argv)
    problem = bad_input(args)
    if problem:
        print(f"snapshot_runs.py: error: {problem}", file=sys.stderr)
        return 2
    if args.command == "compare":
        return int(compare_snapshots(args.before, args.after) > 0)
    settings = list(SETTINGS) if args.setting == "all" else [args.setting]
    experiments = args.only.split(",") if args.only else list(EXPERIMENTS)
    return int(run_snapshot(args.out, settings, experiments, args.main) > 0)


def bad_input(args: argparse.Namespace) -> str:
    """What is wrong with the command line, in one line ('' when nothing): folders that are not there or are
    files, an unknown experiment."""
    if args.command == "compare":
        return next((f"{p} is not a snapshot folder" for p in (args.before, args.after) if not p.is_dir()), "")
    if args.out.exists() and not args.out.is_dir():
        return f"{args.out} is a file; valid: a folder for the snapshot"
    unknown = [e for e in args.only.split(",") if e and e not in EXPERIMENTS]
    return f"unknown experiment(s) {', '.join(unknown)}; valid: {', '.join(EXPERIMENTS)}" if unknown else ""


if __name__ == "__main__":
    sys.exit(main())
