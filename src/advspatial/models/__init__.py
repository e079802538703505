"""Architectures, the model registry, the ``Normalized`` wrapper and user-model loading."""

from . import architectures  # noqa: F401  (registers the built-in models)
from .loading import Normalized, load_model, load_state_dict_model, load_torchscript, load_torchvision
from .registry import ModelSpec, build_model, list_models, register_model

__all__ = [
    "ModelSpec", "Normalized", "build_model", "list_models", "load_model",
    "load_state_dict_model", "load_torchscript", "load_torchvision", "register_model",
]
