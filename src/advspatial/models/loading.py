"""The ``Normalized`` wrapper and loading of user models.

advspatial feeds every model images in [0,1]; a model trained on normalized
inputs is wrapped in :class:`Normalized` so that normalization is part of the
model (and attacks, maps and defences all see the same input space).
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

from ..errors import ModelError
from .registry import build_model


class Normalized(nn.Module):
    """``model((x - mean) / std)`` with per-channel mean and std, as one module."""

    def __init__(self, model: nn.Module, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        if len(mean) != len(std):
            raise ModelError(f"Normalized: mean has {len(mean)} channels but std has {len(std)}")
        if any(s <= 0 for s in std):
            raise ModelError(f"Normalized: std must be > 0, got {list(std)}")
        self.model = model
        self.register_buffer("mean", torch.tensor(list(mean), dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(list(std), dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model((x - self.mean) / self.std)


def load_state_dict_model(
    path: str | Path, arch: str, in_channels: int = 1, num_classes: int = 10, input_size: int = 28
) -> nn.Module:
    """Build ``arch`` from the registry and load a state dict saved with ``torch.save``.

    Accepts a bare state dict or a checkpoint dict with a ``"state_dict"`` or
    ``"model"`` entry. Loads with ``weights_only=True`` only.
    """
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"model file not found: {path}")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for unreadable files
        raise ModelError(f"cannot read weights from {path}: {exc}") from exc
    if isinstance(payload, dict):
        for key in ("state_dict", "model"):
            if isinstance(payload.get(key), dict):
                payload = payload[key]
                break
        payload = strip_wrapper_prefix(payload)
    model = build_model(arch, in_channels, num_classes, input_size)
    try:
        model.load_state_dict(payload)
    except (RuntimeError, TypeError) as exc:
        raise ModelError(f"weights in {path} do not fit architecture {arch!r}: {exc}") from exc
    return model.eval()


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


def load_torchvision(name: str, weights: str | None = "DEFAULT") -> nn.Module:
    """A torchvision classification model, imported lazily (never in the core).

    Wrapped in :class:`Normalized` with the ImageNet statistics, so it takes [0,1] input.
    """
    try:
        models = importlib.import_module("torchvision.models")
    except Exception as exc:  # ImportError, or a broken CUDA build next to CPU torch
        raise ModelError(f"torchvision:{name} needs an importable torchvision ({exc})") from exc
    try:
        model = models.get_model(name, weights=weights)
    except Exception as exc:
        raise ModelError(f"torchvision cannot provide {name!r} (weights={weights}): {exc}") from exc
    return Normalized(model.eval(), (0.485, 0.456, 0.406), (0.229, 0.224, 0.225))


def load_model(
    spec: str, arch: str | None = None, in_channels: int = 1, num_classes: int = 10, input_size: int = 28
) -> nn.Module:
    """Load a user model from a spec string.

    - ``torchvision:NAME`` - a torchvision model (lazy import, ImageNet normalization);
    - ``PATH`` with ``arch`` given - a state dict for the registry architecture ``arch``;
    - ``PATH`` without ``arch`` - a TorchScript file.
    """
    if spec.startswith("torchvision:"):
        return load_torchvision(spec.split(":", 1)[1])
    if arch is not None:
        return load_state_dict_model(spec, arch, in_channels, num_classes, input_size)
    return load_torchscript(spec)
