"""The real-model run cost: the spatial experiment on the pretrained CIFAR-10
ResNet-20 with the ``cifar10`` preset — wall time per image, the share of it spent inside the
model's forward and backward passes, and the floor those passes set.

    ADVSPATIAL_DATA=../shared/data python benchmarks/bench_real_model.py --n 200
    ADVSPATIAL_DATA=../shared/data python benchmarks/bench_real_model.py --n 200 --device cuda

How the share is measured, without a profiler's inflation: the run executes in this process
(``advspatial.cli.main``) with two clocks installed.

- *Forward*: torch's global module hooks (``register_module_forward_pre_hook`` /
  ``register_module_forward_hook``) start a clock when a call of **the classifier itself** begins and
  stop it when that call returns (the classifier is the object the run loads:
  ``experiments.context.load_checked_model`` is wrapped to record it). A neutralized or transformed
  model wrapping it is a module too, but its own work (region selection, control draws, fills,
  JPEG/blur) is outside the classifier's call and no longer counts as model time
  (before 2026-11-24, aec032e, the clock counted every outermost module call: ``any_module_forward_s`` keeps that
  figure for comparison, from the same run).
- *Backward*: ``torch.autograd.grad`` and ``torch.Tensor.backward`` are wrapped (outside a forward
  pass; advspatial builds a graph, then differentiates it).

On CUDA each clock synchronizes the device when it starts and stops, so the time of the kernels
is attributed to the pass that launched them (the synchronizations cost a little throughput;
the share is then an upper bound of what an unsynchronized run spends in the model).

The floor: every outermost forward pass records its batch size, every backward the batch size of
the tensor it differentiates with respect to, separately for the passes inside an attack's
``Attack.run`` (the attacks' own forward/backward counts). After the run the model's own cost per
image is measured at batch 200 (forward alone; forward + backward to the input), and
``images forwarded x forward cost + images differentiated x backward cost`` estimates what those
passes cost at that batch size: for the attacks, the floor of the run's per-image cost. (For the
whole run the estimate is not a floor: maps such as occlusion evaluate in batches larger than 200,
where a pass costs less per image than at 200.)

Per stage: each stage's own seconds (``RunDir.cached`` timed, a stage inside another taken out of
the outer's; synchronized on CUDA) beside its passes from the run's ledger (``metrics.json``'s ``model_passes``).
While the run goes, the seconds so far are written to ``<output>-partial.json`` every few seconds, so a run cut
short (a GPU lease's time limit) still says where its time went. ``--setting imagenet-lite0`` runs EfficientNet-Lite0
on ``imagenette-val`` (``imagenet`` preset, its class map) instead of ResNet-20 on CIFAR-10.

Writes ``benchmarks/results/real_model.json`` (entry keyed by setting, device and n). Not a test.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

RESULTS = Path(__file__).resolve().parent / "results" / "real_model.json"
SHARED = Path(os.environ.get("ADVSPATIAL_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))


@dataclass
class Tally:
    """Seconds, image-passes and calls of one kind of work."""

    seconds: float = 0.0
    images: int = 0
    calls: int = 0


@dataclass
class ModelClock:
    """Seconds and images inside model forward passes and autograd backward calls, and inside attacks."""

    device: torch.device
    image_shape: tuple[int, ...] = (3, 32, 32)
    forward: Tally = field(default_factory=Tally)
    backward: Tally = field(default_factory=Tally)
    attack: Tally = field(default_factory=Tally)  # seconds inside Attack.run; images: its forward passes
    attack_backward_images: int = 0
    #: the classifier whose own calls the forward clock counts (None: every outermost module call)
    model: torch.nn.Module | None = None
    #: seconds inside any outermost module call (the clock before 2026-11-24: wrappers' own work included)
    any_module_seconds: float = 0.0
    _attack_depth: int = 0
    _depth: int = 0
    _any_depth: int = 0
    _any_started: float = 0.0
    _started: float = 0.0
    _input_shape: tuple[int, ...] = ()
    _handles: list[Any] = field(default_factory=list)

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def _counts(self, module: torch.nn.Module) -> bool:
        """Whether a call of ``module`` is a model pass: the classifier's own call once it is known."""
        return self.model is None or module is self.model

    def _pre(self, module: torch.nn.Module, args: tuple[Any, ...]) -> None:
        if self._any_depth == 0:
            self._sync()
            self._any_started = time.perf_counter()
        self._any_depth += 1
        if not self._counts(module):
            return
        if self._depth == 0:
            self._sync()
            self._started = time.perf_counter()
            first = args[0] if args else None
            self._input_shape = tuple(first.shape) if isinstance(first, torch.Tensor) else ()
        self._depth += 1

    def _post(self, module: torch.nn.Module, args: tuple[Any, ...], output: Any) -> None:
        self._any_depth -= 1
        if self._any_depth == 0:
            self._sync()
            self.any_module_seconds += time.perf_counter() - self._any_started
        if not self._counts(module):
            return
        self._depth -= 1
        if self._depth == 0:
            self._sync()
            self.forward.seconds += time.perf_counter() - self._started
            if self._is_model_pass(output):
                images = self._input_shape[0]
                self.forward.images += images
                self.attack.images += images if self._attack_depth else 0
                self.forward.calls += 1

    def _is_model_pass(self, output: Any) -> bool:
        """A pass of whole images to logits: the incremental one-pixel evaluator also calls single layers on
        windows (their time is model time; their images are not whole-model passes and are not counted)."""
        return (len(self._input_shape) == 4 and tuple(self._input_shape[1:]) == self.image_shape
                and isinstance(output, torch.Tensor) and output.dim() == 2)

    def _timed_backward(self, fn: Callable[..., Any], images: Callable[..., int]) -> Callable[..., Any]:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            if self._depth or self._any_depth:  # a gradient inside a forward pass belongs to that pass
                return fn(*args, **kwargs)
            self._sync()
            started = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self._sync()
                self.backward.seconds += time.perf_counter() - started
                self.backward.calls += 1
                counted = images(*args, **kwargs)
                self.backward.images += counted
                self.attack_backward_images += counted if self._attack_depth else 0
        return wrapper

    def _timed_attack(self, run: Callable[..., Any]) -> Callable[..., Any]:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            self._attack_depth += 1
            started = time.perf_counter()
            try:
                return run(*args, **kwargs)
            finally:
                self._attack_depth -= 1
                if not self._attack_depth:
                    self._sync()
                    self.attack.seconds += time.perf_counter() - started
                    self.attack.calls += 1
        return wrapper

    @contextmanager
    def installed(self) -> Iterator[ModelClock]:
        """The clocks installed for the duration of the block (then removed)."""
        from torch.nn.modules import module as torch_module

        from advspatial.attacks.base import Attack

        from advspatial.experiments import context

        grad, backward, attack_run = torch.autograd.grad, torch.Tensor.backward, Attack.run
        load = context.load_checked_model

        def load_and_record(*args: Any, **kwargs: Any) -> torch.nn.Module:
            self.model = load(*args, **kwargs)
            return self.model

        context.load_checked_model = load_and_record
        Attack.run = self._timed_attack(attack_run)  # type: ignore[method-assign]
        self._handles = [torch_module.register_module_forward_pre_hook(self._pre),
                         torch_module.register_module_forward_hook(self._post)]
        torch.autograd.grad = self._timed_backward(grad, _grad_images)  # type: ignore[assignment]
        torch.Tensor.backward = self._timed_backward(backward, _backward_images)  # type: ignore[method-assign]
        try:
            yield self
        finally:
            for handle in self._handles:
                handle.remove()
            torch.autograd.grad = grad  # type: ignore[assignment]
            torch.Tensor.backward = backward  # type: ignore[method-assign]
            Attack.run = attack_run  # type: ignore[method-assign]
            context.load_checked_model = load


