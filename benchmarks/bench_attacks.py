"""Our attacks against adv-lib 0.2.8 and torchattacks at equal budgets, in AttackBench's format.

On the pretrained CIFAR-10 ResNet-20 (``cifar10-resnet20``, normalization inside the model, so every
library attacks images in [0,1]) and a class-stratified draw of the CIFAR-10 test JPEGs, each attack and
library reports AttackBench's columns: wall time per batch, forward and backward image-passes (per image
and as calls), and robust accuracy (share of all images still classified correctly on the returned
images, evaluated by this script outside the counted passes), plus the goal's metric: **time / adv-lib's
time** (goal <= 1.0) with robust accuracy no higher than adv-lib's.

Run (CPU, the figures in benchmarks/README.md: 2 cores shared with other jobs, so one thread, whose times
do not explode when other processes take the cores; about 13 minutes):

    ADVSPATIAL_DATA=../shared/data python benchmarks/bench_attacks.py --threads 1

On a GPU (well within 5 minutes on an H100; absolute times are quoted only from there):

    ADVSPATIAL_DATA=../shared/data python benchmarks/bench_attacks.py --device cuda \\
        --n-images 1000 --batch-size 500 --repeats 3

Needs ``pip install --no-deps adv-lib==0.2.8`` (a benchmark-only dependency, never a dependency of
advspatial) and torchattacks 3.5.1; beside torch and advspatial (``PYTHONPATH=src``) what runs imports only
numpy, scipy, pillow and tqdm, so a machine with those needs the wheels ``adv_lib-0.2.8-py3-none-any.whl`` and
``torchattacks-3.5.1-py3-none-any.whl`` (``pip install --no-deps``).

Importing adv-lib: ``adv_lib.attacks`` imports every attack of the package, and through them
``torchvision`` (LPIPS, used by ALMA only) and ``visdom`` (its live-plot logger,
only a type annotation in the attacks run here); neither is needed, so while adv-lib is imported this
script puts empty stand-in modules for those two (when they are not importable, or always for
torchvision, which must not load here) into ``sys.modules`` and removes them afterwards. On Python >= 3.12
without setuptools' ``distutils``, ``distutils.version.LooseVersion`` (adv-lib compares torch versions with
it) gets a minimal stand-in the same way.

The budgets, equal for every library (``--apgd-steps``, default 100, as AutoAttack; ``--pgd-steps``):

- ``apgd-{ce,dlr}-{linf,l2}``: APGD, L-inf eps 8/255 or L2 eps 0.5, ``--apgd-steps`` iterations, one
  restart (random start), rho 0.75, CE or DLR loss. adv-lib ``apgd(norm, n_iter, n_restarts=1)``;
  torchattacks ``APGD(steps, n_restarts=1, seed=0)``; ours ``APGD``/``APGDL2(steps, n_restarts=1)``.
  Same algorithm, different bookkeeping: ours stops an image at its first adversarial iterate
  (``early_stop=True``, the default: the forward/backward counts show what that saves), the other two
  take every step on every image. ``ours-full`` is ours with ``early_stop=False`` (every image every
  step): the like-for-like cost per step. Our checkpoints follow the paper's ``ceil(p_j * steps)`` (equal
  to the reference's at 100 steps, a little different at fewer).
- ``pgd{S}-linf``: PGD, L-inf eps 8/255, step 2/255, ``S`` steps, one random start (uniform in the
  ball), no restart, CE loss, no early stop. adv-lib ``pgd_linf(absolute_step_size=2/255, restarts=1)``
  returns, per image, the last *adversarial* iterate among x_0..x_{S-1} (the clean image if none was;
  the final iterate is never evaluated); ours and torchattacks ``PGD`` return the final iterate x_S.
- ``autoattack-linf``: the AutoAttack-style ensemble, worst case per image, each component only on the
  images no earlier one fooled: APGD-CE, APGD-DLR (``--apgd-steps``, one restart each) and Square
  (``--square-queries``, p_init 0.8, margin loss). Ours: ``AutoAttack(components=apgd-ce,apgd-dlr,square,
  n_restarts=1)``; torchattacks: ``MultiAttack([APGD(ce), APGD(dlr), Square])``; adv-lib has no
  ensemble and no Square: its two APGD runs are chained here the way ``MultiAttack`` chains (10 lines
  of this script, its checking passes counted). The rows are equal in budget when no image survives the
  two APGD components (``reached_square`` in the output says how many did, for ours). torchattacks'
  ``AutoAttack(version="standard")`` (APGD-CE, APGD-T, FAB-T, Square, 10 steps each) is not compared:
  advspatial has no FAB.

Counting (as AttackBench: image-passes, not calls, plus the calls): the model is wrapped in a module that
adds each forward call's batch size, and puts an identity autograd function on its input whose backward
adds the batch size of every backward pass that reaches the input. Timing: every contender is run on all
batches once per round, attacks and libraries interleaved (the order of the libraries rotates from round
to round), after a warm-up on a few images; the figure is the median over ``--repeats`` rounds of the
round's time / number of batches. Seeds: ``torch.manual_seed(0)`` before every call (adv-lib draws its
random starts from the global generator; ours from per-image seeds; torchattacks' ``seed=0``).

Writes ``benchmarks/results/attacks.json`` (``runs`` keyed by device, images, batch and steps; other
entries kept). Not a test.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import os
import platform
import statistics
import sys
import time
import types
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

RESULTS = Path(__file__).resolve().parent / "results" / "attacks.json"
SHARED = Path(os.environ.get("ADVSPATIAL_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
EPS = {"linf": 8 / 255, "l2": 0.5}
PGD_STEP = 2 / 255
REFERENCE = "adv-lib"

Fn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


# -- the counted model ----------------------------------------------------------------

class _CountBackward(torch.autograd.Function):
    """Identity on the model's input whose backward counts the images a backward pass carries to it."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, counter: Counted) -> torch.Tensor:  # type: ignore[override]
        ctx.counter = counter
        return x.view_as(x)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:  # type: ignore[override]
        ctx.counter.note_backward(grad.shape[0])
        return grad, None


