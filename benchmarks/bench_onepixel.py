"""Benchmark: batched one-pixel attack (advspatial) vs torchattacks' OnePixel at equal budget.

Usage::

    python benchmarks/bench_onepixel.py                 # quick budget (popsize ~100, maxiter 20), 20 images
    python benchmarks/bench_onepixel.py --model lenet5 --preset small --threads 1 --repeats 3
    python benchmarks/bench_onepixel.py --model lenet5-3x3 --preset paper --n-images 3 --skip-full-forward
    python benchmarks/bench_onepixel.py --model lenet5 --preset paper --device cuda   # on a GPU
    python benchmarks/bench_onepixel.py --n-images 40 --pixels 3
    python benchmarks/bench_onepixel.py --model smallcnn --preset small --threads 1 --repeats 7 --profile

Budgets (``--preset``): ``small`` (popsize 10, 10 generations), ``quick``
(100, 20), ``paper`` (400, 75, Su et al.). Models (``--model``): ``tiny`` (a
TinyCNN, conv8-pool-conv16-pool-fc, the unit-test architecture), ``lenet5``
(the registry's, 5x5 kernels) and ``lenet5-3x3`` (conv32 3x3-pool-conv64
3x3-pool-fc200-fc10), each trained inside this script for 3 epochs on 4000
Fashion-MNIST training images and cached under ``~/.cache/advspatial-bench``;
``smallcnn`` is the project's default model (trained and cached on first use,
~46 s). Images: the first ``--n-images`` correctly classified Fashion-MNIST
test images. ``--threads`` sets torch's threads for both attacks; ``--repeats``
runs the attacks in interleaved rounds and reports the median ratio (on a
shared machine, the only way to get a ratio that means something).

Our attack runs twice: as shipped (``incremental="auto"``: one-pixel candidates
evaluated by incremental forward passes on a CPU, ``advspatial.models.patch.forward``;
full forward passes on a GPU) and with the other evaluation (``advspatial-full-forward``
on a CPU, ``advspatial-incremental`` on a GPU), so the table shows what each part of
the speed-up comes from.

Equal budget: torchattacks' ``popsize`` is a *multiplier*; its population has
``max(5, max(1, int(popsize / n_params)) * n_params)`` members with ``n_params =
pixels * (2 + C)`` (``torchattacks_population``). We give torchattacks the requested popsize and give our
attack exactly the population size torchattacks ends up with; torchattacks'
``steps`` and our ``maxiter`` both count generations after the initial
population. Both stop early on an image once it is fooled (torchattacks checks
its best member after each generation, we check every candidate). The model
evaluations each spent are counted by a wrapper around the model.

``--profile`` runs our attack once more under ``torch.profiler`` (no Python tracer) and prints the
share of its time per kind of operator (matrix products; gathers, scatters and copies; pooling and
pointwise; other operators; Python and dispatch between operators) and the bound that follows: the
speed-up over torchattacks if everything but the matrix products cost nothing.

On a GPU every clock is read after ``torch.cuda.synchronize``.

Prints a table and records the run in ``benchmarks/results/onepixel.json``
under ``runs[<preset>-<k>px-<model>-<n>img-<device>]`` (other entries are
kept). Not a test. The pretrained ResNet-20 and EfficientNet-Lite0 table (one
and k pixels, several images per row, one command) is ``bench_onepixel_table.py``,
which reuses this file's functions.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from functools import partial
from pathlib import Path
from unittest import mock

import numpy as np
import torch
from torch import nn

from advspatial.attacks.onepixel import PRESETS, OnePixel
from advspatial.data import load_dataset

RESULTS = Path(__file__).resolve().parent / "results" / "onepixel.json"
MODELS = {"tiny": "TinyCNN trained 3 epochs on 4000 Fashion-MNIST training images",
          "lenet5": "the registry's lenet5 (conv32 5x5-pool-conv64 5x5-pool-fc200-fc10) trained 3 epochs on 4000 "
                    "Fashion-MNIST training images",
          "lenet5-3x3": "LeNet5 with 3x3 kernels (conv32 3x3-pool-conv64 3x3-pool-fc200-fc10) trained 3 epochs on "
                        "4000 Fashion-MNIST training images",
          "smallcnn": "smallcnn, the default model (TrainConfig())"}


class TinyCNN(nn.Module):
    """conv8-ReLU-pool-conv16-ReLU-pool-fc (same as the unit-test fixture)."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        )
        self.fc = nn.Linear(16 * 7 * 7, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.features(x), 1))


