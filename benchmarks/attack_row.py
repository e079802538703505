"""What the gate's restricted-attack row measures, from a finished ``run maps`` directory's own per-image columns.

The row compares the true-label margin L-inf PGD removes when confined to the RoI with that removed when confined to
another region of the same size, at the calibrated budget (docs/methods.md, "The restricted attack"). This script
asks whether that outcome is more than first-order gradient mass, and what a scale-free alternative would cost:

1. **First-order prediction.** Per correctly classified image and region R, the margin a single signed step of
   size eps inside R removes to first order, ``lin_R = sum_{p in R} sum_c |dm/dx_{c,p}| * min(eps, room)`` (room:
   the distance to the pixel range in the direction of the step), against the run's ``m_clean - m_R``: Pearson r
   pooled over regions, per region, and of the paired RoI-minus-region differences, and every row's reading when
   ``lin`` replaces the attack (the same rule and margin share).
2. **The positive control.** On a run whose columns hold the margin-gradient control's region
   (``control-attack``): the share of images on which that region has the largest ``lin`` of all regions.
3. **A second construct?** Per comparison, the correlation over images of the attack row's difference with each
   deletion fill's.
4. **The minimal budget to flip inside R** (``--min-eps K``: the first K correct images; regions RoI, class layout,
   centre, location): 8 log-scale bisection steps of the gate's own attack between ``--max-eps``/512 and
   ``--max-eps`` (default 8/255; Fashion-MNIST needs more), its CPU
   seconds per image and region, and the Pearson r of its log with the log of its first-order prediction
   ``m_clean / sum_{p in R} sum_c |dm/dx_{c,p}|``.

Example::

    python benchmarks/attack_row.py /tmp/attackrow-3 --dataset imagefolder:../shared/data/cifar10-test-jpeg \\
        --model cifar10-resnet20 --n 120 --seed 3 --min-eps 12

Prints its figures and writes them as JSON (``--out``). Not a test.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from advspatial.attacks import make_attack
from advspatial.attacks.base import margin
from advspatial.cli.model_commands import load_model_and_data
from advspatial.faithfulness.controls import control_regions
from advspatial.faithfulness.deletion import gate_regions
from advspatial.regions.references import REFERENCE_MAPS, LayoutSums, reference_maps
from advspatial.statistics.outcomes import FAITHFULNESS, SPECIFICITY, decide

ROWS = [("location", "shifted", FAITHFULNESS), ("scatter", "scattered", FAITHFULNESS)] + [
    (name, "ref:" + name, SPECIFICITY) for name in REFERENCE_MAPS]


def parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("run", type=Path)
    p.add_argument("--dataset", required=True)
    p.add_argument("--model", default="cifar10-resnet20")
    p.add_argument("--n", type=int, required=True, help="the run's --n")
    p.add_argument("--seed", type=int, required=True, help="the run's --seed")
    p.add_argument("--method", default="gradcam")
    p.add_argument("--fraction", type=float, default=0.2)
    p.add_argument("--share", type=float, default=0.1, help="the rule's margin share")
    p.add_argument("--min-eps", type=int, default=0, help="images for the minimal flipping budget (0: skip)")
    p.add_argument("--max-eps", type=float, default=8 / 255, help="the bisection's largest budget")
    p.add_argument("--out", type=Path, default=Path("attack_row.json"))
    return p.parse_args()


def stage_values(run: Path, pattern: str) -> list[Any]:
    """The stored values of a run's stage files matching ``pattern``, in name order."""
    return [torch.load(f, weights_only=False)["value"] for f in sorted(run.glob(f"stages/{pattern}"))]


def gate_columns(run: Path, method: str, fraction: float) -> dict[str, torch.Tensor]:
    """The gate's per-image columns (every image examined, correct or not) with the control's beside them."""
    folder = sorted(run.glob(f"stages/gate/{method}/f{fraction}-*"))[0]
    chunks = stage_values(run, str(folder.relative_to(run / "stages")) + "/batch-*.pt")
    cols = {k: torch.cat([c[k] for c in chunks]).double() for k in chunks[0]}
    files = sorted(run.glob(f"stages/gate/control/f{fraction}/images-*.pt"),
                   key=lambda f: int(f.stem.split("-")[1]))
    control = [torch.load(f, weights_only=False)["value"] for f in files]
    if control:
        cols.update({k: torch.cat([c[k] for c in control]).double() for k in control[0]})
    return cols


