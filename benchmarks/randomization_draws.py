"""The gate's randomization row (128 check images; ``--draws``: 10 for the RoI's explainer, 5 for the panel's others),
at several run seeds: its outcome and its CPU cost.

Mirrors ``experiments/measurement/gate.py`` (``_randomization_images``, ``_randomization``, ``_mprt``): the first
``--k`` images of the run's subset (stratified, ``--n``, the run's seed), the class explained = the trained model's
prediction, ``model_randomization_check(..., max_steps=12, draws=D)`` and ``randomization_checks(..., samples=20,
draws=D)``, read by :func:`advspatial.faithfulness.sanity.randomization_comparison`. CPU seconds are process time.

    python benchmarks/randomization_draws.py --seeds 0 --out default.json            # default run: smallcnn, HiResCAM
    ADVSPATIAL_DATA=../shared/data python benchmarks/randomization_draws.py --seeds 1,2,3 --n 150 \\
        --dataset imagefolder:../shared/data/cifar10-test-jpeg --model cifar10-resnet20 --method gradcam \\
        --out resnet20.json

Not a test.
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from advspatial.cli.model_commands import load_model_and_data
from advspatial.faithfulness.mprt import randomization_checks
from advspatial.faithfulness.randomization import model_randomization_check
from advspatial.faithfulness.sanity import randomization_comparison
from advspatial.maps import importance_map


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--k", type=int, default=128, help="check images")
    p.add_argument("--draws", type=int, default=10)
    p.add_argument("--n", type=int, default=500)
    p.add_argument("--seeds", default="0")
    p.add_argument("--method", default="hirescam")
    p.add_argument("--dataset", default="fashion-mnist")
    p.add_argument("--model", default="smallcnn")
    p.add_argument("--out", required=True)
    a = p.parse_args()
    out = {}
    for seed in [int(s) for s in a.seeds.split(",")]:
        opts = {"dataset": a.dataset, "model_name": a.model, "weights": "", "arch": "", "model_seed": 0,
                "device": "cpu", "image_size": 0, "fit": "crop", "class_map": "", "crop_fraction": 0.0,
                "subset": "stratified", "progress": False}
        model, data = load_model_and_data(opts, a.n, seed)
        model.eval()
        x, ids = data.images(slice(0, a.k)), data.ids[:a.k]
        with torch.no_grad():
            y = model(x).argmax(1)
        t0 = time.process_time()
        rows = model_randomization_check(
            model, x, lambda m, z, t=y: importance_map(a.method, m, z, target=t, batch_size=200), seed=seed,
            max_steps=12, draws=a.draws)
        t_cascade = time.process_time() - t0
        t0 = time.process_time()
        mprt = randomization_checks(
            model, x, y, lambda m, z, t: importance_map(a.method, m, z, target=t, batch_size=200), seed=seed,
            sample_ids=ids, samples=20, draws=a.draws).as_dict()
        t_mprt = time.process_time() - t0
        row = randomization_comparison(rows, mprt)
        status = "passes" if row.beats else "fails" if row.failed else "undecided"
        effects = {k: [e.estimate.mean, e.estimate.low, e.estimate.high, e.estimate.n] for k, e in row.effects.items()}
        out[seed] = {"status": status, "failed": row.failed, "undecided": row.undecided, "effects": effects,
                     "cpu_cascade_s": t_cascade, "cpu_mprt_s": t_mprt, "cascade_last": rows[-1], "mprt": mprt}
        print(seed, status, row.failed + row.undecided, f"CPU s: cascade {t_cascade:.1f}, MPRT {t_mprt:.1f}",
              flush=True)
    with open(a.out, "w") as f:
        json.dump(out, f, indent=1)


if __name__ == "__main__":
    main()
