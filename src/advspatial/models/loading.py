"""The ``Normalized`` wrapper and loading of user models.

advspatial feeds every model images in [0,1]; a model trained on normalized
inputs is wrapped in :class:`Normalized` so that normalization is part of the
model (and attacks, maps and defences all see the same input space).
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import sys
import weakref
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import torch
from torch import nn

from ..errors import ModelError, load_failure
from .registry import build_model


class Normalized(nn.Module):
    """``model((x - mean) / std)`` with per-channel mean and std, as one module.

    The wrapper starts in the wrapped model's mode (a new module would start in training mode, and a
    later ``wrapper.train(wrapper.training)`` would then switch an eval-mode model to training).
    """

    mean: torch.Tensor  # buffers, (1, C, 1, 1)
    std: torch.Tensor

    def __init__(self, model: nn.Module, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        if len(mean) != len(std):
            raise ModelError(f"Normalized: mean has {len(mean)} channels but std has {len(std)}")
        if any(s <= 0 for s in std):
            raise ModelError(f"Normalized: std must be > 0, got {list(std)}")
        self.model = model
        self.training = model.training
        self.register_buffer("mean", torch.tensor(list(mean), dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(list(std), dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model((x - self.mean) / self.std)


def load_state_dict_model(
    path: str | Path, arch: str, in_channels: int = 1, num_classes: int = 10, input_size: int = 28
) -> nn.Module:
    """Build ``arch`` from the registry and load a state dict saved with ``torch.save`` (see :func:`load_weights`)."""
    model = build_model(arch, in_channels, num_classes, input_size)
    return load_weights(model, path, what=f"architecture {arch!r}")


def read_state_dict(path: str | Path) -> dict:
    """The state dict in ``path``: a bare one, or a checkpoint's ``"state_dict"``/``"model"`` entry.

    Loads with ``weights_only=True`` only (no pickled code) and strips the
    ``module.`` prefix of ``nn.DataParallel``/DDP checkpoints.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise ModelError(f"model file not found: {path}")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for unreadable files
        raise ModelError(f"cannot read weights from {path}: {_load_failure(exc)}") from exc
    if isinstance(payload, dict):
        for key in ("state_dict", "model"):
            if isinstance(payload.get(key), dict):
                payload = payload[key]
                break
    if not isinstance(payload, dict) or not all(isinstance(v, torch.Tensor) for v in payload.values()):
        raise ModelError(f"{path} holds no state dict (a mapping of parameter names to tensors)")
    return strip_wrapper_prefix(payload)


def load_weights(model: nn.Module, path: str | Path, what: str = "the model") -> nn.Module:
    """Load the state dict in ``path`` into ``model`` strictly; the model in eval mode.

    A mismatch is a :class:`ModelError` listing (the first few) missing and unexpected keys.
    Into a :class:`Normalized` wrapper, a state dict of the *wrapped* model
    (no key under ``model.``; the usual case: published weights, wrapped by the
    user's factory) is loaded into the wrapped model.
    """
    state = read_state_dict(path)
    target = model
    if isinstance(model, Normalized) and not any(k.startswith("model.") for k in state):
        target = model.model
    try:
        target.load_state_dict(state, strict=True)
    except (RuntimeError, TypeError) as exc:
        reason = _mismatch(target, state) or _first_line(exc)
        raise ModelError(f"weights in {path} do not fit {what}: {reason}") from exc
    return model.eval()


def _mismatch(model: nn.Module, state: dict) -> str:
    """The difference between a model's state dict and ``state`` in one short line (counts, first names)."""
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    shapes = [f"{k} {list(state[k].shape)} vs {list(expected[k].shape)}" for k in expected
              if k in state and tuple(state[k].shape) != tuple(expected[k].shape)]

    def some(names: list[str]) -> str:
        return ", ".join(names[:3]) + (", ..." if len(names) > 3 else "")

    parts = [f"{label}: {len(names)} ({some(names)})" for label, names in
             (("Missing key(s)", missing), ("Unexpected key(s)", unexpected), ("other shape(s)", shapes)) if names]
    if any("pos" in s.split(" ")[0] and "emb" in s.split(" ")[0] for s in shapes):
        parts.append("the position embeddings are for another number of patches: the checkpoint was trained on "
                     "images of another size (give that size, e.g. --image-size)")
    return "; ".join(parts)


