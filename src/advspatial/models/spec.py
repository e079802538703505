"""Model specs: the one string that names a model everywhere (``--model``, YAML, Python API).

A spec is one of (checked in this order, that of :data:`SPEC_KINDS`):

* ``object:NAME``: an ``nn.Module`` of this Python process, named by
  :func:`register_model_object` (``advspatial.run(model=module)`` does this); the
  default name carries the checksum of its weights, so a run directory made with
  one model is never resumed with another;
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
* a **file**: a TorchScript archive, or a state dict for the architecture ``arch``.

:func:`parse_model_spec` classifies a spec without loading anything, so a
config can be validated (and a TorchScript model refused by experiments that
need its layers) before any work starts. :func:`code_checksum` identifies the code a
spec's model runs (a resumed run must not mix two versions of it).

Each kind is one entry of :data:`~advspatial.models.spec_kinds.SPEC_KIND_REGISTRY`, which says how its specs are
recognised and built and what else sets the kind apart; this module only goes through that registry.
"""

from __future__ import annotations

import contextlib
import hashlib
import inspect
from pathlib import Path

import torch
from torch import nn

from ..errors import ModelError
from . import spec_kinds
from .loading import state_checksum
from .spec_kinds import IDENTIFIER, MODEL_OBJECTS, ModelSource, SpecKind, model_file, spec_kind

#: every kind of spec, in the order they are recognised
SPEC_KINDS = tuple(kind.name for kind in spec_kinds.SPEC_KIND_REGISTRY)
#: the prefixes of the library specs (``torchvision:NAME``, ``timm:NAME``, ``hf:PATH``)
LIBRARY_PREFIXES = tuple(kind.prefix for kind in spec_kinds.SPEC_KIND_REGISTRY if kind.library)


def parse_model_spec(spec: str, weights: str | None = None, arch: str | None = None) -> ModelSource:
    """Classify ``spec`` (see the module doc); :class:`ModelError` for anything unusable.

    Checks that named files exist and that TorchScript files are not given
    weights, but loads nothing. The registered kinds are tried in order; the first that recognises the spec
    gives its source.
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
    for kind in spec_kinds.SPEC_KIND_REGISTRY:
        source = kind.recognise(spec, weights, arch)
        if source is not None:
            return source
    raise _recognised_by_none(spec, weights)


def _recognised_by_none(spec: str, weights: str | None) -> ModelError:
    """Why no kind took ``spec``: an unknown name or a missing file, else a file that is no TorchScript archive."""
    model_file(spec, weights)
    return ModelError(
        f"{spec} is not a TorchScript archive; for a state dict name its architecture: "
        "--arch NAME (a registered one), or --model FILE.py:factory --weights " + spec
    )


def _claimant(spec: str) -> SpecKind | None:
    """The first kind whose form ``spec`` has, usable or not; None when none has it."""
    return next((kind for kind in spec_kinds.SPEC_KIND_REGISTRY if kind.claims(spec)), None)


def _file_like(spec: str) -> bool:
    """True when ``spec`` is not a name, a library model or a factory (so it is a file, maybe missing)."""
    kind = _claimant(spec)
    return kind is None or kind.names_file


def prefixed_name(spec: str) -> str | None:
    """What follows a prefixed kind's prefix (``hf:runs/vit`` -> ``runs/vit``); None for a spec without one."""
    for kind in spec_kinds.SPEC_KIND_REGISTRY:
        if kind.prefix and spec.startswith(kind.prefix):
            return spec[len(kind.prefix):]
    return None


def spec_forms() -> dict[str, str]:
    """The spec forms ``advspatial list models`` shows beside the registered and zoo names, with what each is: your
    own model's file form first (as the list has always shown it), then the libraries' in the registry's order."""
    listed = [kind.listed for kind in spec_kinds.SPEC_KIND_REGISTRY if kind.listed is not None]
    return dict(sorted(listed, key=lambda form: not form[0].startswith("FILE")))


def register_model_object(model: nn.Module, name: str | None = None) -> str:
    """Make an in-memory ``model`` nameable: returns its spec ``object:NAME``.

    The default name is the class name and the first 16 hex digits of the SHA-256
    of its state dict, so the same weights give the same spec (a run can be
    resumed from Python with the same model) and other weights another one.
    """
    if not isinstance(model, nn.Module):
        raise ModelError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    name = name or f"{type(model).__name__}-{state_checksum(model)[:16]}"
    if not IDENTIFIER.match(name.replace("-", "_")):
        raise ModelError(f"model object name {name!r} must be a Python-like name (letters, digits, _ and -)")
    MODEL_OBJECTS[name] = model
    return f"object:{name}"


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
    kind = spec_kind(source.kind)
    shape = {"in_channels": in_channels, "num_classes": num_classes, "input_size": input_size}
    if not kind.records_build:
        return kind.build(source, shape)
    with observe_build() as build:  # the files and modules the build reads join the run's identity
        model = kind.build(source, shape)
    return remember_build(model, build)


def model_input(spec: str) -> tuple[int, float] | None:
    """(image side, centre-crop fraction) a model spec declares for its images: a zoo model's, or the image
    processor's of an ``hf:`` folder; None for any other spec (and for an unusable one: validation reports it)."""
    spec = spec.strip()
    for kind in spec_kinds.SPEC_KIND_REGISTRY:
        with contextlib.suppress(ModelError):
            declared = kind.model_input(spec) if kind.claims(spec) else None
            if declared is not None:
                return declared
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
    files.add(_code_file(spec))
    for file in sorted(map(str, source_closure(files - {""}))):
        with contextlib.suppress(OSError):
            parts.add(hashlib.sha256(Path(file).read_bytes()).hexdigest())
    return hashlib.sha256("\n".join(sorted(parts)).encode()).hexdigest()


def _code_file(spec: str) -> str:
    """The source file ``spec`` names besides its model's classes (a factory's file or module), else ''."""
    with contextlib.suppress(ModelError):
        kind = _claimant(spec.strip())
        return kind.code_file(spec.strip()) if kind is not None else ""
    return ""
