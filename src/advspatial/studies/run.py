"""``run_study``: every model measured (or read back), then the cross-model analysis and the study's files:
``metrics.json``, ``per_model.csv``, ``per_image_per_model.csv``, ``images.csv``, ``report.html`` and ``figures/``."""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..distributed import main_only, world
from ..errors import DataError, ModelError, first_line
from ..experiments.results import ExperimentResult, findings_checksum, metrics_to_json, rows_to_csv
from ..experiments.smoke import banner, mark_result, unmark_tree
from ..files import atomic_write_text, inner_dir, inner_file, read_json
from ..progress import duration, heartbeat
from ..report.html import write_report
from ..runtime import keep_freed_memory
from .findings import StudyFindings, study_findings
from .measure import measure_model, stage_lines
from .records import ModelRecord
from .running import Study, elapsed, load_study, model_configs, preflight, say, study_dir

#: the files a finished study writes into its directory (besides models/ and figures/)
STUDY_FILES = ("study.yaml", "images.csv", "metrics.json", "per_model.csv", "per_image_per_model.csv", "report.html")


@dataclass
class StudyResult:
    """A finished study: its findings, the printed summary and its directory."""

    findings: StudyFindings
    summary: str
    out: Path

    @property
    def report(self) -> Path:
        return self.out / "report.html"


def run_study(study: Study, resume: bool = False) -> StudyResult:
    """Measure every model of ``study`` (a finished one is read back), analyse across them, write the files.

    Checked before any work: every model's settings (one line naming the model), that they measure alike, that
    every model loads, takes the images and has as many outputs as the others. A model whose run fails later
    (:class:`~advspatial.errors.ModelError`, :class:`~advspatial.errors.DataError`) is listed as failed; the others
    are analysed, and ``resume`` completes it. Before any work the process keeps freed memory for reuse, as a run
    does (:func:`~advspatial.runtime.keep_freed_memory`).
    """
    keep_freed_memory()
    configs = model_configs(study)
    started = time.perf_counter()
    with study_dir(study, resume) as out:
        say(f"study: checking the {len(study.models)} models before any work (each loaded and run on one image)")
        checked = preflight(configs)
        main_only(lambda: atomic_write_text(out / "images.csv",
                                            "index,label\n" + "".join(f"{i},{y}\n" for i, y in checked.images)))
        records: list[ModelRecord] = []
        failed: dict[str, str] = {}
        for k, model in enumerate(study.models, 1):
            say(f"study: model {k}/{len(study.models)} {model.label} ({model.model})")
            run_dir = Path(configs[model.label].out)
            inner_dir(out, run_dir)  # never through a link planted in the study directory
            try:
                with heartbeat(f"study: {model.label}", stage_lines(model.label, run_dir), enabled=world().is_main):
                    records.append(measure_model(model, configs[model.label], checked.identities[model.label]))
            except (ModelError, DataError) as exc:
                failed[model.label] = first_line(exc)
                say(f"study: {model.label} failed: {failed[model.label]}")
            else:
                say(f"study: {model.label} done: {outcome(records[-1])}")
        findings = study_findings(records, failed, next(iter(configs.values())))
        summary = main_only(lambda: write_study(out, study, findings, records, elapsed(started))) or ""
    return StudyResult(findings, summary, out)


def outcome(record: ModelRecord) -> str:
    """One model's run in a few words: its RoI gate, the images each attack kept, its wall time."""
    kept = ", ".join(f"{name} {len(a.ids)}" for name, a in record.attacks.items())
    skipped = ", ".join(f"{name} not compared" for name in record.skipped)
    return (f"RoI gate {record.roi_status}; images kept per attack: {kept or 'none'}"
            + (f"; {skipped}" if skipped else "") + f"; its run took {duration(record.wall_seconds)}")


def write_study(out: Path, study: Study, findings: StudyFindings, records: list[ModelRecord],
                wall_seconds: float) -> str:
    """The study's figures, metrics.json, tables and report; returns the summary."""
    from .report import draw_figures, render
    from .tables import per_image_rows, per_model_rows

    inner_dir(out, out / "figures")
    draw_figures(findings, out / "figures")
    summary, sections = render(findings, out / "figures", study.quick)
    metrics: dict[str, Any] = {**findings.to_metrics(), "wall_seconds": wall_seconds}
    result = mark_result(ExperimentResult(metrics, per_model_rows(findings), summary, sections), study.quick)
    result.metrics["run"] = study_stamp(study, result.metrics)  # of the findings as written
    atomic_write_text(out / "metrics.json", metrics_to_json(result.metrics))
    atomic_write_text(out / "per_model.csv", rows_to_csv(result.per_image))
    atomic_write_text(out / "per_image_per_model.csv", rows_to_csv(per_image_rows(records)))
    write_study_report(out, study, result.report_sections)
    return result.summary


def write_study_report(out: Path, study: Study, sections: list[Any]) -> None:
    """``report.html`` of a study (a smoke test's opens with its banner)."""
    write_report(out / "report.html", title="advspatial - study across models",
                 subtitle="The RoI/RoA measurement on every model, on the same images with the same seeds",
                 config={"models": ", ".join(f"{m.label}={m.model}" for m in study.models),
                         **study.record()["settings"], "quick": study.quick}, sections=sections,
                 banner=banner() if study.quick else "")


def study_stamp(study: Study, metrics: dict[str, Any]) -> dict[str, str]:
    """What a study's metrics.json says of the study that computed it (its key ``run``): a checksum of its record
    (``study.yaml``: models, settings, quick) and one of the findings as written, so ``advspatial report``
    re-renders only this study's findings, as they were written."""

    text = json.dumps(study.record(), sort_keys=True, default=str)
    return {"id": hashlib.sha256(text.encode()).hexdigest()[:16], "experiment": "study",
            "findings": findings_checksum(metrics)}


def rerender_study(out: Path) -> str:
    """Re-render the report of the finished study in ``out`` from its files alone (``advspatial report DIR``):
    ``study.yaml``, ``metrics.json`` and ``figures/``; nothing is computed again. Returns the summary. A
    metrics.json another study wrote, or one whose values break their declared types, is one line."""
    from .report import render

    study = load_study(out)
    file = out / "metrics.json"
    metrics = read_json(inner_file(out, file, "findings file"), "findings file",
                        f"complete the study again: advspatial study --resume {out}")
    if not isinstance(metrics, dict) or metrics.get("run") != study_stamp(study, metrics):
        raise DataError(f"{file} was not written as it is by the study in {out / 'study.yaml'} (another study's, an "
                        f"older version's or edited since); complete the study again: advspatial study --resume {out}")
    try:
        findings = StudyFindings.from_metrics(unmark_tree(metrics) if study.quick else metrics)
        summary, sections = render(findings, out / "figures", study.quick)
    except (ValueError, TypeError, KeyError, AttributeError, OverflowError, RecursionError) as exc:
        raise DataError(f"{file} does not hold a study's findings ({first_line(exc)}); run the study again") from exc
    result = mark_result(ExperimentResult(metrics, [], summary, sections), study.quick)
    write_study_report(out, study, result.report_sections)
    return result.summary
