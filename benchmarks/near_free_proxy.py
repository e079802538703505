"""The framework's own work, measured on a CPU: an experiment on a classifier whose passes cost next to nothing.

Why: on a GPU a run's time follows its calls and what the host does between them, not its image-passes. A
classifier that costs next to nothing (a strided convolution, average pooling and a linear layer) leaves on a CPU
only the framework's own work per call (region selection, fills, bookkeeping, the attacks' own arithmetic), and
with the device's path forced (``host_syncs.DEVICE_PATH_ON_CPU``, as ``device_path.py``) the rounds and host reads a
device would make. The classifier is trained briefly on images of the folder that the run does not evaluate, so
that attacks meet a model that classifies some images correctly: a cost proxy, never a result.

Prints the run's CPU seconds and its ledger by stage group (``ledger.py``'s table); ``--profile`` also the
functions with the most time of their own (cProfile). Counts are machine-independent; the times are this machine's.
Not a test. Example (the figures of benchmarks/README.md, "the framework's own work at 32 px")::

    python benchmarks/near_free_proxy.py --images ../shared/data/cifar10-test-jpeg --n 32 --profile \\
        --out runs/near-free-32

With ``--lazy`` the run reads the folder as a folder run does (JPEGs decoded batch by batch), and ``--resume``
completes a copy of a finished run, every stage read back, so that the ledger's phases outside the stages (rows,
statistics, figures) are the analysis' own (the figures of "the rows' images once for every attack")::

    python benchmarks/near_free_proxy.py --images ../shared/data/cifar10-test-jpeg --n 2000 --lazy \\
        --out runs/nf-2000
    cp -r runs/nf-2000 runs/nf-copy && cp runs/nf-2000-classifier.pt runs/nf-copy-classifier.pt
    python benchmarks/near_free_proxy.py --images ../shared/data/cifar10-test-jpeg --n 2000 --lazy --resume \\
        --out runs/nf-copy
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import importlib.util
import json
import os
import pstats
import time
import types
from collections.abc import Iterator
from pathlib import Path
from unittest import mock

import numpy as np
import torch
from PIL import Image
from torch import nn

#: epochs of the classifier's training
TRAIN_EPOCHS = 15


def folder_images(root: Path) -> tuple[list[Path], list[int]]:
    """Every JPEG/PNG under ``root``'s class folders, in a fixed shuffled order, and its class index."""
    classes = sorted(p.name for p in root.iterdir() if p.is_dir())
    if not classes:
        raise SystemExit(f"{root} has no class folders")
    files = sorted(f for c in classes for f in (root / c).iterdir() if f.suffix.lower() in {".jpg", ".jpeg", ".png"})
    order = np.random.default_rng(0).permutation(len(files))
    files = [files[i] for i in order]
    return files, [classes.index(f.parent.name) for f in files]


