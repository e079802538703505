"""Which outcome the gate's restricted attack should have, measured on real per-image columns.

The restricted attack confines the gate's L-inf PGD (10 steps) to a region and records the true-label margin after
it. Three outcomes of the same columns compare a region ``r`` with the RoI, per image:

- ``margin drop`` (the gate's outcome, chosen by this measurement): ``m_r - m_roi``, the attacked margins' raw
  difference;
- ``capped share``: ``s_roi - s_r`` with ``s = min(1, (m_clean - m) / m_clean)``, the share of the clean margin
  removed, capped at the flip;
- ``flip``: whether the RoI's attack flips the image minus whether the region's does.

For one model, on the correctly classified images among the first ``--n``, the RoI of ``--explainer`` (top 20%) and
its comparison regions (:func:`advspatial.faithfulness.deletion.gate_regions`) are attacked at two budgets: the
experiment's (``--eps``) and the calibrated one (:func:`advspatial.faithfulness.calibration.calibrate_budget`: the
unrestricted attack flips about half). Per budget, comparison and outcome:

- **saturation**: the share of images each region's attack flips;
- **error under the null**: images resampled with replacement and, per image, the RoI and the other region swapped
  at random (exchangeable under "the two regions do the same damage"): how often the 95% BCa CI lies above 0 (nominal
  2.5%, ``--repeats`` resamples);
- **power under shifted effects**: the same swapped resamples (no effect but the real per-image noise), after the
  RoI's attacked margin is lowered by ``delta`` of the clean margin (``--deltas``: the RoI's attack removes that much
  more), every outcome recomputed from the shifted margins: how often the CI lies above 0. (Shifting the unswapped
  columns would add the shift to the RoI's real effect, and every outcome would detect that.)

Example (CIFAR-10 ResNet-20, the seeds' setting)::

    python benchmarks/restricted_outcome.py --dataset imagefolder:../shared/data/cifar10-test-jpeg \\
        --model cifar10-resnet20 --eps 0.0314 --explainer gradcam --n 300

Writes ``benchmarks/results/restricted_outcome.json`` (one entry per model). Not a test.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from advspatial.attacks import make_attack
from advspatial.cli.model_commands import load_model_and_data
from advspatial.faithfulness.calibration import calibrate_budget
from advspatial.faithfulness.deletion import gate_regions, restricted_attack_columns
from advspatial.maps import importance_map
from advspatial.regions.references import LayoutSums, reference_maps
from advspatial.statistics.estimates import bootstrap_mean_ci

RESULTS = Path(__file__).resolve().parent / "results" / "restricted_outcome.json"
OUTCOMES = ("margin drop", "capped share", "flip")


def parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--dataset", default="fashion-mnist")
    p.add_argument("--model", default="smallcnn")
    p.add_argument("--explainer", default="hirescam")
    p.add_argument("--n", type=int, default=500)
    p.add_argument("--batch", type=int, default=100)
    p.add_argument("--eps", type=float, default=0.1)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--fraction", type=float, default=0.2)
    p.add_argument("--repeats", type=int, default=400)
    p.add_argument("--deltas", default="0.02,0.05,0.1")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=RESULTS)
    return p.parse_args()


def options(args: argparse.Namespace) -> dict[str, Any]:
    return {"dataset": args.dataset, "model_name": args.model, "weights": "", "arch": "", "model_seed": 0,
            "device": "cpu", "image_size": 0, "fit": "crop", "class_map": "", "crop_fraction": 0.0,
            "subset": "stratified", "progress": False}


def attacked_margins(model, x, y, ids, maps, eps, args) -> dict[str, torch.Tensor]:  # type: ignore[no-untyped-def]
    """The attacked margin of every gate region and the clean margin, per image."""
    attack = make_attack("pgd", model, eps=eps, alpha="auto", steps=args.steps, seed=args.seed)
    layouts = LayoutSums()
    layouts.add(maps, y)
    parts = []
    for i in range(0, len(x), args.batch):
        sl = slice(i, i + args.batch)
        c, d = layouts.leave_one_out(maps[sl], y[sl])
        refs = reference_maps(x[sl], {"class-layout": c, "dataset-layout": d})
        regions = gate_regions(maps[sl], args.fraction, args.seed, ids[sl], references=refs, blur_control=False)
        parts.append(restricted_attack_columns(model, x[sl], y[sl], regions, attack, sample_ids=ids[sl],
                                               max_images=args.batch))
    return {k.removeprefix("attack:margin:"): torch.cat([p[k] for p in parts]).double().numpy()
            for k in parts[0] if k.startswith("attack:margin")}


def outcome(name: str, clean: np.ndarray, roi: np.ndarray, other: np.ndarray) -> np.ndarray:
    """Per-image difference of one outcome (> 0: the RoI's attack does more)."""
    if name == "margin drop":
        return other - roi
    if name == "flip":
        return (roi < 0).astype(float) - (other < 0).astype(float)
    share = lambda m: np.minimum(1.0, (clean - m) / clean)  # noqa: E731
    return share(roi) - share(other)


def rates(clean: np.ndarray, roi: np.ndarray, other: np.ndarray, deltas: list[float], repeats: int,
          seed: int) -> dict[str, Any]:
    """Per outcome: the rate of a CI above 0 under the null (random swaps) and under each shift."""
    rng = np.random.default_rng(seed)
    n = len(clean)
    out: dict[str, Any] = {k: {"null": 0, **{f"delta {d:g}": 0 for d in deltas}} for k in OUTCOMES}
    for r in range(repeats):
        idx = rng.integers(0, n, n)
        c, a, b = clean[idx], roi[idx], other[idx]
        swap = rng.random(n) < 0.5
        a0, b0 = np.where(swap, b, a), np.where(swap, a, b)
        for k in OUTCOMES:
            out[k]["null"] += bootstrap_mean_ci(outcome(k, c, a0, b0), seed=r).low > 0
            for d in deltas:
                out[k][f"delta {d:g}"] += bootstrap_mean_ci(outcome(k, c, a0 - d * c, b0), seed=r).low > 0
    return {k: {cell: hits / repeats for cell, hits in v.items()} for k, v in out.items()}


def main() -> None:
    args = parse()
    start = time.perf_counter()
    model, data = load_model_and_data(options(args), args.n, args.seed)
    x, y, ids = data.images(slice(0, len(data))), data.labels, data.ids
    with torch.no_grad():
        keep = torch.cat([model(x[i:i + args.batch]).argmax(1) for i in range(0, len(x), args.batch)]) == y
    x, y, ids = x[keep], y[keep], ids[keep]
    maps = torch.cat([importance_map(args.explainer, model, x[i:i + args.batch], target="pred",
                                     batch_size=args.batch) for i in range(0, len(x), args.batch)])
    budget = calibrate_budget(model, x[:100], y[:100], ids[:100], args.eps, args.steps, args.seed,
                              max_images=args.batch)
    print(f"{args.model}: {len(x)} correct of {args.n}; calibrated {budget.text()}", flush=True)
    deltas = [float(d) for d in args.deltas.split(",")]
    result: dict[str, Any] = {"dataset": args.dataset, "model": args.model, "explainer": args.explainer,
                              "n": int(len(x)), "budget": budget.as_dict(), "budgets": {}}
    for label, eps in (("experiment", args.eps), ("calibrated", budget.eps)):
        margins = attacked_margins(model, x, y, ids, maps, eps, args)
        clean, roi = margins.pop("attack:margin_clean"), margins.pop("roi")
        rows: dict[str, Any] = {"eps": eps, "flips": {"roi": float(np.mean(roi < 0))}, "rows": {}}
        for name, other in margins.items():
            rows["flips"][name] = float(np.mean(other < 0))
            rows["rows"][name] = rates(clean, roi, other, deltas, args.repeats, args.seed)
            print(f"{label} eps {eps:.4g} {name:<20} flips {rows['flips'][name]:.2f} "
                  + "; ".join(f"{k}: null {v['null']:.3f} " + " ".join(f"{c} {p:.2f}" for c, p in v.items()
                                                                     if c != "null")
                              for k, v in rows["rows"][name].items()), flush=True)
        result["budgets"][label] = rows
    result["seconds"] = time.perf_counter() - start
    stored = json.loads(args.out.read_text()) if args.out.is_file() else {}
    stored[f"{args.dataset} / {args.model}"] = result
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(stored, indent=2))
    print(f"wrote {args.out} ({result['seconds']:.0f} s)")


if __name__ == "__main__":
    main()
