"""Experiment machinery shared by every experiment.

An experiment is a config dataclass (every setting is a field with a default and
a help text) plus ``run(config, rundir) -> ExperimentResult``. This module turns
the dataclass into CLI options and YAML, validates before any work starts,
writes the resolved config next to the results, and resumes interrupted runs.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import math
import time
import typing
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import torch
import yaml
from torch import nn

from ..data import ImageDataset

from ..errors import ConfigError, check_range, unknown_name
from ..runtime import RunDir, atomic_write_text


def setting(default: Any, help: str, **kwargs: Any) -> Any:  # noqa: A002 - mirrors click's name
    """A config field with a help text (shown by ``advspatial run EXPERIMENT --help``)."""
    if isinstance(default, (list, dict, set)):
        return field(default_factory=lambda: type(default)(default), metadata={"help": help, **kwargs})
    return field(default=default, metadata={"help": help, **kwargs})


@dataclass
class ExperimentConfig:
    """Settings every experiment has."""

    dataset: str = setting("fashion-mnist", "dataset name (advspatial list datasets)")
    model: str = setting("smallcnn", "registered architecture (trained/cached), model file, or torchvision:NAME")
    arch: str = setting("", "architecture of a state-dict --model file")
    model_seed: int = setting(0, "training seed of the cached model")
    n: int = setting(1000, "number of test images (the first n)")
    seed: int = setting(0, "seed of every random choice in the experiment")
    batch_size: int = setting(200, "images per batch (memory does not grow with n)")
    device: str = setting("auto", "auto, cpu, cuda or cuda:N")
    out: str = setting("", "run directory (default: runs/<experiment>)")
    progress: bool = setting(True, "show progress bars")

    #: overrides applied by ``--quick`` (CI-sized runs)
    QUICK: ClassVar[dict[str, Any]] = {"n": 40}

    def validate(self) -> None:
        """Raise ConfigError for any invalid value; called before any work starts."""
        from ..data import dataset_spec
        from ..runtime import pick_device

        dataset_spec(self.dataset)
        check_range("n", self.n, 1)
        check_range("batch_size", self.batch_size, 1)
        pick_device(self.device)
        if "/" not in self.model and "." not in self.model and not self.model.startswith("torchvision:"):
            from ..models import list_models

            if self.model not in list_models():
                raise unknown_name("model", self.model, list_models())


@dataclass
class ExperimentResult:
    """What an experiment returns: summary metrics, per-image rows, a report."""

    metrics: dict[str, Any]
    per_image: list[dict[str, Any]]
    summary: str
    report_sections: list[Any] = field(default_factory=list)


@dataclass(frozen=True)
class Experiment:
    name: str
    config_cls: type[ExperimentConfig]
    run: Callable[[Any, RunDir], ExperimentResult]
    description: str


_REGISTRY: dict[str, Experiment] = {}


def register_experiment(name: str, config_cls: type[ExperimentConfig], description: str) -> Callable[[Callable[..., ExperimentResult]], Callable[..., ExperimentResult]]:
    def wrap(fn: Callable[..., ExperimentResult]) -> Callable[..., ExperimentResult]:
        _REGISTRY[name] = Experiment(name, config_cls, fn, description)
        return fn

    return wrap


def get_experiment(name: str) -> Experiment:
    if name not in _REGISTRY:
        raise unknown_name("experiment", name, _REGISTRY)
    return _REGISTRY[name]


def experiments() -> dict[str, Experiment]:
    return dict(sorted(_REGISTRY.items()))


def mean_of(values: list[float]) -> float:
    """Mean of the non-NaN values (NaN when there is none): metrics are computed from per-image rows with it."""
    finite = [v for v in values if v == v]
    return sum(finite) / len(finite) if finite else math.nan


# -- the context every experiment works in ---------------------------------------------

@dataclass
class ExperimentContext:
    """The model, the first ``n`` test images, the run directory and the deterministic batches."""

    config: Any
    rundir: RunDir
    model: nn.Module
    data: ImageDataset
    device: torch.device
    slices: list[slice]

    def batch(self, sl: slice) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(images on the device, labels on the device, dataset indices) of one batch slice."""
        return self.data.images(sl).to(self.device), self.data.labels[sl].to(self.device), torch.arange(sl.start, sl.stop)

    def derive(self, cls: type[C], **extra: Any) -> C:
        """The same context as an experiment's subclass ``cls`` with its ``extra`` fields."""
        return cls(**{f.name: getattr(self, f.name) for f in dataclasses.fields(self)}, **extra)


C = TypeVar("C", bound=ExperimentContext)


def prepare_context(config: ExperimentConfig, rundir: RunDir) -> ExperimentContext:
    """Seed, pick the device, load (or train and cache) the model and the first ``config.n`` test images."""
    from ..data import load_dataset
    from ..runtime import batch_slices, pick_device
    from ..training import resolve_model

    device = pick_device(config.device)
    torch.manual_seed(config.seed)
    model = resolve_model(config.dataset, config.model, arch=config.arch or None, seed=config.model_seed,
                          device=device, progress=config.progress).eval()
    data = load_dataset(config.dataset, "test").head(config.n)
    return ExperimentContext(config, rundir, model, data, device, list(batch_slices(len(data), config.batch_size)))


