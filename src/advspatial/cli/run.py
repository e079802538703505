"""``advspatial run [EXPERIMENT]``: one command per registered experiment, its options generated from the
experiment's config dataclass; resume, YAML settings and the hint an interrupted run prints."""

from __future__ import annotations

from typing import Any

import click

from ..errors import AdvspatialError
from .options import dataclass_options, quick_help

DEFAULT_EXPERIMENT = "spatial"


class ExperimentGroup(click.Group):
    """``advspatial run [EXPERIMENT] [OPTIONS]``: the experiment name is optional.

    Without a known experiment name first, the default experiment runs, so
    ``advspatial run --n 100`` and ``advspatial run --help`` address it.
    """

    def list_commands(self, ctx: click.Context) -> list[str]:
        from ..experiments import experiments

        return list(experiments())

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        from ..experiments import experiments

        if name not in experiments():
            return None
        return experiment_command(name)

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        from ..experiments import experiments

        names = experiments()
        if args and not args[0].startswith("-") and args[0] not in names:
            from ..errors import unknown_name

            raise unknown_name("experiment", args[0], names)
        ctx.meta[EXPLICIT_EXPERIMENT] = bool(args) and args[0] in names
        if not args or args[0] not in names:
            default = DEFAULT_EXPERIMENT if DEFAULT_EXPERIMENT in names else "baseline"
            args = [default, *args]
        return super().parse_args(ctx, args)


def experiment_command(name: str) -> click.Command:
    """A click command whose options are the fields of the experiment's config dataclass."""
    from ..experiments import get_experiment

    experiment = get_experiment(name)

    def callback(config_file: str | None, resume: str | None, quick: bool, verbose: bool, **values: Any) -> None:
        ctx = click.get_current_context()
        given = {
            key: value for key, value in values.items()
            if ctx.get_parameter_source(key) is not click.core.ParameterSource.DEFAULT
        }
        run_configured(name, config_file, resume, quick, given, verbose)

    params: list[click.Parameter] = [
        click.Option(["--config", "config_file"], default=None,
                     help="YAML file of settings (CLI options override it)."),
        click.Option(["--resume"], default=None, metavar="DIR",
                     help="Complete an interrupted run in DIR (its own config)."),
        click.Option(["--quick"], is_flag=True, help=quick_help(experiment.config_cls.QUICK)),
        click.Option(["--verbose"], is_flag=True,
                     help="Print every claim's row after the summary (by default: the gate, the primary claims "
                          "and the other claims counted by verdict; the report has every row)."),
    ]
    params += dataclass_options(experiment.config_cls, hidden=experiment.config_cls.CLI_HIDDEN)
    return click.Command(name, callback=callback, params=params, help=f"{experiment.description}.")


def run_configured(name: str, config_file: str | None, resume: str | None, quick: bool, given: dict[str, Any],
                   verbose: bool = False) -> None:
    """Resolve the config (validated before any work), run or resume, print the summary."""
    from pathlib import Path

    from ..experiments import get_experiment, resolve_config, run_experiment
    from ..experiments.settings import check_settings, load_yaml, read_yaml_mapping

    explicit = click.get_current_context().meta.get(EXPLICIT_EXPERIMENT, True)
    if resume:
        saved = Path(resume) / "config.yaml"
        if not saved.is_file():
            raise AdvspatialError(f"--resume {resume}: no config.yaml there; valid: a run directory written by "
                                  "advspatial run")
        extra = sorted(k for k in given if k != "progress")
        if extra or quick or config_file:
            named = ", ".join([*("--" + k.replace("_", "-") for k in extra), *(["--quick"] if quick else []),
                               *(["--config"] if config_file else [])])
            raise AdvspatialError(f"--resume completes a run with its own settings (its config.yaml); drop {named}, "
                                  "or start a new run with another --out")
        saved_name = str(read_yaml_mapping(saved).get("experiment") or name)
        if explicit and saved_name != name:
            raise AdvspatialError(f"{resume} holds a run of {saved_name}, not {name}; resume it with "
                                  f"advspatial run {saved_name} --resume {resume} (or just --resume)")
        name = saved_name
        values = load_yaml(saved)
        check_settings(get_experiment(name).config_cls, values, str(saved))
        values.update({k: v for k, v in given.items() if k == "progress"})
        values["out"] = resume
        config = resolve_config(get_experiment(name), None, values, quick=False)
    else:
        if config_file:
            wanted = read_yaml_mapping(config_file).get("experiment")
            if wanted is not None and str(wanted) != name:
                if explicit:
                    raise AdvspatialError(f"{config_file} is for experiment {wanted}, but the command runs {name}; "
                                          "drop one of the two")
                name = str(wanted)
                get_experiment(name)  # an unknown name is one line listing the experiments
        config = resolve_config(get_experiment(name), config_file, given, quick)
        written = Path(config.out or f"runs/{name}") / "config.yaml"
        if config_file and written.exists() and written.resolve() == Path(config_file).resolve():
            raise AdvspatialError(f"--config {config_file} is the config.yaml the run writes into --out; copy it "
                                  "elsewhere, or complete that run with --resume")
    RESUME_HINT[:] = [f"; complete the run with: advspatial run --resume {config.out or f'runs/{name}'}"]
    from ..distributed import world
    from ..progress import heartbeat

    # never a silent minute, also when the output is piped: a line whenever nothing was written for 30 s
    with heartbeat(f"{name}: {config.out or f'runs/{name}'}",
                   enabled=world().is_main and bool(getattr(config, "progress", True))):
        result, rundir = run_experiment(name, config, resume=bool(resume))
    RESUME_HINT.clear()

    if world().is_main:
        click.echo(result.summary)
        if verbose and result.details:
            click.echo(result.details)
        click.echo(f"results: {rundir.path}/ (report.html, metrics.json, per_image.csv, figures/)")


EXPLICIT_EXPERIMENT = "advspatial.explicit_experiment"
#: what an interrupted run prints after "aborted" (set while an experiment runs)
RESUME_HINT: list[str] = []


@click.group("run", cls=ExperimentGroup, invoke_without_command=False)
def run_group() -> None:
    """Run an experiment (default: spatial) into a run directory with a report.

    EXPERIMENT is one of `advspatial list experiments`; `advspatial run EXPERIMENT --help`
    lists every setting with its default.
    """


@click.command("report")
@click.argument("run_dir", type=click.Path(file_okay=False, path_type=str))
def report_command(run_dir: str) -> None:
    """Re-render the report of a finished run or study from its files (config.yaml or study.yaml, metrics.json,
    figures/): nothing is computed again; report.html is written anew and the summary printed."""
    from pathlib import Path

    from ..experiments.running import rerender_report
    from ..studies.running import STUDY_FILE

    if (Path(run_dir) / STUDY_FILE).is_file():  # a study across models (advspatial study)
        from ..studies.run import rerender_study

        click.echo(rerender_study(Path(run_dir)))
    else:
        click.echo(rerender_report(Path(run_dir)).summary)
    click.echo(f"report: {Path(run_dir) / 'report.html'}")