class Counting(nn.Module):
    """Wraps a model and counts the images it is run on."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.images = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.images += x.shape[0]
        return self.model(x)


def default_model() -> nn.Module:
    """The project's default smallcnn on Fashion-MNIST (cached; trained on first use)."""
    from advspatial.model_cache import get_or_train
    from advspatial.training import TrainConfig

    return get_or_train(TrainConfig(), progress=False).model.eval()


class LeNet5Small(nn.Module):
    """LeNet5 with 3x3 kernels: conv32 3x3-ReLU-pool-conv64 3x3-ReLU-pool-fc200-ReLU-fc10."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        )
        self.classifier = nn.Sequential(nn.Flatten(), nn.Linear(64 * 7 * 7, 200), nn.ReLU(), nn.Linear(200, 10))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


def build(name: str) -> nn.Module:
    """An untrained model of the benchmark's ``--model`` name."""
    if name == "tiny":
        return TinyCNN()
    if name == "lenet5-3x3":
        return LeNet5Small()
    from advspatial.models import build_model

    return build_model(name, in_channels=1, num_classes=10)


def train_model(seed: int = 0, name: str = "tiny") -> nn.Module:
    """A model of ``name`` trained briefly (3 epochs) on 4000 Fashion-MNIST training images.

    Cached under ``$XDG_CACHE_HOME/advspatial-bench`` (the training is the same every time).
    """
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "advspatial-bench" / f"{name}-{seed}.pt"
    if cache.is_file():
        model = build(name)
        model.load_state_dict(torch.load(cache, weights_only=True))
        return model.eval()
    model = _train(seed, name)
    cache.parent.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), cache)
    return model


