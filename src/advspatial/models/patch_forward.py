"""Exact forward passes of images that differ from known clean images in one small patch.

A one-pixel candidate changes one pixel, and a convolution, a pooling layer or
a pointwise layer only propagates that change to a small window of the next
activation map (the pixel's *cone*). :class:`PatchForward` caches the clean
activations of a batch of images once, and then evaluates a changed image by
recomputing, layer after layer, only the window its change can reach, filling
the rest of each layer's input from the cache. After the last layer it can do
this for (the *spatial stem*), it writes the window back into the clean
activation map and runs the rest of the model (the *tail*: flatten, linear
layers, global pooling, residual blocks...) as usual. The logits equal the
model's own up to floating-point summation order (tests: 1e-5), at a fraction
of the arithmetic and memory traffic. Incremental inference of this kind is
known from occlusion explanations (Nakandala et al., "Incremental and
approximate inference for faster occlusion-based deep CNN explanations",
SIGMOD 2019); this module is an independent implementation.

What counts as the spatial stem: the model is traced with ``torch.fx`` (on a
shallow copy, so tracing has no side effects on the model) and the stem is the
longest chain from the input, each node feeding only the next, of

* ``Conv2d`` (zero padding, any kernel/stride/dilation/groups), ``MaxPool2d``
  and ``AvgPool2d`` (no ``ceil_mode``; ``AvgPool2d`` padding only with
  ``count_include_pad``);
* pointwise layers: activations (ReLU, LeakyReLU, GELU, ...), ``BatchNorm2d``
  and ``Dropout`` in eval mode, ``Identity``, and arithmetic with a constant
  that is the same at every position (the ``Normalized`` wrapper's
  ``(x - mean) / std``).

Layers are recognised by exact type: a subclass may override ``forward``, so it
ends the stem (and runs in full in the tail). A model the tracer cannot handle, or whose first node already falls outside
this list, raises :class:`UnsupportedModel`; callers then use plain forward
passes. Modules with hooks are refused because the stem bypasses ``forward``.
"""

from __future__ import annotations

import copy
import dataclasses
import itertools
import math
import operator
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import fx, nn

from ..errors import ModelError, ShapeError
from .outputs import has_only_guards
from .patch_cache import StructureCache
from .patch_updates import _ConvIntoWindow, _DeltaConv, _flatten_then_linear, _grid, _is_flatten_from_dim1, _LinearFold  # noqa: F401
from .pooling import WINDOW_POOLS, PoolLeafTracer

if TYPE_CHECKING:
    from .patch_graph import GraphPatchForward

#: Modules that act on each activation independently (in eval mode).
POINTWISE_MODULES: tuple[type[nn.Module], ...] = (
    nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.PReLU, nn.ELU, nn.SELU, nn.CELU, nn.GELU, nn.SiLU, nn.Mish,
    nn.Sigmoid, nn.Tanh, nn.Hardtanh, nn.Hardswish, nn.Hardsigmoid, nn.Softplus, nn.Softsign,
    nn.Tanhshrink, nn.Identity, nn.Dropout, nn.Dropout2d, nn.AlphaDropout, nn.BatchNorm2d,
)
#: Functions and methods that act on each activation independently.
POINTWISE_FUNCTIONS: frozenset[object] = frozenset({
    torch.relu, F.relu, torch.sigmoid, F.sigmoid, torch.tanh, F.tanh, F.gelu, F.silu, F.leaky_relu,
    F.elu, F.hardtanh, F.relu6, operator.add, operator.sub, operator.mul, operator.truediv,
    torch.add, torch.sub, torch.mul, torch.div,
})
POINTWISE_METHODS: frozenset[str] = frozenset({"relu", "sigmoid", "tanh", "add", "sub", "mul", "div", "contiguous"})


class UnsupportedModel(ModelError):
    """The model has no spatial stem that :class:`PatchForward` can evaluate incrementally."""


