"""Experiment machinery shared by every experiment.

An experiment is a config dataclass (every setting is a field with a default and
a help text) plus ``run(config, rundir) -> ExperimentResult``. This module turns
the dataclass into CLI options and YAML, validates before any work starts,
writes the resolved config next to the results, and resumes interrupted runs.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import io
import json
import math
import time
import typing
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

import torch
import yaml
from torch import nn

from ..data import ImageDataset
from ..data.subset import SUBSET_MODES

from ..errors import ConfigError, check_range, check_seed
from ..registry import Registry
from ..runtime import RunDir, atomic_write_text

if TYPE_CHECKING:
    from ..attacks import Attack, AttackResult


#: ``setting(..., **OPEN_UNIT_INTERVAL)``: a share strictly between 0 and 1 (a region fraction, a level)
OPEN_UNIT_INTERVAL: Mapping[str, Any] = {"low": 0, "high": 1, "low_inclusive": False, "high_inclusive": False}


def setting(default: Any, help: str, *, low: float | None = None, high: float | None = None,  # noqa: A002
            low_inclusive: bool = True, high_inclusive: bool = True, choices: Sequence[str] | None = None,
            **kwargs: Any) -> Any:
    """A config field with a help text (shown by ``advspatial run EXPERIMENT --help``) and its valid values.

    ``low``/``high`` (with ``*_inclusive``) bound a number, ``choices`` list the
    valid strings; for a list field they apply to every element. They are checked
    generically (:func:`check_declared`) before an experiment's own checks, so a
    config class declares its ranges instead of writing ``check_range`` lines.
    """
    metadata = {"help": help, **kwargs}
    if low is not None or high is not None:
        metadata["range"] = (low, high, low_inclusive, high_inclusive)
    if choices is not None:
        metadata["choices"] = tuple(choices)
    if isinstance(default, (list, dict, set)):
        return field(default_factory=lambda: type(default)(default), metadata=metadata)
    return field(default=default, metadata=metadata)


def check_declared(config: Any) -> None:
    """Every field's declared range and choices (:func:`setting`), each element of a list field alike."""
    for f in dataclasses.fields(config):
        bounds, choices = f.metadata.get("range"), f.metadata.get("choices")
        if bounds is None and choices is None:
            continue
        value = getattr(config, f.name)
        for item in value if isinstance(value, list) else [value]:
            if bounds is not None:
                low, high, low_inclusive, high_inclusive = bounds
                check_range(f.name, item, low, high, low_inclusive=low_inclusive, high_inclusive=high_inclusive)
            if choices is not None:
                check_choice(f.name, item, choices)


def declared_help(f: dataclasses.Field) -> str:  # type: ignore[type-arg]
    """The field's help text with its declared range or choices, for ``--help``."""
    text = str(f.metadata.get("help", ""))
    bounds, choices = f.metadata.get("range"), f.metadata.get("choices")
    if bounds is not None:
        low, high, low_inclusive, high_inclusive = bounds
        left, right = ("[" if low_inclusive else "("), ("]" if high_inclusive else ")")
        text += f" (valid: {left}{'-inf' if low is None else f'{low:g}'}, {'inf' if high is None else f'{high:g}'}{right})"
    if choices is not None:
        text += f" (valid: {', '.join(choices)})"
    return text


