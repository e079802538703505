"""An experiment's settings: declared once as a config dataclass, read from defaults, presets, YAML and options.

Every setting is a dataclass field made by :func:`setting` (default, help text, bounds, choices), so the CLI
options, the YAML keys, validation and the documentation's settings table follow from the dataclass;
:func:`resolve_config` layers defaults < dataset preset < ``--quick`` < YAML file < explicit options and
validates before any work.
"""

from __future__ import annotations

import dataclasses
import inspect
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import yaml

from ..attacks import list_attacks
from ..attacks.budgets import Budget, attack_for_budget
from ..data import dataset_spec
from ..data.subset import SUBSET_MODES
from ..errors import ConfigError, bounded_repr, check_range, check_seed, unknown_name
from ..files import load_yaml_text
from ..maps import list_importance_methods
from ..models import parse_model_spec
from ..training import refuse_training_on_test_images
from ..distributed import note_once
from ..models.spec import model_input
from ..runtime import pick_device

if TYPE_CHECKING:
    from torch import nn

    from ..attacks import Attack, AttackSpec

#: ``setting(..., **OPEN_UNIT_INTERVAL)``: a share strictly between 0 and 1 (a region fraction, a level)
OPEN_UNIT_INTERVAL: Mapping[str, Any] = {"low": 0, "high": 1, "low_inclusive": False, "high_inclusive": False}


