"""Running a study: the same RoI/RoA measurement (the ``maps`` experiment) on every model over the same images
with the same seeds, each model in its own resumable run directory ``OUT/models/LABEL/``, then the cross-model
analysis and the study's own files.

Before any work, every model's settings are resolved and checked to agree on everything that is measured (only
how each model is loaded may differ), every model is loaded and run on one image, and all must have the same
number of outputs and select the same images. A model whose run fails later is listed as failed with its reason;
the models already measured are kept, and ``--resume`` completes the failed one. A finished model (its
``metrics.json`` and study record) is never computed again.
"""

from __future__ import annotations

import contextlib
import functools
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import yaml

from ..distributed import agree, on_every_rank, world
from ..errors import AdvspatialError, ConfigError, DataError, ModelError, first_line
from ..experiments import get_experiment
from ..experiments.context import load_checked_model, run_identity, test_images
from ..experiments.running import resolve_config
from ..experiments.settings import check_settings, config_dict, read_yaml_mapping
from ..files import DirLock, atomic_write_text, check_writable_dir
from ..experiments.measurement.config import MeasurementConfig
from ..progress import note
from ..runtime import pick_device
from .models import StudyModel, parse_models

#: the study's own defaults beside the ``maps`` experiment's (five models x six attacks is a day on a CPU)
STUDY_DEFAULTS: dict[str, Any] = {"attacks": ["fgsm", "pgd"]}
#: settings that may differ between the models of one study: how each model is loaded, never what is measured
PER_MODEL = frozenset({"model", "weights", "arch", "preset", "image_size", "crop_fraction", "out", "batch_size",
                       "device", "progress"})
#: the file recording a study's models and settings (a resumed study must have the same)
STUDY_FILE = "study.yaml"
#: keys of a study's settings that belong to each model (its entry in the list of models) or to the study itself
NOT_SHARED = {"model": "a model entry's model: (or --models)", "out": "--out (the study's directory)",
              "label": "a model entry's label:", "covariates": "a model entry's covariates:"}


@dataclass
class Study:
    """A study: its models, the ``maps`` settings every model is measured with, its directory."""

    models: list[StudyModel]
    settings: dict[str, Any] = field(default_factory=dict)
    out: str = "runs/study"
    quick: bool = False

    def record(self) -> dict[str, Any]:
        """What ``study.yaml`` holds: models, settings (progress bars left out: they change no result), quick."""
        settings = {k: v for k, v in self.settings.items() if k != "progress"}
        return {"models": [m.as_dict() for m in self.models], "settings": settings, "quick": self.quick}


def check_shared(settings: Mapping[str, Any], where: str) -> None:
    """The shared settings of a study (a YAML file's, ``advspatial.study``'s keywords, study.yaml's): each a
    ``maps`` setting of its type and range on its own, none a per-model key (``model:`` would be ignored for every
    model); ``experiment:``, when given, is ``maps``, the only measurement a study makes. One line naming
    ``where`` otherwise."""
    experiment = settings.get("experiment", "maps")
    if experiment != "maps":
        raise ConfigError(f"{where}: experiment={experiment!r}; a study runs the maps measurement on every model "
                          "(valid: maps, or leave it out)")
    for key, instead in NOT_SHARED.items():
        if key in settings:
            raise ConfigError(f"{where}: {key} is not a shared setting of a study; valid: {instead}")

    check_settings(get_experiment("maps").config_cls, {k: v for k, v in settings.items() if k != "experiment"}, where)


def model_configs(study: Study) -> dict[str, MeasurementConfig]:
    """Every model's resolved and validated ``maps`` config (its run in ``OUT/models/LABEL``); a one-line
    ConfigError naming the model when one is invalid, or when two models would be measured differently."""
    check_shared(study.settings, "the study's shared settings")
    experiment = get_experiment("maps")
    configs: dict[str, MeasurementConfig] = {}
    for m in study.models:
        values = {**STUDY_DEFAULTS, **study.settings, "model": m.model,
                  "out": str(Path(study.out) / "models" / m.label)}
        values.update({k: v for k, v in (("weights", m.weights), ("arch", m.arch), ("preset", m.preset),
                                         ("image_size", m.image_size), ("batch_size", m.batch_size)) if v})
        try:
            config = resolve_config(experiment, None, values, study.quick)
        except AdvspatialError as exc:  # an invalid setting or model spec: named with its model
            raise type(exc)(f"model {m.label}: {first_line(exc)}") from exc
        configs[m.label] = config  # type: ignore[assignment]
    check_same_measurement(configs)
    return configs


def check_same_measurement(configs: Mapping[str, MeasurementConfig]) -> None:
    """Every model is measured with the same settings (budgets, maps, statistics, images, seeds): a preset that
    resolves differently for one model (another dataset preset, a zoo model's own) would compare unlike things."""
    labels = list(configs)
    first = config_dict(configs[labels[0]])
    for label in labels[1:]:
        other = config_dict(configs[label])
        differ = [k for k in first if k not in PER_MODEL and first[k] != other[k]]
        if differ:
            k = differ[0]
            raise ConfigError(f"models {labels[0]} and {label} would be measured differently ({k}: {first[k]!r} vs "
                              f"{other[k]!r}); set {k} for the study (e.g. --{k.replace('_', '-')}), or --preset")