def _load_failure(exc: BaseException) -> str:
    """Why ``torch.load`` failed, in one line, without torch's advice to load with ``weights_only=False``
    (:func:`advspatial.errors.load_failure`)."""
    return load_failure(exc)


def _failure(exc: BaseException) -> str:
    """``Type: first line`` of a user's code's exception; a SystemExit says the code tried to end the program."""
    if isinstance(exc, SystemExit):
        return (f"SystemExit({exc.code!r}): the code called sys.exit() (argparse at import?); a model file must "
                "define its factory without running a program")
    return f"{type(exc).__name__}: {_first_line(exc)}"


def _first_line(exc: BaseException) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return " ".join(lines[:4])[:600]


def strip_wrapper_prefix(state: dict) -> dict:
    """The state dict without the ``module.`` prefix that ``nn.DataParallel`` / DDP put on *every* key.

    Only a prefix shared by all keys is removed: a model with a submodule that
    happens to be called ``module`` keeps its names.
    """
    prefix = "module."
    if state and all(isinstance(k, str) and k.startswith(prefix) for k in state):
        return {k[len(prefix):]: v for k, v in state.items()}
    return state


def load_torchscript(path: str | Path) -> nn.Module:
    """Load a TorchScript model saved with ``torch.jit.save``."""
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"TorchScript file not found: {path}")
    try:
        return torch.jit.load(str(path), map_location="cpu").eval()
    except Exception as exc:
        raise ModelError(f"{path} is not a loadable TorchScript model: {exc}") from exc


def load_torchvision(name: str, weights: str | None = None) -> nn.Module:
    """A torchvision classification model, imported lazily (never in the core).

    Without ``weights`` torchvision's default pretrained weights are used (it
    may download them); with a state-dict file they are loaded instead.
    Wrapped in :class:`Normalized` with the ImageNet statistics, so it takes [0,1] input.
    """
    models = _import_optional("torchvision.models", "torchvision:" + name, "pip install torchvision")
    try:
        model = models.get_model(name, weights=None if weights else "DEFAULT")
    except Exception as exc:
        raise ModelError(f"torchvision cannot provide {name!r}: {_first_line(exc)}") from exc
    if weights:
        load_weights(model, weights, what=f"torchvision:{name}")
    return Normalized(model.eval(), (0.485, 0.456, 0.406), (0.229, 0.224, 0.225))


def load_timm(name: str, weights: str | None = None) -> nn.Module:
    """A timm model, imported lazily, wrapped in :class:`Normalized` with its own pretrained statistics.

    Without ``weights`` timm's pretrained weights are used (it may download
    them); with a state-dict file they are loaded instead.
    """
    timm = _import_optional("timm", "timm:" + name, "pip install timm")
    try:
        model = timm.create_model(name, pretrained=not weights)
    except Exception as exc:
        raise ModelError(f"timm cannot provide {name!r}: {_first_line(exc)}") from exc
    if weights:
        load_weights(model, weights, what=f"timm:{name}")
    config = getattr(model, "pretrained_cfg", None) or getattr(model, "default_cfg", None) or {}
    mean = config.get("mean", (0.485, 0.456, 0.406))
    std = config.get("std", (0.229, 0.224, 0.225))
    return Normalized(model.eval(), mean, std)


def _import_optional(module: str, spec: str, hint: str):
    try:
        return importlib.import_module(module)
    except Exception as exc:  # ImportError, or a broken CUDA build next to CPU torch
        raise ModelError(f"{spec} needs an importable {module.split('.')[0]} ({hint}): {_first_line(exc)}") from exc


def load_factory(target: str, weights: str | None = None) -> nn.Module:
    """Call ``file.py:factory`` or ``package.module:factory`` and load ``weights`` into the module it returns.

    The factory is called without arguments and must return an ``nn.Module``
    taking images in [0,1]. A file is imported as a fresh module with its folder
    on ``sys.path`` (so it can import its neighbours).
    """
    where, _, function = target.rpartition(":")
    module = _import_file(Path(where).expanduser()) if where.endswith(".py") else _import_module(where)
    factory = getattr(module, function, None)
    if not callable(factory):
        names = sorted(n for n in vars(module) if not n.startswith("_") and callable(getattr(module, n)))
        raise ModelError(f"{where} has no callable {function!r}; callables there: {', '.join(names) or 'none'}")
    try:
        model = factory()
    except (Exception, SystemExit) as exc:  # SystemExit: a factory (or argparse in it) must not end the command
        raise ModelError(f"{target}() failed: {_failure(exc)}") from exc
    if not isinstance(model, nn.Module):
        raise ModelError(f"{target}() returned {type(model).__name__}, not a torch.nn.Module")
    if weights:
        load_weights(model, weights, what=target)
    return model.eval()


