"""Experiments: a config dataclass + ``run(config, rundir)`` each, registered by name.

Every experiment package here registers itself in its ``run`` module; importing this package imports them
all (:func:`register_packages`), so a new experiment is its package plus its registry line, no edit here.
"""

import importlib
import pkgutil

from . import analyze, baseline  # noqa: F401  (the two single-module experiments register themselves)
from .registry import Experiment, experiments, get_experiment, register_experiment
from .results import ExperimentResult
from .running import resolve_config, run_experiment
from .settings import ExperimentConfig, setting


#: packages of machinery the experiments share, not experiments: they register nothing
SHARED_PACKAGES = frozenset({"measurement"})


def register_packages() -> None:
    """Import the ``run`` module of every experiment package in this folder (each registers its experiment); the
    shared packages (:data:`SHARED_PACKAGES`) are left out."""
    for module in pkgutil.iter_modules(__path__):
        if module.ispkg and module.name not in SHARED_PACKAGES:
            importlib.import_module(f"{__name__}.{module.name}.run")


register_packages()


def list_experiments() -> dict[str, str]:
    """Experiment names with their one-line descriptions."""
    return {name: exp.description for name, exp in experiments().items()}


__all__ = [
    "Experiment", "ExperimentConfig", "ExperimentResult", "experiments", "get_experiment",
    "list_experiments", "register_experiment", "resolve_config", "run_experiment", "setting",
]