@dataclass
class Preflight:
    """What the preflight found: the shared images ((index, label) pairs) and each model's run identity (the
    checksums of its weights, code and images, which its run directory is bound to)."""

    images: list[tuple[int, int]]
    identities: dict[str, dict[str, str]]


def preflight(configs: Mapping[str, MeasurementConfig]) -> Preflight:
    """Load every model and run it on one image before any work: a broken model spec, a model that cannot take the
    images, models with different numbers of outputs or selecting different images are one line each."""

    outputs: dict[str, int] = {}
    images: dict[str, list[tuple[int, int]]] = {}
    identities: dict[str, dict[str, str]] = {}
    for label, config in configs.items():
        data = test_images(config)
        device = pick_device(config.device)
        try:  # under torchrun one rank's failure (a factory that fails there only) stops every rank in one line
            model = on_every_rank(functools.partial(load_checked_model, config, data, device))
            with torch.no_grad():
                outputs[label] = int(model(data.images(slice(0, 1)).to(device)).shape[1])
        except (ModelError, DataError) as exc:
            raise type(exc)(f"model {label}: {first_line(exc)}") from exc
        identities[label] = run_identity(config, model, data)
        images[label] = [(int(i), int(y)) for i, y in zip(data.ids, data.labels, strict=True)]
        del model
    labels = list(configs)
    for label in labels[1:]:
        if outputs[label] != outputs[labels[0]]:
            raise ModelError(f"models {labels[0]} ({outputs[labels[0]]} outputs) and {label} ({outputs[label]} "
                             "outputs) classify different label sets; a study compares models of one dataset")
        if images[label] != images[labels[0]]:
            raise DataError(f"models {labels[0]} and {label} select different images; a study needs the same images")
    return Preflight(images[labels[0]], identities)


@contextlib.contextmanager
def study_dir(study: Study, resume: bool) -> Iterator[Path]:
    """The study's directory, locked; a study already there is resumed only with ``resume`` and the same models
    and settings (one line otherwise)."""
    out = Path(study.out)
    if not world().is_main:
        agree()
        yield out
        return
    lock: DirLock | None = None
    try:
        check_writable_dir(out, "study directory")
        lock = DirLock(out / ".lock", f"{out} is in use by another advspatial process; wait for it or choose "
                                      "another --out").acquire()
        check_study_dir(out, study, resume)
    except Exception as exc:
        if lock is not None:
            lock.release()
        agree(exc)
        raise
    agree()
    try:
        yield out
    finally:
        lock.release()


def check_study_dir(out: Path, study: Study, resume: bool) -> None:
    """``out`` is new (or holds this very study, with ``resume``); ``study.yaml`` is written."""
    saved_file = out / STUDY_FILE
    if saved_file.is_file():
        saved = read_yaml_mapping(saved_file)
        if not resume:
            raise ConfigError(f"{out} already holds a study; resume it with advspatial study --resume {out} or "
                              "choose another --out")
        if saved != study.record():
            raise ConfigError(f"{out} holds a study of other models or settings ({STUDY_FILE}); choose another --out")
        return
    foreign = sorted(p.name for p in out.iterdir() if not p.name.startswith("."))
    if foreign:
        raise ConfigError(f"--out {out} holds files that are not an advspatial study ({', '.join(foreign[:3])}); "
                          "choose a new or empty --out")
    atomic_write_text(saved_file, yaml.safe_dump(study.record(), sort_keys=False))


def load_study(out: str | Path) -> Study:
    """The study recorded in ``out/study.yaml`` (``--resume``, ``advspatial report``), checked as a new study's
    models and settings are (one line naming the file when it is damaged)."""
    path = Path(out) / STUDY_FILE
    if not path.is_file():
        raise ConfigError(f"--resume {out}: no {STUDY_FILE} there; valid: a directory written by advspatial study")
    saved = read_yaml_mapping(path)
    settings, quick = saved.get("settings") or {}, saved.get("quick", False)
    if not isinstance(settings, dict) or not isinstance(quick, bool) or set(saved) - {"models", "settings", "quick"}:
        raise ConfigError(f"{path} is not a study's record; valid: models:, settings: (a mapping) and quick: "
                          "(true/false), as advspatial study writes it")
    try:
        models = parse_models(saved.get("models", []))
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from exc
    check_shared(settings, str(path))
    return Study(models, dict(settings), str(out), quick)


def say(message: str) -> None:
    """A progress line on stderr (rank 0), between the progress bars."""
    if world().is_main:
        note(message)


def elapsed(started: float) -> float:
    return round(time.perf_counter() - started, 2)
