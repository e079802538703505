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
ends the stem (and runs in full in the tail). A model the tracer cannot handle, or whose first node already falls
outside this list, raises :class:`UnsupportedModel`; callers then use plain forward
passes. Modules with hooks are refused because the stem bypasses ``forward``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import fx, nn

from ...errors import ShapeError
from .cache import StructureCache
from .graph import GraphPatchForward
from .stem import StemNode, UnsupportedModel, check_patch_inputs
from .tracing import StemTracer
from .updates import AxisPlan, ConvIntoWindow, DeltaConv, LinearFold, WindowPlan, window_grid

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
class _Structure:
    """What :class:`PatchForward` builds from the model and the input geometry alone (cached per model).

    The traced stem, the compiled tail, every window stage's lookup tables
    (sized by the widest cone of any corner) and the weight layouts of the
    change paths; none of it depends on the clean images' values.
    """

    stages: list[StemNode]
    tail: _Tail
    plans: list[WindowPlan | None]
    fold: LinearFold | None
    corners_per_row: int
    tail_window: tuple[int, int]
    tail_corner: tuple[torch.Tensor, torch.Tensor]
    tail_start: torch.Tensor
    tail_grid: torch.Tensor
    #: per stage index of a delta conv: the fused step into the next window stage (see :class:`ConvIntoWindow`)
    fusions: dict[int, tuple[ConvIntoWindow, int]] = dataclasses.field(default_factory=dict)
    #: BatchNorm stages whose scale the delta conv before them applies (see :func:`_absorbed_scale`)
    absorbed: frozenset[int] = frozenset()

    @classmethod
    def build(cls, model: nn.Module, example: torch.Tensor, patch_size: tuple[int, int]) -> _Structure:
        """Trace ``model`` on ``example`` (one image), plan every stage, lay out the change paths."""
        tracer = StemTracer(model, example)
        stages, boundary, before = tracer.stem()
        module = fx.GraphModule(model, tracer.graph)  # the model's modules, run as compiled code by the tails
        tail = _Tail(module, boundary, before)
        image_size = (example.shape[2], example.shape[3])
        device = example.device
        per_axis = [_plan_axis(stages, image_size[axis], patch_size[axis], axis, device) for axis in (0, 1)]
        plans: list[WindowPlan | None] = []
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
            plan = WindowPlan.combine(rows, cols, (fh, fw), (in_h, in_w), padded[1])
            scale = _absorbed_scale(stages, i)
            plan.delta = DeltaConv.build(stage, rows, cols, (in_h, in_w), padded, scale)  # type: ignore[arg-type]
            if plan.delta is not None and scale is not None:
                absorbed.add(i + 1)
            plans.append(plan)
        fusions = {i: fused for i in range(len(stages))
                   if (fused := ConvIntoWindow.build(stages, plans, i, absorbed)) is not None}
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
                        tail_corner, tail_start,
                        window_grid(device, (channels, height * width), (rows_in, width), (cols_in, 1)),
                        fusions, frozenset(absorbed))
        structure.fold = LinearFold.build(model, boundary, (channels, height, width), (rows_in, cols_in), tail_start,
                                           lambda node, upto: _Tail(module, node, upto), before)
        return structure


def _absorbed_scale(stages: list[StemNode], conv_index: int) -> torch.Tensor | None:
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
    stages: list[StemNode], size: int, patch: int, axis: int, device: torch.device,
) -> tuple[list[tuple[AxisPlan, int, int, int]], tuple[torch.Tensor, int]]:
    """Along one axis, per window stage: (tables, footprint, window, incoming size); then the stem output's corner and
    size."""
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
        plans.append((AxisPlan(read, land, inside, corner, origin), footprint, window, incoming))
        corner, incoming = origin, window
    return plans, (corner, incoming)


#: Structures per model and input geometry, reused while the model is unchanged (:mod:`.cache`).
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

    #: fuse a delta conv with the next window stage where possible (:class:`ConvIntoWindow`); off: stage by stage
    FUSE = True

    def __init__(self, model: nn.Module, clean: torch.Tensor, patch_size: tuple[int, int] = (1, 1)) -> None:
        height, width = check_patch_inputs("PatchForward", clean, patch_size)
        self.patch_size = (int(patch_size[0]), int(patch_size[1]))
        self.image_size = (height, width)
        key = (tuple(clean.shape[1:]), clean.dtype, clean.device, self.patch_size)
        structure = STRUCTURES.get(model, key, lambda: _Structure.build(model, clean[:1].clone(), self.patch_size))
        self.stages, self.tail = structure.stages, structure.tail
        self.plans, self.fold = structure.plans, structure.fold
        self.fusions = structure.fusions if self.FUSE else {}
        self.absorbed = structure.absorbed
        self.corners_per_row, self.tail_window = structure.corners_per_row, structure.tail_window
        self.tail_corner, self.tail_start = structure.tail_corner, structure.tail_start
        self.tail_grid = structure.tail_grid
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

        def keep(k: int, stage: StemNode, value: torch.Tensor, output: torch.Tensor) -> None:
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
                   keep: Callable[[int, StemNode, torch.Tensor, torch.Tensor], None] | None = None) -> torch.Tensor:
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
        plan: WindowPlan, padded: torch.Tensor, image: torch.Tensor, corner: torch.Tensor, patch: torch.Tensor,
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
                      patch_size: tuple[int, int] = (1, 1)) -> PatchForward | GraphPatchForward | None:
    """The incremental evaluator for ``model``, or None where neither can follow the model.

    :class:`PatchForward` (the chain stem, cheapest per call) where its stem
    takes in every convolution and pooling layer of the model; otherwise, where
    layers with spatial extent remain after the chain (residual blocks, mobile
    blocks), :class:`~advspatial.models.patch.graph.GraphPatchForward`, which
    follows the cone through the whole graph; the chain evaluator where the graph
    one cannot follow the model either.
    """
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