class Counted(nn.Module):
    """The model with AttackBench's counters: forward/backward image-passes and calls, while ``on``."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.on = False
        self.reset()

    def reset(self) -> None:
        self.forward_images = self.forward_calls = self.backward_images = self.backward_calls = 0

    def note_backward(self, images: int) -> None:
        if self.on:
            self.backward_images += images
            self.backward_calls += 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.on:
            self.forward_images += x.shape[0]
            self.forward_calls += 1
            if x.requires_grad:
                x = _CountBackward.apply(x, self)
        return self.model(x)

    @contextlib.contextmanager
    def counting(self) -> Iterator[Counted]:
        self.on = True
        try:
            yield self
        finally:
            self.on = False


# -- adv-lib, imported without torchvision and visdom ---------------------------------------

@contextlib.contextmanager
def _stand_ins() -> Iterator[None]:
    """Empty ``torchvision`` (always) and ``visdom`` (when missing) modules, and ``distutils.version`` when
    missing, in ``sys.modules`` for the duration of the block; removed afterwards."""
    added = []

    def stub(name: str, **attrs: Any) -> None:
        module = types.ModuleType(name)
        module.__dict__.update(attrs)
        sys.modules[name] = module
        added.append(name)

    if "torchvision" not in sys.modules:
        stub("torchvision", models=types.SimpleNamespace())
    try:
        importlib.import_module("visdom")
    except ImportError:
        stub("visdom", Visdom=None)
    try:
        importlib.import_module("distutils.version")
    except ImportError:
        stub("distutils")
        stub("distutils.version", LooseVersion=_LooseVersion)
    try:
        yield
    finally:
        for name in added:
            sys.modules.pop(name, None)


class _LooseVersion:
    """What adv-lib uses of ``distutils.version.LooseVersion``: ordering of numeric dotted versions."""

    def __init__(self, version: str) -> None:
        self.parts = tuple(int(p) for p in version.split("+")[0].split(".")[:3] if p.isdigit())

    def __ge__(self, other: _LooseVersion) -> bool:
        return self.parts >= other.parts

    def __lt__(self, other: _LooseVersion) -> bool:
        return self.parts < other.parts


def import_advlib() -> tuple[Any, Any, str]:
    """(adv_lib.attacks.auto_pgd, adv_lib.attacks.projected_gradient_descent, version)."""
    with _stand_ins():
        auto_pgd = importlib.import_module("adv_lib.attacks.auto_pgd")
        pgd = importlib.import_module("adv_lib.attacks.projected_gradient_descent")
        version = importlib.import_module("adv_lib").__version__
    return auto_pgd, pgd, version


# -- the contenders ------------------------------------------------------------------------

@dataclass(frozen=True)
class Setting:
    """One attack at one budget."""

    kind: str  # apgd, pgd, autoattack
    norm: str
    loss: str = "ce"
    steps: int = 100
    queries: int = 0
    scale: float = 1.0  # of eps (and PGD's step): --eps-scale

    @property
    def eps(self) -> float:
        return EPS[self.norm] * self.scale


def settings(apgd_steps: int, pgd_steps: list[int], square_queries: int, scale: float) -> dict[str, Setting]:
    out = {f"apgd-{loss}-{norm}": Setting("apgd", norm, loss, apgd_steps, scale=scale)
           for norm in ("linf", "l2") for loss in ("ce", "dlr")}
    out.update({f"pgd{s}-linf": Setting("pgd", "linf", "ce", s, scale=scale) for s in pgd_steps})
    out["autoattack-linf"] = Setting("autoattack", "linf", "ce", apgd_steps, square_queries, scale)
    return out


def contenders(s: Setting, model: Counted, advlib: tuple[Any, Any]) -> dict[str, Fn]:
    """``{library: fn(x, y) -> x_adv}`` for one setting (libraries that have no such attack left out)."""
    import torchattacks

    from advspatial.attacks.apgd import APGD, APGDL2
    from advspatial.attacks.ensemble import AutoAttack
    from advspatial.attacks.pgd import PGD

    auto_pgd, adv_pgd = advlib
    ta_norm = {"linf": "Linf", "l2": "L2"}[s.norm]
    lib_norm = {"linf": float("inf"), "l2": 2.0}[s.norm]
    if s.kind == "pgd":
        step = PGD_STEP * s.scale
        ours = PGD(model, eps=s.eps, alpha=step, steps=s.steps, random_start=True)
        theirs = torchattacks.PGD(model, eps=s.eps, alpha=step, steps=s.steps, random_start=True)
        return {
            "ours": lambda x, y: ours(x, y),
            REFERENCE: lambda x, y: adv_pgd.pgd_linf(model, x, y, ε=s.eps, steps=s.steps, random_init=True,
                                                     restarts=1, loss_function="ce", absolute_step_size=step),
            "torchattacks": lambda x, y: theirs(x, y),
        }

    def advlib_apgd(loss: str) -> Fn:
        return lambda x, y: auto_pgd.apgd(model, x, y, eps=s.eps, norm=lib_norm, n_iter=s.steps, n_restarts=1,
                                          loss_function=loss)

    def ta_apgd(loss: str) -> torchattacks.attack.Attack:
        return torchattacks.APGD(model, norm=ta_norm, eps=s.eps, steps=s.steps, n_restarts=1, loss=loss, seed=0)

    if s.kind == "apgd":
        cls = APGD if s.norm == "linf" else APGDL2
        ours, full = (cls(model, eps=s.eps, steps=s.steps, n_restarts=1, loss=s.loss, early_stop=stop)
                      for stop in (True, False))
        theirs = ta_apgd(s.loss)
        return {"ours": lambda x, y: ours(x, y), "ours-full": lambda x, y: full(x, y),
                REFERENCE: advlib_apgd(s.loss), "torchattacks": lambda x, y: theirs(x, y)}
    ensemble = AutoAttack(model, eps=s.eps, steps=s.steps, n_restarts=1, n_queries=s.queries,
                          components=("apgd-ce", "apgd-dlr", "square"))
    multi = torchattacks.MultiAttack([
        ta_apgd("ce"), ta_apgd("dlr"),
        torchattacks.Square(model, norm=ta_norm, eps=s.eps, n_queries=s.queries, n_restarts=1, p_init=0.8,
                            loss="margin", seed=0)])
    left: list[int] = []  # per call: images that reached our ensemble's last component

    def ours_ensemble(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        out = ensemble(x, y)
        left.append(images_left(ensemble))
        return out

    ours_ensemble.reached_last = left  # type: ignore[attr-defined]
    return {"ours": ours_ensemble,
            REFERENCE: chained(model, [advlib_apgd("ce"), advlib_apgd("dlr")]),
            "torchattacks": lambda x, y: multi(x, y)}


def chained(model: nn.Module, attacks: list[Fn]) -> Fn:
    """Worst case per image over ``attacks`` run in turn on the images not fooled yet (as ``MultiAttack``)."""

    def run(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        x_adv, left = x.clone(), torch.arange(len(x), device=x.device)
        for attack in attacks:
            out = attack(x[left], y[left])
            with torch.no_grad():
                fooled = model(out).argmax(1) != y[left]
            x_adv[left[fooled]] = out[fooled]
            left = left[~fooled]
            if not len(left):
                break
        return x_adv

    return run


# -- measuring -----------------------------------------------------------------------------

def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def run_batches(fn: Fn, model: Counted, batches: list[tuple[torch.Tensor, torch.Tensor]],
                device: torch.device) -> tuple[float, float, list[torch.Tensor], dict[str, int]]:
    """(wall seconds, CPU seconds of this process, x_adv per batch, counts) of ``fn`` over every batch, counting
    the model's passes."""
    model.reset()
    outs = []
    sync(device)
    cpu, start = time.process_time(), time.perf_counter()
    with model.counting():
        for x, y in batches:
            torch.manual_seed(0)
            outs.append(fn(x, y).detach())
    sync(device)
    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
    counts = {"forward_images": model.forward_images, "forward_calls": model.forward_calls,
              "backward_images": model.backward_images, "backward_calls": model.backward_calls}
    return seconds, cpu, outs, counts


