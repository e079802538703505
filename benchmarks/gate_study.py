"""The faithfulness gate on real explainers and on model-free maps, fill by fill.

For one model and data set, on the correctly classified images among the first ``--n``:

- every explainer of ``--explainers`` and every model-free map (a centred disc, the image's intensity,
  its Sobel edges) goes through the gate's own comparisons (:func:`advspatial.faithfulness.gate.gate_regions`,
  ``deletion_columns`` with every fill of ``--fills``, ``restricted_attack_columns`` with the gate's PGD);
- the explainers also get the randomization row (cascading check and smooth/efficient MPRT, the gate's settings);
  a model-free map survives randomization by construction (it ignores the model) and is scored as failing it;
- the gate's verdict is recomputed for several fill sets, so one can see which fills change the verdict of a
  model-free map and which do not (the measurement behind the default fills).

    python benchmarks/gate_study.py                                   # Fashion-MNIST smallcnn (cached model)
    ADVSPATIAL_DATA=../shared/data python benchmarks/gate_study.py \\
        --dataset imagefolder:../shared/data/cifar10-test-jpeg \\
        --model cifar10-resnet20 --eps 0.0314 --explainers gradcam,occlusion,ig --n 250

Writes ``benchmarks/results/gate_study.json`` (one entry per dataset and model). Not a test.
"""

from __future__ import annotations

import argparse
import json
import time
from functools import partial
from pathlib import Path
from typing import Any

import torch

from advspatial.attacks import make_attack
from advspatial.cli.model_commands import load_model_and_data
from advspatial.maps import importance_map
from advspatial.faithfulness.deletion import deletion_columns, gate_regions, restricted_attack_columns
from advspatial.faithfulness.randomization import model_randomization_check
from advspatial.faithfulness.gate import summarize_gate
from advspatial.faithfulness.mprt import randomization_checks
from advspatial.regions.references import LayoutSums, reference_maps

MODEL_FREE = ("centre", "intensity", "edges")
FILL_SETS = (("zero", "blur"), ("road", "blur"), ("road", "zero"), ("zero", "inpaint"), ("road", "inpaint"))
SURVIVES = [{"step": 1, "layer": "all", "spearman": 1.0, "n": 0}]   # a model-free map ignores every weight


def parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--dataset", default="fashion-mnist")
    p.add_argument("--model", default="smallcnn")
    p.add_argument("--explainers", default="hirescam,gradcam,occlusion,ig")
    p.add_argument("--fills", default="zero,blur,road,inpaint")
    p.add_argument("--n", type=int, default=300)
    p.add_argument("--batch", type=int, default=50)
    p.add_argument("--eps", type=float, default=0.1)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--fraction", type=float, default=0.2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=str(Path(__file__).parent / "results" / "gate_study.json"))
    return p.parse_args()


def options(args: argparse.Namespace) -> dict[str, Any]:
    return {"dataset": args.dataset, "model_name": args.model, "weights": "", "arch": "", "model_seed": 0,
            "device": "cpu", "image_size": 0, "fit": "crop", "class_map": "", "crop_fraction": 0.0,
            "subset": "stratified", "progress": False}


def explainer_maps(model: torch.nn.Module, x: torch.Tensor, names: list[str], batch: int) -> dict[str, torch.Tensor]:
    out = {}
    for name in names:
        start = time.perf_counter()
        out[name] = torch.cat([importance_map(name, model, x[i:i + batch], target="pred", batch_size=batch)
                               for i in range(0, len(x), batch)])
        print(f"  {name}: maps in {time.perf_counter() - start:.1f} s", flush=True)
    return out


def columns_of(model, x, y, ids, maps, layouts, fills, attack, args) -> dict[str, torch.Tensor]:  # type: ignore[no-untyped-def]
    parts = []
    for i in range(0, len(x), args.batch):
        sl = slice(i, i + args.batch)
        c, d = layouts.leave_one_out(maps[sl], y[sl])
        refs = reference_maps(x[sl], {"class-layout": c, "dataset-layout": d})
        regions = gate_regions(maps[sl], args.fraction, args.seed, ids[sl], references=refs)
        cols = deletion_columns(model, x[sl], y[sl], regions, fills=fills, seed=args.seed, sample_ids=ids[sl])
        cols.update(restricted_attack_columns(model, x[sl], y[sl], regions, attack, sample_ids=ids[sl]))
        parts.append(cols)
    return {k: torch.cat([p[k] for p in parts]) for k in parts[0]}


