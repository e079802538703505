"""Model specs: the one string that names a model everywhere (``--model``, YAML, Python API).

A spec is one of (checked in this order):

* a **registered architecture** (``smallcnn``): trained on the dataset on first
  use and cached (``advspatial.training``), or loaded from ``weights``;
* a **zoo name** (``cifar10-resnet20``, ``imagenet-efficientnet-lite0``):
  pretrained weights with checksums (:mod:`advspatial.models.zoo`);
* ``torchvision:NAME`` or ``timm:NAME --weights FILE``: imported lazily, never by the core (a timm model needs
  local weights: nothing is downloaded from a hub at run time);
* ``hf:PATH``: a Hugging Face ``transformers`` image classifier saved in a local folder (config, weights, image
  processor), imported lazily (:mod:`advspatial.models.huggingface`);
* ``path/to/file.py:factory`` or ``package.module:factory``: a callable
  returning an ``nn.Module`` that takes images in [0,1] (wrap your
  normalization into the module, e.g. with :class:`~advspatial.models.Normalized`);
  ``weights`` then names a state dict loaded into it (strictly);
* a **file**: a TorchScript archive, or a state dict for the architecture ``arch``;
* ``object:NAME``: an ``nn.Module`` of this Python process, named by
  :func:`register_model_object` (``advspatial.run(model=module)`` does this); the
  default name carries the checksum of its weights, so a run directory made with
  one model is never resumed with another.

:func:`parse_model_spec` classifies a spec without loading anything, so a
config can be validated (and a TorchScript model refused by experiments that
need its layers) before any work starts. :func:`code_checksum` identifies the code a
spec's model runs (a resumed run must not mix two versions of it).
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import inspect
import re
import zipfile
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from ..errors import ModelError, unknown_name
from . import loading
from .loading import state_checksum
from .registry import list_models
from .zoo import is_zoo_name, load_zoo_model, zoo_entries

#: every kind of spec, in the order they are recognised
SPEC_KINDS = ("object", "registered", "zoo", "torchvision", "timm", "hf", "factory", "torchscript", "state-dict")
#: the prefixes of the library specs (``torchvision:NAME``, ``timm:NAME``, ``hf:PATH``)
LIBRARY_PREFIXES = ("torchvision:", "timm:", "hf:")

#: in-memory models by name (see :func:`register_model_object`)
_OBJECTS: dict[str, nn.Module] = {}

_MODULE_PATH = re.compile(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)*$")
_IDENTIFIER = re.compile(r"^[A-Za-z_]\w*$")


@dataclass(frozen=True)
class ModelSource:
    """What a spec names, resolved without loading it.

    Attributes:
        kind: one of :data:`SPEC_KINDS`.
        spec: the spec as given.
        target: the architecture/zoo/library name, the factory (``file.py:fn``), or the file path.
        weights: a state-dict file to load into the model, or None.
        arch: the registered architecture of a ``state-dict`` file (or of ``registered`` weights).
    """

    kind: str
    spec: str
    target: str
    weights: str | None = None
    arch: str | None = None

    @property
    def is_torchscript(self) -> bool:
        if self.kind == "object":
            return isinstance(_OBJECTS[self.target], torch.jit.ScriptModule)
        return self.kind == "torchscript"

    @property
    def needs_training(self) -> bool:
        """A registered architecture without weights is trained (or taken from the cache)."""
        return self.kind == "registered" and self.weights is None


def parse_model_spec(spec: str, weights: str | None = None, arch: str | None = None) -> ModelSource:
    """Classify ``spec`` (see the module doc); :class:`ModelError` for anything unusable.

    Checks that named files exist and that TorchScript files are not given
    weights, but loads nothing.
    """
    spec = spec.strip()
    if not spec:
        raise ModelError("the model spec is empty; valid: a name from `advspatial list models`, FILE.py:factory, "
                         "package.module:factory, torchvision:NAME, timm:NAME, hf:PATH, or a TorchScript/state-dict "
                         "file")
    weights = weights or None
    if weights is not None and not Path(weights).expanduser().is_file():
        raise ModelError(f"weights file not found: {weights}")
    if arch and arch != spec and not _file_like(spec):
        raise ModelError(f"--arch applies to a state-dict --model file, not to {spec!r} (its architecture is "
                         f"given); for the registered architecture {arch!r} use --model {arch}")
    if spec.startswith("object:"):
        return _object_source(spec, weights)
    if spec in list_models():
        return ModelSource("registered", spec, spec, weights, spec)
    if is_zoo_name(spec):
        return ModelSource("zoo", spec, spec, weights)
    if spec.startswith("hf:"):
        return _hf_source(spec, weights)
    for library in ("torchvision", "timm"):
        if spec.startswith(library + ":"):
            name = spec.split(":", 1)[1]
            if not name:
                raise ModelError(f"{spec!r} names no model; e.g. {library}:resnet18")
            if library == "timm" and weights is None:
                raise ModelError(f"{spec} needs --weights FILE, a state dict of the model saved on this machine; "
                                 "advspatial never downloads weights from a hub at run time")
            return ModelSource(library, spec, name, weights)
    factory = _factory_target(spec)
    if factory is not None:
        return ModelSource("factory", spec, factory, weights)
    return _file_source(spec, weights, arch)


def _hf_source(spec: str, weights: str | None) -> ModelSource:
    """``hf:PATH``: the folder must hold a config, weights and the image processor's settings."""
    from .huggingface import check_folder

    path = spec.split(":", 1)[1]
    if not path:
        raise ModelError(f"{spec!r} names no folder; e.g. hf:checkpoints/vit-cifar10 (written by save_pretrained)")
    if weights is not None:
        raise ModelError(f"--weights does not apply to {spec}: the folder holds its own weights")
    return ModelSource("hf", spec, str(check_folder(path)))


