"""Tracing a model for the incremental forward: its ``torch.fx`` graph and its spatial stem as stages.

Why: tracing runs on a shallow copy (the model is never changed) and one walker decides which
leading layers form the stem that :class:`~advspatial.models.patch.forward.PatchForward` recomputes
window by window.
"""

from __future__ import annotations

import copy
import itertools
import operator

import torch
from torch import fx, nn

from ..hooks import has_forward_hooks
from ..outputs import has_only_guards
from .stem import (
    POINTWISE_FUNCTIONS, POINTWISE_METHODS, POINTWISE_MODULES, StemNode, UnsupportedModel, is_positionless,
    usable_in_eval, window_stage_of,
)
from ..pooling import PoolLeafTracer


class StemTracer:
    """Walks the traced graph of a model and turns its spatial stem into :class:`StemNode` objects."""

    def __init__(self, model: nn.Module, example: torch.Tensor) -> None:
        self.model = model
        self.graph = traced_graph(model)
        self.example = example

    def stem(self) -> tuple[list[StemNode], fx.Node, list[fx.Node]]:
        """The stages, the last stem node, and every node up to it (for the tail's interpreter)."""
        if not has_only_guards(self.model._forward_hooks) or self.model._forward_pre_hooks:
            raise UnsupportedModel("the model has forward hooks, which incremental evaluation would skip")
        nodes = list(self.graph.nodes)
        placeholders = [n for n in nodes if n.op == "placeholder"]
        if len(placeholders) != 1:
            raise UnsupportedModel(f"the model's forward takes {len(placeholders)} inputs, not 1")
        current, value = placeholders[0], self.example
        stages: list[StemNode] = []
        consumed = [current]
        while len(current.users) == 1:
            node = next(iter(current.users))
            stage = self._stage(node, current, value)
            if stage is None:
                break
            value = stage.apply_full(value)
            stages.append(stage)
            consumed.append(node)
            current = node
        if not stages:
            first = next(iter(current.users), None)
            raise UnsupportedModel(f"no supported layer at the model's input (first node: {first})")
        return stages, current, consumed

    def _stage(self, node: fx.Node, previous: fx.Node, value: torch.Tensor) -> StemNode | None:
        """The stage for ``node`` (whose data input is ``previous``), or None where the stem ends."""
        if value.dim() != 4:
            return None
        if node.op == "call_module":
            module = self.model.get_submodule(str(node.target))
            if has_forward_hooks(module):
                return None
            if len(node.args) != 1 or node.kwargs:
                return None
            if type(module) in POINTWISE_MODULES:
                return StemNode(module, module) if usable_in_eval(module) else None
            try:
                return window_stage_of(module, (value.shape[2], value.shape[3]))
            except UnsupportedModel:
                return None
        if node.op in ("call_function", "call_method"):
            return self._pointwise_call(node, previous)
        return None

    def _pointwise_call(self, node: fx.Node, previous: fx.Node) -> StemNode | None:
        """A pointwise function/method call whose other operands are position-free constants."""
        known = node.target in POINTWISE_FUNCTIONS if node.op == "call_function" else node.target in POINTWISE_METHODS
        if not known:
            return None
        operands = list(node.args) + list(node.kwargs.values())
        constants: dict[fx.Node, object] = {}
        for arg in operands:
            if isinstance(arg, fx.Node) and arg is not previous:
                if arg.op != "get_attr":
                    return None
                constants[arg] = operator.attrgetter(str(arg.target))(self.model)
        if not all(is_positionless(v) for v in constants.values()):
            return None
        if any(not isinstance(a, (fx.Node, int, float, bool, type(None), str)) for a in operands):
            return None

        def call(t: torch.Tensor, n: fx.Node = node) -> torch.Tensor:
            def value_of(a: fx.Node) -> object:
                return t if a is previous else constants[a]

            args = fx.node.map_arg(n.args, value_of)
            kwargs = fx.node.map_arg(n.kwargs, value_of)
            if n.op == "call_method":
                return getattr(args[0], str(n.target))(*args[1:], **kwargs)
            return n.target(*args, **kwargs)  # type: ignore[operator]

        return StemNode(call, call)


def traced(model: nn.Module) -> fx.GraphModule:
    """Trace a shallow copy of ``model`` (tensors shared), so tracing cannot change the model."""
    memo = {id(t): t for t in itertools.chain(model.parameters(), model.buffers())}
    try:
        copied = copy.deepcopy(model, memo)
        return fx.GraphModule(copied, PoolLeafTracer().trace(copied), type(model).__name__)
    except Exception as exc:  # fx raises many types for untraceable code
        raise UnsupportedModel(f"torch.fx cannot trace {type(model).__name__}: {exc}") from exc


def traced_graph(model: nn.Module) -> fx.Graph:
    """:func:`traced`'s graph alone (no module compiled from it: the caller compiles one, on ``model``)."""
    memo = {id(t): t for t in itertools.chain(model.parameters(), model.buffers())}
    try:
        return PoolLeafTracer().trace(copy.deepcopy(model, memo))
    except Exception as exc:  # fx raises many types for untraceable code
        raise UnsupportedModel(f"torch.fx cannot trace {type(model).__name__}: {exc}") from exc
