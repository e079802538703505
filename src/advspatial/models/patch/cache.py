"""A per-model cache for what an incremental evaluator builds from the model alone.

:class:`~advspatial.models.patch.forward.PatchForward` traces the model with
``torch.fx``, plans every stage's windows, compiles the tail and lays out weight
matrices: 10-20 ms on LeNet-sized models, as much as the whole one-pixel attack
on 20 images at a small budget, and the same on every call with the same model
(an experiment attacks batch after batch). :class:`StructureCache` keeps that
work per model (weakly: it goes with the model) and per input geometry, and
hands it out again only while the model is provably unchanged:

* the same module objects under the same names, each with the same type,
  training flag, hooks (none or some), instance-level ``forward`` and plain
  attributes (numbers, strings, tuples and lists of them: kernel sizes, flags
  that ``forward`` may branch on); other attribute values by identity;
* the same parameter, buffer and tensor-attribute objects, with values equal
  to a snapshot taken when the entry was built (``torch.equal``: in-place
  updates, ``load_state_dict`` and writes through ``.data`` are all seen).

Anything else rebuilds the entry. What no check can see is state outside the
modules that ``forward`` reads (module-level globals); tracing specializes on
such state anyway, at every build.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Hashable
from typing import Any, Generic, TypeVar

import torch
from torch import nn

from ..hooks import has_hooks

T = TypeVar("T")

_PLAIN = (int, float, bool, str, type(None), torch.dtype, torch.device)


def _plain(value: object) -> object:
    """A comparable stand-in for an attribute value: plain values themselves, containers recursively, else identity."""
    if isinstance(value, _PLAIN):
        return value
    if isinstance(value, (tuple, list)):
        return (type(value).__name__, tuple(_plain(v) for v in value))
    return ("id", id(value))


def model_state(model: nn.Module) -> tuple[tuple, list[torch.Tensor]]:
    """(structural signature, every tensor the model holds) of ``model``; see the module docstring."""
    signature: list[object] = []
    tensors: list[torch.Tensor] = []
    for name, module in model.named_modules(remove_duplicate=False):
        attributes: list[tuple[Any, ...]] = []
        for key, value in vars(module).items():
            if key in ("_parameters", "_buffers"):
                for tensor_name, tensor in value.items():
                    attributes.append((key, tensor_name, None if tensor is None else id(tensor)))
                    if tensor is not None:
                        tensors.append(tensor)
            elif isinstance(value, torch.Tensor):
                attributes.append((key, "tensor", id(value)))
                tensors.append(value)
            elif key == "forward" or not key.startswith("_"):
                attributes.append((key, _plain(value)))
        hooks = has_hooks(module)
        signature.append((name, id(module), type(module), module.training, hooks, tuple(attributes)))
    return tuple(signature), tensors


def _snapshot(tensors: list[torch.Tensor]) -> list[torch.Tensor]:
    with torch.no_grad():
        return [t.detach().clone() for t in tensors]


def _unchanged(tensors: list[torch.Tensor], snapshot: list[torch.Tensor]) -> bool:
    with torch.no_grad():
        return len(tensors) == len(snapshot) and all(
            t.dtype == s.dtype and t.shape == s.shape and t.device == s.device and torch.equal(t.detach(), s)
            for t, s in zip(tensors, snapshot, strict=True))


class StructureCache(Generic[T]):
    """Values built from a model, per model (weakly held) and per key, reused while the model is unchanged."""

    def __init__(self) -> None:
        self._entries: weakref.WeakKeyDictionary[nn.Module, dict[Hashable, tuple[tuple, list[torch.Tensor], T]]] = \
            weakref.WeakKeyDictionary()

    def get(self, model: nn.Module, key: Hashable, build: Callable[[], T]) -> T:
        """The value for ``(model, key)``: the cached one where the model is unchanged, else ``build()`` (kept).

        Exceptions of ``build`` propagate and are not cached.
        """
        signature, tensors = model_state(model)
        per_model = self._entries.setdefault(model, {})
        entry = per_model.get(key)
        if entry is not None and entry[0] == signature and _unchanged(tensors, entry[1]):
            return entry[2]
        per_model.pop(key, None)
        value = build()
        per_model[key] = (signature, _snapshot(tensors), value)
        return value

    def clear(self) -> None:
        """Forget every entry."""
        self._entries.clear()
