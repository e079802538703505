"""Model registry: ``build_model("smallcnn", in_channels=1, num_classes=10)``."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from torch import nn

from ..errors import ModelError, unknown_name

Builder = Callable[..., nn.Module]


@dataclass(frozen=True)
class ModelSpec:
    name: str
    builder: Builder
    description: str


_REGISTRY: dict[str, ModelSpec] = {}


def register_model(name: str, description: str) -> Callable[[Builder], Builder]:
    """Decorator registering a model class or factory ``(in_channels, num_classes, input_size) -> nn.Module``."""

    def wrap(builder: Builder) -> Builder:
        _REGISTRY[name] = ModelSpec(name, builder, description)
        return builder

    return wrap


def list_models() -> dict[str, ModelSpec]:
    """All registered architectures by name."""
    return dict(sorted(_REGISTRY.items()))


def build_model(name: str, in_channels: int = 1, num_classes: int = 10, input_size: int = 28) -> nn.Module:
    """Instantiate a registered architecture (random weights)."""
    if name not in _REGISTRY:
        raise unknown_name("model", name, _REGISTRY)
    try:
        return _REGISTRY[name].builder(in_channels=in_channels, num_classes=num_classes, input_size=input_size)
    except (RuntimeError, ValueError) as exc:
        raise ModelError(f"cannot build {name!r} for {in_channels}x{input_size}x{input_size} inputs: {exc}") from exc
