"""Peak memory of the three parts whose memory grew with something other than the batch at 224 pixels (the goal:
"peak RSS <= 4 GB" on EfficientNet-Lite0): the faithfulness gate's restricted attack (every region's copy of a batch
in one pass), the spatial prior's per-class map sums (a dense 1000 x 224 x 224 float64 table per training batch) and
the adaptive evaluation's scoring of the attacker's own EOT draws (every draw's copy of a batch in one pass).

    ADVSPATIAL_DATA=../shared/data python benchmarks/bench_memory_224.py

Each measurement runs in a fresh process (peak RSS from ``getrusage``): the restricted attack (PGD, 1 step; memory
does not depend on the steps) on 16 images x 9 regions with the stack in one pass and a batch (16) at a time, and
31 batch parts of per-class sums of 16 maps each, dense and as kept now, and the attacker's share of 50 noise draws
of 4 images (the batch of 16 is 4x the images) in one pass and bounded. Writes ``benchmarks/results/memory_224.json``.
Not a test.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results" / "memory_224.json"
SHARED = Path(os.environ.get("ADVSPATIAL_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
IMAGES, REGIONS, PRIOR_BATCHES = 16, 9, 31


def peak_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def restricted_attack(per_pass: int) -> dict[str, float]:
    """The gate's restricted attack on Lite0, ``per_pass`` stacked images per attack pass."""
    import torch

    from advspatial.attacks import make_attack
    from advspatial.data import load_dataset
    from advspatial.faithfulness.deletion import restricted_attack_columns
    from advspatial.model_cache import resolve_model

    root = SHARED / "imagenette-val"
    data = load_dataset(f"imagefolder:{root}", class_map=str(root / "class_map.tsv"), size=224)
    model = resolve_model(f"imagefolder:{root}", "imagenet-efficientnet-lite0", device="cpu", progress=False)
    x = data.images(slice(0, IMAGES * 25, 25))
    with torch.no_grad():
        y = model(x).argmax(1)
    gen = torch.Generator().manual_seed(0)
    regions = {f"r{k}": torch.rand(IMAGES, 224, 224, generator=gen) < 0.2 for k in range(REGIONS)}
    attack = make_attack("pgd", model, eps=4 / 255, alpha="auto", steps=1, seed=0)
    before, started = peak_gb(), time.perf_counter()
    restricted_attack_columns(model, x, y, regions, attack, sample_ids=torch.arange(IMAGES), max_images=per_pass)
    return {"peak_rss_gb": round(peak_gb(), 2), "before_gb": round(before, 2),
            "seconds": round(time.perf_counter() - started, 1)}


def attacker_draws(one_pass: bool) -> dict[str, float]:
    """:func:`~advspatial.defence.adaptive.attacker_share` of 50 draws of the noise baseline on 4 Lite0 images."""
    import torch

    from advspatial.defence import adaptive
    from advspatial.defence.transforms import TransformDefence
    from advspatial.model_cache import resolve_model

    root = SHARED / "imagenette-val"
    model = resolve_model(f"imagefolder:{root}", "imagenet-efficientnet-lite0", device="cpu", progress=False)
    x = torch.rand(4, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    if one_pass:
        adaptive.SHARE_IMAGES = 10**9
    before, started = peak_gb(), time.perf_counter()
    adaptive.attacker_share(TransformDefence(model, "noise", 0.2, seed=0), x, torch.zeros(4, dtype=torch.long), 50)
    return {"peak_rss_gb": round(peak_gb(), 2), "before_gb": round(before, 2),
            "seconds": round(time.perf_counter() - started, 1)}


def prior_sums(dense: bool) -> dict[str, float]:
    """31 training batches' per-class sums of 16 attack maps each, kept as the prior stage keeps them."""
    import torch

    from advspatial.regions import MapAccumulator

    gen = torch.Generator().manual_seed(0)
    parts = []
    for _ in range(PRIOR_BATCHES):
        maps, labels = torch.rand(16, 224, 224, generator=gen), torch.randint(0, 1000, (16,), generator=gen)
        if dense:   # the old parts: a (K,H,W) float64 table per batch
            table = torch.zeros(1000, 224, 224, dtype=torch.float64)
            parts.append(table.index_add_(0, labels, maps.double()))
        else:
            part = MapAccumulator(1000, (224, 224))
            part.update(maps, labels)
            parts.append(part.as_dict())
    return {"peak_rss_gb": round(peak_gb(), 2)}


def measured(kind: str, arg: str) -> dict[str, float]:
    """One measurement in a fresh interpreter."""
    out = subprocess.run([sys.executable, __file__, "--one", kind, arg], check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--one", nargs=2, metavar=("KIND", "ARG"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        kind, arg = args.one
        work = {"attack": lambda: restricted_attack(int(arg)), "prior": lambda: prior_sums(arg == "dense"),
                "draws": lambda: attacker_draws(arg == "one")}[kind]
        print(json.dumps(work()))
        return
    if not (SHARED / "imagenette-val").is_dir():
        raise SystemExit(f"needs imagenette-val under {SHARED} (set ADVSPATIAL_DATA)")
    result = {"restricted attack, one pass": measured("attack", str(IMAGES * REGIONS)),
              "restricted attack, a batch a pass": measured("attack", str(IMAGES)),
              "prior parts, dense": measured("prior", "dense"),
              "prior parts, classes seen": measured("prior", "sparse"),
              "attacker's draws, one pass": measured("draws", "one"),
              "attacker's draws, bounded": measured("draws", "bounded")}
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
