"""Incremental patch evaluation through whole graphs: residual and mobile networks.

:class:`~advspatial.models.patch.forward.PatchForward` follows a changed patch
through a *chain* of layers. :class:`GraphPatchForward` follows it through the
model's ``torch.fx`` graph, branches and merges included. Every node that
depends on the input and is a 4-D map of the input's batch is held as a
*window*: the changed values of a fixed-size rectangle (per node the largest
the patch's cone needs at any corner) at a corner that depends on the patch's
position; outside the window the node equals its clean value, cached once. The
window follows

* ``Conv2d`` (zero padding, any stride/dilation/groups: depthwise included) and
  ``F.conv2d`` with constant weights (the "same"-padding convolutions of
  EfficientNet ports), ``MaxPool2d``/``AvgPool2d`` (as in ``PatchForward``),
  ``ZeroPad2d``/``ConstantPad2d`` and spatial ``F.pad``, strided slicing
  ``x[:, :, ::s, ::s]`` (option-A ResNet shortcuts): the output window is the
  input window's reach, computed from the input's footprint (the clean cache
  with the window laid over it);
* pointwise layers (activations, eval-mode BatchNorm, Dropout, arithmetic with
  a per-channel constant, channel-only ``F.pad``): the same window;
* ``+ - * /`` of two windowed maps of one shape (skip connections): the union of
  the operands' windows, each operand laid over its clean cache there.

Any other node that receives a window (global pooling, flatten, squeeze-and-
excitation's broadcast product, a module with hooks, ...) gets the whole map (the
clean cache with the window laid over it) and runs as in the model; from there
on the values are whole per-candidate tensors. Once a window covers its whole
map this costs nothing extra. The logits equal the model's up to
floating-point summation order (tests: 1e-5 on random residual and MBConv
networks). Models that ``torch.fx`` cannot trace, with several inputs, or with
modules in training mode raise :class:`UnsupportedModel`.
"""

from __future__ import annotations

import operator
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import fx, nn

from ...errors import ShapeError
from ..hooks import has_forward_hooks
from .stem import (
    POINTWISE_FUNCTIONS, POINTWISE_METHODS, POINTWISE_MODULES, Axis, UnsupportedModel, conv_padding, is_positionless,
    as_pair, usable_in_eval, check_patch_inputs,
)
from .tracing import traced
from .layers import GraphStep, WindowGeometry, padding_layer, pool_layer, record_values, run_node
from ..pooling import WINDOW_POOLS

BINARY = frozenset({operator.add, operator.sub, operator.mul, operator.truediv, torch.add, torch.sub, torch.mul,
                    torch.div})
CONV_ARGS = ("input", "weight", "bias", "stride", "padding", "dilation", "groups")