def _train(seed: int, name: str) -> nn.Module:
    train = load_dataset("fashion-mnist", "train").head(4000)
    x, y = train.images(), train.labels
    torch.manual_seed(seed)
    model = build(name)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(3):
        perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed + 1))
        for i in range(0, len(x), 100):
            idx = perm[i:i + 100]
            loss = nn.functional.cross_entropy(model(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    return model.eval()


def synchronize(device: torch.device) -> None:
    """Wait for the device's queued work (CUDA kernels run asynchronously): call before reading a clock."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def check_placement(model: nn.Module, x: torch.Tensor, y: torch.Tensor, device: str | torch.device) -> None:
    """Fail unless the model (every parameter and buffer), the images and labels are on ``device`` and the model
    and every submodule are in eval mode (a model left in training mode once made this benchmark's numbers drift)."""
    device = torch.device(device)
    tensors = {"images": x, "labels": y, **dict(model.named_parameters()), **dict(model.named_buffers())}
    wrong = [name for name, t in tensors.items() if t.device.type != device.type]
    if wrong:
        raise RuntimeError(f"not on {device}: {', '.join(wrong[:5])}")
    training = [name or "model" for name, m in model.named_modules() if m.training]
    if training:
        raise RuntimeError(f"in training mode: {', '.join(training[:5])}")


def torchattacks_population(popsize: int, pixels: int, channels: int) -> int:
    """The population torchattacks' OnePixel ends up with for its ``popsize`` argument (a multiplier).

    Its SciPy DE gets ``popsize=max(1, int(popsize / n))`` with ``n = pixels * (2 + channels)`` parameters and
    draws ``max(5, that * n)`` members: 399 for (400, 1 pixel, grey), 400 for (400, 1 pixel, RGB), 390 for 3 RGB pixels.
    """
    n_params = pixels * (2 + channels)
    return max(5, max(1, int(popsize / n_params)) * n_params)


def pick_images(model: nn.Module, n: int) -> tuple[torch.Tensor, torch.Tensor, float]:
    """The first ``n`` correctly classified test images, and the accuracy on the first 1000."""
    test = load_dataset("fashion-mnist", "test").head(1000)
    x, y = test.images(), test.labels
    with torch.no_grad():
        correct = model(x).argmax(dim=1) == y
    keep = correct.nonzero().squeeze(1)[:n]
    return x[keep], y[keep], float(correct.float().mean())


def run_ours(model: nn.Module, x: torch.Tensor, y: torch.Tensor, pixels: int, popsize: int,
             maxiter: int, seed: int, incremental: bool | str = "auto", per_image: bool = False,
             max_batch: int | None = None) -> dict:
    """Our attack on the bare model; evaluations are the attack's own query count.

    (A counting wrapper would hide the model's layers from the incremental
    evaluator, so the count comes from ``AttackResult.queries``, which includes
    the one evaluation per image of the final prediction.) ``per_image`` adds
    each image's success and evaluations (``per_image_success``,
    ``per_image_evaluations``); ``max_batch`` is the attack's (None: its default).
    """
    atk = OnePixel(model, pixels=pixels, popsize=popsize, maxiter=maxiter, seed=seed, incremental=incremental,
                   max_batch=max_batch)
    synchronize(x.device)
    start = time.perf_counter()
    result = atk.run(x, y)
    synchronize(x.device)
    wall = time.perf_counter() - start
    row = {"wall_s": wall, "success_rate": result.success_rate, "model_evaluations": int(result.queries.sum()),
           "mean_l0_of_successes": float(result.l0[result.success].float().mean()) if result.success.any() else None}
    if per_image:
        row["per_image_success"] = [bool(s) for s in result.success.tolist()]
        row["per_image_evaluations"] = [int(q) for q in result.queries.tolist()]
    return row


def run_torchattacks(model: nn.Module, x: torch.Tensor, y: torch.Tensor, pixels: int, popsize: int,
                     steps: int, seed: int) -> dict:
    import torchattacks
    from torchattacks.attacks import _differential_evolution, onepixel

    # A new module is in training mode, and torchattacks restores the mode it found when it ends: a wrapper left in
    # training mode would switch the model to it (BatchNorm statistics then drift with every later pass, Dropout
    # draws), which made the success rates of earlier rounds of this benchmark vary run to run (fixed in bf9e192).
    counting = Counting(model).eval()
    # torchattacks' OnePixel calls its differential evolution without a seed, so the DE would draw from NumPy's
    # legacy global generator; the call gets a generator of its own, seeded here, instead. A RandomState, not a
    # np.random.Generator: torchattacks' copy of SciPy's DE calls RandomState's methods (random_sample, rand,
    # randint). RandomState(seed) draws the stream np.random.seed(seed) gave the global one: the same numbers.
    seeded = partial(_differential_evolution.differential_evolution, seed=np.random.RandomState(seed))
    atk = torchattacks.OnePixel(counting, pixels=pixels, steps=steps, popsize=popsize, inf_batch=4096)
    with mock.patch.object(onepixel, "differential_evolution", seeded):
        synchronize(x.device)
        start = time.perf_counter()
        adv = atk(x, y)
        synchronize(x.device)
        wall = time.perf_counter() - start
    if model.training:
        raise RuntimeError("torchattacks left the model in training mode")
    with torch.no_grad():
        success = model(adv).argmax(dim=1) != y
    l0 = (adv != x).any(dim=1).flatten(1).sum(dim=1)
    return {"wall_s": wall, "success_rate": float(success.float().mean()), "model_evaluations": counting.images,
            "mean_l0_of_successes": float(l0[success].float().mean()) if success.any() else None}


def forward_floor(model: nn.Module, x: torch.Tensor, evaluations: int, batch: int = 1024) -> float:
    """Seconds to run the model alone on ``evaluations`` images in batches of ``batch``.

    The least any attack that evaluates that many candidates must spend: what
    our attack spends above it is its own overhead.
    """
    images = x[torch.arange(batch, device=x.device) % len(x)]
    synchronize(x.device)
    start = time.perf_counter()
    with torch.no_grad():
        for size in [batch] * (evaluations // batch) + [evaluations % batch]:
            if size:
                model(images[:size])
    synchronize(x.device)
    return time.perf_counter() - start


#: torch operators by what they do, for the profile (self CPU time; everything else is "other operators")
OPERATOR_KINDS = {
    "matrix products": ("aten::mm", "aten::addmm", "aten::addmm_", "aten::bmm", "aten::mkldnn_convolution",
                        "aten::_convolution", "aten::convolution_overrideable"),
    "gathers, scatters, copies": ("aten::index_select", "aten::index_add_", "aten::scatter_add_", "aten::index_copy_",
                                  "aten::index", "aten::index_put_", "aten::gather", "aten::copy_", "aten::cat",
                                  "aten::stack", "aten::fill_", "aten::zero_", "aten::nonzero", "aten::argsort",
                                  "aten::sort", "aten::bincount"),
    "pooling and pointwise": ("aten::maximum", "aten::minimum", "aten::max_pool2d_with_indices", "aten::relu",
                              "aten::clamp_min", "aten::native_batch_norm", "aten::_softmax", "aten::add", "aten::sub",
                              "aten::mul", "aten::div", "aten::where", "aten::abs", "aten::amax", "aten::argmax",
                              "aten::clamp", "aten::floor", "aten::ge", "aten::le", "aten::lt", "aten::ne",
                              "aten::eq", "aten::rand", "aten::uniform_"),
}


def profile_ours(model: nn.Module, x: torch.Tensor, y: torch.Tensor, population: int, maxiter: int,
                 seed: int) -> dict:
    """Where our attack's time goes: self CPU time per kind of operator (torch.profiler, no Python tracer).

    The run is repeated once under the profiler after an unprofiled one (same results: the attack is
    deterministic). ``python_and_dispatch_s`` is the profiled wall time not inside any operator (the
    Python code between operators, and the profiler's own per-operator cost, which inflates it).
    ``matrix_products_s`` is the arithmetic no exact dense evaluation avoids: the bound quoted in
    the README takes our run as if everything else cost nothing.
    """
    from torch.profiler import ProfilerActivity, profile

    attack = OnePixel(model, popsize=population, maxiter=maxiter, seed=seed)
    attack.run(x, y)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        start = time.perf_counter()
        attack.run(x, y)
        wall = time.perf_counter() - start
    kind_of = {op: kind for kind, ops in OPERATOR_KINDS.items() for op in ops}
    seconds = {kind: 0.0 for kind in [*OPERATOR_KINDS, "other operators"]}
    for event in prof.key_averages():
        seconds[kind_of.get(event.key, "other operators")] += event.self_cpu_time_total / 1e6
    inside = sum(seconds.values())
    return {"profiled_wall_s": wall, "self_s_by_kind": seconds, "python_and_dispatch_s": max(wall - inside, 0.0),
            "matrix_products_s": seconds["matrix products"]}


def print_profile(profiled: dict, rows: dict, speedup: float | None) -> None:
    """The profile's shares, and the speed-up our run would have if only its matrix products cost time."""
    wall = profiled["profiled_wall_s"]
    parts = {**profiled["self_s_by_kind"], "Python and dispatch (between operators)": profiled["python_and_dispatch_s"]}
    print(f"profile of one run of ours ({wall * 1e3:.1f} ms under the profiler): " +
          ", ".join(f"{kind} {share / wall:.0%}" for kind, share in parts.items()))
    if "torchattacks" in rows:
        ours = rows["advspatial"]["wall_s"]
        products = profiled["matrix_products_s"] * ours / wall  # the profiler's share, on the unprofiled wall time
        print(f"bound: were everything but the matrix products free, our run would take {products * 1e3:.1f} ms: "
              f"{rows['torchattacks']['wall_s'] / products:.1f}x torchattacks (measured {speedup:.1f}x)")


BUDGETS = {"small": (10, 10), **PRESETS}  # torchattacks-style popsize argument, generations


def median(values: list[float]) -> float:
    return float(np.median(values))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n-images", type=int, default=20)
    parser.add_argument("--pixels", type=int, default=1)
    parser.add_argument("--preset", choices=sorted(BUDGETS), default="quick",
                        help="small (10, 10: the issue's small budget), quick (100, 20), paper (400, 75)")
    parser.add_argument("--popsize", type=int, default=None, help="torchattacks-style popsize (default: preset's)")
    parser.add_argument("--maxiter", type=int, default=None, help="generations (default: preset's)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--skip-torchattacks", action="store_true")
    parser.add_argument("--skip-full-forward", action="store_true", help="skip the incremental=False row")
    parser.add_argument("--profile", action="store_true",
                        help="also profile one run of our attack: time per kind of operator, and the bound it implies")
    parser.add_argument("--model", choices=sorted(MODELS), default="tiny",
                        help="tiny, lenet5, lenet5-3x3: trained here (tiny is the default); "
                             "smallcnn: the project's default model (cached)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch intra-op threads for every attack (default: torch's own choice)")
    parser.add_argument("--repeats", type=int, default=1,
                        help="run the attacks this many times, interleaved (ours, torchattacks, ours, ...); "
                             "the speed-up is the median of the per-round ratios")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    requested_pop = args.popsize or BUDGETS[args.preset][0]
    maxiter = BUDGETS[args.preset][1] if args.maxiter is None else args.maxiter
    population = torchattacks_population(requested_pop, args.pixels, channels=1)  # Fashion-MNIST: grey

    model = (default_model() if args.model == "smallcnn" else train_model(args.seed, args.model)).cpu()
    description = MODELS[args.model]
    x, y, accuracy = pick_images(model, args.n_images)
    model, x, y = model.to(args.device), x.to(args.device), y.to(args.device)
    check_placement(model, x, y, args.device)
    print(f"model: {description}, test accuracy {accuracy:.3f}; {len(x)} images; "
          f"{args.pixels} pixel(s), population {population}, {maxiter} generations; "
          f"torch threads {torch.get_num_threads()}, load average {os.getloadavg()[0]:.1f}; device {args.device}")

    if args.device.startswith("cuda"):  # one unmeasured round: CUDA context, kernels and caches warm up
        run_ours(model, x, y, args.pixels, population, maxiter, args.seed)
        run_ours(model, x, y, args.pixels, population, maxiter, args.seed, True)
        if not args.skip_torchattacks:
            run_torchattacks(model, x, y, args.pixels, requested_pop, maxiter, args.seed)
    rounds: list[dict] = []
    for _ in range(args.repeats):
        rows = {"advspatial": run_ours(model, x, y, args.pixels, population, maxiter, args.seed)}
        if not args.skip_torchattacks:
            rows["torchattacks"] = run_torchattacks(model, x, y, args.pixels, requested_pop, maxiter, args.seed)
        if args.pixels == 1 and not args.skip_full_forward:  # the evaluation "auto" did not choose, for comparison
            on_cpu = x.device.type == "cpu"
            other = "advspatial-full-forward" if on_cpu else "advspatial-incremental"
            rows[other] = run_ours(model, x, y, args.pixels, population, maxiter, args.seed, not on_cpu)
        rounds.append(rows)
        if "torchattacks" in rows:
            ours, theirs = rows["advspatial"]["wall_s"], rows["torchattacks"]["wall_s"]
            print(f"  round {len(rounds)}: advspatial {ours:.2f} s, torchattacks {theirs:.2f} s: {theirs / ours:.1f}x")
    rows = {name: dict(r, wall_s=median([rd[name]["wall_s"] for rd in rounds])) for name, r in rounds[-1].items()}
    floor = forward_floor(model, x, rows["advspatial"]["model_evaluations"])
    profiled = profile_ours(model, x, y, population, maxiter, args.seed) if args.profile else None

    print(f"{'attack':<26}{'wall s':>10}{'success':>10}{'evals':>12}{'us/eval':>10}{'mean L0':>9}")
    for name, r in rows.items():
        per_eval = 1e6 * r["wall_s"] / max(r["model_evaluations"], 1)
        l0 = "-" if r["mean_l0_of_successes"] is None else f"{r['mean_l0_of_successes']:.2f}"
        print(f"{name:<26}{r['wall_s']:>10.2f}{r['success_rate']:>10.3f}{r['model_evaluations']:>12d}"
              f"{per_eval:>10.1f}{l0:>9}")
    ratios = [rd["torchattacks"]["wall_s"] / rd["advspatial"]["wall_s"] for rd in rounds if "torchattacks" in rd]
    speedup = median(ratios) if ratios else None
    if speedup is not None:
        print(f"speed-up (torchattacks wall / advspatial wall), median of {len(ratios)} interleaved rounds: "
              f"{speedup:.1f}x (rounds: {', '.join(f'{r:.1f}' for r in ratios)})")
    print(f"forward passes alone for advspatial's {rows['advspatial']['model_evaluations']} evaluations: "
          f"{floor:.2f} s ({rows['advspatial']['wall_s'] / floor:.2f}x of it is our wall time)")
    if profiled is not None:
        print_profile(profiled, rows, speedup)

    budget = args.preset if args.popsize is None and args.maxiter is None else "custom"
    label = f"{budget}-{args.pixels}px-{args.model}-{len(x)}img-{args.device}-t{torch.get_num_threads()}"
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    runs = json.loads(RESULTS.read_text()).get("runs", {}) if RESULTS.is_file() else {}
    runs[label] = {
        "config": {"n_images": len(x), "pixels": args.pixels, "population": population,
                   "torchattacks_popsize_argument": requested_pop, "generations": maxiter, "seed": args.seed,
                   "model": description,
                   "model_test_accuracy_first_1000": accuracy,
                   "images": "first correctly classified Fashion-MNIST test images"},
        "host": {"platform": platform.platform(), "torch": torch.__version__,
                 "threads": torch.get_num_threads(), "cpu_count": os.cpu_count(),
                 "load_average_1min": os.getloadavg()[0], "device": args.device,
                 "device_name": (torch.cuda.get_device_name() if args.device.startswith("cuda")
                                 else platform.processor())},
        "results": rows, "speedup": speedup, "speedup_per_round": ratios,
        "forward_only_s_for_advspatial_evaluations": floor,
        **({"profile": profiled} if profiled is not None else {}),
    }
    RESULTS.write_text(json.dumps({"runs": runs}, indent=2) + "\n")
    print(f"wrote {RESULTS} (entry {label!r})")


if __name__ == "__main__":
    main()
