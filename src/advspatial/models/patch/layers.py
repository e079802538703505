"""Layers of :class:`~advspatial.models.patch.graph.GraphPatchForward`: window geometry of pooling and padding,
running a traced graph's nodes on whole values, and the per-node plan (:class:`GraphStep` with its
:class:`WindowGeometry`)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import fx, nn

from .stem import Axis, UnsupportedModel, as_pair, max_pool_window


def pool_layer(module: nn.Module, size):
    """(fn on the padded footprint, axes, pad value) of a MaxPool2d/AvgPool2d, or None where unsupported."""
    if module.ceil_mode:
        return None
    kernel, padding = as_pair(module.kernel_size), as_pair(module.padding)
    stride = as_pair(module.stride if module.stride else module.kernel_size)
    if isinstance(module, nn.MaxPool2d):
        if module.return_indices:
            return None
        dilation = as_pair(module.dilation)

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
    axes = tuple(Axis(k, s, d, p, p, n) for k, s, d, p, n in zip(kernel, stride, dilation, padding, size, strict=True))
    return pool, axes, pad_value


def padding_layer(size, pads, value: float):
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


def run_node(module: fx.GraphModule, node: fx.Node, args, kwargs):
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


@dataclass
class WindowGeometry:
    """Geometry of a windowed node: per axis, for every patch corner coordinate, the window's first row/col."""

    origin: tuple[torch.Tensor, torch.Tensor]
    size: tuple[int, int]
    reach: tuple[tuple[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]  # ((lo, hi) rows, cols)
    full: tuple[int, int]  # the map's (H, W)

    @classmethod
    def of_reach(cls, reach, full: tuple[int, int]) -> WindowGeometry:
        sizes, origins = [], []
        for (lo, hi), total in zip(reach, full, strict=True):
            size = min(max(int((hi - lo).max()), 1), total)
            sizes.append(size)
            origins.append(lo.clamp(max=total - size))
        return cls((origins[0], origins[1]), (sizes[0], sizes[1]), reach, full)


@dataclass
class GraphStep:
    """What to do for one node at call time."""

    node: fx.Node
    kind: str  # "window-op", "pointwise", "binary", "dense"
    window: WindowGeometry | None = None  # the output's geometry (windowed kinds)
    fn: Callable | None = None  # window-op: on the footprint (NCHW); pointwise: on the window
    axes: tuple[Axis, Axis] | None = None  # window-op geometry
    pad_value: float = 0.0
    source: fx.Node | None = None  # the windowed input (pointwise, window-op)
    read: tuple[torch.Tensor, torch.Tensor] | None = None  # window-op: the footprint's first row/col, padded
