"""The experiment registry: ``@register_experiment(name, Config, description, ...)`` on ``run(config, rundir)``,
which returns the run's findings and rows (:class:`~.results.RunFindings`); the runner renders the report.

One registry line is all a new experiment needs beyond its package: the CLI, ``advspatial list``, the
docs navigation and pages, the contract tests' tiny settings and ``advspatial report DIR`` all read it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..registry import Registry
from ..rundir import RunDir
from .findings import Findings
from .results import Rendered, RunFindings
from .settings import ExperimentConfig


#: ``render(config, findings, figures)``: the report of a run from its config, its findings and the folder its
#: figures were drawn into (a figure whose file is not there is left out); pure, so a finished run re-renders
Render = Callable[[Any, Any, Path], Rendered]
#: ``cost(config, model, images, price)``: seconds of work the forecast's reference runs do not count, per part of the
#: run as the forecast's sentence names it (:mod:`.forecast`; ``price``: this model's measured ``CallPrice``)
PricedApart = Callable[[Any, Any, Any, Any], dict[str, float]]
#: stage-key pattern (a regular expression, searched in the key) -> the setting that caps the images its stages
#: attack (``ensemble_n``: the ensemble's stages run on ``min(n, ensemble_n)`` images)
SizedBy = Mapping[str, str]
#: stage-key pattern (a regular expression whose match names one repeat, ``@seed1``) -> the setting that counts the
#: repeats of the run's work, the first included (``training_seeds``: the stages of seeds 1, 2, ... repeat seed 0's)
RepeatedBy = Mapping[str, str]
#: stage-group pattern (a regular expression, searched in the forecast's group name) -> the settings whose product
#: its work follows (an attack's iterations: ``perceptual``'s ``steps``, CW-L2's ``cw_steps`` x ``cw_search_steps``)
StepsBy = Mapping[str, tuple[str, ...]]


@dataclass(frozen=True)
class Experiment:
    """A registered experiment.

    Attributes:
        name: the name ``advspatial run NAME`` takes.
        config_cls: its settings dataclass.
        run: ``run(config, rundir) -> RunFindings``: the run's findings and per-image rows.
        description: one line for ``advspatial list`` and the docs.
        findings: the dataclass its analysis returns (metrics.json is its serialization).
        render: how its report renders from its findings (:data:`Render`): after the run (the runner times it as
            the "report" phase), and again by ``advspatial report DIR`` from a finished run's files.
        contract: its tiny settings for the contract tests, on top of ``--quick`` (several batches, every stage
            reached, seconds on a CPU): setting name -> value, as ``advspatial.run(name, **contract)`` takes
            them (:meth:`contract_args` gives the same as CLI options).
        priced_apart: work its forecast prices apart from the reference runs' counted work (:data:`PricedApart`;
            ``pse``'s pixel-group pairs, whose number grows with the image and which a CPU evaluates uncounted;
            ``localized-training``'s training, which the ledger does not count and which follows the training set).
        sized_by: the stages whose images a setting caps (:data:`SizedBy`): the forecast's reference keeps their
            images per image and their calls per batch, priced at ``min(n, setting)`` images in the batches of the
            run it forecasts, so a run with a smaller ensemble or gate is forecast as it is, not at the defaults.
        repeated_by: the stages that repeat the run's work (:data:`RepeatedBy`): the forecast prices them at the
            run's repeats beyond the first over the reference's.
        steps_by: the stages whose work follows an attack's iterations (:data:`StepsBy`): the forecast prices them
            at the run's iterations over the reference runs' (a preset's 20 PGD steps, not the default's 50); an
            entry names a setting or a setting plus a constant (``maxiter+1``:
            :func:`~.stage_work.iteration_count`).
        verdict_words: its own verdict words beyond the statistics' (:data:`~advspatial.statistics.verdicts.VERDICTS`):
            a smoke test marks them wherever its texts print them (:func:`~.smoke.mark_result`), whether or not a
            verdict of the run holds them (the defence's "not converged" is also the attack's convergence check).
    """

    name: str
    config_cls: type[ExperimentConfig]
    run: Callable[[Any, RunDir], RunFindings]
    description: str
    findings: type[Findings]
    render: Render
    contract: Mapping[str, Any] = field(default_factory=dict)
    priced_apart: PricedApart | None = None
    sized_by: SizedBy = field(default_factory=dict)
    repeated_by: RepeatedBy = field(default_factory=dict)
    steps_by: StepsBy = field(default_factory=dict)
    verdict_words: tuple[str, ...] = ()

    def contract_args(self) -> list[str]:
        """:attr:`contract` as ``advspatial run`` options (``--quick`` first; lists joined by commas)."""
        args = ["--quick"]
        for name, value in self.contract.items():
            option = "--" + name.replace("_", "-")
            if isinstance(value, bool):
                args.append(option if value else "--no-" + option[2:])
            else:
                args += [option, ",".join(map(str, value)) if isinstance(value, list | tuple) else str(value)]
        return args


#: every experiment, by name (``advspatial list experiments``)
EXPERIMENTS: Registry[Experiment] = Registry("experiment")


def register_experiment(
    name: str, config_cls: type[ExperimentConfig], description: str, *, findings: type[Findings], render: Render,
    contract: Mapping[str, Any] | None = None, priced_apart: PricedApart | None = None,
    sized_by: SizedBy | None = None, repeated_by: RepeatedBy | None = None, steps_by: StepsBy | None = None,
    verdict_words: Sequence[str] = (),
) -> Callable[[Callable[..., RunFindings]], Callable[..., RunFindings]]:
    """``@register_experiment(name, Config, description, findings=..., render=..., contract=...)`` on
    ``run(config, rundir) -> RunFindings`` (see :class:`Experiment` for the fields)."""

    def wrap(fn: Callable[..., RunFindings]) -> Callable[..., RunFindings]:
        experiment = Experiment(name, config_cls, fn, description, findings, render, dict(contract or {}),
                                priced_apart, dict(sized_by or {}), dict(repeated_by or {}), dict(steps_by or {}),
                                tuple(verdict_words))
        EXPERIMENTS.register(name, experiment)
        return fn

    return wrap


def get_experiment(name: str) -> Experiment:
    """The registered experiment ``name``; the one-line unknown-name error listing the valid ones."""
    return EXPERIMENTS.get(name)


def experiments() -> dict[str, Experiment]:
    """Every registered experiment, sorted by name."""
    return EXPERIMENTS.items()
