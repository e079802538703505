"""``advspatial study``: the RoI/RoA measurement on several models over the same images, compared (the options
are the ``maps`` experiment's, shared by every model, plus the models)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from ..errors import AdvspatialError
from .options import dataclass_options

#: maps settings that are per model in a study (given in --models or a YAML list of models), never shared
PER_MODEL_OPTIONS = frozenset({"model", "weights", "arch", "out", "preset", "image_size"})


def study_command() -> click.Command:
    """The command, its options generated from the ``maps`` experiment's config dataclass."""
    from ..experiments import get_experiment

    params: list[click.Parameter] = [
        click.Option(["--models"], default=None, metavar="SPEC[,SPEC...]",
                     help="Models to compare, as --model takes them (at least 2); per-model weights, labels, "
                          "presets, image sizes and covariates in a YAML list (models: in --config)."),
        click.Option(["--config", "config_file"], default=None,
                     help="YAML file: models: [SPEC or {model, label, weights, arch, preset, image_size, "
                          "covariates}], plus any shared setting (options override it)."),
        click.Option(["--out"], default="runs/study", show_default=True, help="The study's directory."),
        click.Option(["--resume"], default=None, metavar="DIR",
                     help="Complete an interrupted study in DIR (its own models and settings; finished models "
                          "are read back)."),
        click.Option(["--quick"], is_flag=True, help="CI-sized settings for every model (a smoke test)."),
        click.Option(["--preset"], default="", help="Budgets of every model (default: each model's auto preset, "
                                                    "which must agree)."),
    ]
    from ..studies.running import STUDY_DEFAULTS

    shown = {k: {"default": v} for k, v in STUDY_DEFAULTS.items()}
    config_cls = get_experiment("maps").config_cls  # a study measures every model as a ``maps`` run
    params += dataclass_options(config_cls, hidden=config_cls.CLI_HIDDEN | PER_MODEL_OPTIONS, overrides=shown)

    def callback(models: str | None, config_file: str | None, out: str, resume: str | None, quick: bool,
                 preset: str, **values: Any) -> None:
        ctx = click.get_current_context()
        given = {k: v for k, v in values.items()
                 if ctx.get_parameter_source(k) is not click.core.ParameterSource.DEFAULT}
        if preset:
            given["preset"] = preset
        run_study_command(models, config_file, out, resume, quick, given)

    return click.Command("study", callback=callback, params=params,
                         help="The RoI/RoA measurement (maps) on several models over the same images with the same "
                              "seeds, then a cross-model report: pooled verdicts (random-effects meta-analysis over "
                              "the models whose gates passed), paired contrasts, meta-regression, and whether the "
                              "models' attacks act in the same place.",
                         short_help="Compare the RoI/RoA measurement across models.")


def run_study_command(models: str | None, config_file: str | None, out: str, resume: str | None, quick: bool,
                      given: dict[str, Any]) -> None:
    """Build the study from the options (or the directory to resume), run it, print the summary."""
    from ..distributed import world
    from ..experiments.settings import read_yaml_mapping
    from ..studies.models import parse_models
    from ..studies.run import run_study
    from ..studies.running import Study, check_shared, load_study

    if resume:
        extra = [k for k in given if k != "progress"]
        if models or config_file or quick or extra:
            raise AdvspatialError("--resume completes a study with its own models and settings (its study.yaml); "
                                  "drop the other options, or start a new study with another --out")
        study = load_study(resume)
        study.settings.update({k: v for k, v in given.items() if k == "progress"})
    else:
        values = read_yaml_mapping(config_file) if config_file else {}
        listed = values.pop("models", None)
        if config_file:  # every line of the file, also one an option given beside it overrides
            check_shared(values, config_file)
        values.pop("experiment", None)
        if models is None and listed is None:
            raise AdvspatialError("name the models to compare: --models A,B[,C...] or models: in --config")
        study = Study(parse_models(models if models is not None else listed), {**values, **given}, out, quick)
    from .run import RESUME_HINT

    RESUME_HINT[:] = [f"; complete the study with: advspatial study --resume {study.out}"]
    result = run_study(study, resume=bool(resume))
    RESUME_HINT.clear()
    if world().is_main:
        click.echo(result.summary)
        click.echo(f"results: {Path(result.out)}/ (report.html, metrics.json, per_model.csv, "
                   "per_image_per_model.csv, models/)")