def margin_gradient(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """(N,C,H,W) input gradient of the true-label margin."""
    inp = x.detach().clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(margin(model(inp), y).sum(), inp)
    return grad


def pearson(a: np.ndarray, b: np.ndarray) -> float:
    keep = np.isfinite(a) & np.isfinite(b)
    return float(np.corrcoef(a[keep], b[keep])[0, 1])


def first_order(cols: dict[str, torch.Tensor], regions: dict[str, torch.Tensor], lin_pix: torch.Tensor,
                correct: torch.Tensor, share: float, seed: int) -> dict[str, Any]:
    """Sections 1-3 of the module docstring."""
    names = [r for r in regions if f"attack:margin:{r}" in cols]
    drop = {r: (cols["attack:margin_clean"] - cols[f"attack:margin:{r}"])[correct].numpy() for r in names}
    lin = {r: (lin_pix * regions[r]).flatten(1).sum(1)[correct].numpy() for r in names}
    out: dict[str, Any] = {"regions": names, "n_correct": int(correct.sum())}
    out["pearson_pooled"] = pearson(np.concatenate([lin[r] for r in names]), np.concatenate([drop[r] for r in names]))
    out["pearson_per_region"] = {r: pearson(lin[r], drop[r]) for r in names}
    rows = {}
    for row, other, rule in ROWS:
        if other not in drop:
            continue
        d, ld = drop["roi"] - drop[other], lin["roi"] - lin[other]
        attack = decide(d, rule, share * float(np.nanmean(drop["roi"])), seed)
        predicted = decide(ld, rule, share * float(np.nanmean(lin["roi"])), seed)
        deletion = {f: pearson(d, (cols[f"deletion:{f}:drop:roi"] - cols[f"deletion:{f}:drop:{other}"])[correct]
                               .numpy()) for f in ("road", "blur") if f"deletion:{f}:drop:{other}" in cols}
        rows[row] = {"attack": [attack.mean, attack.low, attack.high, attack.outcome, attack.within_margin],
                     "first_order": [predicted.mean, predicted.low, predicted.high, predicted.outcome,
                                     predicted.within_margin],
                     "pearson_differences": pearson(ld, d), "pearson_with_deletion": deletion}
    out["rows"] = rows
    if "control-attack" in lin:
        others = np.stack([lin[r] for r in names if not r.startswith("control")])
        out["control_has_most_gradient_mass"] = float((lin["control-attack"] >= others.max(0) - 1e-12).mean())
        out["control_beats_roi_share"] = float((drop["control-attack"] > drop["roi"]).mean())
    return out


def minimal_budgets(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, ids: torch.Tensor,
                    regions: dict[str, torch.Tensor], grad: torch.Tensor, images: list[int], seed: int,
                    max_eps: float = 8 / 255) -> dict[str, Any]:
    """Section 4 of the module docstring: per region, the smallest flipping budget of each image (inf: none up to
    ``max_eps``), its first-order prediction, and the cost."""
    high0, low0 = max_eps, max_eps / 512

    def flips(i: int, mask: torch.Tensor, eps: float) -> bool:
        attack = make_attack("pgd", model, eps=eps, alpha="auto", steps=10, seed=seed)
        result = attack.run(x[i:i + 1], y[i:i + 1], mask=mask[None, None].to(x.dtype), sample_ids=ids[i:i + 1])
        with torch.no_grad():
            return bool(model(result.x_adv).argmax(1).item() != int(y[i]))

    with torch.no_grad():
        clean = margin(model(x), y).double()
    out: dict[str, Any] = {}
    for name in ("roi", "ref:class-layout", "ref:centre", "shifted"):
        found, predicted = [], []
        start = time.process_time()
        for i in images:
            mask = regions[name][i]
            predicted.append(float(clean[i] / (grad[i].abs().sum(0) * mask).sum().double()))
            if not flips(i, mask, high0):
                found.append(math.inf)
                continue
            low, high = math.log(low0), math.log(high0)
            for _ in range(8):
                mid = (low + high) / 2
                low, high = (low, mid) if flips(i, mask, math.exp(mid)) else (mid, high)
            found.append(math.exp(high))
        cpu = time.process_time() - start
        a, b = np.log(np.array(found)), np.log(np.array(predicted))
        out[name] = {"median_255": float(np.median(found) * 255), "unflipped": int(np.isinf(a).sum()),
                     "pearson_log_first_order": pearson(a, b), "cpu_s_per_image": cpu / len(images)}
    start = time.process_time()
    for i in images:
        flips(i, regions["roi"][i], high0)
    out["one_attack_cpu_s_per_image"] = (time.process_time() - start) / len(images)
    return out


def main() -> None:
    args = parse()
    start = time.process_time()
    opts = {"dataset": args.dataset, "model_name": args.model, "weights": "", "arch": "", "model_seed": 0,
            "device": "cpu", "image_size": 0, "fit": "crop", "class_map": "", "crop_fraction": 0.0,
            "subset": "stratified", "progress": False}
    model, data = load_model_and_data(opts, args.n, args.seed)
    model.eval()
    cols = gate_columns(args.run, args.method, args.fraction)
    m = len(cols["clean:logit"])
    x, y, ids = data.images(slice(0, m)), data.labels[:m], data.ids[:m]
    eps = float(stage_values(args.run, "gate/budget/*.pt")[0]["eps"])
    maps = torch.cat(stage_values(args.run, "roi/batch-*.pt"))
    layouts = LayoutSums()
    layouts.add(maps[:m], y)
    class_layout, dataset_layout = layouts.leave_one_out(maps[:m], y)
    refs = reference_maps(x, {"class-layout": class_layout, "dataset-layout": dataset_layout}, REFERENCE_MAPS)
    regions = gate_regions(maps[:m], args.fraction, args.seed, ids, references=refs)
    control = stage_values(args.run, "gate/control/maps/batch-*.pt")
    if control and "attack" in control[0]:
        attack_maps = torch.cat([c["attack"] for c in control])[:m]
        regions.update(control_regions({"attack": attack_maps}, args.fraction, args.seed, ids)["attack"])
    pixels_match = bool(torch.equal(regions["roi"].flatten(1).sum(1).double(), cols["roi:pixels"]))
    correct = cols["clean:correct"].bool()
    grad = margin_gradient(model, x, y)
    room = torch.where(grad > 0, x, 1 - x)
    lin_pix = (grad.abs() * room.clamp(max=eps)).sum(1).double()
    res: dict[str, Any] = {"eps_255": eps * 255, "regions_rebuilt": pixels_match}
    res.update(first_order(cols, regions, lin_pix, correct, args.share, args.seed))
    if args.min_eps:
        images = correct.nonzero().flatten()[: args.min_eps].tolist()
        res["minimal_budget"] = minimal_budgets(model, x, y, ids, regions, grad, images, args.seed, args.max_eps)
    res["cpu_s"] = time.process_time() - start
    print(json.dumps(res, indent=1, default=float))
    args.out.write_text(json.dumps(res, indent=1, default=float))


if __name__ == "__main__":
    main()
