"""The experiment registry: ``@register_experiment(name, Config, description)`` on ``run(config, rundir)``."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..registry import Registry
from ..rundir import RunDir
from .results import ExperimentResult
from .settings import ExperimentConfig


@dataclass(frozen=True)
class Experiment:
    name: str
    config_cls: type[ExperimentConfig]
    run: Callable[[Any, RunDir], ExperimentResult]
    description: str


#: every experiment, by name (``advspatial list experiments``)
EXPERIMENTS: Registry[Experiment] = Registry("experiment")


def register_experiment(
    name: str, config_cls: type[ExperimentConfig], description: str,
) -> Callable[[Callable[..., ExperimentResult]], Callable[..., ExperimentResult]]:
    """``@register_experiment(name, Config, description)`` on ``run(config, rundir) -> ExperimentResult``."""

    def wrap(fn: Callable[..., ExperimentResult]) -> Callable[..., ExperimentResult]:
        EXPERIMENTS.register(name, Experiment(name, config_cls, fn, description))
        return fn

    return wrap


def get_experiment(name: str) -> Experiment:
    """The registered experiment ``name``; the one-line unknown-name error listing the valid ones."""
    return EXPERIMENTS.get(name)


def experiments() -> dict[str, Experiment]:
    """Every registered experiment, sorted by name."""
    return EXPERIMENTS.items()
