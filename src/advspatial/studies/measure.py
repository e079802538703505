"""One model of a study: its ``maps`` run in ``OUT/models/LABEL`` (resumed from its stages when interrupted,
skipped when finished) and the record the cross-model analysis reads."""

from __future__ import annotations

import math
import os
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path

from ..distributed import main_only
from ..experiments import get_experiment
from ..experiments.context import bind_run
from ..experiments.measurement.config import MeasurementConfig
from ..experiments.measurement.findings import MeasuredFindings
from ..experiments.measurement.run import measure
from ..experiments.results import ExperimentResult
from ..experiments.running import open_run
from ..experiments.smoke import mark_result
from ..progress import duration
from ..rundir import RunDir
from .models import StudyModel
from .records import STUDY_RECORD, ModelRecord, model_record


def measure_model(model: StudyModel, config: MeasurementConfig, identity: Mapping[str, str]) -> ModelRecord:
    """The model's record: read back when its run finished before, else the run made (or completed) now.

    ``identity``: the checksums of the model's weights, code and images (the preflight's): a finished run is read
    back only when they are the ones it was computed with (one line otherwise).

    The sub-run is an ordinary ``maps`` run (its report.html, metrics.json, per_image.csv and figures; ``advspatial
    report`` re-renders it) bound to its settings like any run, so a study resumed with other settings is refused.
    """

    with open_run(Path(config.out), "maps", config, resume=True) as rundir:
        bind_run(rundir, identity)
        if (rundir.path / "metrics.json").is_file() and STUDY_RECORD.exists(rundir):
            return STUDY_RECORD.load(rundir)
        return run_model(model, config, rundir)


def run_model(model: StudyModel, config: MeasurementConfig, rundir: RunDir) -> ModelRecord:
    """Run the measurement, write the model's own result files, save and return its record."""
    from ..experiments.running import run_facts, write_results

    maps = get_experiment("maps")  # the experiment a model's run is, reached by its registry line
    assert issubclass(maps.findings, MeasuredFindings)
    started = time.perf_counter(), time.process_time()
    with rundir.passes.phase("other"):  # as run_experiment: the time outside the stages split by phase
        measured = measure(config, rundir)
        findings = measured.findings(maps.findings)
        with rundir.passes.phase("report"):
            result = ExperimentResult.of(findings, measured.rows, maps.render(config, findings, rundir.figures))
    # its time, passes and forecast, beside what it found, as any run keeps them
    result.metrics.update(run_facts(rundir, started))
    wall = result.metrics["wall_seconds"]
    result = mark_result(result, config.smoke_test)
    main_only(lambda: write_results(rundir, maps, config, result))
    record = model_record(measured, model.label, model.model, wall, model.covariates)
    main_only(lambda: STUDY_RECORD.save(rundir, record))
    return record


def stage_lines(label: str, run_dir: Path) -> Callable[[], list[str]]:
    """A poll for :func:`~advspatial.progress.heartbeat`: one line per stage of the model's run the first time a
    file of it is saved (``study: LABEL, 1 min 10 s: saved gate/gradcam``), stages grouped by the first two parts
    of their names (``attack/pgd``, not each batch). Stages already there when it starts (a resumed run) are not
    announced again. Safe to call from two threads (the ticker's and the one ending the heartbeat)."""
    stages = run_dir / "stages"
    started = time.perf_counter()
    seen = set(saved_stage_groups(stages))
    lock = threading.Lock()

    def poll() -> list[str]:
        with lock:
            new = [g for g in saved_stage_groups(stages) if g not in seen]
            seen.update(new)
        elapsed = duration(time.perf_counter() - started)
        return [f"study: {label}, {elapsed}: saved {group}" for group in new]

    return poll


def saved_stage_groups(stages: Path) -> list[str]:
    """The stage groups with a saved file under ``stages`` (``attack/pgd`` for ``attack/pgd/batch-00003.pt``,
    ``gate/gradcam`` for ``gate/gradcam/mprt.pt``, ``roi`` for ``roi/batch-00000.pt``: at most two folders deep), in
    the order their first file was saved; temporary files of a save in progress are left out."""
    first: dict[str, float] = {}
    for folder, _, files in os.walk(stages):
        for name in files:
            if name.startswith(".") or not name.endswith(".pt"):
                continue
            path = Path(folder, name)
            parts = path.relative_to(stages).with_suffix("").parts
            group = "/".join(parts[:-1][:2] or parts)
            try:
                first[group] = min(first.get(group, math.inf), path.stat().st_mtime)
            except OSError:  # removed meanwhile
                continue
    return sorted(first, key=lambda g: first[g])