def _file_like(spec: str) -> bool:
    """True when ``spec`` is not a name, a library model or a factory (so it is a file, maybe missing)."""
    if spec.startswith(("object:", *LIBRARY_PREFIXES)) or spec in list_models() or is_zoo_name(spec):
        return False
    return _factory_target(spec) is None


def register_model_object(model: nn.Module, name: str | None = None) -> str:
    """Make an in-memory ``model`` nameable: returns its spec ``object:NAME``.

    The default name is the class name and the first 16 hex digits of the SHA-256
    of its state dict, so the same weights give the same spec (a run can be
    resumed from Python with the same model) and other weights another one.
    """
    if not isinstance(model, nn.Module):
        raise ModelError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    name = name or f"{type(model).__name__}-{state_checksum(model)[:16]}"
    if not _IDENTIFIER.match(name.replace("-", "_")):
        raise ModelError(f"model object name {name!r} must be a Python-like name (letters, digits, _ and -)")
    _OBJECTS[name] = model
    return f"object:{name}"


def _object_source(spec: str, weights: str | None) -> ModelSource:
    name = spec.split(":", 1)[1]
    if name not in _OBJECTS:
        raise ModelError(f"{spec!r} names an in-memory model this Python process does not hold; pass the model "
                         "object again (advspatial.run(..., model=module)) or name it by a spec a new process can load")
    if weights is not None:
        raise ModelError(f"--weights does not apply to the in-memory model {spec}; load them into it before the run")
    return ModelSource("object", spec, name)


def _factory_target(spec: str) -> str | None:
    """``spec`` when it looks like ``file.py:fn`` or ``package.module:fn`` (the file must exist), else None."""
    if ":" not in spec:
        return None
    where, _, function = spec.rpartition(":")
    if where.endswith(".py"):
        if not _IDENTIFIER.match(function):
            raise ModelError(f"{spec!r}: {function!r} is not a Python name; use FILE.py:factory")
        if not Path(where).expanduser().is_file():
            raise ModelError(f"model file not found: {where} (from {spec!r})")
        return spec
    if _MODULE_PATH.match(where) and _IDENTIFIER.match(function):
        return spec
    return None


def _file_source(spec: str, weights: str | None, arch: str | None) -> ModelSource:
    """A TorchScript archive, or a state dict for ``arch``."""
    path = Path(spec).expanduser()
    if not path.is_file():
        names = sorted([*list_models(), *zoo_entries()])
        raise ModelError(
            f"unknown model {spec!r}: not a registered or zoo name ({', '.join(names)}), "
            "not FILE.py:factory / package.module:factory / torchvision:NAME / timm:NAME / hf:PATH, and no such file"
        )
    if weights is not None:
        raise ModelError(f"--weights applies to a name or a factory, not to the model file {spec}; "
                         "give the weights file as --model with --arch, or a factory with --weights")
    if arch:
        if arch not in list_models():
            raise unknown_name("architecture", arch, list_models())
        return ModelSource("state-dict", spec, str(path), None, arch)
    if is_torchscript_file(path):
        return ModelSource("torchscript", spec, str(path))
    raise ModelError(
        f"{spec} is not a TorchScript archive; for a state dict name its architecture: "
        "--arch NAME (a registered one), or --model FILE.py:factory --weights " + spec
    )


def is_torchscript_file(path: str | Path) -> bool:
    """True for an archive written by ``torch.jit.save`` (it holds compiled ``code/``), without loading it.

    A ``torch.save`` checkpoint is a zip archive too, but holds only ``data.pkl`` and tensors.
    """
    try:
        with zipfile.ZipFile(path) as archive:
            return any("/code/" in name or name.endswith("constants.pkl") for name in archive.namelist())
    except (zipfile.BadZipFile, OSError):
        return False


