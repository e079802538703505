"""Running an experiment: its resolved config, its run directory (locked, tied to the settings' fingerprint,
resumed) and the files it writes (metrics.json, per_image.csv, report.html).

A directory that holds results is resumed only with the settings that made them (``run.json``); under
torchrun rank 0 checks and the other processes share its verdict (docs/scale-out.md).
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import sys
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import yaml

from ..data import load_dataset
from ..distributed import agree, environment_world, main_only, world
from ..errors import AdvspatialError, ConfigError, DataError, first_line
from ..files import DirLock, atomic_write_text, check_writable_dir, inner_file, read_json
from ..report.figures import OVERVIEW_FIGURE
from ..report.html import write_report
from ..host_syncs import settle
from ..models.loading import remembered_checksums
from ..rundir import RunDir
from ..runtime import keep_freed_memory
from .findings import Findings
from .registry import Experiment, get_experiment
from ..report.answer import answer_lines
from ..report.planning import PLAN_ANCHOR
from .results import ExperimentResult, findings_checksum, metrics_to_json, printed, rows_to_csv, with_plan
from .settings import (ExperimentConfig, check_settings, config_dict, config_from_mapping, load_yaml,
                       reported_settings)
from .smoke import banner, mark_result, unmark_tree
from .stage import STAGE_FORMAT

#: settings that do not change any result: left out of a run's fingerprint (a run resumes from a moved
#: or copied directory, with or without progress bars)
UNFINGERPRINTED = ("out", "progress", "reuse_model_work")


def fingerprint(config: ExperimentConfig) -> dict[str, Any]:
    """The settings a run's stages depend on: the resolved config without :data:`UNFINGERPRINTED`.

    ``smoke_test`` enters only when set: a run made before it existed, or any other run, keeps its fingerprint,
    and a smoke test is resumed only as a smoke test (its config.yaml has it; anything else is refused).
    """
    return {k: v for k, v in config_dict(config).items()
            if k not in UNFINGERPRINTED and not (k == "smoke_test" and not v)}


def _differences(saved: Mapping[str, Any], current: Mapping[str, Any]) -> str:
    keys = [k for k in dict.fromkeys([*saved, *current]) if saved.get(k) != current.get(k)]
    shown = ", ".join(f"{k}: {saved.get(k)!r} -> {current.get(k)!r}" for k in keys[:4])
    return shown + (f" and {len(keys) - 4} more" if len(keys) > 4 else "")


@contextlib.contextmanager
def open_run(out: Path, kind: str, config: ExperimentConfig, resume: bool, reuse_same: bool = False,
             write_config: bool = True) -> Iterator[RunDir]:
    """The run directory ``out`` of a run of ``kind`` with ``config``, locked for this run.

    Checked before any work: ``out`` is a writable directory (created if needed)
    and no other process works in it. A directory that holds results is tied to
    the settings that made them (``run.json``: experiment, :func:`fingerprint`,
    model checksum): it is resumed only with the same settings (``resume``, or
    ``reuse_same`` for commands without ``--resume``); anything else is refused
    in one line. A directory whose earlier run failed before producing any
    result is reused in place.

    Under torchrun, rank 0 holds the lock and does the checks; the other
    processes wait for its verdict (an error reaches all of them) and then share
    the directory.
    """
    if not world().is_main:
        agree()
        rundir = RunDir(out)
        _identify(rundir, kind, config)
        yield rundir
        return
    with _checked_run_dir(Path(out), kind, config, resume, reuse_same, write_config) as rundir:
        _identify(rundir, kind, config)
        yield rundir


def _identify(rundir: RunDir, kind: str, config: ExperimentConfig) -> None:
    """The run's settings join the identity its stage files carry (:meth:`RunDir.load_stage` checks it)."""
    text = json.dumps({"experiment": kind, "config": fingerprint(config)}, sort_keys=True, default=str)
    rundir.identity["settings"] = hashlib.sha256(text.encode()).hexdigest()