def _import_module(name: str):
    try:
        return importlib.import_module(name)
    except (Exception, SystemExit) as exc:
        raise ModelError(f"cannot import {name}: {_failure(exc)}") from exc


def _import_file(path: Path):
    if not path.is_file():
        raise ModelError(f"model file not found: {path}")
    digest = hashlib.sha1(str(path.resolve()).encode()).hexdigest()[:12]
    name = f"advspatial_user_model_{digest}"
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ModelError(f"cannot import {path} as Python")
    module = importlib.util.module_from_spec(spec)
    folder = str(path.resolve().parent)
    sys.path.insert(0, folder)
    sys.modules[name] = module  # dataclasses and pickling look modules up by name
    try:
        spec.loader.exec_module(module)
    except (Exception, SystemExit) as exc:  # SystemExit: e.g. a script that parses its arguments at import
        sys.modules.pop(name, None)
        raise ModelError(f"importing {path} failed: {_failure(exc)}") from exc
    finally:
        sys.path.remove(folder)
    return module


#: each model's last checksum and the state it was computed on, inside :func:`remembered_checksums`
_CHECKSUMS: weakref.WeakKeyDictionary[nn.Module, tuple[tuple[object, ...], str]] = weakref.WeakKeyDictionary()
#: how many :func:`remembered_checksums` blocks are open
_REMEMBERING = [0]


@contextmanager
def remembered_checksums() -> Iterator[None]:
    """Inside the block (a run), :func:`state_checksum` computes a model's checksum once while its state is
    unchanged; the memory ends with the block. Outside, every call reads the weights: a caller's code between
    two runs may change a weight in a way no version counter sees (``p.data.add_(...)``)."""
    _REMEMBERING[0] += 1
    try:
        yield
    finally:
        _REMEMBERING[0] -= 1
        if not _REMEMBERING[0]:
            _CHECKSUMS.clear()


def state_checksum(model: nn.Module) -> str:
    """SHA-256 of a model's state dict (names, dtypes, shapes and values): identifies its weights whatever
    file, zoo entry or factory they came from.

    Inside :func:`remembered_checksums` (every run) computed once while the state is unchanged: a run keys every
    cached stage by it, and on a GPU each computation copies every weight to the host. Unchanged means the same
    tensors (storage, dtype, shape, device) at the same version: every in-place write through the tensor (an
    optimizer's step, ``load_state_dict``, BatchNorm's running statistics) advances its version counter, and a new
    tensor has a new storage.

    >>> layer = nn.Linear(2, 1)
    >>> with remembered_checksums():
    ...     before = state_checksum(layer)
    ...     with torch.no_grad():
    ...         _ = layer.bias.add_(1.0)
    ...     state_checksum(layer) != before
    True
    """
    state = model.state_dict()
    seen = _state_signature(state) if _REMEMBERING[0] else None
    cached = _CHECKSUMS.get(model) if seen is not None else None
    if cached is not None and cached[0] == seen:
        return cached[1]
    digest = hashlib.sha256()
    for name, tensor in state.items():
        t = tensor.detach().cpu().contiguous()
        digest.update(f"{name}:{t.dtype}:{tuple(t.shape)};".encode())
        digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    if seen is not None:
        _CHECKSUMS[model] = (seen, digest.hexdigest())
    return digest.hexdigest()


def _state_signature(state: dict[str, torch.Tensor]) -> tuple[object, ...] | None:
    """What identifies a state's values without reading them (None where a tensor has no version counter, an
    inference-mode tensor: then nothing is cached)."""
    try:
        return tuple((name, t.data_ptr(), t._version, t.dtype, tuple(t.shape), tuple(t.stride()), str(t.device))
                     for name, t in state.items())
    except RuntimeError:
        return None