def load_model(
    spec: str | ModelSource,
    arch: str | None = None,
    in_channels: int = 1,
    num_classes: int = 10,
    input_size: int = 28,
    weights: str | None = None,
) -> nn.Module:
    """The model a spec names, in eval mode, taking images in [0,1].

    ``in_channels``/``num_classes``/``input_size`` build a registered
    architecture (for its ``weights`` or a ``state-dict`` file). A registered
    name *without* weights is trained per dataset: use
    ``advspatial.model_cache.resolve_model`` for that.

    Examples:
        A pretrained zoo model needs no dataset: its weights are found (``$ADVSPATIAL_DATA/cifar10-resnet/``, the
        cache) or downloaded once, their sha256 checked.

        >>> import torch
        >>> from advspatial.models import load_model
        >>> model = load_model("cifar10-resnet20")          # He et al.'s CIFAR-10 ResNet-20, normalization inside
        >>> model(torch.rand(2, 3, 32, 32)).shape            # images in [0,1]
        torch.Size([2, 10])
    """
    from .provenance import observe_build, remember_build

    source = spec if isinstance(spec, ModelSource) else parse_model_spec(spec, weights, arch)
    if source.kind == "object":
        return _OBJECTS[source.target].eval()
    shape = {"in_channels": in_channels, "num_classes": num_classes, "input_size": input_size}
    with observe_build() as build:  # the files and modules the build reads join the run's identity
        model = _build(source, shape)
    return remember_build(model, build)


def _build(source: ModelSource, shape: dict[str, int]) -> nn.Module:
    """The model of a loadable ``source`` (not an in-memory object), built with ``shape``."""
    if source.kind == "registered":
        if source.weights is None:
            raise ModelError(f"{source.spec!r} is an architecture without weights: train it "
                             "(advspatial train / advspatial.model_cache.resolve_model) or pass weights")
        return loading.load_state_dict_model(source.weights, source.target, **shape)
    if source.kind == "state-dict":
        assert source.arch is not None
        return loading.load_state_dict_model(source.target, source.arch, **shape)
    if source.kind == "torchscript":
        return loading.load_torchscript(source.target)
    if source.kind == "zoo":
        return load_zoo_model(source.target, weights=source.weights)
    if source.kind == "torchvision":
        return loading.load_torchvision(source.target, weights=source.weights)
    if source.kind == "timm":
        return loading.load_timm(source.target, weights=source.weights)
    if source.kind == "hf":
        from .huggingface import load_hf

        return load_hf(source.target)
    return loading.load_factory(source.target, weights=source.weights)


def model_input(spec: str) -> tuple[int, float] | None:
    """(image side, centre-crop fraction) a model spec declares for its images: a zoo model's, or the image
    processor's of an ``hf:`` folder; None for any other spec (and for an unusable one: validation reports it)."""
    entry = zoo_entries().get(spec.strip())
    if entry is not None:
        return entry.input_size, entry.crop_fraction
    if spec.strip().startswith("hf:"):
        from .huggingface import read_preprocessing

        with contextlib.suppress(ModelError):
            prep = read_preprocessing(spec.strip().split(":", 1)[1])
            return prep.size, prep.crop_fraction
    return None


def code_checksum(model: nn.Module, spec: str = "") -> str:
    """SHA-256 of the code a model runs: the source files of its layers' classes (and of the file or module a
    ``FILE.py:factory``/``module:factory`` ``spec`` names) with every file they import from outside installed
    packages (:func:`~advspatial.models.sources.source_closure`: a helper module the model file imports), and
    TorchScript's compiled code. Identifies a model whose code changed under the same weights (a resumed run must
    not mix the two). torch's and advspatial's own files are the tool's, not the model's, and are left out; only
    the files' content counts, not their paths."""
    from .sources import source_closure

    parts: set[str] = set()
    files: set[str] = set()
    for module in model.modules():
        if isinstance(module, torch.jit.ScriptModule):
            with contextlib.suppress(Exception):  # a module without code of its own (a container)
                parts.add(hashlib.sha256(str(module.code).encode()).hexdigest())
            continue
        for klass in type(module).__mro__:
            name = getattr(klass, "__module__", "") or ""
            if name == "builtins" or name.split(".")[0] in ("torch", "advspatial"):
                continue
            parts.add(f"class {klass.__qualname__}")  # not its module: a user file's module is named by its path
            with contextlib.suppress(TypeError, OSError):
                files.add(inspect.getsourcefile(klass) or "")
    files.add(_factory_file(spec))
    for file in sorted(map(str, source_closure(files - {""}))):
        with contextlib.suppress(OSError):
            parts.add(hashlib.sha256(Path(file).read_bytes()).hexdigest())
    return hashlib.sha256("\n".join(sorted(parts)).encode()).hexdigest()


def _factory_file(spec: str) -> str:
    """The source file a factory spec names (``FILE.py:factory``, ``package.module:factory``), else ''."""
    if not spec.strip() or spec.startswith(("object:", *LIBRARY_PREFIXES)):
        return ""
    try:
        target = _factory_target(spec.strip())
    except ModelError:
        return ""
    if target is None:
        return ""
    where = target.rpartition(":")[0]
    if where.endswith(".py"):
        return str(Path(where).expanduser())
    with contextlib.suppress(Exception):  # ImportError, ValueError: the factory loaded already, so rarely
        found = importlib.util.find_spec(where)
        return (found.origin or "") if found is not None else ""
    return ""