@contextlib.contextmanager
def _checked_run_dir(out: Path, kind: str, config: ExperimentConfig, resume: bool, reuse_same: bool,
                     write_config: bool) -> Iterator[RunDir]:
    """Rank 0's half of :func:`open_run`: lock, check, record; the verdict is shared by :func:`agree`."""
    lock: DirLock | None = None
    try:
        check_writable_dir(out, "run directory")
        lock = DirLock(out / ".lock", f"{out} is in use by another advspatial process; wait for it to finish or "
                                      "choose another --out").acquire()
        rundir = _check_run_dir(out, kind, config, resume, reuse_same, write_config)
    except Exception as exc:
        if lock is not None:
            lock.release()
        agree(exc)  # raises it here and in every other process
        raise
    agree()
    try:
        yield rundir
    finally:
        lock.release()


def _check_run_dir(out: Path, kind: str, config: ExperimentConfig, resume: bool, reuse_same: bool,
                   write_config: bool) -> RunDir:
    check_not_foreign(out)
    rundir = RunDir(out)
    rundir.remove_stale_temp_files()
    record = rundir.record()
    current: dict[str, Any] = {"experiment": kind, "config": fingerprint(config), "stage_format": STAGE_FORMAT}
    has_results = rundir.has_results()
    if has_results and record and record.get("stage_format", 1) != STAGE_FORMAT:
        raise ConfigError(f"{out} was written by another advspatial version (stage files of format "
                          f"{record.get('stage_format', 1)}; this version reads format {STAGE_FORMAT}); its stages "
                          "cannot be reused: start a new run with another --out")
    if has_results and record:
        same = record.get("experiment") == kind and record.get("config") == current["config"]
        if not same:
            if record.get("experiment") != kind:
                raise ConfigError(f"{out} holds a run of {record.get('experiment')}, not {kind}; choose "
                                  "another --out")
            edited = " (config.yaml was edited after the run started?)" if resume else ""
            raise ConfigError(f"{out} holds results computed with other settings{edited}: "
                              f"{_differences(record.get('config', {}), current['config'])}; choose another --out")
        if not (resume or reuse_same):
            raise ConfigError(f"{out} already holds a run; resume it with --resume {out} or choose another --out")
    elif has_results and not resume:
        raise ConfigError(f"{out} already holds results of another run; choose another --out")
    if not (has_results and record):  # a new run, or one that failed before producing any result
        rundir.write_record(current)
    if write_config:
        atomic_write_text(out / "config.yaml", yaml.safe_dump({"experiment": kind, **config_dict(config)},
                                                              sort_keys=False))
    return rundir


def check_not_foreign(out: Path) -> None:
    """A :class:`ConfigError` when ``out`` holds files but no advspatial run (no ``run.json``, stages or
    ``metrics.json``): the run would replace a user's own ``config.yaml``, ``per_image.csv`` or ``report.html``
    there. Hidden files and the empty ``stages/`` and ``figures/`` of a run that failed at once do not count."""
    if not out.is_dir() or (out / RunDir.RECORD).is_file() or (out / "metrics.json").is_file():
        return
    stages = out / "stages"
    if stages.is_dir() and not stages.is_symlink() and any(stages.rglob("*.pt")):
        return
    foreign = sorted(p.name for p in out.iterdir() if not p.name.startswith(".")
                     and not (p.name in ("stages", "figures") and p.is_dir() and not p.is_symlink()
                              and not any(p.iterdir())))
    if foreign:
        shown = ", ".join(foreign[:3]) + (f" and {len(foreign) - 3} more" if len(foreign) > 3 else "")
        raise ConfigError(f"--out {out} holds files that are not an advspatial run ({shown}); the run would "
                          "overwrite them - choose a new or empty --out")