def verdicts(cols: dict[str, torch.Tensor], y: torch.Tensor, randomization: Any, mprt: Any,
             fills: tuple[str, ...]) -> dict[str, Any]:
    out = {}
    for fill_set in [s for s in FILL_SETS if set(s) <= set(fills)]:
        keep = {k: v for k, v in cols.items() if not k.startswith("deletion:") or k.split(":")[1] in fill_set}
        g = summarize_gate(keep, y, randomization=randomization, mprt=mprt)
        out["+".join(fill_set)] = {"passed": g.passed,
                                   "beats": {k: c.beats for k, c in g.comparisons.items()},
                                   "reason": g.reason}
    return out


def effects(cols: dict[str, torch.Tensor], y: torch.Tensor) -> dict[str, Any]:
    g = summarize_gate(cols, y, randomization=SURVIVES)
    return {k: {m: e.estimate.as_dict() for m, e in c.effects.items()} for k, c in g.comparisons.items()}


def main() -> None:
    args = parse()
    torch.manual_seed(args.seed)
    fills = tuple(args.fills.split(","))
    model, data = load_model_and_data(options(args), args.n, args.seed)
    x, y, ids = data.images(slice(0, len(data))), data.labels, data.ids
    with torch.no_grad():
        correct = torch.cat([model(x[i:i + args.batch]).argmax(1) for i in range(0, len(x), args.batch)]) == y
    x, y, ids = x[correct], y[correct], ids[correct]
    print(f"{args.model} on {args.dataset}: {len(x)} correct of {args.n}", flush=True)
    attack = make_attack("pgd", model, eps=args.eps, alpha="auto", steps=args.steps, seed=args.seed)
    names = [n for n in args.explainers.split(",") if n]
    maps = explainer_maps(model, x, names, args.batch)
    free = reference_maps(x, names=MODEL_FREE)
    jitter = torch.rand(free["centre"].shape, generator=torch.Generator().manual_seed(1))
    free["centre"] = free["centre"] + 1e-6 * jitter
    maps.update({f"model-free {k}": v for k, v in free.items()})
    result: dict[str, Any] = {"dataset": args.dataset, "model": args.model, "n": int(len(x)), "eps": args.eps,
                              "steps": args.steps, "fraction": args.fraction, "maps": {}}
    for name, m in maps.items():
        start = time.perf_counter()
        layouts = LayoutSums()
        layouts.add(m, y)
        cols = columns_of(model, x, y, ids, m, layouts, fills, attack, args)
        if name.startswith("model-free"):
            randomization, mprt = SURVIVES, None
        else:
            k = min(16, len(x))
            explain = lambda mm, z, t, name=name: importance_map(name, mm, z, target=t, batch_size=len(z))  # noqa: E731
            randomization = model_randomization_check(model, x[:k], partial(explain, t=y[:k]),
                                                      seed=args.seed, max_steps=12)
            mprt = randomization_checks(model, x[:k], y[:k], explain, seed=args.seed, sample_ids=ids[:k],
                                        samples=20).as_dict()
        result["maps"][name] = {"verdicts": verdicts(cols, y, randomization, mprt, fills),
                                "effects": effects(cols, y), "randomization_last": randomization[-1],
                                "mprt": mprt, "seconds": time.perf_counter() - start}
        row = result["maps"][name]["verdicts"]
        print(f"  {name}: " + "; ".join(f"{fs}: {'PASS' if v['passed'] else 'fail'} "
                                        f"(not beaten: {[k for k, b in v['beats'].items() if not b]})"
                                        for fs, v in row.items()), flush=True)
    path = Path(args.out)
    path.parent.mkdir(parents=True, exist_ok=True)
    everything = json.loads(path.read_text()) if path.exists() else {}
    everything[f"{args.dataset} | {args.model} | n={args.n}"] = result
    path.write_text(json.dumps(everything, indent=1, default=float))
    print(f"written to {path}")


if __name__ == "__main__":
    main()