@dataclass
class ExperimentConfig:
    """Settings every experiment has."""

    dataset: str = setting("fashion-mnist", "dataset name (advspatial list datasets), e.g. imagefolder:PATH")
    model: str = setting("smallcnn", "model spec: registered or zoo name (advspatial list models), FILE.py:factory, "
                         "package.module:factory, torchvision:NAME, timm:NAME, or a TorchScript/state-dict file")
    weights: str = setting("", "state-dict file loaded into the model (a registered/zoo name or a factory)")
    arch: str = setting("", "architecture of a state-dict --model file")
    model_seed: int = setting(0, "training seed of the cached model")
    preset: str = setting("auto", "budgets of a setting in the literature: auto (from the dataset or zoo model), "
                          "none, mnist, fashion-mnist, cifar10, imagenet")
    n: int = setting(1000, "number of test images", low=1)
    subset: str = setting("stratified", "which n images: stratified (equal share per class, seeded), random "
                          "(seeded), first", choices=SUBSET_MODES)
    image_size: int = setting(0, "folder datasets: side in pixels the images are resized to (0: a zoo model's "
                              "input size, else the loader's default)", low=0, high=4096)
    fit: str = setting("crop", "folder datasets: crop (keep the aspect ratio, centre crop) or stretch",
                       choices=('crop', 'stretch'))
    crop_fraction: float = setting(0.0, "folder datasets, fit crop: side of the centre crop as a fraction of the "
                                   "shorter side (0: a zoo model's, e.g. 0.875 for ImageNet; else 1)", low=0, high=1)
    class_map: str = setting("", "folder datasets: TSV of model output index, folder name[, display name]")
    seed: int = setting(0, "seed of every random choice in the experiment")
    batch_size: int = setting(200, "images per batch (memory does not grow with n)", low=1)
    device: str = setting("auto", "auto, cpu, cuda or cuda:N")
    out: str = setting("", "run directory (default: runs/<experiment>)")
    progress: bool = setting(True, "show progress bars")

    #: overrides applied by ``--quick`` (CI-sized runs)
    QUICK: ClassVar[dict[str, Any]] = {"n": 40}
    #: generic preset budgets (experiments.presets) -> this experiment's fields
    PRESET_FIELDS: ClassVar[dict[str, str]] = {"batch_size": "batch_size", "image_size": "image_size"}
    #: why the experiment needs the model's layers (hooks, weights); "" when it does not.
    #: A TorchScript model is refused before any work when this is set.
    LAYER_ACCESS: ClassVar[str] = "class activation maps read a layer through forward hooks"
    #: fields an experiment sets itself (not offered as CLI options; still in config.yaml)
    CLI_HIDDEN: ClassVar[frozenset[str]] = frozenset()

    def validate(self) -> None:
        """Raise ConfigError for any invalid value; called before any work starts."""
        from ..data import dataset_spec
        from ..runtime import pick_device

        check_declared(self)
        dataset_spec(self.dataset)
        check_seed("seed", self.seed)
        check_seed("model_seed", self.model_seed)
        if self.class_map and not Path(self.class_map).expanduser().is_file():
            raise ConfigError(f"class_map file not found: {self.class_map}")
        pick_device(self.device)
        self.check_model()

    @classmethod
    def preset_values(cls, preset: str, given: Mapping[str, Any]) -> dict[str, Any]:
        """The preset's budgets under this experiment's field names (``given``: the values set explicitly).

        A zoo model's own input size beats the preset's image size (EfficientNet-Lite1 takes 240, not 224).
        """
        from ..models.zoo import is_zoo_name
        from .presets import preset_values

        values = preset_values(cls.PRESET_FIELDS, preset)
        if is_zoo_name(str(given.get("model", cls.model))) or not resizes_images(str(given.get("dataset", cls.dataset))):
            values.pop(cls.PRESET_FIELDS.get("image_size", "image_size"), None)
        return values

    def check_model(self) -> None:
        """The model spec is usable here: named things exist, TorchScript only where no layer is read."""
        from ..models import parse_model_spec

        source = parse_model_spec(self.model, self.weights or None, self.arch or None)
        if source.is_torchscript and self.LAYER_ACCESS:
            raise ConfigError(
                f"this experiment needs the model's layers ({self.LAYER_ACCESS}), which a TorchScript model "
                f"cannot give; load it from Python instead: --model FILE.py:factory --weights STATE_DICT "
                "(advspatial evaluate, advspatial attack and run baseline accept TorchScript)"
            )

    def dataset_options(self) -> dict[str, Any]:
        """Loader options of folder datasets (image size, fit, class map); {} for the others."""
        return dataset_options(self.dataset, self.model, self.image_size, self.fit, self.class_map, self.crop_fraction)


def resizes_images(dataset: str) -> bool:
    """True when the dataset's loader takes an image size (folder datasets); False for fixed-size data and for
    an unknown name (reported by validation)."""
    import inspect

    from ..data import dataset_spec

    try:
        return "class_map" in inspect.signature(dataset_spec(dataset).loader).parameters
    except ConfigError:
        return False