class GraphPatchForward:
    """Logits of images equal to ``clean[i]`` except in one ``patch_size`` rectangle, through any fx graph.

    Same call as :class:`~advspatial.models.patch.forward.PatchForward`:
    ``forward(image, top, left, patch)`` with ``image`` (N,) indices into
    ``clean``, ``top``/``left`` (N,) the rectangle's corner and ``patch``
    (N, C, rows, cols) its new values.
    """

    def __init__(self, model: nn.Module, clean: torch.Tensor, patch_size: tuple[int, int] = (1, 1)) -> None:
        height, width = check_patch_inputs("GraphPatchForward", clean, patch_size)
        if any(m.training for m in model.modules()):
            raise UnsupportedModel("the model (or one of its modules) is in training mode")
        self.model, self.patch_size = model, (int(patch_size[0]), int(patch_size[1]))
        self.module = traced(model)
        self.graph = self.module.graph
        placeholders = [n for n in self.graph.nodes if n.op == "placeholder"]
        if len(placeholders) != 1:
            raise UnsupportedModel(f"the model's forward takes {len(placeholders)} inputs, not 1")
        self.input = placeholders[0]
        # planned on the first image (shapes and constants), cached from every image in a second pass
        # that keeps only what the calls read, so the memory of set-up is the caches' own
        self.n_clean = 1
        self.values: dict[fx.Node, object] = {}
        with torch.no_grad():
            record_values(self.module, clean[:1].clone(), self.values.__setitem__)
        self.corners_per_row = width - self.patch_size[1] + 1
        self._plan(clean.device)
        self._caches: dict[tuple, torch.Tensor] = {}
        self._same: dict[tuple, bool] = {}
        self._zeros = (torch.zeros_like(self.windows[self.input].origin[0]),
                       torch.zeros_like(self.windows[self.input].origin[1]))
        with torch.no_grad():
            record_values(self.module, clean.clone(), self._cache)
        self.constants = {n for n in self.constants  # those the calls read (F.conv2d weights live in closures)
                          if any(u not in self.constants for u in n.users)}
        self.clean_shapes = {n: tuple(v.shape) for n, v in self.values.items()
                             if isinstance(v, torch.Tensor) and v.dim() == 4}
        for node in [n for n in self.values if n not in self.constants]:
            del self.values[node]  # in place: the pointwise steps read constants from this dict

    # -- planning -----------------------------------------------------------------
    def _plan(self, device: torch.device) -> None:
        """Classify every node and compute the windows' geometry for every patch corner."""
        (height, width), (ph, pw) = self.values[self.input].shape[2:], self.patch_size
        rows, cols = torch.arange(height - ph + 1, device=device), torch.arange(width - pw + 1, device=device)
        self.windows: dict[fx.Node, WindowGeometry] = {
            self.input: WindowGeometry.of_reach(((rows, rows + ph), (cols, cols + pw)), (height, width))}
        self.steps: list[GraphStep] = []
        self.constants: set[fx.Node] = set()
        self.needs: dict[tuple, tuple] = {}  # cache key -> (node, padding, pad value)
        tainted = {self.input}
        for node in self.graph.nodes:
            if node.op in ("placeholder", "output"):
                continue
            inputs = [a for a in node.all_input_nodes if a in tainted]
            if not inputs:
                self.constants.add(node)
                continue
            tainted.add(node)
            step = self._windowed_step(node) if all(a in self.windows for a in inputs) else None
            if step is None:
                step = GraphStep(node, "dense")
                for a in inputs:
                    if a in self.windows:
                        self._need(a, (0, 0, 0, 0), 0.0)
            else:
                self.windows[node] = step.window  # type: ignore[assignment]
            self.steps.append(step)
        self.output = next(n for n in self.graph.nodes if n.op == "output")
        for a in self.output.all_input_nodes:
            if a in self.windows:
                self._need(a, (0, 0, 0, 0), 0.0)
        self._needs_of: dict[fx.Node, list[tuple]] = {}
        for key in self.needs:
            self._needs_of.setdefault(key[0], []).append(key)

    def _need(self, node: fx.Node, pad: tuple[int, int, int, int], value: float) -> tuple:
        key = (node, pad, value)
        self.needs[key] = key
        return key

    def _windowed_step(self, node: fx.Node) -> GraphStep | None:
        """The step for ``node`` when every input of it that depends on the patch is a window, else None."""
        value = self.values[node]
        if not isinstance(value, torch.Tensor) or value.dim() != 4 or value.shape[0] != self.n_clean:
            return None
        data = [a for a in node.all_input_nodes if a in self.windows]
        if len(data) == 2 and node.op == "call_function" and node.target in BINARY and len(node.args) == 2 \
                and not node.kwargs and data[0] is not data[1]:
            a, b = node.args
            same = all(isinstance(v, fx.Node) and tuple(self.values[v].shape) == tuple(value.shape) for v in (a, b))
            if not same:
                return None
            wa, wb = self.windows[a], self.windows[b]
            reach = tuple((torch.minimum(ra[0], rb[0]), torch.maximum(ra[1], rb[1]))
                          for ra, rb in zip(wa.reach, wb.reach, strict=True))
            self._need(a, (0, 0, 0, 0), 0.0)
            self._need(b, (0, 0, 0, 0), 0.0)
            return GraphStep(node, "binary", WindowGeometry.of_reach(reach, wa.full))
        if len(data) != 1:
            return None
        source = data[0]
        found = self._window_op(node, source)
        if found is not None:
            fn, axes, pad_value = found
            src = self.windows[source]
            reach = tuple(axis.reach(*r) for axis, r in zip(axes, src.reach, strict=True))
            window = WindowGeometry.of_reach(reach, tuple(value.shape[2:]))
            read = (window.origin[0] * axes[0].stride, window.origin[1] * axes[1].stride)
            step = GraphStep(node, "window-op", window, fn, axes, pad_value, source, read)
            pads = (axes[1].pad_before, axes[1].pad_after, axes[0].pad_before, axes[0].pad_after)
            self._need(source, pads, pad_value)
            return step
        fn = self._pointwise(node, source)
        if fn is None or tuple(value.shape[2:]) != self.windows[source].full:
            return None
        return GraphStep(node, "pointwise", self.windows[source], fn, source=source)

    def _window_op(self, node: fx.Node, source: fx.Node):
        """(fn on the padded footprint, axes, pad value) for window layers, else None."""
        size = tuple(self.values[source].shape[2:])
        if node.op == "call_module":
            module = self.model.get_submodule(str(node.target))
            if has_forward_hooks(module) or node.args != (source,) or node.kwargs:
                return None
            if type(module) is nn.Conv2d:
                try:
                    pads = conv_padding(module)
                except UnsupportedModel:
                    return None
                return self._conv(module.weight, module.bias, module.stride, pads, module.dilation, module.groups,
                                  size)
            if type(module) in WINDOW_POOLS:
                return pool_layer(module, size)
            if type(module) in (nn.ZeroPad2d, nn.ConstantPad2d):
                left, right, top, bottom = module.padding
                return padding_layer(size, (left, right, top, bottom), float(getattr(module, "value", 0.0)))
            return None
        if node.op != "call_function":
            return None
        if node.target is torch.conv2d or node.target is F.conv2d:
            named = dict(zip(CONV_ARGS, node.args, strict=False))  # the positional arguments given, a prefix
            named.update(node.kwargs)
            if named.get("input") is not source:
                return None
            weight, bias = named.get("weight"), named.get("bias")
            if not (isinstance(weight, fx.Node) and weight in self.constants):
                return None
            if bias is not None and not (isinstance(bias, fx.Node) and bias in self.constants):
                return None
            padding = named.get("padding", 0)
            if isinstance(padding, str):
                return None
            ph, pw = as_pair(padding)
            weight_v = self.values[weight]
            bias_v = None if bias is None else self.values[bias]
            return self._conv(weight_v, bias_v, as_pair(named.get("stride", 1)), ((ph, ph), (pw, pw)),
                              as_pair(named.get("dilation", 1)), int(named.get("groups", 1)), size)
        if node.target is F.pad:
            pads = node.args[1] if len(node.args) > 1 else node.kwargs.get("pad")
            mode = node.kwargs.get("mode", node.args[2] if len(node.args) > 2 else "constant")
            value = node.kwargs.get("value", node.args[3] if len(node.args) > 3 else None)
            if node.args[0] is not source or mode != "constant" or not isinstance(pads, (tuple, list)) \
                    or len(pads) != 4 or any(p < 0 for p in pads):
                return None
            return padding_layer(size, tuple(pads), 0.0 if value is None else float(value))
        if node.target is operator.getitem and node.args[0] is source:
            index = node.args[1]
            if not (isinstance(index, tuple) and len(index) == 4 and all(isinstance(s, slice) for s in index)):
                return None
            if any(s != slice(None) for s in index[:2]) or any(s.start is not None or s.stop is not None
                                                               for s in index[2:]):
                return None
            stride = tuple(int(s.step or 1) for s in index[2:])
            if min(stride) < 1:
                return None
            axes = tuple(Axis(1, s, 1, 0, 0, n) for s, n in zip(stride, size, strict=True))

            def subsample(footprint: torch.Tensor, s: tuple = stride) -> torch.Tensor:
                return footprint[:, :, ::s[0], ::s[1]]

            return subsample, axes, 0.0
        return None

    @staticmethod
    def _conv(weight, bias, stride, pads, dilation, groups, size):
        stride, dilation = as_pair(tuple(stride)), as_pair(tuple(dilation))
        axes = tuple(Axis(k, s, d, p[0], p[1], n)
                     for k, s, d, p, n in zip(weight.shape[2:], stride, dilation, pads, size, strict=True))

        def conv(footprint: torch.Tensor) -> torch.Tensor:
            return F.conv2d(footprint, weight, bias, stride, 0, dilation, groups)

        return conv, axes, 0.0

    def _pointwise(self, node: fx.Node, source: fx.Node) -> Callable | None:
        """A function of the window for a layer that acts on every position alike, else None."""
        if node.op == "call_module":
            module = self.model.get_submodule(str(node.target))
            if has_forward_hooks(module) or node.args != (source,) or node.kwargs:
                return None
            return module if type(module) in POINTWISE_MODULES and usable_in_eval(module) else None
        if node.op == "call_function" and node.target is F.pad:
            pads = node.args[1] if len(node.args) > 1 else node.kwargs.get("pad")
            if isinstance(pads, (tuple, list)) and len(pads) == 6 and not any(pads[:4]) and node.args[0] is source:
                return lambda t, n=node: F.pad(t, *n.args[1:], **n.kwargs)
            return None
        known = node.target in POINTWISE_FUNCTIONS if node.op == "call_function" else (
            node.op == "call_method" and node.target in POINTWISE_METHODS)
        if not known:
            return None
        operands = list(node.args) + list(node.kwargs.values())
        for arg in operands:
            if isinstance(arg, fx.Node) and arg is not source:
                if arg not in self.constants or not is_positionless(self.values[arg]):
                    return None
            elif not isinstance(arg, (fx.Node, int, float, bool, type(None), str)):
                return None
        values = self.values

        def call(t: torch.Tensor, n: fx.Node = node) -> torch.Tensor:
            args = fx.node.map_arg(n.args, lambda a: t if a is source else values[a])
            kwargs = fx.node.map_arg(n.kwargs, lambda a: t if a is source else values[a])
            if n.op == "call_method":
                return getattr(args[0], str(n.target))(*args[1:], **kwargs)
            return n.target(*args, **kwargs)  # type: ignore[operator]

        return call

    def _cache(self, node: fx.Node, clean: object) -> None:
        """Keep the channels-last (padded) clean maps of ``node`` that some step reads beyond its window."""
        for key in self._needs_of.get(node, ()):
            _, pad, value = key
            padded = F.pad(clean, pad, value=value) if any(pad) else clean  # type: ignore[arg-type]
            self._caches[key] = padded.permute(0, 2, 3, 1).contiguous()

    @property
    def working_set(self) -> int:
        """Floats per candidate of the largest windowed or whole activation a call holds."""
        largest = 0
        for step in self.steps:
            shape = self.clean_shapes.get(step.node)
            if shape is None:
                continue
            area = step.window.size[0] * step.window.size[1] if step.window is not None else shape[2] * shape[3]
            largest = max(largest, shape[1] * area)
        return max(largest, 1)

    def conv_cost(self) -> tuple[int, int]:
        """Multiply-adds of the convolutions per candidate: (incremental, full forward pass).

        The incremental count is each windowed convolution's output window times
        its per-output cost, and the whole map for convolutions that run on whole
        maps; the ratio is the bound the cone allows (memory traffic and the
        gathers come on top).
        """
        incremental = full = 0
        for step in self.steps:
            node = step.node
            value = self.clean_shapes.get(node)
            weight = self._conv_weight(node)
            if weight is None or value is None:
                continue
            per_output = weight.shape[0] * weight[0].numel()
            full += per_output * value[2] * value[3]
            area = step.window.size[0] * step.window.size[1] if step.kind == "window-op" else value[2] * value[3]
            incremental += per_output * area
        return incremental, full

    def _conv_weight(self, node: fx.Node) -> torch.Tensor | None:
        if node.op == "call_module":
            module = self.model.get_submodule(str(node.target))
            return module.weight if isinstance(module, nn.Conv2d) else None
        if node.op == "call_function" and node.target in (torch.conv2d, F.conv2d):
            weight = node.args[1] if len(node.args) > 1 else node.kwargs.get("weight")
            return self.values.get(weight) if isinstance(weight, fx.Node) else None
        return None

    # -- evaluation ---------------------------------------------------------------
    def __call__(self, image: torch.Tensor, top: torch.Tensor, left: torch.Tensor, patch: torch.Tensor) -> torch.Tensor:
        """(N, classes) logits of the N patched images."""
        if tuple(patch.shape[2:]) != self.patch_size:
            raise ShapeError(f"GraphPatchForward: patch of {tuple(patch.shape[2:])}, built for {self.patch_size}")
        top, left = top.long(), left.long()
        env: dict[fx.Node, torch.Tensor] = {self.input: patch.clone()}
        remaining = {n: len(n.users) for n in self.graph.nodes}

        def whole(a: fx.Node) -> object:
            if a in self.constants:
                return self.values[a]
            if a in self.windows:
                full = self.windows[a].full
                return self._lay(a, env[a], image, top, left, (0, 0, 0, 0), 0.0, self._zeros, full)
            return env[a]

        for step in self.steps:
            node = step.node
            if step.kind == "pointwise":
                env[node] = step.fn(env[step.source])
            elif step.kind == "window-op":
                source = step.source
                rows, cols = step.axes  # type: ignore[misc]
                out = step.window
                size = (rows.footprint(out.size[0]), cols.footprint(out.size[1]))
                pads = (cols.pad_before, cols.pad_after, rows.pad_before, rows.pad_after)
                footprint = self._lay(source, env[source], image, top, left, pads, step.pad_value, step.read, size)
                env[node] = step.fn(footprint)
            elif step.kind == "binary":
                out = step.window
                a, b = (self._lay(x, env[x], image, top, left, (0, 0, 0, 0), 0.0, out.origin, out.size)
                        for x in node.args)
                env[node] = node.target(a, b)
            else:
                args = fx.node.map_arg(node.args, whole)
                kwargs = fx.node.map_arg(node.kwargs, whole)
                env[node] = run_node(self.module, node, args, kwargs)
            for a in node.all_input_nodes:
                if a in env and a is not self.input:
                    remaining[a] -= 1
                    if remaining[a] == 0:
                        del env[a]
        return fx.node.map_arg(self.output.args[0], whole)

    def _lay(self, node: fx.Node, window: torch.Tensor, image: torch.Tensor, top: torch.Tensor, left: torch.Tensor,
             pad: tuple[int, int, int, int], pad_value: float, starts: tuple[torch.Tensor, torch.Tensor],
             size: tuple[int, int]) -> torch.Tensor:
        """(N, C, h, w): the (padded) clean map of ``node`` at ``starts`` (padded coordinates, per corner row and
        column), its window laid over it."""
        geometry = self.windows[node]
        key = (node, pad, id(starts[0]), id(starts[1]), size)
        if key not in self._same:  # the target is the window itself at every corner: nothing to gather
            self._same[key] = size == geometry.size and not any(pad) and all(
                torch.equal(o, s) for o, s in zip(geometry.origin, starts, strict=True))
        if self._same[key]:
            return window
        start = (starts[0].index_select(0, top), starts[1].index_select(0, left))
        origin = (geometry.origin[0].index_select(0, top), geometry.origin[1].index_select(0, left))
        land = (origin[0] + pad[2] - start[0], origin[1] + pad[0] - start[1])
        (h, w), (wh, ww) = size, geometry.size
        cache = self._caches[(node, pad, pad_value)]
        n, (hp, wp, channels), device = len(image), cache.shape[1:], image.device
        buffer = torch.empty(n * h * w + 1, channels, dtype=cache.dtype, device=device)
        first = image * (hp * wp) + start[0] * wp + start[1]
        grid = (torch.arange(h, device=device) * wp)[:, None] + torch.arange(w, device=device)
        torch.index_select(cache.view(-1, channels), 0, (first[:, None] + grid.view(-1)).view(-1), out=buffer[:-1])
        r = land[0][:, None] + torch.arange(wh, device=device)
        c = land[1][:, None] + torch.arange(ww, device=device)
        inside = ((r >= 0) & (r < h))[:, :, None] & ((c >= 0) & (c < w))[:, None, :]
        target = (torch.arange(n, device=device) * (h * w))[:, None, None] + r[:, :, None] * w + c[:, None, :]
        target = torch.where(inside, target, n * h * w)
        buffer.index_copy_(0, target.view(-1), window.permute(0, 2, 3, 1).reshape(-1, channels))
        return buffer[:-1].view(n, h, w, channels).permute(0, 3, 1, 2)


def try_graph_patch_forward(model: nn.Module, clean: torch.Tensor,
                            patch_size: tuple[int, int] = (1, 1)) -> GraphPatchForward | None:
    """:class:`GraphPatchForward` for ``model``, or None where it cannot follow the model."""
    try:
        return GraphPatchForward(model, clean, patch_size)
    except UnsupportedModel:
        return None
