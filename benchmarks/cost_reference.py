"""Write the forecast's reference work (``src/advspatial/experiments/cost_references.py``) from finished runs.

A run states its cost before it starts (:mod:`advspatial.experiments.forecast`) from the work of reference runs:
per stage group, forward and backward images and calls at each reference run's n, followed between them. This reads
them from two or more finished runs of one experiment on the default model at its default settings (each run's
ledger, ``metrics.json``'s ``model_passes``), and measures on the largest the framework's CPU per call outside the
model and the time outside the stages (the run's CPU time, ``metrics.json``'s ``cpu_seconds``, less its stages';
one torch thread). Put a run on each side of a setting that caps work (``calibration_n``, ``randomization_images``)
so that the forecast bends where the work does; a stage the experiment says a setting caps (its ``sized_by``:
``spatial``'s ``adaptive_n``) is kept per image of that cap and per batch of them, which the forecast prices at the
run's own cap and batch; the settings whose product an attack stage's work follows (its ``steps_by``) are recorded as
the runs had them, the same in each. Run each experiment at those n first, e.g.::

    OMP_NUM_THREADS=1 advspatial run spatial --n 100 --out /tmp/ref/spatial-100
    OMP_NUM_THREADS=1 advspatial run spatial --n 500 --out /tmp/ref/spatial-500
    python benchmarks/cost_reference.py spatial=/tmp/ref/spatial-100,/tmp/ref/spatial-500 maps=...,...

and commit the written module with the date and commit of the runs (``--source``). Only the data below the module's
marker line is written; its head (docstring, ``StageWork``) is kept as it is, and so is the data of every experiment
not measured again (its reference runs are named in ``RUNS``). Not a test.
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path
from typing import Any

import yaml

from advspatial.experiments.measurement.onepixel_cost import ONEPIXEL_STAGES
from advspatial.experiments.propagation.cost import SEARCH_STAGES
from advspatial.experiments.pse.cost import PAIR_STAGES
from advspatial.experiments.registry import experiments
from advspatial.experiments.stage_work import iteration_count, sized_group, sized_images, sized_setting, unsized
from advspatial.passes import PassCount

TARGET = Path(__file__).resolve().parents[1] / "src" / "advspatial" / "experiments" / "cost_references.py"
FIELDS = ("forward", "backward", "calls", "backward_calls")
#: how the module's marker line starts (its full text is the module's ``GENERATED_BELOW``)
MARKER_START = "# ---- written by benchmarks/cost_reference.py"

#: per experiment, the stage groups (or the first parts of their names) whose CPU outside the model is work its
#: forecast prices apart (the experiment's ``priced_apart``: ``pse``'s pixel-group pairs, the one-pixel attack's
#: search of ``spatial``, ``maps`` and ``propagation``, both evaluated incrementally on a CPU)
PRICED_APART = {"pse": PAIR_STAGES, "spatial": ONEPIXEL_STAGES, "maps": ONEPIXEL_STAGES,
                "propagation": SEARCH_STAGES}

#: one experiment's reference: per stage group its counts per run (n, forward, backward, calls, backward calls),
#: the non-model CPU per call, the seconds outside the stages per run (n, seconds)
Fit = tuple[dict[str, list[tuple[float, ...]]], float, list[tuple[float, float]]]


def ledger(run: Path) -> tuple[dict[str, Any], int, float | None]:
    """(model_passes, n, the run's CPU seconds or None when not recorded) of a finished run."""
    metrics = json.loads((run / "metrics.json").read_text())
    passes = metrics["model_passes"]
    cpu = metrics.get("cpu_seconds")
    return passes, int(passes["images"]), None if cpu is None else float(cpu)


def settings(run: Path) -> dict[str, Any]:
    """The resolved settings of a finished run (its ``config.yaml``)."""
    return dict(yaml.safe_load((run / "config.yaml").read_text()))


def step_settings(name: str, runs: list[Path], steps_by: dict[str, tuple[str, ...]]) -> dict[str, int]:
    """The values the reference runs had of the settings whose product an attack stage's work follows (the
    experiment's ``steps_by``), which the forecast scales a run's iterations against; a SystemExit when the runs
    differ in one (their work could not be followed between them)."""
    values = {}
    for setting in sorted({s for names in steps_by.values() for s in names}):
        seen = {int(iteration_count(setting, settings(run).__getitem__)) for run in runs}
        if len(seen) != 1:
            raise SystemExit(f"{name}: the reference runs differ in {setting} ({sorted(seen)}); run them alike")
        values[setting] = seen.pop()
    return values


def explainers(run: Path) -> tuple[str, tuple[str, ...]] | None:
    """(the RoI's explainer, the explainer panel) of a finished run: whose gates its stage groups are; None for an
    experiment without an explainer panel (its gates are its RoI's, priced as they are)."""
    config = yaml.safe_load((run / "config.yaml").read_text())
    if "panel" not in config:
        return None
    metrics = json.loads((run / "metrics.json").read_text())
    return str(metrics["roi"]["method"]), tuple(str(name) for name in config["panel"])


#: a stage key's part that is a setting's value found by the run (``eps-0.0375``: a calibration's bisection point),
#: which differs between two runs of the same experiment
VALUE_PART = re.compile(r"^[a-z_]+-\d")


def group_of(stage: str) -> str:
    """A stage's group: the first two parts of its key (``gate/budget/0.03`` -> ``gate/budget``), without a part
    that is a value the run found (``calibration/eps-0.0375`` -> ``calibration``)."""
    parts = stage.split("/")[:2]
    return "/".join(parts[:1] if len(parts) > 1 and VALUE_PART.match(parts[1]) else parts)


def groups(passes: dict[str, Any], sized_by: dict[str, str] | None = None) -> dict[str, PassCount]:
    """Per stage group (:func:`group_of`), the summed counts; a stage whose images a setting caps (``sized_by``: the
    experiment's patterns) in a group of its own, named with that setting (``attack/pgd~ensemble_n``)."""
    out: dict[str, PassCount] = {}
    for stage, count in passes["stages"].items():
        group = group_of(stage)
        setting = next((name for pattern, name in (sized_by or {}).items() if re.search(pattern, stage)), None)
        out.setdefault(group if setting is None else sized_group(group, setting), PassCount()).add(
            PassCount.from_dict(count))
    return out


def counts(group: str, count: PassCount, n: int, run_settings: dict[str, Any]) -> tuple[float, ...]:
    """A group's counts as the reference keeps them: the run's; for a group whose images a setting caps, its images
    per image of ``min(n, setting)`` and its calls per batch of them (the run's ``batch_size``)."""
    forward, backward, calls, backward_calls = (getattr(count, key) for key in FIELDS)
    setting = sized_setting(group)
    if setting is None:
        return forward, backward, calls, backward_calls
    # a cap of None: every image
    images, batches = sized_images(n, run_settings[setting], run_settings["batch_size"])
    return forward / images, backward / images, calls / batches, backward_calls / batches


def fit(runs: list[Path], run_cpu: float | None = None, apart: tuple[str, ...] = (),
        sized_by: dict[str, str] | None = None) -> Fit:
    """Per stage group its counts in each run (ascending n; 0 where a run has no such stage; per image where a
    setting caps the group's images, ``sized_by``: :func:`counts`), the non-model CPU per call of the largest run
    (without the stage groups in ``apart``, :func:`priced_apart`: their CPU outside the model is work the forecast
    prices apart, :data:`PRICED_APART`), and the seconds outside the stages of each run that records its CPU seconds
    (its CPU seconds less its stages'; ``run_cpu``: the largest run's, for one that records none)."""
    ledgers = sorted((ledger(run) + (run,) for run in runs), key=lambda item: item[1])
    if len(ledgers) < 2 or len({n for _, n, _, _ in ledgers}) < len(ledgers):
        raise SystemExit(f"give two or more runs of different n (got n = {[n for _, n, _, _ in ledgers]})")
    passes, _, cpu, largest = ledgers[-1]
    run_cpu = run_cpu if run_cpu is not None else cpu
    if run_cpu is None:
        raise SystemExit(f"{largest / 'metrics.json'} records no cpu_seconds: give the run's CPU time with --run-cpu")
    sized_by = sized_by or {}
    counted = [(n, groups(p, sized_by), settings(run)) for p, n, _, run in ledgers]
    names = sorted({name for _, g, _ in counted for name in g})
    fitted = {name: [(n, *counts(name, g.get(name, PassCount()), n, s)) for n, g, s in counted]
              for name in names}
    total = PassCount.from_dict(passes)
    if apart:
        total = PassCount()
        for name, count in counted[-1][1].items():  # the largest run's groups
            if not priced_apart(name, apart):
                total.add(count)
    non_model = total.non_model_seconds_per_call()
    if non_model is None:
        raise SystemExit(f"{largest / 'metrics.json'} records no calls or CPU seconds: its ledger cannot price a call")
    cpus = [(p, n, run_cpu if run is largest else cpu) for p, n, cpu, run in ledgers]
    outside = [(float(n), round(max(0.0, cpu - PassCount.from_dict(p).cpu_seconds), 1))
               for p, n, cpu in cpus if cpu is not None]
    return fitted, non_model, outside


def priced_apart(group: str, apart: tuple[str, ...]) -> bool:
    """Whether stage group ``group`` (a sized one by the group it sizes) is one of ``apart`` or inside one."""
    name = unsized(group)
    return any(name == part or name.startswith(part + "/") for part in apart)


def module_text(head: str, fits: dict[str, Fit], roles: dict[str, tuple[str, tuple[str, ...]]],
                runs: dict[str, str], steps: dict[str, dict[str, int]]) -> str:
    """The module: its hand-written ``head`` (everything up to and including the marker line), then the data
    (``roles``: the reference runs' RoI explainer and panel of each experiment that has a panel; ``runs``: per
    experiment, what its reference runs were; ``steps``: per experiment with a ``steps_by``, its settings' values
    in those runs)."""
    lines = [head.rstrip("\n"), "#: per experiment, its reference runs (date, commit and n)",
             "RUNS: dict[str, str] = {"]
    lines.extend(f"    {json.dumps(name)}: {json.dumps(runs[name])}," for name in fits)
    lines.append("}")
    lines.append("#: per experiment with an explainer panel, its reference runs' RoI explainer and panel (whose gates "
                 "REFERENCES holds)")
    lines.append("REFERENCE_ROI: dict[str, str] = {" + ", ".join(
        f'"{name}": "{roles[name][0]}"' for name in fits if name in roles) + "}")
    lines.append("REFERENCE_PANEL: dict[str, tuple[str, ...]] = {")
    lines.extend(f'    "{name}": {python_tuple(roles[name][1])},' for name in fits if name in roles)
    lines.append("}")
    lines.append("#: per experiment whose forecast follows an attack's iterations (its steps_by), those settings' "
                 "values in its")
    lines.append("#: reference runs")
    lines.extend(mapping("REFERENCE_STEPS: dict[str, dict[str, int]]", {
        name: "{" + ", ".join(f"{json.dumps(k)}: {v}" for k, v in steps[name].items()) + "}"
        for name in fits if steps.get(name)}))
    lines.append("#: per experiment, the framework's CPU seconds per classifier call outside the model (the reference "
                 "runs, one thread)")
    lines.extend(mapping("NON_MODEL_SECONDS_PER_CALL: dict[str, float]", {n: f"{f[1]:.5f}" for n, f in fits.items()}))
    lines.append("#: per experiment, the seconds outside every stage (loading, statistics, figures, report) in each "
                 "reference")
    lines.append("#: run: (n, seconds)")
    lines.extend(mapping("OUTSIDE_STAGES_SECONDS: dict[str, tuple[tuple[float, float], ...]]", {
        name: "(" + " ".join(f"({number(n)}, {seconds:.1f})," for n, seconds in f[2]) + ")"
        for name, f in fits.items()}))
    lines.append("#: per experiment, per stage group, its counts in each reference run: (n, forward images, "
                 "backward images,")
    lines.append("#: calls, backward calls)")
    lines.append("REFERENCES: dict[str, dict[str, StageWork]] = {")
    for name, (fitted, _, _) in fits.items():
        lines.append(f'    "{name}": {{')
        for group, points in fitted.items():
            lines.extend(stage_work(group, points))
        lines.append("    },")
    lines.append("}")
    return "\n".join(lines) + "\n"


def stage_work(group: str, points: list[tuple[float, ...]]) -> list[str]:
    """One stage group's line (or lines: its runs packed into lines of at most 120 characters)."""
    written = [f"({', '.join(number(value) for value in point)})," for point in points]
    one_line = f'        "{group}": StageWork(({" ".join(written)})),'
    if len(one_line) <= 120:
        return [one_line]
    lines, line = [f'        "{group}": StageWork(('], "           "
    for point in written:
        if len(line) + 1 + len(point) > 120:
            lines.append(line)
            line = "           "
        line += " " + point
    return [*lines, line, "        )),"]


def number(value: float) -> str:
    """A count as written: an integer without a decimal point, else to four decimals (a count per image of a
    sized group can be a small fraction)."""
    return str(int(value)) if float(value).is_integer() else str(round(float(value), 4))


def mapping(target: str, values: dict[str, str]) -> list[str]:
    """``target = {"name": value, ...}`` on one line, or one entry per line when that is longer than 120."""
    line = f"{target} = {{" + ", ".join(f"{json.dumps(name)}: {value}" for name, value in values.items()) + "}"
    if len(line) <= 120:
        return [line]
    return [f"{target} = {{", *(f"    {json.dumps(name)}: {value}," for name, value in values.items()), "}"]


def kept_data() -> tuple[dict[str, Fit], dict[str, tuple[str, tuple[str, ...]]], dict[str, str],
                         dict[str, dict[str, int]]]:
    """The module's data as it is (fits, roles, runs, steps): what a new fit of other experiments keeps."""
    from advspatial.experiments import cost_references as module

    fits: dict[str, Fit] = {
        name: ({group: [tuple(point) for point in work.points] for group, work in groups.items()},
               module.NON_MODEL_SECONDS_PER_CALL[name],
               [(float(n), float(seconds)) for n, seconds in module.OUTSIDE_STAGES_SECONDS[name]])
        for name, groups in module.REFERENCES.items()}
    roles = {name: (module.REFERENCE_ROI[name], module.REFERENCE_PANEL[name]) for name in module.REFERENCE_ROI}
    steps = {name: dict(values) for name, values in getattr(module, "REFERENCE_STEPS", {}).items()}
    return fits, roles, dict(module.RUNS), steps


def python_tuple(names: tuple[str, ...]) -> str:
    """``names`` as a Python tuple literal with double quotes: ``("a", "b")``, ``("a",)``."""
    return "(" + ", ".join(json.dumps(name) for name in names) + ("," if len(names) == 1 else "") + ")"


def kept_head(module: Path) -> str:
    """The hand-written part of ``module`` (its docstring, :class:`StageWork`) through the marker line that
    ``GENERATED_BELOW`` names; a SystemExit when the module has no marker line."""
    lines = module.read_text().splitlines(keepends=True)
    for i, line in enumerate(lines):
        if line.startswith(MARKER_START):
            return "".join(lines[:i + 1])
    raise SystemExit(f"{module} has no line starting {MARKER_START!r}: the generated data has nowhere to go")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("pairs", nargs="+", help="EXPERIMENT=RUN,RUN[,RUN...]: two or more runs of different n")
    parser.add_argument("--run-cpu", action="append", default=[], metavar="EXPERIMENT=SECONDS",
                        help="the largest run's CPU seconds (e.g. from /usr/bin/time) for a run that records none")
    parser.add_argument("--source", default="", help="what the runs were (date, commit), for the module's RUNS")
    parser.add_argument("--output", type=Path, default=TARGET)
    args = parser.parse_args()
    run_cpu = {name: float(seconds) for name, seconds in (item.split("=", 1) for item in args.run_cpu)}
    fits, roles, runs, steps = kept_data()
    for pair in args.pairs:
        name, paths = pair.split("=", 1)
        runs_of = [Path(p) for p in paths.split(",")]
        registered = experiments().get(name)
        sized_by = dict(registered.sized_by) if registered is not None else {}
        fits[name] = fit(runs_of, run_cpu.get(name), PRICED_APART.get(name, ()), sized_by)
        roles.pop(name, None)
        steps[name] = step_settings(name, runs_of, dict(registered.steps_by) if registered is not None else {})
        if (own := explainers(runs_of[-1])) is not None:
            roles[name] = own
        sizes = ", ".join(number(point[0]) for point in next(iter(fits[name][0].values())))  # the runs' n, ascending
        runs[name] = f"{args.source}: n = {sizes}" if args.source else f"n = {sizes}"
    args.output.write_text(module_text(kept_head(args.output), fits, roles, runs, steps))
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