def run_experiment(name: str, config: ExperimentConfig, resume: bool = False,
                   reuse_same: bool = False) -> tuple[ExperimentResult, RunDir]:
    """Run (or resume) an experiment into its run directory and write every result file. ``reuse_same``: a
    directory holding a run of the same settings is completed or repeated without ``resume`` (``advspatial maps``;
    :func:`open_run`).

    A smoke test's results are marked before they are written or returned
    (:func:`~advspatial.experiments.smoke.mark_result`: the summary opens with "smoke test: these settings
    decide nothing", no verdict word reads as a real run's). Under torchrun every process runs the experiment on its
    share of the batches (:meth:`ExperimentContext.each_batch`) and ends with the same results; rank 0
    alone writes the result files.

    Before any work the process keeps freed memory for reuse (:func:`~advspatial.runtime.keep_freed_memory`), as the
    command line does: a run from Python (``advspatial.run``) otherwise gets fresh pages for every large tensor, which
    made the README's quick start 2-10% slower and its price probe, the run's first timed work, read a forward pass
    about a third dearer than the probes after it (benchmarks/README.md, "The one-pixel search's price probe").
    """
    keep_freed_memory()
    experiment = get_experiment(name)
    out = Path(config.out or f"runs/{name}")
    config.out = str(out)
    fit_n_to_images(config)
    with remembered_checksums(), open_run(out, name, config, resume, reuse_same) as rundir:
        started = time.perf_counter(), time.process_time()
        with rundir.passes.phase("other"):  # the run's time outside its stages and named phases
            result = run_and_render(experiment, config, rundir)
        for key, value in run_facts(rundir, started).items():
            result.metrics.setdefault(key, value)
        result = mark_result(result, config.smoke_test, experiment.verdict_words)
        main_only(lambda: write_results(rundir, experiment, config, result))
    return result, rundir


def run_and_render(experiment: Experiment, config: ExperimentConfig, rundir: RunDir) -> ExperimentResult:
    """The experiment's run in ``rundir`` and its report, rendered from the run's findings by the experiment's
    ``render`` (timed as the run's "report" phase)."""
    found = experiment.run(config, rundir)
    with rundir.passes.phase("report"):
        rendered = experiment.render(config, found.findings, rundir.figures)
        return ExperimentResult.of(found.findings, found.rows, rendered)


def run_facts(rundir: RunDir, started: tuple[float, float]) -> dict[str, Any]:
    """What a run keeps in its metrics beside its findings: its wall and CPU seconds since ``started`` (its
    ``perf_counter()``, ``process_time()``: this process's CPU, every thread; under torchrun rank 0's), its ledger
    (``model_passes``) and what it said it would cost before its first stage (``forecast``), when it said anything."""
    facts: dict[str, Any] = {"wall_seconds": round(time.perf_counter() - started[0], 2),
                             "cpu_seconds": round(time.process_time() - started[1], 2),
                             "model_passes": rundir.passes.summary()}
    return facts | ({"forecast": rundir.forecast} if rundir.forecast is not None else {})


#: an ``n`` this large asks for every image: it becomes their number without a warning (``analyze``'s default)
ALL_IMAGES = 1_000_000


def fit_n_to_images(config: ExperimentConfig) -> None:
    """An ``n`` beyond the test images becomes their number, so ``config.yaml`` and ``run.json`` record the n the run
    has. One line on stderr says so when ``n`` was chosen: not the experiment's default (sized for a whole dataset)
    nor its smoke test's, and below :data:`ALL_IMAGES` (which asks for every image)."""

    try:
        available = len(load_dataset(config.dataset, "test", **config.dataset_options()))
    except AdvspatialError:  # data the experiment loads its own way (analyze's pairs and labels): it checks them
        return
    if config.n <= available:
        return
    defaults = (next(f.default for f in dataclasses.fields(config) if f.name == "n"), type(config).QUICK.get("n"))
    if config.n not in defaults and config.n < ALL_IMAGES:
        print(f"advspatial: warning: n={config.n} but {config.dataset} has {available} test images; the run uses "
              f"n={available}", file=sys.stderr, flush=True)
    config.n = available


