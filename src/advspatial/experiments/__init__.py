"""Experiments: a config dataclass + ``run(config, rundir)`` each, registered by name."""

from .registry import Experiment, experiments, get_experiment, register_experiment
from .results import ExperimentResult
from .running import resolve_config, run_experiment
from .settings import ExperimentConfig, setting
from . import analyze, baseline, localized, maps, perceptual, propagation, pse, spatial  # noqa: F401  (registers the experiments)


def list_experiments() -> dict[str, str]:
    """Experiment names with their one-line descriptions."""
    return {name: exp.description for name, exp in experiments().items()}


__all__ = [
    "Experiment", "ExperimentConfig", "ExperimentResult", "experiments", "get_experiment",
    "list_experiments", "register_experiment", "resolve_config", "run_experiment", "setting",
]
