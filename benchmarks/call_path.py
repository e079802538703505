"""How a run's call path moves between the package's modules: a measure of how deep its entry points are (a run
that calls one module's entry point and lets it do its work crosses few module boundaries and rarely comes back to
a module it has left; a run driven step by step from outside goes back and forth).

    python benchmarks/call_path.py spatial --out results.json              # the code this script imports
    python benchmarks/call_path.py pse --src ../other/src --out results.json
    python benchmarks/call_path.py study --src /path/to/checkout/src --out results.json

Definition. Every Python function call whose code lives in a file of the measured ``advspatial`` package is
traced (``sys.setprofile``, 'call' and 'return' events; C functions and code outside the package are ignored, so
torch's own Python code is transparent) from the start of ``advspatial.cli.main(argv)`` to its end. Imports are
not the call path: those at start-up happen before tracing starts, and a module of the package imported during
the run (a lazy import) has its body, and everything that body calls, left out. Each call is mapped to the module
of its file (``advspatial/defence/adaptive.py`` -> ``defence.adaptive``: module names are given without the
leading ``advspatial.``; a package's ``__init__.py`` is the package). A call's caller module is the module of the
innermost traced frame beneath it, so a model's ``forward`` reached through ``nn.Module.__call__`` is called by
the module that called the model. A generator or coroutine of the package calls on each resume and returns on
each yield. Reported per run:

(a) modules entered: the distinct modules with at least one function call;
(b) cross-module calls: the calls whose caller module differs from the callee's module (the first call, from
    outside the package, has no caller and is not one);
(c) module pairs crossed: the distinct ordered pairs caller module -> callee module among the cross-module calls;
(d) returns to a module already left: the control flow as a sequence of 'current module' states (the module of
    the traced frame executing after each call and each return), consecutive repeats collapsed; each time the
    current module becomes one it was in before (and so had left), one return is counted for the unordered pair
    {module left, module re-entered}: A -> B -> A counts once (A <-> B) at the return to A, and a call from B
    back into A counts as well. The total and the 10 most frequent pairs are reported;
(e) back-and-forth module pairs: the unordered pairs {A, B} where a function of A calls one of B and a function of
    B calls one of A, each with its number of distinct function-to-function call edges between them (both
    directions): how wide the interface a run drives between two modules is, whatever the number of images
    (``defence.adaptive <-> defence.convergence: 9`` = nine distinct caller/callee function pairs cross between
    them); the total over all such pairs, and the 10 widest.

Everything is counted on the fly (a stack of the traced frames' modules, the set of modules seen, counters per
module and per pair), so memory does not grow with the run. Only the main thread is traced. Tracing adds a Python
callback to every call and return (C calls included; the model's operators themselves are not slowed), so measure
on ``--quick`` presets and small n. The counts do not depend on the machine's speed (two traced runs of the same
code give the same counts); the wall time, the traced run's, does, and is noise on a loaded machine.

The ``spatial-defaults`` run is ``advspatial run spatial`` at its default settings on :data:`DEFAULTS_IMAGES`
images: ``--quick`` leaves out parts of the defence's evaluation (curves, baselines) whose call path matters.
The ``study`` run is the smallest CLI study that runs offline: ``advspatial study --quick`` (24 images per model)
on two Fashion-MNIST SmallCNNs, the default one (cached, as for ``advspatial run``) and a second one given by its
weights, the briefly PGD-trained SmallCNN of ``advspatial run localized-training --quick`` (1 epoch on 512
images; taken from the model cache, or trained there in about a second before tracing starts).

``--out FILE`` holds one entry per run name (a run replaces its own entry); after the run a table of every entry
in the file is printed. Run each measurement in a fresh process: caches filled by one run (datasets, models)
would shorten the next. Not a test.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from types import CodeType, FrameType
from typing import Any

PACKAGE = "advspatial"
#: the module name given to a module's body (its code run on import): it and what it calls are not counted
IMPORT = "<import>"
RUNS = ("spatial", "pse", "study", "spatial-defaults")
#: images of the ``spatial-defaults`` run: the experiment at its default settings (every defence component, its
#: convergence curves and baselines at full strength), on few images so that tracing stays affordable
DEFAULTS_IMAGES = 16
TOP = 10


class ModuleNames:
    """The module of a code object whose file lies in the package directory, without the package's name
    (``defence.adaptive``; :data:`IMPORT` for a module's body), or None; cached per code object."""

    def __init__(self, package_dir: Path | str, package: str = PACKAGE) -> None:
        self.prefix = os.path.join(str(package_dir), "")
        self.package = package
        self.cache: dict[CodeType, str | None] = {}

    def __call__(self, code: CodeType) -> str | None:
        try:
            return self.cache[code]
        except KeyError:
            name = self.module_of_file(code.co_filename)
            if name is not None and code.co_name == "<module>":
                name = IMPORT
            self.cache[code] = name
            return name

    def module_of_file(self, filename: str) -> str | None:
        if not (filename.startswith(self.prefix) and filename.endswith(".py")):
            return None
        parts = filename[len(self.prefix):-3].split(os.sep)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        return ".".join(parts) or self.package


def pair(a: str, b: str) -> str:
    """An unordered module pair, written in name order."""
    first, second = sorted((a, b))
    return f"{first} <-> {second}"


class CallPath:
    """The counts of (a)-(d), kept on the fly from a sequence of calls and returns, each with its frame's module
    (:data:`IMPORT` for a module's body: from its call to its return nothing is counted)."""

    def __init__(self) -> None:
        self.stack: list[str] = []  # the module of each traced frame now executing, innermost last
        self.current: str | None = None
        self.seen: set[str] = set()
        self.calls: Counter[str] = Counter()  # calls per callee module
        self.crossed: Counter[tuple[str, str]] = Counter()  # cross-module calls per (caller, callee)
        self.returns: Counter[str] = Counter()  # returns to a module already left, per unordered pair
        self.importing = 0  # module bodies now executing
        self.unmatched_returns = 0
        self.functions: list[str] = []  # the function of each traced frame, beside ``stack``
        self.edges: set[tuple[str, str, str, str]] = set()  # distinct (caller module, function, callee module, ...)

    def call(self, module: str, function: str = "") -> None:
        if module == IMPORT or self.importing:
            self.importing += module == IMPORT
            return
        caller = self.stack[-1] if self.stack else None
        if caller is not None and caller != module:
            self.crossed[(caller, module)] += 1
            self.edges.add((caller, self.functions[-1], module, function))
        self.stack.append(module)
        self.functions.append(function)
        self.calls[module] += 1
        self.enter(module)

    def ret(self, module: str) -> None:
        if module == IMPORT or self.importing:
            self.importing -= module == IMPORT
            return
        if not self.stack:
            self.unmatched_returns += 1
            return
        self.stack.pop()
        self.functions.pop()
        if self.stack:
            self.enter(self.stack[-1])

    def enter(self, module: str) -> None:
        """The current module is now ``module``: a return to a module already left if it was current before."""
        if module == self.current:
            return
        if self.current is not None and module in self.seen:
            self.returns[pair(self.current, module)] += 1
        self.seen.add(module)
        self.current = module

    def back_and_forth(self) -> Counter[str]:
        """(e): per unordered module pair called both ways, its distinct function-to-function call edges."""
        directions = {(a, b) for a, _, b, _ in self.edges}
        widths: Counter[str] = Counter()
        for a, _, b, _ in self.edges:
            if (b, a) in directions:
                widths[pair(a, b)] += 1
        return widths

    def report(self, top: int = TOP) -> dict[str, Any]:
        widths = self.back_and_forth()
        return {
            "calls": sum(self.calls.values()),
            "modules_entered": len(self.calls),
            "cross_module_calls": sum(self.crossed.values()),
            "module_pairs_crossed": len(self.crossed),
            "returns_to_a_module_left": sum(self.returns.values()),
            "top_return_pairs": dict(sorted(self.returns.items(), key=lambda kv: (-kv[1], kv[0]))[:top]),
            "cross_module_function_edges": len(self.edges),
            "back_and_forth_pairs": len(widths),
            "back_and_forth_edges": sum(widths.values()),
            "top_back_and_forth": dict(sorted(widths.items(), key=lambda kv: (-kv[1], kv[0]))[:top]),
            "back_and_forth": dict(sorted(widths.items())),
            "crossings": {f"{a} -> {b}": n for (a, b), n in sorted(self.crossed.items())},
            "top_crossings": {f"{a} -> {b}": n for (a, b), n in
                              sorted(self.crossed.items(), key=lambda kv: (-kv[1], kv[0]))[:top]},
            "calls_per_module": dict(sorted(self.calls.items(), key=lambda kv: (-kv[1], kv[0]))),
            "frames_open_at_end": len(self.stack),
            "unmatched_returns": self.unmatched_returns,
        }


def traced(run: Callable[[], Any], names: ModuleNames) -> tuple[CallPath, float, Any]:
    """Run ``run()`` with every call and return of the package's code counted; the counts, wall seconds, result."""
    path = CallPath()
    call, ret = path.call, path.ret

    def profile(frame: FrameType, event: str, arg: Any) -> None:
        if event == "call":
            module = names(frame.f_code)
            if module is not None:
                call(module, frame.f_code.co_qualname)
        elif event == "return":
            module = names(frame.f_code)
            if module is not None:
                ret(module)

    previous = sys.getprofile()
    start = time.perf_counter()
    sys.setprofile(profile)
    try:
        result = run()
    finally:
        sys.setprofile(previous)
    return path, time.perf_counter() - start, result


def import_package(src: str | None) -> Any:
    """``advspatial`` imported from ``src`` (prepended to sys.path; asserted), else from wherever Python finds it."""
    if src is not None:
        sys.path.insert(0, os.path.abspath(src))
    import advspatial
    import advspatial.cli

    where = Path(advspatial.__file__).parent
    if src is not None:
        assert where.is_relative_to(os.path.abspath(src)), f"advspatial imported from {where}, not under {src}"
    return advspatial


def study_argv(folder: Path) -> tuple[list[str], dict[str, Any]]:
    """The ``study`` run's arguments (a YAML list of the two models in ``folder``) and how its second model was got."""
    from advspatial.model_cache import get_or_train, load_cached
    from advspatial.training import TrainConfig

    # the PGD-trained model of ``advspatial run localized-training --quick``
    config = TrainConfig(mode="pgd", epochs=1, train_limit=512, attack_steps=2)
    cached = load_cached(config) is not None
    start = time.perf_counter()
    trained = get_or_train(config, "cpu", progress=False)
    seconds = time.perf_counter() - start
    assert trained.path is not None
    models = folder / "study.yaml"
    models.write_text("models:\n  - smallcnn\n"
                      f"  - {{model: smallcnn, label: smallcnn-pgd, weights: {json.dumps(str(trained.path))}}}\n")
    info = {"second_model": trained.path.name, "second_model_cached": cached,
            "second_model_seconds": round(seconds, 2), "second_model_test_accuracy": trained.metadata.get(
                "test_accuracy")}
    return ["study", "--config", str(models), "--quick", "--out", str(folder / "out"), "--no-progress"], info


def cli_run(argv: list[str]) -> Callable[[], Any]:
    """``advspatial.cli.main(argv)``, which may end by SystemExit; anything but success is an error."""
    from advspatial.cli import main

    def run() -> None:
        try:
            main(argv)
        except SystemExit as exc:
            if exc.code not in (0, None):
                raise RuntimeError(f"advspatial {' '.join(argv)} exited with {exc.code}") from exc
    return run


def source_commit(package_dir: Path) -> str:
    """The commit of the measured tree (with ``+changes`` if it differs from it), or '' outside a git checkout."""
    def git(*args: str) -> str:
        done = subprocess.run(["git", "-C", str(package_dir), *args], capture_output=True, text=True, check=False)
        return done.stdout.strip() if done.returncode == 0 else ""
    commit = git("rev-parse", "--short", "HEAD")
    return commit + ("+changes" if commit and git("status", "--porcelain", "--", ".") else "")


def measure(name: str, src: str | None) -> dict[str, Any]:
    advspatial = import_package(src)
    package_dir = Path(advspatial.__file__).parent
    with tempfile.TemporaryDirectory(prefix="call-path-") as tmp:
        extra: dict[str, Any] = {}
        if name == "study":
            argv, extra = study_argv(Path(tmp))
        elif name == "spatial-defaults":
            argv = ["run", "spatial", "--n", str(DEFAULTS_IMAGES), "--out", str(Path(tmp) / "run"), "--no-progress"]
        else:
            argv = ["run", name, "--quick", "--out", str(Path(tmp) / "run"), "--no-progress"]
        path, seconds, _ = traced(cli_run(argv), ModuleNames(package_dir))
    shown = [a if not a.startswith(tmp) else "TMP" + a[len(tmp):] for a in argv]
    return {"argv": shown, **path.report(), "wall_seconds": round(seconds, 1), **extra,
            "package": str(package_dir), "commit": source_commit(package_dir),
            "date": datetime.date.today().isoformat(), "load_average": [round(x, 2) for x in os.getloadavg()],
            "threads": os.environ.get("OMP_NUM_THREADS", ""), "python": platform.python_version()}


def table(results: dict[str, dict[str, Any]]) -> str:
    """The runs of a results file, a line each, and each run's top pairs."""
    lines = [f"{'run':8} {'modules':>7} {'calls':>10} {'cross':>9} {'pairs':>6} {'returns':>8} {'wall s':>7}"]
    for name, r in results.items():
        lines.append(f"{name:8} {r['modules_entered']:7d} {r['calls']:10,d} {r['cross_module_calls']:9,d} "
                     f"{r['module_pairs_crossed']:6d} {r['returns_to_a_module_left']:8,d} {r['wall_seconds']:7.1f}")
    for name, r in results.items():
        lines.append(f"{name}: returns to a module already left, top pairs")
        lines += [f"  {p}: {n:,}" for p, n in r["top_return_pairs"].items()]
        if "back_and_forth_pairs" in r:
            lines.append(f"{name}: {r['back_and_forth_pairs']} module pairs called both ways, "
                         f"{r['back_and_forth_edges']} function edges between them; the widest")
            lines += [f"  {p}: {n}" for p, n in r["top_back_and_forth"].items()]
    return "\n".join(lines)


def main(args: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("run", choices=RUNS)
    parser.add_argument("--out", type=Path, required=True, help="JSON file of results (one entry per run)")
    parser.add_argument("--src", default=None, help="source tree to measure (the directory holding advspatial/)")
    options = parser.parse_args(args)
    result = measure(options.run, options.src)
    results: dict[str, Any] = json.loads(options.out.read_text()) if options.out.is_file() else {}
    results[options.run] = result
    options.out.parent.mkdir(parents=True, exist_ok=True)
    options.out.write_text(json.dumps(results, indent=1) + "\n")
    print(table(results))


if __name__ == "__main__":
    main()
