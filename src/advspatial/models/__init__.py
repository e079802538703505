"""Architectures, the model registry, model specs, the pretrained zoo, the ``Normalized`` wrapper."""

from . import architectures  # noqa: F401  (registers the built-in models)
from .loading import (
    Normalized, load_factory, load_state_dict_model, load_timm, load_torchscript, load_torchvision, state_checksum,
)
from .registry import ModelSpec, build_model, list_models, register_model
from .spec import ModelSource, load_model, parse_model_spec, register_model_object
from .zoo import describe_zoo, load_zoo_model, zoo_entries

__all__ = [
    "ModelSource", "ModelSpec", "Normalized", "build_model", "describe_zoo", "list_models", "load_factory",
    "load_model", "load_state_dict_model", "load_timm", "load_torchscript", "load_torchvision", "load_zoo_model",
    "parse_model_spec", "register_model", "register_model_object", "state_checksum", "zoo_entries",
]