def setting(default: Any, help: str, *, low: float | None = None, high: float | None = None,
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
    """Every field's declared range and choices (:func:`setting`), each element of a list field alike; a list
    field naming a value twice (``--attacks fgsm,fgsm``) is refused: it would count every image twice."""
    for f in dataclasses.fields(config):
        check_field(f, getattr(config, f.name))


def check_field(f: dataclasses.Field, value: Any) -> None:
    """One field's ``value`` against its declared range, choices and uniqueness (see :func:`check_declared`)."""
    check_unique(f.name, value)
    bounds, choices = f.metadata.get("range"), f.metadata.get("choices")
    for item in value if isinstance(value, list) else [value]:
        if bounds is not None:
            low, high, low_inclusive, high_inclusive = bounds
            check_range(f.name, item, low, high, low_inclusive=low_inclusive, high_inclusive=high_inclusive)
        if choices is not None:
            check_choice(f.name, item, choices)


def check_unique(name: str, value: Any) -> None:
    """A :class:`ConfigError` when the list ``value`` holds an item twice (each item is one arm of the experiment:
    a repeated one would enter the statistics twice, as if it were more evidence)."""
    if not isinstance(value, list):
        return
    seen: list[Any] = []
    for item in value:
        if any(item == other for other in seen):
            listed = ", ".join(v if isinstance(v, str) and len(v) <= 40 else bounded_repr(v, 40) for v in value[:8])
            raise ConfigError(f"{name} names {bounded_repr(item)} twice ({listed}{', ...' if len(value) > 8 else ''}"
                              "); valid: each value at most once")
        seen.append(item)


def declared_help(f: dataclasses.Field) -> str:
    """The field's help text with its declared range or choices, for ``--help``."""
    text = str(f.metadata.get("help", ""))
    bounds, choices = f.metadata.get("range"), f.metadata.get("choices")
    if bounds is not None:
        low, high, low_inclusive, high_inclusive = bounds
        left, right = ("[" if low_inclusive else "("), ("]" if high_inclusive else ")")
        lower, upper = "-inf" if low is None else f"{low:g}", "inf" if high is None else f"{high:g}"
        text += f" (valid: {left}{lower}, {upper}{right})"
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
    batch_size: int = setting(200, "images per batch (memory does not grow with n); on a GPU, "
                              "unless given, raised to what its memory takes in a call", low=1)
    device: str = setting("auto", "auto, cpu, cuda or cuda:N")
    out: str = setting("", "run directory (default: runs/<experiment>)")
    progress: bool = setting(True, "show progress bars")
    reuse_model_work: bool = setting(True, "read the stages that depend only on the model and their images (the "
                                     "gate's randomization checks, budget, control maps and columns; the class "
                                     "prior) from the model cache when an earlier run computed them from the same "
                                     "model, images and settings, and keep them there")
    smoke_test: bool = setting(False, "a smoke test, whose settings decide nothing (always set by --quick): the "
                               "summary and report open with 'smoke test: these settings decide nothing' and every "
                               "verdict reads '(smoke) would read: WORD'")

    #: overrides applied by ``--quick`` (CI-sized runs)
    QUICK: ClassVar[dict[str, Any]] = {"n": 40}
    #: generic preset budgets (experiments.presets) -> this experiment's fields
    PRESET_FIELDS: ClassVar[dict[str, str]] = {"batch_size": "batch_size", "image_size": "image_size"}
    #: why the experiment needs the model's layers (hooks, weights); "" when it does not.
    #: A TorchScript model is refused before any work when this is set.
    LAYER_ACCESS: ClassVar[str] = "class activation maps read a layer through forward hooks"
    #: fields an experiment sets itself (not offered as CLI options; still in config.yaml)
    CLI_HIDDEN: ClassVar[frozenset[str]] = frozenset()

    def budgeted_attack(self, name: str, model: nn.Module) -> Attack:
        """The registered attack ``name`` on ``model`` with this experiment's budgets
        (:mod:`advspatial.attacks.budgets`: each attack declares which of the settings it takes, so a newly
        registered attack runs with its intended budget), seeded by ``seed``."""
        return attack_for_budget(name, model, Budget.from_settings(self, self.PRESET_FIELDS), seed=self.seed)

    def validate(self) -> None:
        """Raise ConfigError for any invalid value; called before any work starts."""
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
        from .presets import preset_values

        values = preset_values(cls.PRESET_FIELDS, preset)
        model, dataset = str(given.get("model", cls.model)), str(given.get("dataset", cls.dataset))
        if model_input(model) is not None or not resizes_images(dataset):
            values.pop(cls.PRESET_FIELDS.get("image_size", "image_size"), None)
        return values

    @classmethod
    def implied_values(cls, values: Mapping[str, Any]) -> dict[str, Any]:
        """Settings that other settings in ``values`` imply (e.g. the grid of an evaluation preset). They are
        layered above the defaults, the dataset preset and ``--quick`` but below the YAML file and the explicit
        options (:func:`~advspatial.experiments.running.resolve_config`), so a value a user gives always wins."""
        return {}

    def check_model(self) -> None:
        """The model spec is usable here: named things exist, TorchScript only where no layer is read."""
        source = parse_model_spec(self.model, self.weights or None, self.arch or None)
        if source.needs_training:
            refuse_training_on_test_images(self.dataset, self.model)
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

    try:
        return "class_map" in inspect.signature(dataset_spec(dataset).loader).parameters
    except ConfigError:
        return False


#: the smallest image side a folder dataset is resized to (1x1 images ran, and measured nothing)
MIN_IMAGE_SIDE = 8


def dataset_options(dataset: str, model: str, image_size: int, fit: str, class_map: str,
                    crop_fraction: float = 0.0) -> dict[str, Any]:
    """``load_dataset`` options for a folder dataset; an error when they are given for a dataset without them.

    Unset (0) image size and crop fraction follow a zoo model's own preprocessing.
    """
    if not resizes_images(dataset):
        if image_size or class_map or crop_fraction:
            raise ConfigError("image_size/class_map/crop_fraction apply to folder datasets (imagefolder:PATH), "
                              f"not {bounded_repr(dataset)}")
        return {}
    if 0 < image_size < MIN_IMAGE_SIDE:
        raise ConfigError(f"image_size={image_size} is out of range; valid: 0 (a zoo model's input size, else the "
                          f"loader's default) or [{MIN_IMAGE_SIDE}, 4096]: smaller images leave the maps and regions "
                          "nothing to locate")
    declared = model_input(model)  # a zoo model's or an hf: folder's own input size and crop
    size = image_size or (declared[0] if declared is not None else 0)
    options: dict[str, Any] = {"fit": fit, "crop_fraction": crop_fraction or (declared[1] if declared else 1.0)}
    if size:
        options["size"] = size
    if class_map:
        options["class_map"] = class_map
    return options


def note_foreign_image_size(model: str, dataset: str, image_size: int) -> None:
    """One line on stderr (once per model and size: :func:`~advspatial.distributed.note_once`) when a folder's
    images are resized to another side than the one ``model`` declares (a zoo model's, or an ``hf:`` folder's):
    allowed (a smaller side runs faster), but the model was not trained on such images and its accuracy there may
    be far lower than its own. Called once the model has taken the images, so that a model that cannot take them
    says so in one line of its own."""
    declared = model_input(model) if image_size and resizes_images(dataset) else None
    if declared is not None and declared[0] != image_size:
        note_once(("image size", model, image_size),
                  f"advspatial: note: {model} takes {declared[0]}x{declared[0]} images and these are resized to "
                  f"{image_size}x{image_size} (--image-size); its accuracy on them may be far below its own "
                  "(leave --image-size unset for the model's own size)")


def check_choice(name: str, value: str, valid: Sequence[str]) -> None:
    if value not in valid:
        raise ConfigError(f"{name}={bounded_repr(value)} is not valid; valid: {', '.join(valid)}")


# -- config: dataclass <-> dict / YAML ------------------------------------------------

def check_attacks(names: Sequence[str], *also: str) -> dict[str, AttackSpec]:
    """The attack registry, after checking that ``names`` (an ``attacks`` setting) names at least one attack and
    that it and ``also`` (attacks other settings name) name only registered ones (one line listing them if not)."""
    known = list_attacks()
    if not names:
        raise ConfigError("attacks must name at least one attack")
    for name in [*names, *also]:
        if name not in known:
            raise unknown_name("attack", name, known)
    return known


def check_importance_methods(*methods: str, auto: bool = False) -> None:
    """Each of ``methods`` is a registered importance method (or ``auto`` where it is allowed)."""
    valid = [*(["auto"] if auto else []), *list_importance_methods()]
    for method in methods:
        if method not in valid:
            raise unknown_name("importance method", method, valid)


def field_types(config_cls: type[ExperimentConfig]) -> dict[str, Any]:
    hints = typing.get_type_hints(config_cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(config_cls)}


#: what a value of each setting type must be, in a one-line error
KIND_WORDS = {bool: "true or false", int: "an integer", float: "a number", str: "text"}


def coerce(name: str, kind: Any, value: Any) -> Any:
    """A YAML/CLI/Python value as the field's type, or a ConfigError: nothing is converted that could mean something
    else (``true`` is no integer, ``'12'`` no number, ``5`` no text, a mapping no list). Only a list field takes
    text, the command line's comma-separated form, whose items are parsed from their text."""
    origin = typing.get_origin(kind)
    inner = (typing.get_args(kind) or (str,))[0]
    try:
        if origin in (list, tuple, Sequence):
            if isinstance(value, str):
                return [from_text(inner, item.strip()) for item in value.split(",") if item.strip()]
            if not isinstance(value, list | tuple):
                raise TypeError(value)
            return [coerce(name, inner, item) for item in value]
        return typed_scalar(kind, value)
    except ConfigError:  # an item of a list, named as it is
        raise
    except (TypeError, ValueError, OverflowError) as exc:  # OverflowError: an integer too large for a float
        shown = bounded_repr(value)
        valid = f"a list (each item {KIND_WORDS.get(inner, inner)})" if origin else KIND_WORDS.get(kind, str(kind))
        raise ConfigError(f"{name}={shown} is not valid; valid: {valid}") from exc


def typed_scalar(kind: Any, value: Any) -> Any:
    """``value`` when it already is of type ``kind`` (an int is a number too, an integral float an integer); a
    TypeError otherwise. A bool is neither an integer nor a number here, though Python's bool is an int."""
    numeric = isinstance(value, int | float) and not isinstance(value, bool)
    if kind is bool and isinstance(value, bool) or kind is str and isinstance(value, str):
        return value
    if kind is int and numeric and (isinstance(value, int) or value.is_integer()):
        return int(value)
    if kind is float and numeric:
        return float(value)
    if kind not in KIND_WORDS:
        return value  # a type settings do not use: as it is
    raise TypeError(value)


def from_text(kind: Any, text: str) -> Any:
    """An item of a comma-separated list option parsed from its text (``0.1``, ``20``, ``fgsm``)."""
    if kind is int:
        return int(text)
    if kind is float:
        return float(text)
    return text


def check_settings(config_cls: type[ExperimentConfig], values: Mapping[str, Any], where: str) -> None:
    """Each of ``values`` (a YAML file's settings, a study's shared ones) on its own: a known name, a value of its
    type within its declared range. Checked before they are merged, so that a value an explicit option overrides
    (``n: abc`` beside ``--n 12``) is refused too instead of silently ignored; the one line names ``where``."""
    types = field_types(config_cls)
    fields = {f.name: f for f in dataclasses.fields(config_cls)}
    try:
        check_names(values, types)
        for name, value in values.items():
            check_field(fields[name], coerce(name, types[name], value))
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc}") from exc