# -- config: dataclass <-> dict / YAML ------------------------------------------------

def field_types(config_cls: type[ExperimentConfig]) -> dict[str, Any]:
    hints = typing.get_type_hints(config_cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(config_cls)}


def coerce(name: str, kind: Any, value: Any) -> Any:
    """Convert a YAML/CLI value to the field's type, or raise ConfigError."""
    origin = typing.get_origin(kind)
    try:
        if origin in (list, tuple, Sequence):
            items = value.split(",") if isinstance(value, str) else list(value)
            inner = typing.get_args(kind)[0] if typing.get_args(kind) else str
            return [coerce(name, inner, v.strip() if isinstance(v, str) else v) for v in items if v != ""]
        if kind is bool:
            if isinstance(value, str):
                if value.lower() in ("1", "true", "yes", "on"):
                    return True
                if value.lower() in ("0", "false", "no", "off"):
                    return False
                raise ValueError(value)
            return bool(value)
        if kind in (int, float, str):
            if kind is int and isinstance(value, float) and not value.is_integer():
                raise ValueError(value)
            return kind(value)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{name}={value!r} is not a valid {getattr(kind, '__name__', kind)}") from exc
    return value


def config_from_mapping(config_cls: type[ExperimentConfig], values: Mapping[str, Any]) -> ExperimentConfig:
    types = field_types(config_cls)
    unknown = set(values) - set(types)
    if unknown:
        raise ConfigError(f"unknown setting(s) {sorted(unknown)}; valid: {', '.join(sorted(types))}")
    return config_cls(**{k: coerce(k, types[k], v) for k, v in values.items()})


def load_yaml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path} is not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{path} must hold a mapping of setting: value")
    data.pop("experiment", None)
    return data


def resolve_config(
    experiment: Experiment, yaml_path: str | None, overrides: Mapping[str, Any], quick: bool
) -> ExperimentConfig:
    """Defaults < ``--quick`` preset < YAML file < explicit CLI options; then validate."""
    values: dict[str, Any] = {}
    if quick:
        values.update(experiment.config_cls.QUICK)
    if yaml_path:
        values.update(load_yaml(yaml_path))
    values.update(overrides)
    config = config_from_mapping(experiment.config_cls, values)
    config.validate()
    return config


def config_dict(config: ExperimentConfig) -> dict[str, Any]:
    return dataclasses.asdict(config)


# -- running ----------------------------------------------------------------------------

RESULT_FILES = ("config.yaml", "metrics.json", "per_image.csv", "report.html")


def run_experiment(name: str, config: ExperimentConfig, resume: bool = False) -> tuple[ExperimentResult, RunDir]:
    """Run (or resume) an experiment into its run directory and write every result file."""
    experiment = get_experiment(name)
    out = Path(config.out or f"runs/{name}")
    config.out = str(out)
    resolved = {"experiment": name, **config_dict(config)}
    config_path = out / "config.yaml"
    if config_path.is_file():
        previous = load_yaml(config_path)
        previous.pop("progress", None)
        current = {k: v for k, v in config_dict(config).items() if k != "progress"}
        if not resume:
            raise ConfigError(f"{out} already holds a run; resume it with --resume {out} or choose another --out")
        if {k: previous.get(k) for k in current} != current:
            raise ConfigError(f"{out} holds a run with a different config; resume it with its own config")
    rundir = RunDir(out)
    atomic_write_text(config_path, yaml.safe_dump(resolved, sort_keys=False))
    started = time.perf_counter()
    result = experiment.run(config, rundir)
    result.metrics.setdefault("wall_seconds", round(time.perf_counter() - started, 2))
    write_results(rundir, experiment, config, result)
    return result, rundir


def write_results(rundir: RunDir, experiment: Experiment, config: ExperimentConfig, result: ExperimentResult) -> None:
    from ..report.html import write_report

    atomic_write_text(rundir.path / "metrics.json", json.dumps(result.metrics, indent=2, default=_json_default))
    atomic_write_text(rundir.path / "per_image.csv", rows_to_csv(result.per_image))
    write_report(
        rundir.path / "report.html",
        title=f"advspatial - {experiment.name}",
        subtitle=experiment.description,
        config={"experiment": experiment.name, **config_dict(config)},
        sections=result.report_sections,
    )


def rows_to_csv(rows: list[dict[str, Any]]) -> str:
    """Rows as CSV text: columns in order of first appearance, missing cells empty; floats at repr precision."""
    buffer = io.StringIO()
    if rows:
        fieldnames = list(dict.fromkeys(key for row in rows for key in row))
        writer = csv.DictWriter(buffer, fieldnames=fieldnames, restval="", lineterminator="\n")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: _csv_value(v) for k, v in row.items()})
    return buffer.getvalue()


def _csv_value(value: Any) -> Any:
    if isinstance(value, float):
        return repr(value)
    return value


def _json_default(value: Any) -> Any:
    if hasattr(value, "tolist"):
        return value.tolist()
    raise TypeError(f"not JSON serializable: {type(value).__name__}")