#: what reading findings a run did not write (edited, damaged, of another version) raises: one line, never a traceback
READ_ERRORS = (DataError, TypeError, ValueError, KeyError, AttributeError, OverflowError, RecursionError)


def finished_run(out: Path) -> tuple[Experiment, ExperimentConfig, dict[str, Any], Findings]:
    """The experiment, config, metrics.json and typed findings of the finished run in ``out``, read from its files
    alone (``config.yaml``, ``metrics.json``, checked against ``run.json``); a one-line error when ``out`` is no
    finished run or its files do not belong together."""
    out = Path(out)
    record = RunDir.record_of(out)
    name = record.get("experiment")
    if not name or not (out / "metrics.json").is_file():
        raise ConfigError(f"{out} holds no finished advspatial run (run.json and metrics.json are needed)")
    experiment = get_experiment(str(name))
    config = saved_config(out, experiment, record)
    metrics = stamped_metrics(out, record)
    try:  # a metrics.json edited or written by another version: one line naming the file, never a traceback
        findings = experiment.findings.from_metrics(unmark_tree(metrics) if config.smoke_test else metrics)
    except READ_ERRORS as exc:
        raise DataError(f"{out / 'metrics.json'} does not hold the findings of a {name} run ({first_line(exc)}); "
                        "run the experiment again") from exc
    return experiment, config, metrics, findings


def rerender_report(out: Path) -> ExperimentResult:
    """Re-render the report of the finished run in ``out`` from its files alone (``advspatial report DIR``):
    ``config.yaml``, ``metrics.json`` (the findings), ``per_image.csv`` and the figures it drew; nothing is
    computed again. Writes ``report.html`` and returns the result as the run returned it (its summary
    included); a one-line error when ``out`` is no finished run or its files cannot be read."""
    out = Path(out)
    experiment, config, metrics, findings = finished_run(out)
    try:
        rendered = experiment.render(config, findings, out / "figures")
        written = unmark_tree(metrics) if config.smoke_test else metrics  # marked again below, as the run did
        summary, details = printed(findings, rendered)
        result = ExperimentResult(written, [], summary, with_plan(rendered.sections, findings),
                                  answer_lines(findings), details)
    except READ_ERRORS as exc:
        raise DataError(f"{out / 'metrics.json'} does not hold the findings of a {experiment.name} run "
                        f"({first_line(exc)}); run the experiment again") from exc
    marked = mark_result(result, config.smoke_test, experiment.verdict_words)
    try:  # the run's own records (its model passes) read into the report: damaged ones are one line too
        write_report_file(out, experiment, config, marked)
    except READ_ERRORS[1:] as exc:
        raise DataError(f"{out / 'metrics.json'} holds a run record the report cannot read ({first_line(exc)}); "
                        "run the experiment again") from exc
    return marked


def resolve_config(
    experiment: Experiment, yaml_path: str | None, overrides: Mapping[str, Any], quick: bool
) -> ExperimentConfig:
    """Defaults < dataset preset < ``--quick`` < YAML file < explicit CLI options; then validate.

    The preset (``experiments.presets``) is named by the YAML file or the CLI
    (``auto`` when neither does); its resolved name is stored in the config.
    ``--quick`` always makes the run a smoke test (``smoke_test``, :mod:`~advspatial.experiments.smoke`),
    whatever the YAML file or the options say: its settings decide nothing even where some are raised.
    """
    from .presets import resolve_preset_name

    cls = experiment.config_cls
    quick_values: dict[str, Any] = dict(cls.QUICK) if quick else {}
    given: dict[str, Any] = {}
    if yaml_path:
        given.update(load_yaml(yaml_path))
        check_settings(cls, given, str(yaml_path))  # every line of the file, also one an option overrides
    given.update(overrides)
    if quick:
        given["smoke_test"] = True
    values = {**quick_values, **given}
    defaults = cls()
    preset = resolve_preset_name(str(values.get("preset", defaults.preset)),
                                 str(values.get("dataset", defaults.dataset)),
                                 str(values.get("model", defaults.model)))
    values = {**cls.preset_values(preset, values), **values, "preset": preset}
    values = {**values, **cls.implied_values(values), **given, "preset": preset}
    config = config_from_mapping(cls, values)
    config.validate()
    if "batch_size" not in given and "batch_size" not in quick_values:
        fit_batch_to_device(config)
    return config