def peak_rss_gb() -> float:
    """This process's peak resident memory in GiB (Linux: ru_maxrss in KiB)."""
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def _grad_images(outputs: Any, inputs: Any, *args: Any, **kwargs: Any) -> int:
    first = inputs[0] if isinstance(inputs, (list, tuple)) else inputs
    return int(first.shape[0]) if isinstance(first, torch.Tensor) and first.dim() == 4 else 0


def _backward_images(tensor: torch.Tensor, *args: Any, **kwargs: Any) -> int:
    return 0  # Tensor.backward has no input tensor to read a batch from; counted as calls only


def model_cost_per_image(model: torch.nn.Module, shape: tuple[int, ...], device: torch.device,
                         batch: int = 200, repeats: int = 5) -> tuple[float, float]:
    """Seconds per image of the model's forward pass and of forward + backward to the input."""
    x = torch.rand(batch, *shape, device=device)

    def forward() -> None:
        with torch.no_grad():
            model(x)

    def forward_backward() -> None:
        xr = x.clone().requires_grad_(True)
        torch.autograd.grad(model(xr).sum(), xr)

    def timed(fn: Callable[[], None]) -> float:
        fn()
        times = []
        for _ in range(repeats):
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            started = time.perf_counter()
            fn()
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            times.append(time.perf_counter() - started)
        return sorted(times)[len(times) // 2] / batch

    for p in model.parameters():
        p.requires_grad_(False)
    fwd = timed(forward)
    return fwd, timed(forward_backward) - fwd


@dataclass
class StageClock:
    """Seconds per stage family, each stage's own (a stage computed inside another is taken out of the outer's):
    the ledger's stage block (``PassLedger.stage``) timed while installed (on CUDA, synchronized at both ends), so
    stages kept in the model cache and work done jointly for several stages (the gate's, under ``(joint work)``)
    count too. The finished run's own ledger splits the joint work among its stages (``wall_seconds``)."""

    device: torch.device
    seconds: dict[str, float] = field(default_factory=dict)
    #: where the seconds so far are written every few seconds, so that a run cut short still says where time went
    partial: Path | None = None
    _inner: list[float] = field(default_factory=list)
    _written: float = 0.0

    def _write_partial(self) -> None:
        if self.partial is not None and time.perf_counter() - self._written > 5.0:
            self._written = time.perf_counter()
            ranked = dict(sorted(self.seconds.items(), key=lambda kv: -kv[1]))
            self.partial.write_text(json.dumps({name: round(v, 2) for name, v in ranked.items()}, indent=1) + "\n")

    @contextmanager
    def installed(self) -> Iterator[StageClock]:
        from advspatial.passes import PassLedger, stage_family

        stage = PassLedger.stage

        @contextmanager
        def timed(ledger: PassLedger, name: str) -> Iterator[Any]:
            if self.device.type == "cuda":
                torch.cuda.synchronize(self.device)
            started = time.perf_counter()
            self._inner.append(0.0)
            try:
                with stage(ledger, name) as count:
                    yield count
            finally:
                if self.device.type == "cuda":
                    torch.cuda.synchronize(self.device)
                spent = time.perf_counter() - started
                own = spent - self._inner.pop()
                if self._inner:
                    self._inner[-1] += spent
                family = stage_family(name) or "(joint work)"  # PassLedger.apart: work shared by several stages
                self.seconds[family] = self.seconds.get(family, 0.0) + own
                self._write_partial()

        PassLedger.stage = timed  # type: ignore[method-assign,assignment]
        try:
            yield self
        finally:
            PassLedger.stage = stage  # type: ignore[method-assign]


#: the settings this benchmark runs: (dataset folder under ADVSPATIAL_DATA, model, preset, image shape, class map);
#: ``default`` is the README's default run (Fashion-MNIST and its small CNN, trained and cached on first use)
SETTINGS = {
    "cifar10-resnet20": ("cifar10-test-jpeg", "cifar10-resnet20", "cifar10", (3, 32, 32), None),
    "imagenet-lite0": ("imagenette-val", "imagenet-efficientnet-lite0", "imagenet", (3, 224, 224), "class_map.tsv"),
    "default": (None, "smallcnn", None, (1, 28, 28), None),
}


def run_spatial(setting: str, n: int, device: str, out: Path, extra: list[str]) -> None:
    from advspatial.cli import main as cli_main

    folder, model, preset, _, class_map = SETTINGS[setting]
    args = ["run", "spatial", "--n", str(n), "--device", device, "--out", str(out), "--no-progress", *extra]
    if folder:
        args += ["--dataset", f"imagefolder:{SHARED / folder}", "--model", model, "--preset", str(preset)]
    if class_map:
        args += ["--class-map", str(SHARED / folder / class_map)]
    try:
        cli_main(args)
    except SystemExit as exc:
        if exc.code:
            raise


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--setting", choices=sorted(SETTINGS), default="cifar10-resnet20")
    parser.add_argument("--n", type=int, default=200)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    parser.add_argument("--extra", default="", help="more `advspatial run spatial` options, space-separated")
    parser.add_argument("--output", type=Path, default=RESULTS)
    parser.add_argument("--keep", type=Path, default=None, help="write the run here and keep it (default: a temporary "
                                                                  "directory, removed)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    folder, model_name, _, shape, _ = SETTINGS[args.setting]
    if folder and not (SHARED / folder).is_dir():
        raise SystemExit(f"needs {folder} under {SHARED} (set ADVSPATIAL_DATA)")
    from advspatial.models import build_model, load_model
    from advspatial.runtime import pick_device

    device = pick_device(args.device)
    partial = args.output.with_name(args.output.stem + "-partial.json")  # the stages' seconds as the run goes
    clock, stages = ModelClock(device, image_shape=shape), StageClock(device, partial=partial)
    with tempfile.TemporaryDirectory() as tmp, clock.installed(), stages.installed():
        out = args.keep or Path(tmp) / "run"
        started = time.perf_counter()
        run_spatial(args.setting, args.n, str(device), out, args.extra.split())
        wall = time.perf_counter() - started
        passes = json.loads((out / "metrics.json").read_text())["model_passes"]
    model = (load_model(model_name) if folder else build_model(model_name)).to(device).eval()
    fwd, bwd = model_cost_per_image(model, shape, device, batch=200 if shape[-1] <= 64 else 32)
    floor = clock.forward.images * fwd + clock.backward.images * bwd
    attack_floor = clock.attack.images * fwd + clock.attack_backward_images * bwd
    inside = clock.forward.seconds + clock.backward.seconds
    row = {"device": torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu ({platform.processor()})",
           "threads": torch.get_num_threads(), "n": args.n, "extra": args.extra, "wall_s": round(wall, 1),
           "s_per_image": round(wall / args.n, 3), "forward_s": round(clock.forward.seconds, 1),
           "backward_s": round(clock.backward.seconds, 1), "share_in_model": round(inside / wall, 3),
           "any_module_forward_s": round(clock.any_module_seconds, 1),
           "share_any_module": round((clock.any_module_seconds + clock.backward.seconds) / wall, 3),
           "forward_images": clock.forward.images, "backward_images": clock.backward.images,
           "forward_calls": clock.forward.calls, "backward_calls": clock.backward.calls,
           "model_forward_us_per_image": round(fwd * 1e6, 1), "model_backward_us_per_image": round(bwd * 1e6, 1),
           "floor_s": round(floor, 1), "wall_over_floor": round(wall / floor, 2) if floor else None,
           "attack_s": round(clock.attack.seconds, 1), "attack_forward_images": clock.attack.images,
           "attack_backward_images": clock.attack_backward_images, "attack_floor_s": round(attack_floor, 1),
           "attack_floor_s_per_image": round(attack_floor / args.n, 3),
           "peak_rss_gb": round(peak_rss_gb(), 2),
           "peak_cuda_gb": round(torch.cuda.max_memory_allocated(device) / 2**30, 2) if device.type == "cuda" else None,
           "passes": {k: v for k, v in passes.items() if k != "stages"},
           "stages": {name: {"seconds": round(stages.seconds.get(name, 0.0), 2), **count}
                      for name, count in sorted(passes["stages"].items(),
                                                key=lambda kv: -stages.seconds.get(kv[0], 0.0))},
           "stage_seconds_total": round(sum(stages.seconds.values()), 1),
           "joint_work_s": round(stages.seconds.get("(joint work)", 0.0), 1),
           "load_average": os.getloadavg(), "torch": torch.__version__, "time": time.strftime("%Y-%m-%d %H:%M")}
    print(json.dumps(row, indent=1))
    results = json.loads(args.output.read_text()) if args.output.is_file() else {"runs": {}}
    setting = "" if args.setting == "cifar10-resnet20" else f"{args.setting}-"
    results["runs"][f"{setting}{device.type}-n{args.n}"] = row
    args.output.write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()