@dataclass(frozen=True)
class Axis:
    """Geometry of a window layer along one spatial axis (sizes in activation pixels)."""

    kernel: int
    stride: int
    dilation: int
    pad_before: int
    pad_after: int
    size_in: int

    @property
    def size_out(self) -> int:
        span = (self.kernel - 1) * self.dilation + 1
        return (self.size_in + self.pad_before + self.pad_after - span) // self.stride + 1

    def footprint(self, window: int) -> int:
        """Input positions (padded) needed to compute ``window`` consecutive outputs."""
        return (window - 1) * self.stride + (self.kernel - 1) * self.dilation + 1

    def reach(self, lo: torch.Tensor, hi: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Outputs ``[lo', hi')`` that inputs ``[lo, hi)`` can change (empty ranges stay empty)."""
        first = -torch.div(-(lo + self.pad_before - (self.kernel - 1) * self.dilation), self.stride,
                           rounding_mode="floor")
        last = torch.div(hi - 1 + self.pad_before, self.stride, rounding_mode="floor")
        new_lo = first.clamp(0, self.size_out)
        new_hi = torch.maximum(torch.minimum(last + 1, torch.full_like(last, self.size_out)), new_lo)
        return new_lo, torch.where(hi > lo, new_hi, new_lo)


@dataclass
class Stage:
    """One node of the stem: pointwise (``axes`` is None) or a window layer (conv or pool)."""

    apply_window: Callable[[torch.Tensor], torch.Tensor]  # on a patch (pointwise) or a padded (N, h, w, C) footprint
    apply_full: Callable[[torch.Tensor], torch.Tensor]  # on whole maps: the module, or the same values (max pooling)
    axes: tuple[Axis, Axis] | None = None
    pad_value: float = 0.0
    window: tuple[int, int] = (0, 0)  # output window size, set by PatchForward
    max_pool: bool = False  # a max pooling layer (ReLU-like layers commute with it)

    @property
    def pad(self) -> tuple[int, int, int, int]:
        """``F.pad`` order: (left, right, top, bottom)."""
        assert self.axes is not None
        rows, cols = self.axes
        return (cols.pad_before, cols.pad_after, rows.pad_before, rows.pad_after)


def _pair(value: int | tuple[int, ...]) -> tuple[int, int]:
    return (value, value) if isinstance(value, int) else (int(value[0]), int(value[1]))


def _conv_padding(conv: nn.Conv2d) -> tuple[tuple[int, int], tuple[int, int]]:
    """(before, after) zero padding per axis, resolving ``'same'``/``'valid'``."""
    if conv.padding_mode != "zeros":
        raise UnsupportedModel(f"{type(conv).__name__} with padding_mode={conv.padding_mode!r}")
    if conv.padding == "valid":
        return (0, 0), (0, 0)
    if conv.padding == "same":
        total = [d * (k - 1) for d, k in zip(conv.dilation, conv.kernel_size)]
        return tuple((t // 2, t - t // 2) for t in total)  # type: ignore[return-value]
    ph, pw = _pair(conv.padding)  # type: ignore[arg-type]
    return (ph, ph), (pw, pw)


def _window_stage(module: nn.Module, size_in: tuple[int, int]) -> Stage:
    """The stage of a conv or pooling module whose input maps are ``size_in`` (H, W)."""
    if type(module) is nn.Conv2d:
        pads = _conv_padding(module)
        geometry = zip(module.kernel_size, module.stride, module.dilation, pads, size_in)
        axes = tuple(Axis(k, s, d, p[0], p[1], n) for k, s, d, p, n in geometry)

        def conv(footprint: torch.Tensor, m: nn.Conv2d = module) -> torch.Tensor:
            return F.conv2d(footprint.permute(0, 3, 1, 2), m.weight, m.bias, m.stride, 0, m.dilation, m.groups)

        return Stage(conv, module, axes, 0.0)  # type: ignore[arg-type]
    if type(module) in WINDOW_POOLS:
        if module.ceil_mode:
            raise UnsupportedModel(f"{type(module).__name__} with ceil_mode=True")
        kernel, padding = _pair(module.kernel_size), _pair(module.padding)
        stride = _pair(module.stride if module.stride else module.kernel_size)
        if isinstance(module, nn.MaxPool2d):
            if module.return_indices:
                raise UnsupportedModel("MaxPool2d with return_indices=True")
            dilation = _pair(module.dilation)

            def pool(footprint: torch.Tensor, k: tuple = kernel, s: tuple = stride, d: tuple = dilation) -> torch.Tensor:
                return max_pool_window(footprint.permute(0, 3, 1, 2), k, s, d)

            def pool_full(maps: torch.Tensor, k: tuple = kernel, s: tuple = stride, d: tuple = dilation) -> torch.Tensor:
                return max_pool_window(maps, k, s, d)  # the module's values (a maximum is exact), faster

            axes = tuple(Axis(k, s, d, p, p, n) for k, s, d, p, n in zip(kernel, stride, dilation, padding, size_in))
            return Stage(pool, module if any(padding) else pool_full, axes, -math.inf,  # type: ignore[arg-type]
                         max_pool=True)
        if any(padding) and not module.count_include_pad:
            raise UnsupportedModel("AvgPool2d with padding and count_include_pad=False")

        def average(footprint: torch.Tensor, k: tuple = kernel, s: tuple = stride,
                    div: int | None = module.divisor_override) -> torch.Tensor:
            return F.avg_pool2d(footprint.permute(0, 3, 1, 2), k, s, 0, divisor_override=div)

        axes = tuple(Axis(k, s, 1, p, p, n) for k, s, p, n in zip(kernel, stride, padding, size_in))
        return Stage(average, module, axes, 0.0)  # type: ignore[arg-type]
    raise UnsupportedModel(f"{type(module).__name__} is not a window layer")


def max_pool_window(footprint: torch.Tensor, kernel: tuple[int, int], stride: tuple[int, int],
                    dilation: tuple[int, int]) -> torch.Tensor:
    """``F.max_pool2d(footprint, kernel, stride, 0, dilation)`` of an (N, C, h, w) footprint, in any memory format.

    A 2x2 window with stride 2 (LeNet, VGG, the registry's small nets) is pooled as two
    elementwise maxima of strided views, first along rows, then along columns: the same
    values (a maximum is exact; NaN propagates in both), about twice as fast as
    ``max_pool2d`` on the small channels-last footprints of incremental evaluation, which
    also writes the indices it is not asked for (benchmarks/README.md, session 10).
    """
    if kernel == stride == (2, 2) and dilation == (1, 1):
        rows, cols = footprint.shape[2] // 2 * 2, footprint.shape[3] // 2 * 2
        half = torch.maximum(footprint[:, :, 0:rows:2], footprint[:, :, 1:rows:2])
        return torch.maximum(half[:, :, :, 0:cols:2], half[:, :, :, 1:cols:2])
    return F.max_pool2d(footprint, kernel, stride, 0, dilation)


def _is_positionless(value: object) -> bool:
    """A number, or a tensor that broadcasts to the same value at every position and sample."""
    if isinstance(value, (int, float, bool)):
        return True
    if not isinstance(value, torch.Tensor):
        return False
    if value.numel() == 1:
        return True
    per_channel = 2 <= value.dim() <= 4 and value.shape[-2:] == (1, 1)
    return per_channel and (value.dim() < 4 or value.shape[0] == 1)


def _usable_in_eval(module: nn.Module) -> bool:
    """A pointwise module that really acts pointwise: BatchNorm/Dropout only in eval mode, BN with running stats."""
    if isinstance(module, nn.BatchNorm2d):
        return not module.training and module.running_mean is not None
    if isinstance(module, (nn.Dropout, nn.Dropout2d, nn.AlphaDropout)):
        return not module.training
    return True


class _Tracer:
    """Walks the traced graph of a model and turns its spatial stem into :class:`Stage` objects."""

    def __init__(self, model: nn.Module, example: torch.Tensor) -> None:
        self.model = model
        self.graph = _trace_graph(model)
        self.example = example

    def stem(self) -> tuple[list[Stage], fx.Node, list[fx.Node]]:
        """The stages, the last stem node, and every node up to it (for the tail's interpreter)."""
        if not has_only_guards(self.model._forward_hooks) or self.model._forward_pre_hooks:
            raise UnsupportedModel("the model has forward hooks, which incremental evaluation would skip")
        nodes = list(self.graph.nodes)
        placeholders = [n for n in nodes if n.op == "placeholder"]
        if len(placeholders) != 1:
            raise UnsupportedModel(f"the model's forward takes {len(placeholders)} inputs, not 1")
        current, value = placeholders[0], self.example
        stages: list[Stage] = []
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

    def _stage(self, node: fx.Node, previous: fx.Node, value: torch.Tensor) -> Stage | None:
        """The stage for ``node`` (whose data input is ``previous``), or None where the stem ends."""
        if value.dim() != 4:
            return None
        if node.op == "call_module":
            module = self.model.get_submodule(str(node.target))
            if module._forward_hooks or module._forward_pre_hooks:
                return None
            if len(node.args) != 1 or node.kwargs:
                return None
            if type(module) in POINTWISE_MODULES:
                return Stage(module, module) if _usable_in_eval(module) else None
            try:
                return _window_stage(module, (value.shape[2], value.shape[3]))
            except UnsupportedModel:
                return None
        if node.op in ("call_function", "call_method"):
            return self._pointwise_call(node, previous)
        return None

    def _pointwise_call(self, node: fx.Node, previous: fx.Node) -> Stage | None:
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
        if not all(_is_positionless(v) for v in constants.values()):
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

        return Stage(call, call)


def _trace(model: nn.Module) -> fx.GraphModule:
    """Trace a shallow copy of ``model`` (tensors shared), so tracing cannot change the model."""
    memo = {id(t): t for t in itertools.chain(model.parameters(), model.buffers())}
    try:
        copied = copy.deepcopy(model, memo)
        return fx.GraphModule(copied, PoolLeafTracer().trace(copied), type(model).__name__)
    except Exception as exc:  # fx raises many types for untraceable code
        raise UnsupportedModel(f"torch.fx cannot trace {type(model).__name__}: {exc}") from exc


def _trace_graph(model: nn.Module) -> fx.Graph:
    """:func:`_trace`'s graph alone (no module compiled from it: the caller compiles one, on ``model``)."""
    memo = {id(t): t for t in itertools.chain(model.parameters(), model.buffers())}
    try:
        return PoolLeafTracer().trace(copy.deepcopy(model, memo))
    except Exception as exc:  # fx raises many types for untraceable code
        raise UnsupportedModel(f"torch.fx cannot trace {type(model).__name__}: {exc}") from exc


class _Tail:
    """Runs the graph after ``boundary``, starting from that node's value (``before``: every node up to it).

    The nodes after the boundary are copied into a graph of their own, compiled
    once (the model's modules, called as the model calls them); a call is then
    one Python function call, not one interpreter step per node. Where a later
    node reads a value from before the boundary (not a chain), the interpreter
    runs the whole graph from the boundary instead.
    """

    def __init__(self, module: fx.GraphModule, boundary: fx.Node, before: list[fx.Node]) -> None:
        self.module, self.boundary, self.before = module, boundary, before
        self.compiled = self._compile()
        self.interpreter = None if self.compiled is not None else fx.Interpreter(module, garbage_collect_values=True)

    def _compile(self) -> fx.GraphModule | None:
        skip = set(self.before)
        graph = fx.Graph()
        env = {self.boundary: graph.placeholder("stem_output")}
        for node in self.module.graph.nodes:
            if node in skip or node is self.boundary:
                continue
            if any(arg not in env for arg in node.all_input_nodes):
                return None
            env[node] = graph.node_copy(node, env.__getitem__)
        return fx.GraphModule(self.module, graph)

    def from_stem(self, value: torch.Tensor) -> torch.Tensor:
        """The model's output when the boundary node's value is ``value``."""
        if self.compiled is not None:
            return self.compiled(value)
        env = {n: None for n in self.before}
        env[self.boundary] = value
        assert self.interpreter is not None
        return self.interpreter.run(value, initial_env=env)


@dataclass
class _AxisPlan:
    """One window stage along one axis, for every initial patch coordinate ``p`` (the table index).

    ``read[p]``: the footprint's first input row/col (padded coordinates);
    ``land[p]``: where in the footprint the incoming patch's first row/col
    lands; ``inside[p, i]``: whether the incoming patch's i-th row/col falls
    inside the footprint. :meth:`_WindowPlan.combine` turns the two axes into
    flat offsets.
    """

    read: torch.Tensor
    land: torch.Tensor
    inside: torch.Tensor
    incoming: torch.Tensor  # the incoming patch's first row/col (unpadded input coordinates)
    origin: torch.Tensor  # the output window's first row/col


@dataclass
class _WindowPlan:
    """One window stage, as tables indexed by the patch's flat corner ``top * corners_per_row + left``.

    ``read[k]``: flat offset (padded input, channels-last rows) of the
    footprint's first row; ``land[k, i]``: row of the footprint that the
    incoming patch's i-th position overwrites, and ``inside[k, i]`` whether it
    falls inside the footprint at all.
    """

    footprint: tuple[int, int]
    read: torch.Tensor  # (corners,)
    land: torch.Tensor  # (corners, ph*pw)
    inside: torch.Tensor  # (corners, ph*pw) bool
    read_grid: torch.Tensor  # (fh*fw,) flat offsets of the footprint in the padded input
    delta: "_DeltaConv | None" = None  # a stride-1 convolution evaluated on the change only

    @classmethod
    def combine(cls, rows: _AxisPlan, cols: _AxisPlan, footprint: tuple[int, int], incoming: tuple[int, int],
                padded_width: int) -> "_WindowPlan":
        """The flat-corner tables from the two per-axis ones."""
        fh, fw = footprint
        device = rows.read.device
        read = (rows.read * padded_width)[:, None] + cols.read[None, :]
        land_first = (rows.land * fw)[:, None] + cols.land[None, :]
        land = land_first[:, :, None] + _grid(device, (incoming[0], fw), (incoming[1], 1))
        inside = rows.inside[:, None, :, None] & cols.inside[None, :, None, :]
        corners = read.numel()
        return cls(footprint, read.reshape(corners), land.reshape(corners, -1), inside.reshape(corners, -1),
                   _grid(device, (fh, padded_width), (fw, 1)))


def check_patch_inputs(who: str, clean: torch.Tensor, patch_size: tuple[int, int]) -> tuple[int, int]:
    """(H, W) of ``clean``; a one-line :class:`ShapeError` (naming ``who``) unless it is (n, C, H, W) and the
    patch fits it."""
    if clean.dim() != 4:
        raise ShapeError(f"{who}: clean images must be (n, C, H, W), got {tuple(clean.shape)}")
    height, width = clean.shape[2:]
    if not (1 <= patch_size[0] <= height and 1 <= patch_size[1] <= width):
        raise ShapeError(f"{who}: patch {patch_size} does not fit images of {height}x{width}")
    return int(height), int(width)


@dataclass
class _Structure:
    """What :class:`PatchForward` builds from the model and the input geometry alone (cached per model).

    The traced stem, the compiled tail, every window stage's lookup tables
    (sized by the widest cone of any corner) and the weight layouts of the
    change paths; none of it depends on the clean images' values.
    """

    stages: list[Stage]
    tail: _Tail
    plans: list[_WindowPlan | None]
    fold: _LinearFold | None
    corners_per_row: int
    tail_window: tuple[int, int]
    tail_corner: tuple[torch.Tensor, torch.Tensor]
    tail_start: torch.Tensor
    tail_grid: torch.Tensor
    #: per stage index of a delta conv: the fused step into the next window stage (see :class:`_ConvIntoWindow`)
    fusions: dict[int, tuple[_ConvIntoWindow, int]] = dataclasses.field(default_factory=dict)
    #: BatchNorm stages whose scale the delta conv before them applies (see :func:`_absorbed_scale`)
    absorbed: frozenset[int] = frozenset()

    @classmethod
    def build(cls, model: nn.Module, example: torch.Tensor, patch_size: tuple[int, int]) -> "_Structure":
        """Trace ``model`` on ``example`` (one image), plan every stage, lay out the change paths."""
        tracer = _Tracer(model, example)
        stages, boundary, before = tracer.stem()
        module = fx.GraphModule(model, tracer.graph)  # the model's modules, run as compiled code by the tails
        tail = _Tail(module, boundary, before)
        image_size = (example.shape[2], example.shape[3])
        device = example.device
        per_axis = [_plan_axis(stages, image_size[axis], patch_size[axis], axis, device) for axis in (0, 1)]
        plans: list[_WindowPlan | None] = []
        absorbed: set[int] = set()
        window_stages = iter(range(len(per_axis[0][0])))
        for i, stage in enumerate(stages):
            if stage.axes is None:
                plans.append(None)
                continue
            k = next(window_stages)
            (rows, fh, win_h, in_h), (cols, fw, win_w, in_w) = per_axis[0][0][k], per_axis[1][0][k]
            padded = tuple(a.size_in + a.pad_before + a.pad_after for a in stage.axes)
            stage.window = (win_h, win_w)
            plan = _WindowPlan.combine(rows, cols, (fh, fw), (in_h, in_w), padded[1])
            scale = _absorbed_scale(stages, i)
            plan.delta = _DeltaConv.build(stage, rows, cols, (in_h, in_w), padded, scale)  # type: ignore[arg-type]
            if plan.delta is not None and scale is not None:
                absorbed.add(i + 1)
            plans.append(plan)
        fusions = {i: fused for i in range(len(stages))
                   if (fused := _ConvIntoWindow.build(stages, plans, i, absorbed)) is not None}
        with torch.no_grad():
            value = example
            for stage in stages:
                value = stage.apply_full(value)
        channels, height, width = value.shape[1:]
        (last_rows, rows_in), (last_cols, cols_in) = per_axis[0][1], per_axis[1][1]
        # per flat corner: the stem output window's corner (row, col) and its flat offset
        tail_corner = (last_rows[:, None].expand(-1, len(last_cols)).reshape(-1),
                       last_cols[None, :].expand(len(last_rows), -1).reshape(-1))
        tail_start = tail_corner[0] * width + tail_corner[1]
        structure = cls(stages, tail, plans, None, image_size[1] - patch_size[1] + 1, (rows_in, cols_in),
                        tail_corner, tail_start, _grid(device, (channels, height * width), (rows_in, width), (cols_in, 1)),
                        fusions, frozenset(absorbed))
        structure.fold = _LinearFold.build(model, boundary, (channels, height, width), (rows_in, cols_in), tail_start,
                                           lambda node, upto: _Tail(module, node, upto), before)
        return structure


def _absorbed_scale(stages: list[Stage], conv_index: int) -> torch.Tensor | None:
    """Per output channel, the scale of an eval-mode ``BatchNorm2d`` right after the conv at ``conv_index``.

    BatchNorm is affine per channel, ``bn(c + d) = bn(c) + scale * d``: a delta conv can spread its change
    through the scaled kernel and add it to the cached clean output *after* the BatchNorm, which then
    costs nothing per candidate (equal up to rounding, like every change path). Not where the BatchNorm
    keeps another dtype than the conv (mixed precision: the scaled kernel would change the conv's dtype).
    """
    conv = stages[conv_index].apply_full
    if type(conv) is not nn.Conv2d or conv_index + 1 >= len(stages):
        return None
    norm = stages[conv_index + 1].apply_full
    if type(norm) is not nn.BatchNorm2d or norm.training or norm.running_var is None:
        return None
    if norm.running_var.dtype != conv.weight.dtype:
        return None
    scale = torch.rsqrt(norm.running_var.detach() + norm.eps)
    return scale if norm.weight is None else scale * norm.weight.detach()


def _plan_axis(
    stages: list[Stage], size: int, patch: int, axis: int, device: torch.device,
) -> tuple[list[tuple[_AxisPlan, int, int, int]], tuple[torch.Tensor, int]]:
    """Along one axis, per window stage: (tables, footprint, window, incoming size); then the stem output's corner and size."""
    lo = torch.arange(size - patch + 1, device=device)
    hi = lo + patch
    corner, incoming = lo.clone(), patch
    plans = []
    for stage in stages:
        if stage.axes is None:
            continue
        geometry = stage.axes[axis]
        lo, hi = geometry.reach(lo, hi)  # the outputs the change can reach
        window = max(int((hi - lo).max()), 1)
        origin = lo.clamp(max=geometry.size_out - window)
        read = origin * geometry.stride
        footprint = geometry.footprint(window)
        land = corner + geometry.pad_before - read
        position = land[:, None] + torch.arange(incoming, device=device)
        inside = (position >= 0) & (position < footprint)
        plans.append((_AxisPlan(read, land, inside, corner, origin), footprint, window, incoming))
        corner, incoming = origin, window
    return plans, (corner, incoming)


#: Structures per model and input geometry, reused while the model is unchanged (:mod:`.patch_cache`).
STRUCTURES: StructureCache[_Structure] = StructureCache()


class PatchForward:
    """Logits of images equal to ``clean[i]`` except in one ``patch_size`` rectangle.

    Args:
        model: the classifier (eval mode for BatchNorm/Dropout in the stem to be usable).
        clean: (n, C, H, W) the clean images; their activations are cached.
        patch_size: (rows, cols) of the changed rectangle (1x1 for one pixel).

    Raises:
        UnsupportedModel: the model has no spatial stem (see the module docstring).

    Call with ``image`` (N,) indices into ``clean``, ``top``/``left`` (N,) the
    rectangle's corner, and ``patch`` (N, C, rows, cols) its new values.

    Where each stage reads its footprint and where the changed window lands
    depend only on the patch's corner, separably per axis, so they are worked
    out once for every corner (lookup tables); a call only gathers from them.
    """

    #: fuse a delta conv with the next window stage where possible (:class:`_ConvIntoWindow`); off: stage by stage
    FUSE = True

    def __init__(self, model: nn.Module, clean: torch.Tensor, patch_size: tuple[int, int] = (1, 1)) -> None:
        height, width = check_patch_inputs("PatchForward", clean, patch_size)
        self.patch_size = (int(patch_size[0]), int(patch_size[1]))
        self.image_size = (height, width)
        key = (tuple(clean.shape[1:]), clean.dtype, clean.device, self.patch_size)
        structure = STRUCTURES.get(model, key, lambda: _Structure.build(model, clean[:1].clone(), self.patch_size))
        self.stages, self.tail, self.plans, self.fold = structure.stages, structure.tail, structure.plans, structure.fold
        self.fusions = structure.fusions if self.FUSE else {}
        self.absorbed = structure.absorbed
        self.corners_per_row, self.tail_window = structure.corners_per_row, structure.tail_window
        self.tail_corner, self.tail_start, self.tail_grid = structure.tail_corner, structure.tail_start, structure.tail_grid
        self._clean_logits: torch.Tensor | None = None
        self._cache_clean(clean)
        self.fold_clean = None if self.fold is None else self.fold.clean(self.clean_stem)

    @property
    def working_set(self) -> int:
        """Floats per candidate of the largest activation a call holds (for choosing batch sizes)."""
        return self.clean_stem[0].numel()

    def spatial_tail(self) -> bool:
        """Whether the model runs convolution or pooling layers after the stem (in full, per candidate)."""
        done = set(self.tail.before)
        for node in self.tail.module.graph.nodes:
            if node in done:
                continue
            if node.op == "call_module":
                module = self.tail.module.get_submodule(str(node.target))
                if isinstance(module, (nn.Conv2d, nn.MaxPool2d, nn.AvgPool2d)):
                    return True
            if node.op == "call_function" and node.target in (torch.conv2d, F.conv2d, F.max_pool2d, F.avg_pool2d):
                return True
        return False

    def _cache_clean(self, clean: torch.Tensor) -> None:
        """Run the clean images through the stem, keeping each window stage's padded input (channels last);
        a window stage that a fused step reaches reads the conv's output instead and keeps none."""
        self.padded: list[torch.Tensor | None] = []
        self.outputs: list[torch.Tensor | None] = []  # channels-last clean outputs of convolutions
        fused_into = {last for _, last in self.fusions.values()}

        def keep(k: int, stage: Stage, value: torch.Tensor, output: torch.Tensor) -> None:
            if stage.axes is None or k in fused_into:
                self.padded.append(None)
            else:
                self.padded.append(F.pad(value, stage.pad, value=stage.pad_value).permute(0, 2, 3, 1).contiguous())
            delta = self.plans[k] is not None and self.plans[k].delta is not None  # type: ignore[union-attr]
            self.outputs.append(_channels_last_copy(output) if delta and k + 1 not in self.absorbed else None)
            if k in self.absorbed:  # the delta conv before it adds its change after this BatchNorm
                self.outputs[k - 1] = _channels_last_copy(output)

        self.clean_stem = self._stem_pass(clean, keep)

    def _stem_pass(self, images: torch.Tensor,
                   keep: Callable[[int, Stage, torch.Tensor, torch.Tensor], None] | None = None) -> torch.Tensor:
        """The stem output of whole images: the stem's modules in order (unpadded max pooling by its exact
        equivalent), as in the model; ``keep(k, stage, input, output)`` sees every stage."""
        value = images.clone()  # an in-place first layer must not change the caller's images
        with torch.no_grad():
            for k, stage in enumerate(self.stages):
                output = stage.apply_full(value)
                if keep is not None:
                    keep(k, stage, value, output)
                value = output
        return value.contiguous()

    def full_logits(self, images: torch.Tensor) -> torch.Tensor:
        """(n, classes) logits of whole images by a full forward pass, equal to ``model(images)`` bit for bit
        (the model's own layers on the same batch; its max pooling by an exact equivalent, which is faster)."""
        with torch.no_grad():
            return self.tail.from_stem(self._stem_pass(images))

    @property
    def clean_logits(self) -> torch.Tensor:
        """(n, classes) logits of the clean images (computed on first use), equal to the model's bit for bit."""
        if self._clean_logits is None:
            with torch.no_grad():
                self._clean_logits = self.tail.from_stem(self.clean_stem.clone())
        return self._clean_logits

    # -- evaluation ---------------------------------------------------------------
    def __call__(self, image: torch.Tensor, top: torch.Tensor, left: torch.Tensor, patch: torch.Tensor) -> torch.Tensor:
        """(N, classes) logits of the N patched images."""
        if patch.shape[2:] != self.patch_size:
            raise ShapeError(f"PatchForward: patch of {tuple(patch.shape[2:])}, built for {self.patch_size}")
        corner = top.long() * self.corners_per_row + left.long()
        value = patch.clone()  # an in-place layer must not change the caller's patch
        k = 0
        while k < len(self.stages):
            stage, padded, plan, output = self.stages[k], self.padded[k], self.plans[k], self.outputs[k]
            if k in self.fusions:  # a delta conv (its padded input and output are cached) into a window stage
                fused, k = self.fusions[k]
                value = fused(padded, output, image, corner, value)
            elif plan is None or padded is None:
                value = stage.apply_window(value)
            elif plan.delta is not None and output is not None:
                value = plan.delta(padded, output, image, corner, value)
                if k + 1 in self.absorbed:
                    k += 1  # the BatchNorm after the conv is already applied to the change
            else:
                value = stage.apply_window(self._footprint(plan, padded, image, corner, value))
            k += 1
        return self._tail(image, corner, value)

    @staticmethod
    def _footprint(
        plan: _WindowPlan, padded: torch.Tensor, image: torch.Tensor, corner: torch.Tensor, patch: torch.Tensor,
    ) -> torch.Tensor:
        """(N, fh, fw, C): the padded input a stage needs for its window, the patch laid over the cache.

        Both are handled as rows of C values (channels-last storage), so every
        gather and scatter is a contiguous row copy. Patch rows that fall outside
        the footprint are sent to one scratch row past the end.
        """
        n, (fh, fw) = len(image), plan.footprint
        hp, wp, channels = padded.shape[1:]
        buffer = torch.empty(n * fh * fw + 1, channels, dtype=padded.dtype, device=padded.device)
        start = image * (hp * wp) + plan.read.index_select(0, corner)
        torch.index_select(padded.view(-1, channels), 0, (start[:, None] + plan.read_grid).view(-1), out=buffer[:-1])
        land = plan.land.index_select(0, corner) + (torch.arange(n, device=image.device) * (fh * fw))[:, None]
        target = torch.where(plan.inside.index_select(0, corner), land, n * fh * fw)
        buffer.index_copy_(0, target.view(-1), patch.permute(0, 2, 3, 1).reshape(-1, channels))
        return buffer[:-1].view(n, fh, fw, channels)

    def _tail(self, image: torch.Tensor, corner: torch.Tensor, patch: torch.Tensor) -> torch.Tensor:
        """Write the stem's window into the clean stem output and run the rest of the model."""
        if self.fold is not None:
            return self.fold(self.fold_clean, self.clean_stem.shape[2:], image, corner, patch)
        full = self.clean_stem.index_select(0, image)
        first = torch.arange(len(image), device=image.device) * self.clean_stem[0].numel()
        target = (first + self.tail_start.index_select(0, corner))[:, None] + self.tail_grid
        full.view(-1).index_copy_(0, target.view(-1), patch.reshape(-1))
        return self.tail.from_stem(full)


def _channels_last_copy(maps: torch.Tensor) -> torch.Tensor:
    """(n, H, W, C) contiguous copy of (n, C, H, W) maps (a copy even where they are channels-last already: a
    later in-place layer must not change the cache)."""
    return maps.permute(0, 2, 3, 1).clone(memory_format=torch.contiguous_format)


def try_patch_forward(model: nn.Module, clean: torch.Tensor,
                      patch_size: tuple[int, int] = (1, 1)) -> "PatchForward | GraphPatchForward | None":
    """The incremental evaluator for ``model``, or None where neither can follow the model.

    :class:`PatchForward` (the chain stem, cheapest per call) where its stem
    takes in every convolution and pooling layer of the model; otherwise, where
    layers with spatial extent remain after the chain (residual blocks, mobile
    blocks), :class:`~advspatial.models.patch_graph.GraphPatchForward`, which
    follows the cone through the whole graph; the chain evaluator where the graph
    one cannot follow the model either.
    """
    from .patch_graph import GraphPatchForward

    try:
        chain: PatchForward | None = PatchForward(model, clean, patch_size)
    except UnsupportedModel:
        chain = None
    if chain is not None and not chain.spatial_tail():
        return chain
    try:
        return GraphPatchForward(model, clean, patch_size)
    except UnsupportedModel:
        return chain
