"""PGD speed: our PGD against torchattacks' and against the model's own forward+backward.

Run: ``python benchmarks/bench_pgd.py [--device auto] [--batch 256] [--repeats 7] [--threads N]``.
Prints a table and writes ``benchmarks/results/pgd.json``.

Measured, on the ``smallcnn`` architecture (random weights, eval mode), a batch of
Fashion-MNIST test images (random images if the data is not installed), L-inf
PGD without random start, 10 and 20 steps; every time is the median of
``--repeats`` runs, with the three contenders interleaved so that load changes
hit all of them alike:

(a) ``ours / torchattacks``: wall time of ``PGD(...)(x, y)`` (returns the images,
    like torchattacks; includes input validation) over ``torchattacks.PGD(...)(x, y)``;
    goal <= 1.0. Beside it: our ``run`` (which also evaluates the clean and the
    adversarial images for the AttackResult: two extra forward passes) and our
    ``perturb`` alone (the bare loop).
(b) ``PGD throughput / forward+backward throughput``: images*steps per second of
    ``PGD(...)(x, y)`` over that of ``steps`` plain forward passes each followed by
    a backward to the input (parameters frozen, as in any attack); goal >= 0.9.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch

from advspatial.attacks.pgd import PGD
from advspatial.models import build_model
from advspatial.models.hooks import frozen_eval
from advspatial.runtime import pick_device

RESULTS = Path(__file__).parent / "results" / "pgd.json"
EPS, ALPHA = 0.1, 0.01


def load_batch(n: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor, str]:
    """``n`` Fashion-MNIST test images and labels, or seeded random ones when the data is missing."""
    try:
        from advspatial.data import load_dataset

        ds = load_dataset("fashion-mnist", "test").head(n)
        return ds.images().to(device), ds.labels.to(device), "fashion-mnist test"
    except Exception:  # a benchmark falls back to random data of the same shape
        g = torch.Generator().manual_seed(0)
        x, y = torch.rand(n, 1, 28, 28, generator=g), torch.randint(0, 10, (n,), generator=g)
        return x.to(device), y.to(device), "random (Fashion-MNIST not installed)"


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def forward_backward(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, steps: int) -> torch.Tensor:
    """``steps`` plain forward passes, each with a backward to the input: the floor for any gradient attack."""
    loss_fn = torch.nn.CrossEntropyLoss(reduction="sum")
    grad = x
    with frozen_eval(model):
        for _ in range(steps):
            xi = x.detach().requires_grad_(True)
            (grad,) = torch.autograd.grad(loss_fn(model(xi), y), xi)
    return grad


def timed(fn: Callable[[], object], device: torch.device) -> float:
    sync(device)
    start = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - start


def bench(steps: int, model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, repeats: int) -> dict[str, float]:
    """Median wall times of the contenders for one number of steps, and the two ratios."""
    import torchattacks

    ours = PGD(model, eps=EPS, alpha=ALPHA, steps=steps, random_start=False)
    theirs = torchattacks.PGD(model, eps=EPS, alpha=ALPHA, steps=steps, random_start=False)
    ids = torch.arange(len(x))

    def perturb_only() -> torch.Tensor:
        with frozen_eval(model):
            return ours.perturb(x, y, None, None, ids)[0]

    contenders = {
        "ours_call": lambda: ours(x, y),
        "ours_run": lambda: ours.run(x, y),
        "ours_perturb": perturb_only,
        "torchattacks": lambda: theirs(x, y),
        "forward_backward": lambda: forward_backward(model, x, y, steps),
    }
    assert torch.allclose(ours(x, y), theirs(x, y), atol=1e-5), "PGD outputs differ from torchattacks'"
    times: dict[str, list[float]] = {k: [] for k in contenders}
    for fn in contenders.values():  # warm-up
        timed(fn, x.device)
    for _ in range(repeats):
        for name, fn in contenders.items():
            times[name].append(timed(fn, x.device))
    med = {k: statistics.median(v) for k, v in times.items()}
    work = len(x) * steps
    return {
        "steps": steps,
        **{f"{k}_s": v for k, v in med.items()},
        "ratio_a_ours_over_torchattacks": med["ours_call"] / med["torchattacks"],
        "ratio_a_run_over_torchattacks": med["ours_run"] / med["torchattacks"],
        "ratio_a_perturb_over_torchattacks": med["ours_perturb"] / med["torchattacks"],
        "pgd_images_steps_per_s": work / med["ours_call"],
        "forward_backward_images_steps_per_s": work / med["forward_backward"],
        "ratio_b_pgd_over_forward_backward": med["forward_backward"] / med["ours_call"],
        "ratio_b_run_over_forward_backward": med["forward_backward"] / med["ours_run"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--steps", type=int, nargs="+", default=[10, 20])
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    parser.add_argument("--out", type=Path, default=None,
                        help="default: results/pgd.json on a CPU, results/pgd-cuda.json on a GPU")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = pick_device(args.device)
    torch.manual_seed(0)
    args.out = args.out or (RESULTS.with_name("pgd-cuda.json") if device.type == "cuda" else RESULTS)
    model = build_model("smallcnn").to(device).eval()
    x, y, source = load_batch(args.batch, device)

    rows = [bench(s, model, x, y, args.repeats) for s in args.steps]
    print(f"smallcnn, batch {len(x)} ({source}), device {device}, threads {torch.get_num_threads()}, "
          f"median of {args.repeats}")
    print(f"{'steps':>5} {'ours s':>8} {'run s':>8} {'perturb s':>9} {'torchatt s':>10} {'fwd+bwd s':>9} "
          f"{'(a) ours/ta':>11} {'(a) run/ta':>10} {'(b) ours':>8} {'(b) run':>8}")
    for r in rows:
        print(f"{r['steps']:>5} {r['ours_call_s']:>8.4f} {r['ours_run_s']:>8.4f} {r['ours_perturb_s']:>9.4f} "
              f"{r['torchattacks_s']:>10.4f} {r['forward_backward_s']:>9.4f} "
              f"{r['ratio_a_ours_over_torchattacks']:>11.3f} {r['ratio_a_run_over_torchattacks']:>10.3f} "
              f"{r['ratio_b_pgd_over_forward_backward']:>8.3f} {r['ratio_b_run_over_forward_backward']:>8.3f}")
    print("goals: (a) <= 1.0, (b) >= 0.9")
    report = {
        "benchmark": "pgd-linf", "model": "smallcnn (random weights)", "batch": len(x), "data": source,
        "eps": EPS, "alpha": ALPHA, "repeats": args.repeats, "device": str(device),
        "threads": torch.get_num_threads(), "torch": torch.__version__, "python": platform.python_version(),
        "machine": platform.machine(), "results": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
