"""One model of a study: its ``maps`` run in ``OUT/models/LABEL`` (resumed from its stages when interrupted,
skipped when finished) and the record the cross-model analysis reads."""

from __future__ import annotations

import time
from collections.abc import Mapping

from ..experiments.maps.config import MapsConfig
from ..rundir import RunDir
from .models import StudyModel
from .records import STUDY_RECORD, ModelRecord, model_record


def measure_model(model: StudyModel, config: MapsConfig, identity: Mapping[str, str]) -> ModelRecord:
    """The model's record: read back when its run finished before, else the run made (or completed) now.

    ``identity``: the checksums of the model's weights, code and images (the preflight's): a finished run is read
    back only when they are the ones it was computed with (one line otherwise).

    The sub-run is an ordinary ``maps`` run (its report.html, metrics.json, per_image.csv and figures; ``advspatial
    report`` re-renders it) bound to its settings like any run, so a study resumed with other settings is refused.
    """
    from pathlib import Path

    from ..experiments.context import bind_run
    from ..experiments.running import open_run

    with open_run(Path(config.out), "maps", config, resume=True) as rundir:
        bind_run(rundir, identity)
        if (rundir.path / "metrics.json").is_file() and STUDY_RECORD.exists(rundir):
            return STUDY_RECORD.load(rundir)
        return run_model(model, config, rundir)


def run_model(model: StudyModel, config: MapsConfig, rundir: RunDir) -> ModelRecord:
    """Run the measurement, write the model's own result files, save and return its record."""
    from ..distributed import main_only
    from ..experiments import get_experiment
    from ..experiments.maps.report import render
    from ..experiments.maps.run import maps_measurement
    from ..experiments.results import ExperimentResult
    from ..experiments.running import write_results
    from ..experiments.smoke import mark_result

    started = time.perf_counter()
    measured = maps_measurement(config, rundir)
    result = ExperimentResult.of(measured.findings, measured.rows, render(config, measured.findings, rundir.figures))
    wall = round(time.perf_counter() - started, 2)
    result.metrics["wall_seconds"] = wall
    result = mark_result(result, config.smoke_test)
    main_only(lambda: write_results(rundir, get_experiment("maps"), config, result))
    record = model_record(measured, model.label, model.model, wall, model.covariates)
    main_only(lambda: STUDY_RECORD.save(rundir, record))
    return record