def dataset_options(dataset: str, model: str, image_size: int, fit: str, class_map: str,
                    crop_fraction: float = 0.0) -> dict[str, Any]:
    """``load_dataset`` options for a folder dataset; an error when they are given for a dataset without them.

    Unset (0) image size and crop fraction follow a zoo model's own preprocessing.
    """
    from ..models.zoo import zoo_entries

    if not resizes_images(dataset):
        if image_size or class_map or crop_fraction:
            raise ConfigError(f"image_size/class_map/crop_fraction apply to folder datasets (imagefolder:PATH), not {dataset!r}")
        return {}
    entry = zoo_entries().get(model)
    size = image_size or (entry.input_size if entry is not None else 0)
    options: dict[str, Any] = {"fit": fit,
                               "crop_fraction": crop_fraction or (entry.crop_fraction if entry is not None else 1.0)}
    if size:
        options["size"] = size
    if class_map:
        options["class_map"] = class_map
    return options


def check_choice(name: str, value: str, valid: Sequence[str]) -> None:
    if value not in valid:
        raise ConfigError(f"{name}={value!r} is not valid; valid: {', '.join(valid)}")


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


#: every experiment, by name (``advspatial list experiments``)
EXPERIMENTS: Registry[Experiment] = Registry("experiment")


def register_experiment(name: str, config_cls: type[ExperimentConfig], description: str) -> Callable[[Callable[..., ExperimentResult]], Callable[..., ExperimentResult]]:
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
        """(images on the device, labels on the device, global sample ids) of one batch slice."""
        return self.data.images(sl).to(self.device), self.data.labels[sl].to(self.device), self.data.ids[sl]

    def each_batch(self, fn: Callable[[int, Any], T], desc: str = "", slices: Sequence[Any] | None = None,
                   then: Callable[[int, Any, T], Any] | None = None) -> list[Any]:
        """``[fn(b, sl) for b, sl in enumerate(slices)]`` (default: the run's batches) with a progress bar,
        shared among the processes of a ``torchrun`` launch.

        Every loop over batches goes through here, so that scale-out happens in one
        place (:func:`advspatial.distributed.map_batches`). ``fn`` must depend only on
        its batch (seeds keyed by sample ids, nothing carried from one batch to the
        next: accumulate the returned list instead) and save its costly work as stages
        named by ``b`` (``self.rundir.cached(f"name/batch-{b:05d}", ...)``): under
        torchrun it runs once on this process's batches, then on every batch in order,
        loading what the other processes saved. ``then(b, sl, value)`` consumes each value in
        batch order, once per batch (accumulators, rows): see :func:`~advspatial.distributed.map_batches`.
        ``slices`` may also be other independent units of work, e.g. (configuration, batch) pairs.
        """
        from ..distributed import map_batches

        return map_batches(fn, self.slices if slices is None else slices, desc=desc,
                           progress=bool(getattr(self.config, "progress", True)), then=then)

    def each_batch_columns(self, fn: Callable[[int, Any], Mapping[str, torch.Tensor]], desc: str = "",
                           slices: Sequence[Any] | None = None) -> dict[str, torch.Tensor]:
        """:meth:`each_batch` over ``fn`` returning per-image columns ``{name: (B, ...) tensor}``: each column
        concatenated over the batches, in batch order."""
        parts: dict[str, list[torch.Tensor]] = {}

        def collect(b: int, item: Any, columns: Mapping[str, torch.Tensor]) -> None:
            for name, values in columns.items():
                parts.setdefault(name, []).append(values)

        self.each_batch(fn, desc=desc, slices=slices, then=collect)
        return {name: torch.cat(values) for name, values in parts.items()}

    def attack_stage(self, stage: str, attack: "Attack", b: int, sl: slice | None = None) -> "AttackResult":
        """``attack`` on batch ``b`` (``sl``, default the run's batch b), seeds keyed by the images' global ids;
        a cached stage ``{stage}/batch-{b:05d}`` on the CPU, so a resumed or sharded run reads it back."""
        from ..attacks import AttackResult

        part = self.slices[b] if sl is None else sl

        def compute() -> dict[str, Any]:
            x, y, ids = self.batch(part)
            result = attack.run(x, y, sample_ids=ids).to("cpu")
            return {f.name: getattr(result, f.name) for f in dataclasses.fields(result)}

        return AttackResult(**self.rundir.cached(f"{stage}/batch-{b:05d}", compute))

    def derive(self, cls: type[C], **extra: Any) -> C:
        """The same context as an experiment's subclass ``cls`` with its ``extra`` fields."""
        return cls(**{f.name: getattr(self, f.name) for f in dataclasses.fields(self)}, **extra)


