"""The kinds of model spec: one :class:`SpecKind` entry each in :data:`SPEC_KIND_REGISTRY`.

A kind says how its specs are recognised (without loading anything) and built, and answers what the rest of the
package asks of it: whether its model is trained on first use or is TorchScript, the image size a spec declares, the
source file a spec names, its line in ``advspatial list models``. :mod:`advspatial.models.spec` parses, loads and
checksums through this registry alone, so a new kind is one new entry here.
"""

from __future__ import annotations

import contextlib
import importlib.util
import re
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from ..errors import ModelError, unknown_name
from . import loading
from .registry import list_models
from .zoo import is_zoo_name, load_zoo_model, zoo_entries

#: in-memory models by name (filled by :func:`~advspatial.models.spec.register_model_object`)
MODEL_OBJECTS: dict[str, nn.Module] = {}
#: a Python name: a factory's function, an in-memory model's name (its ``-`` read as ``_``)
IDENTIFIER = re.compile(r"^[A-Za-z_]\w*$")

_MODULE_PATH = re.compile(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)*$")


@dataclass(frozen=True)
class ModelSource:
    """What a spec names, resolved without loading it.

    Attributes:
        kind: one of :data:`~advspatial.models.spec.SPEC_KINDS`.
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
        """Whether the model is TorchScript, whose layers an experiment cannot read."""
        return spec_kind(self.kind).is_torchscript(self)

    @property
    def needs_training(self) -> bool:
        """A kind trained on the dataset (a registered architecture) without weights is trained (or taken from the
        cache)."""
        return spec_kind(self.kind).trains and self.weights is None


#: ``(spec, weights, arch)`` -> the source of a spec of one kind, None when the spec turns out not to be of it
Resolver = Callable[[str, str | None, str | None], ModelSource | None]
#: ``(source, shape)`` -> the model; ``shape`` holds ``in_channels``, ``num_classes`` and ``input_size``
Builder = Callable[[ModelSource, dict[str, int]], nn.Module]


def _any_form(spec: str) -> bool:
    """Every spec has the form of a file path (whether the file exists is the resolver's question)."""
    return True


def _not_torchscript(source: ModelSource) -> bool:
    """Most kinds build an ordinary ``nn.Module``."""
    return False


def _declares_no_input(spec: str) -> tuple[int, float] | None:
    """Most kinds leave the images' size and crop to the dataset and the settings."""
    return None


def _names_no_code_file(spec: str) -> str:
    """Most specs name no source file beyond their model's classes."""
    return ""


@dataclass(frozen=True)
class SpecKind:
    """One kind of model spec with everything the package does differently for it.

    Attributes:
        name: the :attr:`ModelSource.kind` of its specs.
        resolve: the source of a spec this kind claims; None when it is not this kind's after all (a file that is
            no TorchScript archive); :class:`ModelError` when it is but cannot be used.
        build: its model from a source, taking images in [0,1].
        prefix: the text its specs start with (``hf:``); '' for a kind told by ``form``.
        form: whether a spec without a prefix has this kind's form, read without loading anything.
        names_file: its specs are file paths (``--arch`` names a state dict's architecture).
        library: its models come from an optional library, imported lazily (``LIBRARY_PREFIXES``).
        trains: without weights its model is trained on the dataset (:attr:`ModelSource.needs_training`).
        records_build: the files and modules its build reads join the run's identity (an in-memory model has no
            build to observe).
        is_torchscript: whether a source's model is TorchScript.
        model_input: the (image side, centre-crop fraction) a spec of this kind declares, or None.
        code_file: the source file a spec names besides its model's classes ('' for none), for the code checksum.
        listed: ``(form, description)`` shown by ``advspatial list models``; None for a kind listed by its names or
            not at all.
    """

    name: str
    resolve: Resolver
    build: Builder
    prefix: str = ""
    form: Callable[[str], bool] = _any_form
    names_file: bool = False
    library: bool = False
    trains: bool = False
    records_build: bool = True
    is_torchscript: Callable[[ModelSource], bool] = _not_torchscript
    model_input: Callable[[str], tuple[int, float] | None] = _declares_no_input
    code_file: Callable[[str], str] = _names_no_code_file
    listed: tuple[str, str] | None = None

    def claims(self, spec: str) -> bool:
        """Whether ``spec`` has this kind's form, usable or not (a factory's missing file raises)."""
        return spec.startswith(self.prefix) if self.prefix else self.form(spec)

    def recognise(self, spec: str, weights: str | None, arch: str | None) -> ModelSource | None:
        """The source of ``spec`` when it is of this kind, else None; :class:`ModelError` when it is but cannot be
        used."""
        return self.resolve(spec, weights, arch) if self.claims(spec) else None


def spec_kind(name: str) -> SpecKind:
    """The registered kind called ``name`` (a :attr:`ModelSource.kind`)."""
    for kind in SPEC_KIND_REGISTRY:
        if kind.name == name:
            return kind
    raise unknown_name("model spec kind", name, [kind.name for kind in SPEC_KIND_REGISTRY])


# -- recognising each kind ----------------------------------------------------------------------------------------

def _object_source(spec: str, weights: str | None, arch: str | None) -> ModelSource:
    """``object:NAME``: a model this process registered; its weights are its own."""
    name = spec.split(":", 1)[1]
    if name not in MODEL_OBJECTS:
        raise ModelError(f"{spec!r} names an in-memory model this Python process does not hold; pass the model "
                         "object again (advspatial.run(..., model=module)) or name it by a spec a new process can load")
    if weights is not None:
        raise ModelError(f"--weights does not apply to the in-memory model {spec}; load them into it before the run")
    return ModelSource("object", spec, name)


def _is_registered(spec: str) -> bool:
    """Whether ``spec`` is a registered architecture's name."""
    return spec in list_models()


def _registered_source(spec: str, weights: str | None, arch: str | None) -> ModelSource:
    """A registered architecture: its ``weights``, or trained on the dataset when there are none."""
    return ModelSource("registered", spec, spec, weights, spec)


def _zoo_source(spec: str, weights: str | None, arch: str | None) -> ModelSource:
    """A zoo model: its pretrained weights, or the ``weights`` given."""
    return ModelSource("zoo", spec, spec, weights)


def _library_source(spec: str, weights: str | None, arch: str | None) -> ModelSource:
    """``LIBRARY:NAME`` (torchvision, timm): the library's model called NAME."""
    library, name = spec.split(":", 1)
    if not name:
        raise ModelError(f"{spec!r} names no model; e.g. {library}:resnet18")
    return ModelSource(library, spec, name, weights)


def _timm_source(spec: str, weights: str | None, arch: str | None) -> ModelSource:
    """``timm:NAME``: needs local weights, as nothing is downloaded from a hub at run time."""
    source = _library_source(spec, weights, arch)
    if weights is None:
        raise ModelError(f"{spec} needs --weights FILE, a state dict of the model saved on this machine; "
                         "advspatial never downloads weights from a hub at run time")
    return source


def _hf_source(spec: str, weights: str | None, arch: str | None) -> ModelSource:
    """``hf:PATH``: the folder must hold a config, weights and the image processor's settings."""
    from .huggingface import check_folder

    path = spec.split(":", 1)[1]
    if not path:
        raise ModelError(f"{spec!r} names no folder; e.g. hf:checkpoints/vit-cifar10 (written by save_pretrained)")
    if weights is not None:
        raise ModelError(f"--weights does not apply to {spec}: the folder holds its own weights")
    return ModelSource("hf", spec, str(check_folder(path)))


def _is_factory(spec: str) -> bool:
    """Whether ``spec`` is ``file.py:fn`` or ``package.module:fn`` (a ``.py`` file that is missing raises)."""
    if ":" not in spec:
        return False
    where, _, function = spec.rpartition(":")
    if where.endswith(".py"):
        if not IDENTIFIER.match(function):
            raise ModelError(f"{spec!r}: {function!r} is not a Python name; use FILE.py:factory")
        if not Path(where).expanduser().is_file():
            raise ModelError(f"model file not found: {where} (from {spec!r})")
        return True
    return bool(_MODULE_PATH.match(where) and IDENTIFIER.match(function))


def _factory_source(spec: str, weights: str | None, arch: str | None) -> ModelSource:
    """A factory: the callable ``spec`` names, its ``weights`` loaded into what it returns."""
    return ModelSource("factory", spec, spec, weights)


def _torchscript_source(spec: str, weights: str | None, arch: str | None) -> ModelSource | None:
    """A TorchScript archive; None for a file given ``--arch`` or holding something else."""
    if arch:
        return None
    path = model_file(spec, weights)
    return ModelSource("torchscript", spec, str(path)) if is_torchscript_file(path) else None


def _state_dict_source(spec: str, weights: str | None, arch: str | None) -> ModelSource | None:
    """A state dict for the registered architecture ``arch``; None without ``arch``."""
    if not arch:
        return None
    path = model_file(spec, weights)
    if arch not in list_models():
        raise unknown_name("architecture", arch, list_models())
    return ModelSource("state-dict", spec, str(path), None, arch)


def model_file(spec: str, weights: str | None) -> Path:
    """The model file ``spec`` names: it must exist (else ``spec`` names nothing known), and take no separate
    weights."""
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
    return path


def is_torchscript_file(path: str | Path) -> bool:
    """True for an archive written by ``torch.jit.save`` (it holds compiled ``code/``), without loading it.

    A ``torch.save`` checkpoint is a zip archive too, but holds only ``data.pkl`` and tensors.
    """
    try:
        with zipfile.ZipFile(path) as archive:
            return any("/code/" in name or name.endswith("constants.pkl") for name in archive.namelist())
    except (zipfile.BadZipFile, OSError):
        return False


# -- building each kind, and its other facts ----------------------------------------------------------------------

def _build_object(source: ModelSource, shape: dict[str, int]) -> nn.Module:
    """The in-memory model itself, in eval mode."""
    return MODEL_OBJECTS[source.target].eval()


def _is_scripted_object(source: ModelSource) -> bool:
    """Whether the in-memory model is a TorchScript module."""
    return isinstance(MODEL_OBJECTS[source.target], torch.jit.ScriptModule)


def _build_registered(source: ModelSource, shape: dict[str, int]) -> nn.Module:
    """A registered architecture built with ``shape``, its weights loaded; an error without weights."""
    if source.weights is None:
        raise ModelError(f"{source.spec!r} is an architecture without weights: train it "
                         "(advspatial train / advspatial.model_cache.resolve_model) or pass weights")
    return loading.load_state_dict_model(source.weights, source.target, **shape)


def _build_zoo(source: ModelSource, shape: dict[str, int]) -> nn.Module:
    """A zoo model with its pretrained (or the given) weights."""
    return load_zoo_model(source.target, weights=source.weights)


def _build_torchvision(source: ModelSource, shape: dict[str, int]) -> nn.Module:
    """A torchvision model (torchvision imported only here)."""
    return loading.load_torchvision(source.target, weights=source.weights)


def _build_timm(source: ModelSource, shape: dict[str, int]) -> nn.Module:
    """A timm model with its local weights (timm imported only here)."""
    return loading.load_timm(source.target, weights=source.weights)


def _build_hf(source: ModelSource, shape: dict[str, int]) -> nn.Module:
    """A Hugging Face folder's classifier (``transformers`` imported only here)."""
    from .huggingface import load_hf

    return load_hf(source.target)


def _build_factory(source: ModelSource, shape: dict[str, int]) -> nn.Module:
    """What the factory returns, its weights loaded."""
    return loading.load_factory(source.target, weights=source.weights)


def _build_torchscript(source: ModelSource, shape: dict[str, int]) -> nn.Module:
    """The TorchScript archive, loaded."""
    return loading.load_torchscript(source.target)


def _build_state_dict(source: ModelSource, shape: dict[str, int]) -> nn.Module:
    """The architecture ``source.arch`` built with ``shape``, the state-dict file loaded into it."""
    assert source.arch is not None
    return loading.load_state_dict_model(source.target, source.arch, **shape)


def _is_script(source: ModelSource) -> bool:
    """A TorchScript archive's model is TorchScript."""
    return True


def _zoo_input(spec: str) -> tuple[int, float] | None:
    """A zoo model's own input size and crop."""
    entry = zoo_entries()[spec]
    return entry.input_size, entry.crop_fraction


def _hf_input(spec: str) -> tuple[int, float] | None:
    """The input size and crop of an ``hf:`` folder's image processor."""
    from .huggingface import read_preprocessing

    prep = read_preprocessing(spec.split(":", 1)[1])
    return prep.size, prep.crop_fraction


def _factory_file(spec: str) -> str:
    """The source file a factory spec names (``FILE.py:factory``, ``package.module:factory``), else ''."""
    where = spec.rpartition(":")[0]
    if where.endswith(".py"):
        return str(Path(where).expanduser())
    with contextlib.suppress(Exception):  # ImportError, ValueError: the factory loaded already, so rarely
        found = importlib.util.find_spec(where)
        return (found.origin or "") if found is not None else ""
    return ""


#: every kind of spec, tried in this order by :func:`~advspatial.models.spec.parse_model_spec` (a tuple, not a
#: :class:`~advspatial.registry.Registry`: the order decides between kinds whose forms overlap, and the file kinds,
#: which take any spec the others leave, come last)
SPEC_KIND_REGISTRY: tuple[SpecKind, ...] = (
    SpecKind("object", _object_source, _build_object, prefix="object:", records_build=False,
             is_torchscript=_is_scripted_object),
    SpecKind("registered", _registered_source, _build_registered, form=_is_registered, trains=True),
    SpecKind("zoo", _zoo_source, _build_zoo, form=is_zoo_name, model_input=_zoo_input),
    SpecKind("torchvision", _library_source, _build_torchvision, prefix="torchvision:", library=True,
             listed=("torchvision:NAME", "a torchvision model (lazy import; ImageNet normalization added)")),
    SpecKind("timm", _timm_source, _build_timm, prefix="timm:", library=True,
             listed=("timm:NAME", "a timm model with --weights FILE (lazy import; its own normalization added)")),
    SpecKind("hf", _hf_source, _build_hf, prefix="hf:", library=True, model_input=_hf_input,
             listed=("hf:PATH", "a Hugging Face image classifier saved in a local folder (lazy import; its "
                                "processor's size and normalization)")),
    SpecKind("factory", _factory_source, _build_factory, form=_is_factory, code_file=_factory_file,
             listed=("FILE.py:factory", "your model: a callable returning an nn.Module on [0,1] images "
                                        "(--weights STATE_DICT)")),
    SpecKind("torchscript", _torchscript_source, _build_torchscript, names_file=True, is_torchscript=_is_script),
    SpecKind("state-dict", _state_dict_source, _build_state_dict, names_file=True),
)