def evaluate(model: nn.Module, s: Setting, batches: list[tuple[torch.Tensor, torch.Tensor]],
             outs: list[torch.Tensor]) -> tuple[float, bool]:
    """(robust accuracy over all images, every perturbation inside the budget and the box)."""
    correct, n, inside = 0, 0, True
    tol = 1e-6 if s.norm == "linf" else 1e-4
    with torch.no_grad():
        for (x, y), adv in zip(batches, outs, strict=True):
            correct += int((model(adv).argmax(1) == y).sum())
            n += len(y)
            delta = (adv - x).flatten(1)
            size = delta.abs().amax(1) if s.norm == "linf" else delta.norm(dim=1)
            inside &= bool((size <= s.eps + tol).all()) and 0 <= float(adv.min()) and float(adv.max()) <= 1
    return correct / n, inside


def bench(names: list[str], table: dict[str, Setting], model: Counted, advlib: tuple[Any, Any],
          batches: list[tuple[torch.Tensor, torch.Tensor]], repeats: int, device: torch.device) -> dict[str, Any]:
    """Interleaved rounds over every (attack, library); medians, counts and robust accuracies per attack."""
    fns = {name: contenders(table[name], model, advlib) for name in names}
    n_images = sum(len(y) for _, y in batches)
    warm = [(x[:4], y[:4]) for x, y in batches[:1]]
    for name in names:
        for fn in fns[name].values():
            run_batches(fn, model, warm, device)
    times: dict[str, dict[str, list[float]]] = {n: {lib: [] for lib in fns[n]} for n in names}
    cpu_times: dict[str, dict[str, list[float]]] = {n: {lib: [] for lib in fns[n]} for n in names}
    rows: dict[str, dict[str, Any]] = {n: {} for n in names}
    for r in range(repeats):
        for name in names:
            libs = list(fns[name])
            for lib in libs[r % len(libs):] + libs[:r % len(libs)]:
                seconds, cpu, outs, counts = run_batches(fns[name][lib], model, batches, device)
                times[name][lib].append(seconds / len(batches))
                cpu_times[name][lib].append(cpu / len(batches))
                if r == 0:
                    acc, inside = evaluate(model.model, table[name], batches, outs)
                    rows[name][lib] = {"robust_accuracy": acc, "inside_budget": inside, **counts,
                                       "forward_per_image": counts["forward_images"] / n_images,
                                       "backward_per_image": counts["backward_images"] / n_images}
                    if hasattr(fns[name][lib], "reached_last"):
                        rows[name][lib]["reached_square"] = sum(fns[name][lib].reached_last[-len(batches):])
            print(f"round {r + 1}/{repeats} {name}: " + ", ".join(
                f"{lib} {times[name][lib][-1]:.3f}s" for lib in fns[name]), flush=True)
    out: dict[str, Any] = {}
    for name in names:
        wall = {lib: statistics.median(v) for lib, v in times[name].items()}
        cpu = {lib: statistics.median(v) for lib, v in cpu_times[name].items()}
        for lib, row in rows[name].items():
            row.update(s_per_batch=wall[lib], s_per_batch_rounds=times[name][lib], cpu_s_per_batch=cpu[lib],
                       time_over_advlib=wall[lib] / wall[REFERENCE] if REFERENCE in wall else None,
                       cpu_time_over_advlib=cpu[lib] / cpu[REFERENCE] if REFERENCE in cpu else None)
        ours, ref = rows[name]["ours"], rows[name].get(REFERENCE)
        out[name] = {"setting": vars(table[name]) | {"eps": table[name].eps}, "libraries": rows[name],
                     "goal_met": None if ref is None else (ours["time_over_advlib"] <= 1.0
                                                           and ours["robust_accuracy"] <= ref["robust_accuracy"])}
    return out