def load(files: list[Path], labels: list[int], size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, 3, size, size) images in [0, 1] and their labels."""
    images = [np.asarray(Image.open(f).convert("RGB").resize((size, size)), dtype=np.float32) / 255 for f in files]
    return torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).contiguous(), torch.tensor(labels)


def near_free_classifier(size: int, classes: int) -> nn.Module:
    """A classifier whose passes cost next to nothing at ``size`` px: one or two strided convolutions to a 4x4 grid
    of 8 or 16 channels, and a linear layer."""
    if size <= 64:
        features = [nn.Conv2d(3, 8, 8, stride=4, padding=2), nn.ReLU()]
        channels = 8
    else:
        features = [nn.Conv2d(3, 8, 8, stride=8), nn.ReLU(), nn.Conv2d(8, 16, 3, stride=2), nn.ReLU()]
        channels = 16
    return nn.Sequential(*features, nn.AdaptiveAvgPool2d(4), nn.Flatten(), nn.Linear(channels * 16, classes))


def trained(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> nn.Module:
    """``model`` after :data:`TRAIN_EPOCHS` epochs of Adam on ``x``, ``y`` in batches of 100, in eval mode."""
    optimizer = torch.optim.Adam(model.parameters(), 3e-3)
    for _ in range(TRAIN_EPOCHS):
        for start in range(0, len(x), 100):
            optimizer.zero_grad()
            nn.functional.cross_entropy(model(x[start:start + 100]), y[start:start + 100]).backward()
            optimizer.step()
    return model.eval()


class _Reached(Exception):
    """The run reached the stage ``--until`` names: it stops there."""


@contextlib.contextmanager
def stopped_at(prefix: str | None) -> Iterator[None]:
    """Stop the run (its finished stages kept) as the first stage whose key starts with ``prefix/`` begins, e.g.
    ``attack``: the faithfulness gates and the stages before it only. None: the whole run."""
    if not prefix:
        yield
        return
    from advspatial.passes import PassLedger

    begin = PassLedger.stage

    def stage(self: PassLedger, key: str):  # type: ignore[no-untyped-def]
        if key.startswith(prefix + "/"):
            raise _Reached(key)
        return begin(self, key)

    with mock.patch.object(PassLedger, "stage", stage):
        try:
            yield
        except _Reached as reached:
            print(f"stopped as stage {reached} began (--until {prefix})")


@contextlib.contextmanager
def road_counted(device_stacking: bool) -> Iterator[dict[str, int]]:
    """Count ROAD's device solves (``RegionSystems.solve`` calls) and the solver's steps (``_Solving.step`` calls)
    in the block; with ``device_stacking`` the CPU stacks independent work as a device does (``CPU_STACK_ELEMENTS``
    set to ``STACK_ELEMENTS``: a batch's regions one ROAD solve, as on a GPU), so the counts are a device's."""
    from advspatial import stacked_runs
    from advspatial.regions import imputation_iterative as solver

    counts = {"road_solves": 0, "road_steps": 0}
    solve, step = solver.RegionSystems.solve, solver._Solving.step

    def counted_solve(self, b):  # type: ignore[no-untyped-def]
        counts["road_solves"] += 1
        return solve(self, b)

    def counted_step(self):  # type: ignore[no-untyped-def]
        counts["road_steps"] += 1
        return step(self)

    stacking = stacked_runs.STACK_ELEMENTS if device_stacking else stacked_runs.CPU_STACK_ELEMENTS
    with mock.patch.object(solver.RegionSystems, "solve", counted_solve), \
            mock.patch.object(solver._Solving, "step", counted_step), \
            mock.patch.object(stacked_runs, "CPU_STACK_ELEMENTS", stacking):
        yield counts


def ledger_benchmark() -> types.ModuleType:
    """``ledger.py``, loaded from beside this script."""
    spec = importlib.util.spec_from_file_location("ledger_benchmark", Path(__file__).with_name("ledger.py"))
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def print_ledger(run: Path) -> dict:
    """``ledger.py``'s table of ``run`` at depth 2, printed and returned."""
    ledger = ledger_benchmark()
    result = ledger.table([run], 2)
    ledger.print_table(result)
    return result[str(run)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=Path, required=True, help="an image folder of class subfolders")
    parser.add_argument("--size", type=int, default=32, help="image side the folder's images are resized to")
    parser.add_argument("--experiment", default="spatial")
    parser.add_argument("--n", type=int, default=32)
    parser.add_argument("--train", type=int, default=4000, help="images the classifier is trained on (not evaluated)")
    parser.add_argument("--quick", action="store_true", help="the experiment's smoke test (checks the script)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=0,
                        help="the run's batch size (0: its own), e.g. the n a GPU takes as one batch")
    parser.add_argument("--cpu-path", action="store_true", help="the CPU's own path instead of the device's")
    parser.add_argument("--until", default=None, help="stop as the first stage of this family begins (e.g. attack: "
                                                         "the gates and the stages before them only)")
    parser.add_argument("--device-stacking", action="store_true",
                        help="stack independent work as a device does (a CPU keeps one call a batch): e.g. a "
                             "batch's ROAD regions one solve")
    parser.add_argument("--reuse-model-work", action="store_true",
                        help="read the model-only stages an earlier run of the same classifier kept (default: "
                             "computed, so that two runs compared both make them)")
    parser.add_argument("--lazy", action="store_true",
                        help="the run reads the whole folder itself, decoding its JPEGs batch by batch as a folder "
                             "run does (not n images in memory); the classifier is still trained on the first "
                             "--train images of the shuffled order, which the run may draw too (a cost proxy)")
    parser.add_argument("--resume", action="store_true",
                        help="complete the run in --out (every stage read back: its time is the analysis'), with "
                             "the classifier the run was made with (kept beside it)")
    parser.add_argument("--profile", action="store_true", help="print cProfile's top functions by their own time")
    parser.add_argument("--out", type=Path, default=Path("runs/near-free"))
    parser.add_argument("--output", type=Path, default=None, help="also write the figures as JSON here")
    args = parser.parse_args()
    if not args.images.is_dir():
        raise SystemExit(f"skipped: no image folder at {args.images}")

    import advspatial
    from advspatial import host_syncs

    torch.set_num_threads(args.threads)
    files, labels = folder_images(args.images)
    # the run evaluates n of the 3n images it is given and draws the class prior's images from the others
    given = slice(args.train, args.train + 3 * args.n)
    if len(files) < given.stop:
        raise SystemExit(f"{args.images} holds {len(files)} images: --train {args.train} and 3 x --n needed")
    weights = args.out.with_name(args.out.name + "-classifier.pt")  # beside the run: --resume needs the same
    model = near_free_classifier(args.size, max(labels) + 1)
    if args.resume:
        model.load_state_dict(torch.load(weights))
        model.eval()
    else:
        x, y = load(files[:args.train], labels[:args.train], args.size)
        torch.manual_seed(0)
        model = trained(model, x, y)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        torch.save(model.state_dict(), weights)
    x, y = load(files[given], labels[given], args.size)
    with torch.no_grad():
        accuracy = float((model(x).argmax(1) == y).float().mean())
    print(f"near-free classifier: accuracy {accuracy:.3f} on {len(x)} held-out images (a cost proxy, not a result)")
    data: object = (x, y)
    if args.lazy:
        from advspatial.data.imagefolder import load_imagefolder

        data = load_imagefolder(root=str(args.images), split="", size=args.size)
    host_syncs.DEVICE_PATH_ON_CPU = not args.cpu_path
    profile = cProfile.Profile() if args.profile else None
    started = time.process_time()
    if profile is not None:
        profile.enable()
    sized = {"batch_size": args.batch_size} if args.batch_size else {}
    with stopped_at(args.until), road_counted(args.device_stacking) as road:
        advspatial.run(args.experiment, model=model, data=data, n=args.n, out=str(args.out), progress=False,
                       quick=args.quick, reuse_model_work=args.reuse_model_work, resume=args.resume, **sized)
    if profile is not None:
        profile.disable()
    cpu_seconds = time.process_time() - started
    print(f"{args.experiment}, n = {args.n}: {cpu_seconds:.1f} CPU-s{' (under cProfile)' if args.profile else ''}")
    print(f"ROAD on the device's solver: {road['road_solves']} solves, {road['road_steps']} steps"
          f"{' (stacked as on a device)' if args.device_stacking else ''}")
    groups = print_ledger(args.out)
    if args.output:
        args.output.write_text(json.dumps({
            "experiment": args.experiment, "n": args.n, "size": args.size, "threads": args.threads,
            "device_path": not args.cpu_path, "batch_size": args.batch_size or None, "until": args.until,
            "device_stacking": args.device_stacking, **road,
            "profiled": args.profile, "accuracy": round(accuracy, 3),
            "cpu_seconds": round(cpu_seconds, 1), "load_average": os.getloadavg(), "ledger": groups},
            indent=2) + "\n")
    if profile is not None:
        pstats.Stats(profile).sort_stats("tottime").print_stats(30)


if __name__ == "__main__":
    main()