C = TypeVar("C", bound=ExperimentContext)
T = TypeVar("T")


def prepare_context(config: ExperimentConfig, rundir: RunDir, images: ImageDataset | None = None) -> ExperimentContext:
    """Seed, pick the device, load (or train and cache) the model and the ``config.n`` test images
    (of ``images`` when given, else of ``config.dataset``)."""
    from ..runtime import batch_slices, pick_device

    device = pick_device(config.device)
    torch.manual_seed(config.seed)
    data = test_images(config, rundir, images)
    model = load_checked_model(config, data, device)
    from ..training import state_checksum

    rundir.bind_model(state_checksum(model))
    return ExperimentContext(config, rundir, model, data, device, list(batch_slices(len(data), config.batch_size)))


def load_checked_model(config: ExperimentConfig, data: ImageDataset, device: torch.device) -> nn.Module:
    """The model ``config`` names (trained and cached when it is a registered name without weights), in eval
    mode on ``device``, checked against ``data`` by one forward pass (:func:`check_model_fits_data`)."""
    from ..training import resolve_model

    model = resolve_model(config.dataset, config.model, arch=config.arch or None, seed=config.model_seed,
                          device=device, progress=config.progress, weights=config.weights or None,
                          num_classes=data.num_classes, image_shape=data.image_shape).eval()
    check_model_fits_data(model, data, device)
    return model


def test_images(config: ExperimentConfig, rundir: RunDir | None = None, full: ImageDataset | None = None) -> ImageDataset:
    """The ``config.n`` test images the experiment works on (``config.subset``, seeded by ``config.seed``),
    drawn from ``full`` (default: the test split of ``config.dataset``).

    The chosen dataset indices (the images' global ids) are written to
    ``subset.csv`` in the run directory, so the sample can be reproduced and audited.
    """
    from ..data import load_dataset
    from ..data.subset import select

    if full is None:
        full = load_dataset(config.dataset, "test", **config.dataset_options())
    data = select(full, config.n, config.subset, config.seed)
    if rundir is not None:
        lines = ["index,label"] + [f"{int(i)},{int(y)}" for i, y in zip(data.ids, data.labels)]
        atomic_write_text(rundir.path / "subset.csv", "\n".join(lines) + "\n")
    return data


def train_images(config: ExperimentConfig, n: int, exclude: torch.Tensor | None = None) -> ImageDataset:
    """``n`` training images, class-stratified (seed ``config.seed``), for priors and statistics of a defence.

    A folder dataset without separate ``train/`` and ``test/`` folders has one
    image set for both splits: the images in ``exclude`` (the global ids of the
    test images being evaluated) are then left out, so a prior never sees them.
    """
    from ..data import load_dataset
    from ..data.subset import select

    full = load_dataset(config.dataset, "train", **config.dataset_options())
    if exclude is not None and shared_splits(config.dataset):
        keep = ~torch.isin(full.ids, exclude.cpu())
        if not bool(keep.any()):
            raise ConfigError(f"{config.dataset} has no training images beside the {len(exclude)} test images; "
                              "use a smaller n or a folder with train/ and test/")
        full = full.subset(torch.nonzero(keep).flatten())
    return select(full, n, "stratified", config.seed)


def shared_splits(dataset: str) -> bool:
    """True when the dataset's train and test splits are the same images (a folder without train/ and test/,
    an ``arrays:`` file, in-memory images without a training set)."""
    from ..data.imagefolder import split_root
    from ..data.tensors import has_own_training_set

    if dataset.startswith("arrays:"):
        return True
    if dataset.startswith("memory:"):
        return not has_own_training_set(dataset)
    if not dataset.startswith("imagefolder:"):
        return False
    root = Path(dataset.split(":", 1)[1]).expanduser()
    return split_root(root, "train") == split_root(root, "test")


