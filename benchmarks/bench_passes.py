"""The pass budget of every experiment: per stage, the model's forward and backward passes per
test image it spends, and the floor the run needs (the passes the attacks make inside ``Attack.run``).

    python benchmarks/bench_passes.py                         # every experiment, default settings, --n 100
    python benchmarks/bench_passes.py --experiments spatial maps --n 200
    python benchmarks/bench_passes.py --extra=--quick         # CI-sized settings (smoke tests; "--extra --quick" is
                                                              # read by argparse as an option of its own)

Each experiment runs in this process (``advspatial.cli.main``) on the default Fashion-MNIST model. The run's
own ledger (:mod:`advspatial.passes`, ``metrics.json``'s ``model_passes``) gives the passes per stage; a second
ledger on the same model counts only the passes made inside ``Attack.run``: the attacks' own passes, the floor
that a run making the same attacks cannot go below (its maps, gates, nulls and defence columns come on top).
Passes are machine-independent, so this benchmark needs no idle machine; per-image counts hardly depend on n
except where a stage works on a fixed number of images (the adaptive evaluation's ``adaptive_n``, the gate's
``gate_n``).

Writes ``benchmarks/results/passes.json`` (one entry per experiment and settings). Not a test.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results" / "passes.json"
EXPERIMENTS = ("spatial", "maps", "perceptual", "pse", "propagation", "localized-training", "baseline")


@contextmanager
def attack_passes() -> Iterator[Any]:
    """A ledger counting the passes made inside ``Attack.run`` (outermost calls only) of every model the run's own
    ledger watches (the classifier; localized training's evaluated models)."""
    from advspatial.attacks.base import Attack
    from advspatial.passes import PassLedger

    ledger = PassLedger()
    watch, run = PassLedger.watch, Attack.run
    depth = [0]

    def watch_both(self: PassLedger, model: Any) -> None:
        watch(self, model)
        if self is not ledger:
            watch(ledger, model)

    def counted_run(self: Any, *args: Any, **kwargs: Any) -> Any:
        depth[0] += 1
        try:
            if depth[0] > 1:
                return run(self, *args, **kwargs)
            with ledger.stage(f"attack-{len(ledger.by_stage)}"):
                return run(self, *args, **kwargs)
        finally:
            depth[0] -= 1

    PassLedger.watch = watch_both  # type: ignore[method-assign]
    Attack.run = counted_run  # type: ignore[method-assign]
    try:
        yield ledger
    finally:
        PassLedger.watch = watch  # type: ignore[method-assign]
        Attack.run = run  # type: ignore[method-assign]
        ledger.unwatch()


def run_one(name: str, n: int, extra: list[str], out: Path) -> dict[str, Any]:
    """Run experiment ``name`` and return its ``model_passes`` with the attacks' floor beside them."""
    from advspatial.cli import main as cli_main
    from advspatial.passes import PassCount

    with attack_passes() as floor:
        started = time.perf_counter()
        try:
            cli_main(["run", name, "--n", str(n), "--out", str(out), "--no-progress", *extra])
        except SystemExit as exc:
            if exc.code:
                raise
        wall = time.perf_counter() - started
    passes = json.loads((out / "metrics.json").read_text())["model_passes"]
    attacks = PassCount()
    for count in floor.by_stage.values():  # only the passes inside Attack.run (the rest is this ledger's outside)
        attacks.add(count)
    images = passes["images"] or 1
    return {**passes, "wall_s": round(wall, 1),
            "floor": {"forward": attacks.forward, "backward": attacks.backward,
                      "forward_per_image": round(attacks.forward / images, 1),
                      "backward_per_image": round(attacks.backward / images, 1)}}


def print_table(name: str, row: dict[str, Any]) -> None:
    images = row["images"] or 1
    print(f"\n{name}: n = {row['images']}, {row['forward_per_image']} forward + {row['backward_per_image']} backward "
          f"passes per image; floor (the attacks' own) {row['floor']['forward_per_image']} + "
          f"{row['floor']['backward_per_image']}; {row['wall_s']} s")
    print("| stage | forward / image | backward / image | images per call |\n|---|---|---|---|")
    for stage, count in sorted(row["stages"].items(), key=lambda kv: -(kv[1]["forward"] + kv[1]["backward"])):
        per_call = count["forward"] / count["calls"] if count["calls"] else 0
        print(f"| {stage} | {count['forward'] / images:.1f} | {count['backward'] / images:.1f} | {per_call:.1f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--experiments", nargs="+", default=list(EXPERIMENTS))
    parser.add_argument("--n", type=int, default=100)
    parser.add_argument("--extra", default="", help="more `advspatial run` options, space-separated")
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args()
    results = json.loads(args.output.read_text()) if args.output.is_file() else {"runs": {}}
    for name in args.experiments:
        with tempfile.TemporaryDirectory() as tmp:
            row = run_one(name, args.n, args.extra.split(), Path(tmp) / "run")
        print_table(name, row)
        key = f"{name}-n{args.n}" + (f"-{args.extra.replace(' ', '')}" if args.extra else "")
        results["runs"][key] = {**row, "extra": args.extra, "time": time.strftime("%Y-%m-%d %H:%M")}
        args.output.write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()
