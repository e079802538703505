"""Experiment machinery shared by every experiment: the names of its parts in one place.

An experiment is a config dataclass (every setting is a field with a default and a help text) plus
``run(config, rundir) -> ExperimentResult``. The machinery has one module per concept:

- :mod:`.settings`: the config dataclass, :func:`setting`, validation helpers, YAML and the layering of
  defaults < preset < ``--quick`` < YAML < options (:func:`resolve_config`);
- :mod:`.registry`: the experiment registry (:func:`register_experiment`, :func:`get_experiment`);
- :mod:`.context`: the context a run works in (model, test images, the batch loop, attack stages);
- :mod:`.running`: the run directory (:func:`open_run`: lock, fingerprint, resume) and :func:`run_experiment`;
- :mod:`.results`: what a run returns and writes (:class:`ExperimentResult`, :func:`write_results`).

Every name is importable from here, as it was when this module held them all.
"""

from __future__ import annotations

from .context import (
    C, ExperimentContext, T, check_model_fits_data, load_checked_model, prepare_context, shared_splits, test_images,
    train_images,
)
from .registry import EXPERIMENTS, Experiment, experiments, get_experiment, register_experiment
from .results import RESULT_FILES, ExperimentResult, mean_of, rows_to_csv, write_results
from .running import UNFINGERPRINTED, fingerprint, open_run, run_experiment
from .settings import (
    OPEN_UNIT_INTERVAL, ExperimentConfig, check_choice, check_declared, coerce, config_dict, config_from_mapping,
    dataset_options, declared_help, field_types, load_yaml, read_yaml_mapping, resizes_images, resolve_config, setting,
)

__all__ = [
    "C", "EXPERIMENTS", "Experiment", "ExperimentConfig", "ExperimentContext", "ExperimentResult", "OPEN_UNIT_INTERVAL",
    "RESULT_FILES", "T", "UNFINGERPRINTED", "check_choice", "check_declared", "check_model_fits_data", "coerce",
    "config_dict", "config_from_mapping", "dataset_options", "declared_help", "experiments", "field_types",
    "fingerprint", "get_experiment", "load_checked_model", "load_yaml", "mean_of", "open_run", "prepare_context",
    "read_yaml_mapping", "register_experiment", "resizes_images", "resolve_config", "rows_to_csv", "run_experiment",
    "setting", "shared_splits", "test_images", "train_images", "write_results",
]