def check_names(values: Mapping[Any, Any], types: Mapping[str, Any]) -> None:
    """Every key of ``values`` is the name of a setting (one line listing the valid names if not)."""
    keys = [k for k in values if not isinstance(k, str)]
    if keys:  # YAML turns `1: 2` or `~: 2` into an integer or null key
        raise ConfigError(f"setting names must be text; got {bounded_repr(keys[0])}; valid: {', '.join(sorted(types))}")
    unknown = set(values) - set(types)
    if unknown:
        raise ConfigError(f"unknown setting(s) {sorted(unknown)}; valid: {', '.join(sorted(types))}")


def config_from_mapping(config_cls: type[ExperimentConfig], values: Mapping[str, Any]) -> ExperimentConfig:
    types = field_types(config_cls)
    check_names(values, types)
    config = config_cls(**{k: coerce(k, types[k], v) for k, v in values.items()})
    for name in set(types) - set(values):  # a default of another type (20 in a list of floats) would read back
        setattr(config, name, coerce(name, types[name], getattr(config, name)))  # from config.yaml as another value
    return config


def read_yaml_mapping(path: str | Path) -> dict[str, Any]:
    """The mapping in a YAML settings file (``experiment`` key included); one-line ConfigErrors for a missing,
    unreadable, non-UTF-8 or invalid file."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        data = load_yaml_text(path.read_text(encoding="utf-8")) or {}
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path} is not a UTF-8 text file (byte {exc.start}); valid: a YAML file of "
                          "setting: value") from exc
    except OSError as exc:
        raise ConfigError(f"cannot read {path} ({exc.strerror or exc})") from exc
    except RecursionError as exc:  # PyYAML composes nested nodes recursively
        raise ConfigError(f"{path} nests lists or mappings too deeply; valid: a flat mapping of setting: "
                          "value") from exc
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


def config_dict(config: ExperimentConfig) -> dict[str, Any]:
    return dataclasses.asdict(config)


#: settings read only by one family of attacks (by name prefix): a report lists them only when one of those ran
ATTACK_FAMILY_SETTINGS = {"onepixel_": ("onepixel", "kpixel"), "cw_": ("cw-l2",)}


def reported_settings(config: ExperimentConfig) -> dict[str, Any]:
    """The settings a report's table lists: the parts of the run that ran. Left out: what is not an option of the
    experiment (``CLI_HIDDEN``: set from other settings or unused, e.g. ``defence_attack`` in a run without a
    defence) and the settings of attacks that did not run (:data:`ATTACK_FAMILY_SETTINGS`). ``config.yaml``
    keeps every setting."""
    values = config_dict(config)
    ran = set(values.get("attacks") or ())
    unused = {prefix for prefix, attacks in ATTACK_FAMILY_SETTINGS.items()
              if "attacks" in values and not ran & set(attacks)}
    return {k: v for k, v in values.items()
            if k not in type(config).CLI_HIDDEN and not any(k.startswith(prefix) for prefix in unused)}