def fit_batch_to_device(config: ExperimentConfig) -> None:
    """On a GPU, a batch size nobody gave (the preset's or the default, sized for a CPU's caches) becomes what the
    device's memory takes in a call (:func:`~advspatial.stacked_runs.device_batch_size`); on a CPU it stays. The
    resolved value is the run's ``batch_size`` in ``config.yaml``; results do not depend on it."""
    from ..runtime import pick_device
    from ..stacked_runs import device_batch_size, device_memory

    device = pick_device(config.device)
    if device.type == "cpu":
        return
    try:
        data = load_dataset(config.dataset, "test", **config.dataset_options())
    except AdvspatialError:  # data the experiment loads its own way: its batch size stays
        return
    images = min(config.n, len(data))
    config.batch_size = device_batch_size(config.batch_size, data.image_shape, images, environment_world().size,
                                          device_memory(device))


def saved_config(out: Path, experiment: Experiment, record: Mapping[str, Any]) -> ExperimentConfig:
    """The settings in ``out/config.yaml``, checked line by line and against the run's record (``run.json``): a
    report shows the settings its findings were computed with, not an edited file's."""
    file = out / "config.yaml"
    values = load_yaml(file)
    check_settings(experiment.config_cls, values, str(file))
    config = config_from_mapping(experiment.config_cls, values)
    saved = record.get("config")
    if not isinstance(saved, dict):
        raise DataError(f"{out / RunDir.RECORD} holds no settings of the run (its 'config' is {str(saved)[:40]!r}); "
                        "the run cannot be checked - run it again")
    if fingerprint(config) != saved:
        raise DataError(f"{file} does not hold the settings the run computed with ({out / RunDir.RECORD}): "
                        f"{_differences(saved, fingerprint(config))}; restore it or run again")
    return config


def run_stamp(record: Mapping[str, Any], metrics: dict[str, Any]) -> dict[str, Any]:
    """What metrics.json says of the run that computed it (its key ``run``): the experiment, the stage format, the
    run's id (a checksum of its ``run.json``: the settings and the checksums of the model's weights and code and of
    the images) and the checksum of the findings as written (:func:`~.results.findings_checksum`).
    ``advspatial report`` re-renders findings only under the record they were computed with, as they were written."""
    text = json.dumps(record, sort_keys=True, default=str)
    return {"id": hashlib.sha256(text.encode()).hexdigest()[:16], "experiment": record.get("experiment"),
            "stage_format": record.get("stage_format", 1), "findings": findings_checksum(metrics)}


