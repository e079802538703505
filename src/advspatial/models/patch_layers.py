"""Layers of :class:`~advspatial.models.patch_graph.GraphPatchForward`: window geometry of pooling and padding,
and running a traced graph's nodes on whole values."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import fx, nn

from .patch_forward import Axis, UnsupportedModel, _pair, max_pool_window


def pool_layer(module: nn.Module, size):  # type: ignore[no-untyped-def]
    """(fn on the padded footprint, axes, pad value) of a MaxPool2d/AvgPool2d, or None where unsupported."""
    if module.ceil_mode:
        return None
    kernel, padding = _pair(module.kernel_size), _pair(module.padding)
    stride = _pair(module.stride if module.stride else module.kernel_size)
    if isinstance(module, nn.MaxPool2d):
        if module.return_indices:
            return None
        dilation = _pair(module.dilation)

        def pool(footprint: torch.Tensor) -> torch.Tensor:
            return max_pool_window(footprint, kernel, stride, dilation)

        pad_value = -float("inf")
    else:
        if any(padding) and not module.count_include_pad:
            return None
        dilation, divisor = (1, 1), module.divisor_override

        def pool(footprint: torch.Tensor) -> torch.Tensor:
            return F.avg_pool2d(footprint, kernel, stride, 0, divisor_override=divisor)

        pad_value = 0.0
    axes = tuple(Axis(k, s, d, p, p, n) for k, s, d, p, n in zip(kernel, stride, dilation, padding, size))
    return pool, axes, pad_value


def padding_layer(size, pads, value: float):  # type: ignore[no-untyped-def]
    """(identity, axes, pad value) of a constant spatial padding (left, right, top, bottom)."""
    left, right, top, bottom = pads
    axes = (Axis(1, 1, 1, top, bottom, size[0]), Axis(1, 1, 1, left, right, size[1]))
    return (lambda footprint: footprint), axes, value


def record_values(module: fx.GraphModule, x: torch.Tensor, keep: Callable[[fx.Node, object], None]) -> None:
    """Run the graph on ``x``, handing every node's value to ``keep`` (values are freed once used)."""

    class Recorder(fx.Interpreter):
        def run_node(self, n: fx.Node) -> object:
            result = super().run_node(n)
            keep(n, result)
            return result

    Recorder(module, garbage_collect_values=True).run(x)


def run_node(module: fx.GraphModule, node: fx.Node, args, kwargs):  # type: ignore[no-untyped-def]
    """Run one node as the model would, on whole values."""
    if node.op == "call_module":
        return module.get_submodule(str(node.target))(*args, **kwargs)
    if node.op == "call_method":
        return getattr(args[0], str(node.target))(*args[1:], **kwargs)
    if node.op == "call_function":
        return node.target(*args, **kwargs)  # type: ignore[operator]
    if node.op == "get_attr":
        return getattr(module, str(node.target))
    raise UnsupportedModel(f"cannot run node {node.op} {node.target}")
