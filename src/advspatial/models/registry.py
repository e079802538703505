"""Model registry: ``build_model("smallcnn", in_channels=1, num_classes=10)``."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from torch import nn

from ..errors import ModelError
from ..registry import Registry

Builder = Callable[..., nn.Module]


@dataclass(frozen=True)
class ModelSpec:
    name: str
    builder: Builder
    description: str


#: every registered architecture (``advspatial list models`` iterates it)
MODELS: Registry[ModelSpec] = Registry("model")


def register_model(name: str, description: str) -> Callable[[Builder], Builder]:
    """Decorator registering a model class or factory ``(in_channels, num_classes, input_size) -> nn.Module``."""

    def wrap(builder: Builder) -> Builder:
        MODELS.register(name, ModelSpec(name, builder, description))
        return builder

    return wrap


def list_models() -> dict[str, ModelSpec]:
    """All registered architectures by name."""
    return MODELS.items()


def build_model(name: str, in_channels: int = 1, num_classes: int = 10, input_size: int = 28) -> nn.Module:
    """Instantiate a registered architecture (random weights)."""
    spec = MODELS.get(name)
    try:
        return spec.builder(in_channels=in_channels, num_classes=num_classes, input_size=input_size)
    except (RuntimeError, ValueError) as exc:
        raise ModelError(f"cannot build {name!r} for {in_channels}x{input_size}x{input_size} inputs: {exc}") from exc