def check_model_fits_data(model: nn.Module, data: ImageDataset, device: torch.device) -> None:
    """One forward pass on one image: the model takes the images, returns finite (N, K) logits, K > every label.

    Turns shape and class-count mismatches into one clear ModelError before any work.
    """
    from ..errors import ModelError

    x = data.images(slice(0, 1)).to(device)
    try:
        with torch.no_grad():
            logits = model(x)
    except Exception as exc:  # the model's own error: wrong channels, size...
        raise ModelError(f"the model cannot take {data.name} images of shape {tuple(x.shape[1:])}: "
                         f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}") from exc
    if not isinstance(logits, torch.Tensor) or logits.ndim != 2:
        raise ModelError(f"the model must return logits (N, classes); it returned {type(logits).__name__} "
                         f"{tuple(getattr(logits, 'shape', ()))}")
    if not bool(torch.isfinite(logits).all()):
        raise ModelError("the model returns non-finite logits (NaN or inf) on the first image; check its weights")
    top = int(data.labels.max())
    if top >= logits.shape[1]:
        raise ModelError(f"the model has {logits.shape[1]} outputs but the data has label {top} "
                         f"({data.num_classes} classes); for a folder dataset give --class-map "
                         "(model output index, folder name) so labels are the model's indices")
    if logits.shape[1] != data.num_classes and data.name == "imagefolder":
        # folder labels are folder indices, not model outputs: a prediction would name a class of the model
        # as if it were the folder of the same index
        raise ModelError(f"the model has {logits.shape[1]} outputs but the data has {data.num_classes} classes "
                         f"({data.name}); its predictions would name classes the data does not have - for a folder "
                         "dataset give --class-map (model output index, folder name) with one line per output")


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


def read_yaml_mapping(path: str | Path) -> dict[str, Any]:
    """The mapping in a YAML settings file (``experiment`` key included); one-line ConfigErrors for a missing,
    unreadable, non-UTF-8 or invalid file."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path} is not a UTF-8 text file (byte {exc.start}); valid: a YAML file of "
                          "setting: value") from exc
    except OSError as exc:
        raise ConfigError(f"cannot read {path} ({exc.strerror or exc})") from exc
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(f"{path} is not valid YAML{where}: {problem}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{path} must hold a mapping of setting: value")
    return data


def load_yaml(path: str | Path) -> dict[str, Any]:
    """The settings in a YAML file, without its ``experiment`` key (see :func:`read_yaml_mapping`)."""
    data = read_yaml_mapping(path)
    data.pop("experiment", None)
    return data


def resolve_config(
    experiment: Experiment, yaml_path: str | None, overrides: Mapping[str, Any], quick: bool
) -> ExperimentConfig:
    """Defaults < dataset preset < ``--quick`` < YAML file < explicit CLI options; then validate.

    The preset (``experiments.presets``) is named by the YAML file or the CLI
    (``auto`` when neither does); its resolved name is stored in the config.
    """
    from .presets import resolve_preset_name

    values: dict[str, Any] = {}
    if quick:
        values.update(experiment.config_cls.QUICK)
    if yaml_path:
        values.update(load_yaml(yaml_path))
    values.update(overrides)
    defaults = experiment.config_cls()
    preset = resolve_preset_name(str(values.get("preset", defaults.preset)), str(values.get("dataset", defaults.dataset)),
                                 str(values.get("model", defaults.model)))
    values = {**experiment.config_cls.preset_values(preset, values), **values, "preset": preset}
    config = config_from_mapping(experiment.config_cls, values)
    config.validate()
    return config


def config_dict(config: ExperimentConfig) -> dict[str, Any]:
    return dataclasses.asdict(config)


# -- running ----------------------------------------------------------------------------

RESULT_FILES = ("config.yaml", "metrics.json", "per_image.csv", "report.html")
#: settings that do not change any result: left out of a run's fingerprint (a run resumes from a moved
#: or copied directory, with or without progress bars)
UNFINGERPRINTED = ("out", "progress")


def fingerprint(config: ExperimentConfig) -> dict[str, Any]:
    """The settings a run's stages depend on: the resolved config without :data:`UNFINGERPRINTED`."""
    return {k: v for k, v in config_dict(config).items() if k not in UNFINGERPRINTED}


def _differences(saved: Mapping[str, Any], current: Mapping[str, Any]) -> str:
    keys = [k for k in dict.fromkeys([*saved, *current]) if saved.get(k) != current.get(k)]
    shown = ", ".join(f"{k}: {saved.get(k)!r} -> {current.get(k)!r}" for k in keys[:4])
    return shown + (f" and {len(keys) - 4} more" if len(keys) > 4 else "")


