"""Architectures, the model registry, model specs, the pretrained zoo, the ``Normalized`` wrapper."""

from . import architectures, vit  # noqa: F401  (registers the built-in models)
from .loading import Normalized
from .registry import ModelSpec, build_model, list_models, register_model
from .spec import load_model, parse_model_spec, register_model_object
from .zoo import describe_zoo, zoo_entries

__all__ = [
    "ModelSpec", "Normalized", "build_model", "describe_zoo", "list_models", "load_model", "parse_model_spec",
    "register_model", "register_model_object", "zoo_entries",
]