def images_left(ensemble: Any) -> int:
    """Images of the last batch that our ensemble passed to its last component (none fooled them before)."""
    fooled = ensemble.last_clean_success.clone()
    for hit in list(ensemble.last_breakdown.values())[:-1]:
        fooled |= hit
    return int((~fooled).sum())


# -- data, main ----------------------------------------------------------------------------

def load_batches(n: int, batch: int, device: torch.device) -> list[tuple[torch.Tensor, torch.Tensor]]:
    from advspatial.data import load_dataset
    from advspatial.data.subset import subset_indices

    data = load_dataset(f"imagefolder:{SHARED / 'cifar10-test-jpeg'}")
    idx = subset_indices(data.labels, n, "stratified", 0)
    x, y = data.images(idx), data.labels[idx].long()
    return [(x[i:i + batch].to(device), y[i:i + batch].to(device)) for i in range(0, len(idx), batch)]


def print_table(results: dict[str, Any]) -> None:
    print(f"\n{'attack':<16} {'library':<13} {'s/batch':>8} {'÷adv-lib':>8} {'cpu ÷':>6} {'fwd/img':>8} "
          f"{'bwd/img':>8} {'fwd calls':>9} {'bwd calls':>9} {'robust':>7}")
    for name, res in results.items():
        for lib, row in res["libraries"].items():
            ratio, cpu = (("-" if row[k] is None else f"{row[k]:.3f}")
                          for k in ("time_over_advlib", "cpu_time_over_advlib"))
            flag = "" if row["inside_budget"] else "  OUTSIDE BUDGET"
            print(f"{name:<16} {lib:<13} {row['s_per_batch']:>8.3f} {ratio:>8} {cpu:>6} "
                  f"{row['forward_per_image']:>8.1f} {row['backward_per_image']:>8.1f} "
                  f"{row['forward_calls']:>9} {row['backward_calls']:>9} "
                  f"{row['robust_accuracy']:>7.3f}{flag}")
        print(f"{'':<16} goal (ours ≤ 1.0 × adv-lib, robust accuracy ≤ adv-lib's): {res['goal_met']}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--n-images", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3, help="interleaved rounds; times are their median")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    parser.add_argument("--attacks", default="all", help="comma-separated subset of the attack names, or all")
    parser.add_argument("--apgd-steps", type=int, default=100)
    parser.add_argument("--pgd-steps", type=int, nargs="+", default=[10, 50])
    parser.add_argument("--square-queries", type=int, default=5000)
    parser.add_argument("--eps-scale", type=float, default=1.0,
                        help="every eps (and PGD's step) times this: < 1 leaves images robust, to compare strength")
    parser.add_argument("--name", default="", help="suffix of the run's key in the results file")
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if not (SHARED / "cifar10-test-jpeg").is_dir() or not (SHARED / "cifar10-resnet").is_dir():
        raise SystemExit(f"skipped: needs the CIFAR-10 test JPEGs and ResNet-20 weights under {SHARED} "
                         "(cifar10-test-jpeg/, cifar10-resnet/; set ADVSPATIAL_DATA)")
    os.environ.setdefault("ADVSPATIAL_DATA", str(SHARED))  # where the zoo finds the weights
    import torchattacks

    from advspatial.models import load_model
    from advspatial.runtime import pick_device

    auto_pgd, adv_pgd, advlib_version = import_advlib()
    device = pick_device(args.device)
    table = settings(args.apgd_steps, args.pgd_steps, args.square_queries, args.eps_scale)
    names = list(table) if args.attacks == "all" else [a.strip() for a in args.attacks.split(",") if a.strip()]
    unknown = sorted(set(names) - set(table))
    if unknown:
        raise SystemExit(f"unknown attack(s) {unknown}; valid: {', '.join(table)}")
    net = load_model("cifar10-resnet20").to(device).eval()
    for p in net.parameters():
        p.requires_grad_(False)
    model = Counted(net).eval()
    batches = load_batches(args.n_images, args.batch_size, device)
    with torch.no_grad():
        clean = sum(int((net(x).argmax(1) == y).sum()) for x, y in batches) / args.n_images
    load_before = os.getloadavg()
    started = time.perf_counter()
    results = bench(names, table, model, (auto_pgd, adv_pgd), batches, args.repeats, device)
    wall = time.perf_counter() - started
    print_table(results)
    print(f"clean accuracy {clean:.3f}; {wall:.0f} s; load average before {load_before}, after {os.getloadavg()}")
    key = f"{device.type}-n{args.n_images}-b{args.batch_size}-apgd{args.apgd_steps}-t{torch.get_num_threads()}" + (
        f"-eps{args.eps_scale:g}x" if args.eps_scale != 1 else "") + (f"-{args.name}" if args.name else "")
    record = {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu ({platform.processor()})",
        "threads": torch.get_num_threads(), "n_images": args.n_images, "batch_size": args.batch_size,
        "batches": len(batches), "repeats": args.repeats, "apgd_steps": args.apgd_steps, "pgd_steps": args.pgd_steps,
        "square_queries": args.square_queries, "eps_scale": args.eps_scale, "model": "cifar10-resnet20 (Normalized)",
        "data": "CIFAR-10 test JPEGs, stratified draw (seed 0)", "clean_accuracy": clean, "wall_s": round(wall, 1),
        "load_average_before": load_before, "load_average_after": os.getloadavg(), "torch": torch.__version__,
        "adv_lib": advlib_version, "torchattacks": torchattacks.__version__, "python": platform.python_version(),
        "time": time.strftime("%Y-%m-%d %H:%M"), "attacks": results,
    }
    stored = json.loads(args.output.read_text()) if args.output.is_file() else {"runs": {}}
    stored["runs"][key] = record
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(stored, indent=1) + "\n")
    print(f"wrote {args.output} [{key}]")


if __name__ == "__main__":
    main()