@contextlib.contextmanager
def open_run(out: Path, kind: str, config: ExperimentConfig, resume: bool, reuse_same: bool = False,
             write_config: bool = True) -> Iterator[RunDir]:
    """The run directory ``out`` of a run of ``kind`` with ``config``, locked for this run.

    Checked before any work: ``out`` is a writable directory (created if needed)
    and no other process works in it. A directory that holds results is tied to
    the settings that made them (``run.json``: experiment, :func:`fingerprint`,
    model checksum): it is resumed only with the same settings (``resume``, or
    ``reuse_same`` for commands without ``--resume``); anything else is refused
    in one line. A directory whose earlier run failed before producing any
    result is reused in place.

    Under torchrun, rank 0 holds the lock and does the checks; the other
    processes wait for its verdict (an error reaches all of them) and then share
    the directory.
    """
    from ..distributed import agree, world

    if not world().is_main:
        agree()
        yield RunDir(out)
        return
    with _checked_run_dir(Path(out), kind, config, resume, reuse_same, write_config) as rundir:
        yield rundir


@contextlib.contextmanager
def _checked_run_dir(out: Path, kind: str, config: ExperimentConfig, resume: bool, reuse_same: bool,
                     write_config: bool) -> Iterator[RunDir]:
    """Rank 0's half of :func:`open_run`: lock, check, record; the verdict is shared by :func:`agree`."""
    from ..distributed import agree
    from ..runtime import DirLock, check_writable_dir

    lock: DirLock | None = None
    try:
        check_writable_dir(out, "run directory")
        lock = DirLock(out / ".lock", f"{out} is in use by another advspatial process; wait for it to finish or "
                                      "choose another --out").acquire()
        rundir = _check_run_dir(out, kind, config, resume, reuse_same, write_config)
    except Exception as exc:
        if lock is not None:
            lock.release()
        agree(exc)  # raises it here and in every other process
        raise
    agree()
    try:
        yield rundir
    finally:
        lock.release()


def _check_run_dir(out: Path, kind: str, config: ExperimentConfig, resume: bool, reuse_same: bool,
                   write_config: bool) -> RunDir:
    rundir = RunDir(out)
    rundir.remove_stale_temp_files()
    record = rundir.record()
    current = {"experiment": kind, "config": fingerprint(config)}
    has_results = rundir.has_results()
    if has_results and record:
        same = record.get("experiment") == kind and record.get("config") == current["config"]
        if not same:
            if record.get("experiment") != kind:
                raise ConfigError(f"{out} holds a run of {record.get('experiment')}, not {kind}; choose "
                                  "another --out")
            edited = " (config.yaml was edited after the run started?)" if resume else ""
            raise ConfigError(f"{out} holds results computed with other settings{edited}: "
                              f"{_differences(record.get('config', {}), current['config'])}; choose another --out")
        if not (resume or reuse_same):
            raise ConfigError(f"{out} already holds a run; resume it with --resume {out} or choose another --out")
    elif has_results and not resume:
        raise ConfigError(f"{out} already holds results of another run; choose another --out")
    if not (has_results and record):  # a new run, or one that failed before producing any result
        rundir.write_record(current)
    if write_config:
        atomic_write_text(out / "config.yaml", yaml.safe_dump({"experiment": kind, **config_dict(config)},
                                                              sort_keys=False))
    return rundir


def run_experiment(name: str, config: ExperimentConfig, resume: bool = False) -> tuple[ExperimentResult, RunDir]:
    """Run (or resume) an experiment into its run directory and write every result file.

    Under torchrun every process runs the experiment on its share of the batches
    (:meth:`ExperimentContext.each_batch`) and ends with the same results; rank 0
    alone writes the result files.
    """
    from ..distributed import main_only

    experiment = get_experiment(name)
    out = Path(config.out or f"runs/{name}")
    config.out = str(out)
    with open_run(out, name, config, resume) as rundir:
        started = time.perf_counter()
        result = experiment.run(config, rundir)
        result.metrics.setdefault("wall_seconds", round(time.perf_counter() - started, 2))
        main_only(lambda: write_results(rundir, experiment, config, result))
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
