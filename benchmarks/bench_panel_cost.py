"""What each explainer of the sensitivity panel costs at 224 pixels (the question: "panel explainers that are cheap at
224 px by default"): EfficientNet-Lite0 on imagenette-val, its map and its faithfulness gate's two randomization
checks (cascading randomization, 12 steps; smooth/efficient MPRT, 20 noisy copies), seconds per image.

    ADVSPATIAL_DATA=../shared/data python benchmarks/bench_panel_cost.py --images 2 \\
        --methods gradcam,hirescam,inputxgrad,ig,occlusion

A run's checks use ``randomization_images`` (16) images and its panel maps every test image, so an explainer's cost
in a run of n images is about ``n x map + 16 x (randomization + mprt)`` seconds. Writes
``benchmarks/results/panel_cost.json``. Not a test.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import torch

RESULTS = Path(__file__).resolve().parent / "results" / "panel_cost.json"
SHARED = Path(os.environ.get("ADVSPATIAL_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=2, help="check images (one per class, from the start)")
    parser.add_argument("--methods", default="gradcam,hirescam,inputxgrad,ig,occlusion")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    root = SHARED / "imagenette-val"
    if not root.is_dir():
        raise SystemExit(f"needs imagenette-val under {SHARED} (set ADVSPATIAL_DATA)")
    torch.set_num_threads(args.threads)
    from advspatial.data import load_dataset
    from advspatial.faithfulness.mprt import randomization_checks
    from advspatial.faithfulness.randomization import model_randomization_check
    from advspatial.maps.importance import importance_map
    from advspatial.model_cache import resolve_model

    data = load_dataset(f"imagefolder:{root}", class_map=str(root / "class_map.tsv"), size=224)
    model = resolve_model(f"imagefolder:{root}", "imagenet-efficientnet-lite0", device="cpu", progress=False)
    k = args.images
    x, ids = data.images(slice(0, k * 50, 50)), torch.arange(k)
    with torch.no_grad():
        y = model(x).argmax(1)
    rows = {}
    for method in args.methods.split(","):
        def explain(m: torch.nn.Module, z: torch.Tensor, t: torch.Tensor = y, name: str = method) -> torch.Tensor:
            return importance_map(name, m, z, target=t, batch_size=len(z))

        row = {}
        for part, work in (("map", lambda: explain(model, x)),
                           ("randomization", lambda: model_randomization_check(model, x, explain, seed=0,
                                                                               max_steps=12)),
                           ("mprt", lambda: randomization_checks(model, x, y, explain, seed=0, sample_ids=ids,
                                                                 samples=20))):
            started = time.perf_counter()
            work()
            row[f"{part}_s_per_image"] = round((time.perf_counter() - started) / k, 2)
        rows[method] = row
        print(method, row, flush=True)
    RESULTS.write_text(json.dumps({"model": "imagenet-efficientnet-lite0", "images": k, "threads": args.threads,
                                   "torch": torch.__version__, "time": time.strftime("%Y-%m-%d %H:%M"),
                                   "methods": rows}, indent=1) + "\n")


if __name__ == "__main__":
    main()