def stamped_metrics(out: Path, record: Mapping[str, Any]) -> dict[str, Any]:
    """The content of ``out/metrics.json`` (a regular file of the run) when the run whose ``run.json`` is ``record``
    wrote it; a one-line :class:`DataError` for another run's file copied in, one of an older version or made by
    hand."""
    file = out / "metrics.json"
    remedy = f"resume the run to write it again: advspatial run --resume {out}"
    metrics = read_json(inner_file(out, file, "findings file"), "findings file", remedy)
    stamp = metrics.get("run") if isinstance(metrics, dict) else None
    if not isinstance(metrics, dict) or not isinstance(stamp, dict):
        raise DataError(f"{file} does not say which run computed it (written by an older advspatial or by hand); "
                        f"{remedy}")
    expected = run_stamp(record, metrics)
    if stamp == expected:
        return metrics
    if stamp.get("experiment") != expected["experiment"] or stamp.get("stage_format") != expected["stage_format"]:
        raise DataError(f"{file} holds findings of a {stamp.get('experiment')!r} run (stage format "
                        f"{stamp.get('stage_format')!r}), but {out / RunDir.RECORD} is of a {expected['experiment']!r} "
                        f"run (stage format {expected['stage_format']!r}); {remedy}")
    if stamp.get("id") != expected["id"]:
        raise DataError(f"{file} belongs to another run (run id {str(stamp.get('id'))[:16]!r}; this directory's "
                        f"{RunDir.RECORD} gives {expected['id']!r}): its findings are not this run's; {remedy}")
    raise DataError(f"{file} was changed after its run wrote it (its findings no longer match the checksum "
                    f"{str(stamp.get('findings'))[:16]!r} stamped into it); {remedy}")


def finished_findings(out: str | Path) -> dict[str, Any]:
    """The findings (metrics.json) of the finished run in ``out``, checked as ``advspatial report`` checks them
    (:func:`stamped_metrics`); a one-line :class:`DataError` for a missing directory, a study, a directory that holds
    no run, or a run that has not finished. For scripts that read a run (examples/read_a_run.py)."""
    out = Path(out)
    if not out.is_dir():
        raise DataError(f"{out} is not a directory; valid: the --out directory of a finished advspatial run")
    record = RunDir.record_of(out)
    if not record:
        what = "a study (read one of its models: models/LABEL)" if (out / "study.yaml").is_file() else "no run"
        raise DataError(f"{out} holds {what}: it has no {RunDir.RECORD}; valid: the --out directory of a finished "
                        "advspatial run")
    if not (out / "metrics.json").exists():
        raise DataError(f"{out} holds an unfinished run (no metrics.json); complete it: advspatial run --resume {out}")
    return stamped_metrics(out, record)


def write_results(rundir: RunDir, experiment: Experiment, config: ExperimentConfig, result: ExperimentResult) -> None:
    """metrics.json (stamped with the run's identity: :func:`run_stamp`), per_image.csv and report.html of a
    finished run."""
    settle()  # every check still held (a guarded model's finiteness since the last stage) before results are kept
    result.metrics["run"] = run_stamp(rundir.record(), result.metrics)
    atomic_write_text(rundir.path / "metrics.json", metrics_to_json(result.metrics))
    atomic_write_text(rundir.path / "per_image.csv", rows_to_csv(result.per_image))
    write_report_file(rundir.path, experiment, config, result)


def write_report_file(out: Path, experiment: Experiment, config: ExperimentConfig, result: ExperimentResult) -> None:
    """``report.html`` of a run (a smoke test's opens with its banner)."""
    from ..report.passes import forecast_sentence, with_passes

    write_report(
        out / "report.html",
        title=f"advspatial - {experiment.name}",
        subtitle=experiment.description,
        config={"experiment": experiment.name, **reported_settings(config)},
        sections=with_passes(result.report_sections, result.metrics.get("model_passes"),
                             forecast_sentence(result.metrics)),
        banner=banner() if config.smoke_test else "", answer=result.answer,
        answer_figure=overview if (overview := out / "figures" / OVERVIEW_FIGURE).is_file() else None,
        answer_links=plan_link(result),
    )


def plan_link(result: ExperimentResult) -> list[tuple[str, str]]:
    """The first screen's link to what more data would decide, when the answer counts undecided rows."""
    plan = next((s for s in result.report_sections if getattr(s, "anchor", "") == PLAN_ANCHOR), None)
    if plan is None or not any(line.startswith("Undecided:") for line in result.answer):
        return []
    return [("What more data would decide: each undecided row with the images it needs", PLAN_ANCHOR)]
