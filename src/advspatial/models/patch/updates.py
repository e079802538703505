"""Linear layers of :class:`~advspatial.models.patch.forward.PatchForward` evaluated on the *change* only.

A one-pixel candidate changes a small window of each activation map, and a
linear layer maps a change to a change: ``L(x + d) = L(x) + L_nobias(d)``. These
paths use this, each computing only the products that the change can make
nonzero:

* :class:`DeltaConv`: a stride-1 convolution in the stem. The change of its
  input window is spread to its output window by one matrix product per input
  row, accumulated in place (see the class docstring), and added to the cached
  clean output. An eval-mode BatchNorm right after it is affine per channel, so
  its scale goes into the kernel and the change is added to the clean output
  *after* the BatchNorm: the layer then costs nothing per candidate.
* :class:`ConvIntoWindow`: a :class:`DeltaConv` followed (through pointwise layers) by a window
  layer without padding: the change goes straight into that layer's footprint, gathered from the
  conv's clean output (one gather and one overlay less per candidate; 7-11% per attack run). Into
  max pooling, ReLU-like layers run after the pooling (exactly the same values), on a quarter of
  the footprint.
* :class:`LinearFold`: the ``flatten`` + ``nn.Linear`` after the stem. Its
  logits are the clean ones plus the products of the changed stem-output
  positions with that position's weight columns (positions whose change is
  exactly zero, after ReLU and max pooling often half of them, are skipped).

All three are exact up to floating-point summation order (tests: 1e-5 against the
model's own forward pass). :class:`AxisPlan` and :class:`WindowPlan` say, per patch position, which
window of a stage the change reaches and which of these paths runs it.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import fx, nn

from ..hooks import has_forward_hooks
from .stem import StemNode


#: pointwise modules that commute exactly with max pooling: non-decreasing clamps, and the identity
COMMUTE_WITH_MAX: tuple[type[nn.Module], ...] = (nn.ReLU, nn.ReLU6, nn.Identity, nn.Dropout, nn.Dropout2d)


class DeltaConv:
    """A stride-1 convolution evaluated on the *change* of its input window, by linearity.

    ``conv(x + d) = conv(x) + conv_nobias(d)``: where the incoming window (h x w)
    differs from the clean input, its difference spreads to ``(h + k - 1) x (w + k - 1)``
    outputs, a transposed convolution of ``d`` (``h w k^2 C_in C_out`` multiply-adds).
    The output window is the cached clean output plus that change. The footprint
    path instead recomputes every output of the window from a ``(h + k - 1) x (w + k - 1)``
    neighbourhood: ``(h + k - 1)(w + k - 1) k^2 C_in C_out``, 5x more for a 5x5 kernel
    on a 3x3 window. Used where it costs less (``h w`` below the output window's area).

    Without groups or dilation, the spread is one matrix product per input row
    ``i``: row ``i`` of the change (``w C_in`` values) reaches the ``k`` spread
    rows ``i .. i + k - 1``, through the same ``(w C_in, k * spread_w * C_out)``
    matrix for every row (a block-Toeplitz form of the kernel, built once). The
    products accumulate in place (``addmm_``) into the spread's rows: no
    ``col2im`` and no temporary per row; the matrix holds ``spread_w / k_w``
    times the kernel's multiply-adds, which run at matrix-product speed (about
    twice as fast here as ``conv_transpose2d`` on LeNet5's conv2). With groups
    or dilation it is ``conv_transpose2d``.
    """

    #: Most floats in the block-Toeplitz matrix (else ``conv_transpose2d``).
    MAX_TOEPLITZ = 2**22

    def __init__(self, conv: nn.Conv2d, rows: AxisPlan, cols: AxisPlan, incoming: tuple[int, int],
                 window: tuple[int, int], pads: tuple[int, int], padded_size: tuple[int, int],
                 size_out: tuple[int, int], scale: torch.Tensor | None = None) -> None:
        g = conv.groups
        cout, cin_g, kh, kw = conv.weight.shape
        weights = conv.weight.detach() if scale is None else conv.weight.detach() * scale.view(-1, 1, 1, 1)
        self.groups, self.dilation = g, tuple(conv.dilation)
        self.incoming, self.window, self.size_out = incoming, window, size_out
        spread = (incoming[0] + self.dilation[0] * (kh - 1), incoming[1] + self.dilation[1] * (kw - 1))
        self.spread = spread
        self.toeplitz = self._toeplitz(weights, incoming[1], spread[1])
        self.weight = None if self.toeplitz is not None else (
            weights.flip(2, 3).reshape(g, cout // g, cin_g, kh, kw)
            .transpose(1, 2).reshape(g * cin_g, cout // g, kh, kw).contiguous())
        device = rows.incoming.device
        padded_width = padded_size[1]
        # per flat patch corner (row-major over the per-axis tables): where the incoming window starts in the
        # padded input, and where the output window starts in the output map (flat, channels-last rows)
        read_start = ((rows.incoming + pads[0]) * padded_width)[:, None] + (cols.incoming + pads[1])[None, :]
        self.read_start = read_start.reshape(-1)
        self.read_grid = window_grid(device, (incoming[0], padded_width), (incoming[1], 1))
        self.window_start = ((rows.origin * size_out[1])[:, None] + cols.origin[None, :]).reshape(-1)
        self.window_grid = window_grid(device, (window[0], size_out[1]), (window[1], 1))
        # per axis: for each position of the spread change, its place in the output window (-1: outside it)
        place = []
        for plan, axis, kernel, dil in ((rows, 0, kh, self.dilation[0]), (cols, 1, kw, self.dilation[1])):
            base = plan.incoming + (pads[axis] - dil * (kernel - 1))
            index = (base - plan.origin)[:, None] + torch.arange(spread[axis], device=device)
            place.append(torch.where((index >= 0) & (index < window[axis]), index, -1))
        #: per flat corner, the output-window cell of each spread cell (-1: outside the window)
        self.window_cell = _cells(*place, window[1])

    def _toeplitz(self, weight: torch.Tensor, w: int, spread_w: int) -> torch.Tensor | None:
        """(w C_in, k_h * spread_w * C_out): one input row's change -> its k_h spread rows; None where not used.

        Entry ``[(j, ci), (t, s, co)] = W[co, ci, k_h - 1 - t, j + k_w - 1 - s]`` (zero
        outside the kernel): input column ``j`` reaches spread column ``s`` through
        kernel column ``j + k_w - 1 - s``, and spread row ``i + t`` of input row ``i``
        through kernel row ``k_h - 1 - t`` (cross-correlation).
        """
        cout, cin, kh, kw = weight.shape
        if self.groups != 1 or self.dilation != (1, 1) or w * cin * kh * spread_w * cout > self.MAX_TOEPLITZ:
            return None
        matrix = weight.new_zeros(w, cin, kh, spread_w, cout)
        flipped = weight.flip(2).permute(1, 2, 3, 0)  # (cin, t, kernel col, cout)
        for j in range(w):
            for s in range(max(0, j), min(spread_w, j + kw)):
                matrix[j, :, :, s, :] = flipped[:, :, j + kw - 1 - s, :]
        return matrix.reshape(w * cin, kh * spread_w * cout)

    @staticmethod
    def convolution(stage: StemNode) -> nn.Conv2d | None:
        """The stage's convolution when it has stride 1 (the only case the change formula covers)."""
        conv = stage.apply_full
        if type(conv) is not nn.Conv2d or stage.axes is None or tuple(conv.stride) != (1, 1):
            return None
        return conv

    @classmethod
    def build(cls, stage: StemNode, rows: AxisPlan, cols: AxisPlan, incoming: tuple[int, int],
              padded_size: tuple[int, int], scale: torch.Tensor | None = None) -> DeltaConv | None:
        """The change path for ``stage`` where it is a stride-1 conv and cheaper than the footprint; ``scale``
        (per output channel) multiplies the kernel: the BatchNorm after the conv, applied to the change."""
        conv = cls.convolution(stage)
        if conv is None or incoming[0] * incoming[1] >= stage.window[0] * stage.window[1]:
            return None
        assert stage.axes is not None
        size_out = (stage.axes[0].size_out, stage.axes[1].size_out)
        pads = (stage.axes[0].pad_before, stage.axes[1].pad_before)
        with torch.no_grad():
            return cls(conv, rows, cols, incoming, stage.window, pads, padded_size, size_out, scale)

    def spread_change(self, change: torch.Tensor) -> torch.Tensor:
        """(N, sh, sw, C_out) channels-last change of the outputs, from the input change (N, h, w, C_in)."""
        n, h, w, cin = change.shape
        sh, sw = self.spread
        if self.toeplitz is not None:
            kh = sh - h + 1
            cout = self.toeplitz.shape[1] // (kh * sw)
            spread = change.new_zeros(n, sh * sw * cout)
            rows = change.view(n, h, w * cin)
            band = kh * sw * cout
            for i in range(h):  # input row i reaches spread rows i .. i + kh - 1
                spread[:, i * sw * cout:i * sw * cout + band].addmm_(rows[:, i], self.toeplitz)
            return spread.view(n, sh, sw, cout)
        assert self.weight is not None
        if (h, w) == (1, 1) and self.groups == 1 and self.dilation == (1, 1):  # one pixel: a rank-C_in update
            out = change.reshape(n, cin) @ self.weight.view(cin, -1)
            return out.view(n, -1, sh, sw).permute(0, 2, 3, 1)
        out = F.conv_transpose2d(change.permute(0, 3, 1, 2), self.weight, None, 1, 0, 0, self.groups, self.dilation)
        return out.permute(0, 2, 3, 1)

    def spread_of(self, padded: torch.Tensor, image: torch.Tensor, corner: torch.Tensor,
                  patch: torch.Tensor) -> torch.Tensor:
        """(N, sh, sw, C_out): the change of the outputs caused by the incoming window ``patch`` (N, C_in, h, w)
        at the flat patch corners ``corner``."""
        n, (h, w) = len(image), self.incoming
        hp, wp, cin = padded.shape[1:]
        start = image * (hp * wp) + self.read_start.index_select(0, corner)  # the clean input under the window
        clean_in = padded.view(-1, cin).index_select(0, (start[:, None] + self.read_grid).view(-1))
        change = (patch.permute(0, 2, 3, 1).reshape(-1, cin) - clean_in).view(n, h, w, cin)
        return self.spread_change(change)

    def __call__(self, padded: torch.Tensor, output: torch.Tensor, image: torch.Tensor, corner: torch.Tensor,
                 patch: torch.Tensor) -> torch.Tensor:
        """(N, C_out, wh, ww): the output window of the conv, from the incoming window ``patch`` (N, C_in, h, w)."""
        n, (wh, ww) = len(image), self.window
        height, width, cout = output.shape[1:]
        spread = self.spread_of(padded, image, corner, patch)
        # the clean output under the output window, then the change added where it lands
        start = image * (height * width) + self.window_start.index_select(0, corner)
        out = torch.empty(n * wh * ww + 1, cout, dtype=output.dtype, device=output.device)
        torch.index_select(output.view(-1, cout), 0, (start[:, None] + self.window_grid).view(-1), out=out[:-1])
        cell = self.window_cell.index_select(0, corner)
        first = (torch.arange(n, device=image.device) * (wh * ww))[:, None]
        out.index_add_(0, torch.where(cell >= 0, cell + first, n * wh * ww).view(-1), spread.reshape(-1, cout))
        return out[:-1].view(n, wh, ww, cout).permute(0, 3, 1, 2)


class ConvIntoWindow:
    """A :class:`DeltaConv` whose output reaches the next window layer through pointwise layers only.

    The window layer (a pooling layer, or a convolution evaluated on its footprint) reads a footprint
    around the conv's output window. Instead of building that window (the clean output gathered, the
    change added, the pointwise layers applied) and then laying it over the footprint gathered from
    the window layer's own input cache, the change is added straight into the footprint gathered from
    the conv's clean *output*, and the pointwise layers run on the whole footprint (into max pooling,
    ReLU-like layers run on the pooled window instead: ``pool_first``): one gather and one overlay less
    per candidate. The clean cells of the footprint pass through the same pointwise layers
    as in the model (the values equal the cached ones up to the last bit of a vectorized kernel).
    Only for a window layer without padding (its padding value would have to pass the pointwise layers).
    """

    def __init__(self, delta: DeltaConv, plan: WindowPlan, pointwise: list[StemNode], window_stage: StemNode) -> None:
        self.delta, self.plan, self.pointwise, self.window_stage = delta, plan, pointwise, window_stage
        #: max pooling commutes with ReLU-like layers (exactly: a maximum of clamped values is the clamped
        #: maximum), so they run on the pooled window, a quarter of the footprint for 2x2 pooling
        self.pool_first = window_stage.max_pool and all(
            type(stage.apply_full) in COMMUTE_WITH_MAX for stage in pointwise)
        cell = delta.window_cell.clamp(min=0)  # the conv's output-window cell of each spread cell
        valid = (delta.window_cell >= 0) & plan.inside.gather(1, cell)
        #: per flat corner, the footprint row each spread cell lands on (-1: outside the footprint)
        self.target = torch.where(valid, plan.land.gather(1, cell), -1)

    @classmethod
    def build(cls, stages: list[StemNode], plans: list, first: int,
              absorbed: set[int] | frozenset[int] = frozenset()) -> tuple[ConvIntoWindow, int] | None:
        """The fused step from stage ``first`` (a delta conv) to the next window stage, and that stage's index
        (``absorbed``: BatchNorm stages the delta conv applies itself)."""
        delta = plans[first].delta if plans[first] is not None else None
        last = first + 1
        while last < len(stages) and stages[last].axes is None:
            last += 1
        if delta is None or last == len(stages) or plans[last] is None or plans[last].delta is not None:
            return None
        if any(stages[last].pad):
            return None
        pointwise = [stages[k] for k in range(first + 1, last) if k not in absorbed]
        return cls(delta, plans[last], pointwise, stages[last]), last

    def __call__(self, padded: torch.Tensor, output: torch.Tensor, image: torch.Tensor, corner: torch.Tensor,
                 patch: torch.Tensor) -> torch.Tensor:
        """The window layer's output window, from the conv's incoming window ``patch`` (N, C_in, h, w)."""
        spread = self.delta.spread_of(padded, image, corner, patch)
        n, (fh, fw) = len(image), self.plan.footprint
        height, width, cout = output.shape[1:]
        buffer = torch.empty(n * fh * fw + 1, cout, dtype=output.dtype, device=output.device)
        start = image * (height * width) + self.plan.read.index_select(0, corner)
        torch.index_select(output.view(-1, cout), 0, (start[:, None] + self.plan.read_grid).view(-1), out=buffer[:-1])
        target = self.target.index_select(0, corner)
        first = (torch.arange(n, device=image.device) * (fh * fw))[:, None]
        buffer.index_add_(0, torch.where(target >= 0, target + first, n * fh * fw).view(-1), spread.reshape(-1, cout))
        footprint = buffer[:-1].view(n, fh, fw, cout)
        if self.pool_first:
            value = self.window_stage.apply_window(footprint)
            for stage in self.pointwise:
                value = stage.apply_window(value)
            return value
        value = footprint.permute(0, 3, 1, 2)
        for stage in self.pointwise:
            value = stage.apply_window(value)
        return self.window_stage.apply_window(value.permute(0, 2, 3, 1))


class LinearFold:
    """A stem followed by flatten + ``nn.Linear``: the changed window enters the linear layer as an update.

    ``Linear(flatten(clean + d)) = Linear(flatten(clean)) + sum_q d_q W_q``, where
    ``d_q`` (C values) is the change at stem-output position ``q`` and ``W_q``
    (C x out) that position's weight columns. The clean outputs and the
    position-major weights (one permuted copy of the weight) are computed at
    set-up. A call keeps only the (candidate, position) rows of the window whose
    change is nonzero (after ReLU and max pooling a third to a half of them are
    exactly zero, and at the image border the window reaches past the cone),
    groups them by position, and does one small matrix product per position in
    use: every weight is read once per call, however few the candidates. The
    rest of the model then runs as usual.
    """

    #: Most stem-output positions (one matrix product each per call) for which the fold is used.
    MAX_POSITIONS = 4096

    def __init__(self, linear: nn.Linear, stem_shape: tuple[int, int, int], window: tuple[int, int],
                 window_start: torch.Tensor, tail: object) -> None:
        channels, height, width = stem_shape
        ph, pw = window
        weight = linear.weight.detach()
        # (H*W, C, out): the weight columns of every stem-output position, contiguous per position
        self.position_weights = weight.view(-1, channels, height * width).permute(2, 1, 0).contiguous()
        self.weights_of = list(self.position_weights.unbind(0))  # per position, a view (no indexing per call)
        # per flat patch corner: the stem-output position of each window cell (row-major)
        self.positions = window_start[:, None] + window_grid(weight.device, (ph, width), (pw, 1))
        self.linear, self.tail = linear, tail

    @classmethod
    def build(cls, model: nn.Module, boundary: fx.Node, stem_shape: tuple[int, int, int], window: tuple[int, int],
              window_start: torch.Tensor, make_tail, before: list[fx.Node]) -> LinearFold | None:
        """The fold where the stem output feeds only a flatten that feeds only a Linear; else None.

        ``stem_shape``: (C, H, W) of the stem output; ``window``: the size of its
        changed window and ``window_start`` the window's flat first position per
        patch corner; ``make_tail(linear node, nodes before it)`` builds the runner
        of the rest of the model.
        """
        found = flatten_then_linear(model, boundary)
        if found is None:
            return None
        linear, flatten_node, linear_node = found
        if stem_shape[1] * stem_shape[2] > cls.MAX_POSITIONS:
            return None
        with torch.no_grad():
            return cls(linear, stem_shape, window, window_start, make_tail(linear_node, [*before, flatten_node]))

    def clean(self, stem: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(clean outputs of the linear layer (n, out), the clean stem output as channels-last rows (n*H*W, C))."""
        with torch.no_grad():
            out = F.linear(stem.flatten(1), self.linear.weight, self.linear.bias)
            return out, stem.permute(0, 2, 3, 1).reshape(-1, stem.shape[1])

    def __call__(self, clean: tuple[torch.Tensor, torch.Tensor], stem_size: tuple[int, int], image: torch.Tensor,
                 corner: torch.Tensor, patch: torch.Tensor) -> torch.Tensor:
        """Logits from the stem output window ``patch`` (N, C, ph, pw) at each flat patch corner.

        ``clean``: :meth:`clean` of the clean stem output, whose (H, W) is ``stem_size``.
        """
        clean_out, clean_rows = clean
        channels, cells = patch.shape[1], patch.shape[2] * patch.shape[3]
        height, width = stem_size
        position = self.positions.index_select(0, corner)  # (N, ph*pw)
        under = clean_rows.index_select(0, (image[:, None] * (height * width) + position).view(-1))
        delta = patch.permute(0, 2, 3, 1).reshape(-1, channels) - under  # (N*ph*pw, C)
        changed = (delta.abs().amax(dim=1) != 0).nonzero().squeeze(1)  # exact zeros skipped (NaN kept)
        where = position.view(-1).index_select(0, changed)
        order = torch.argsort(where, stable=True)
        rows = changed.index_select(0, order)
        counts = torch.bincount(where, minlength=height * width)
        used = counts.nonzero().squeeze(1)  # the positions in use (a call views only these, however big the map)
        sizes = counts.index_select(0, used).tolist()
        ordered = delta.index_select(0, rows)
        products = delta.new_empty(len(rows), clean_out.shape[1])
        for q, changes, product in zip(used.tolist(), ordered.split(sizes), products.split(sizes), strict=True):
            torch.mm(changes, self.weights_of[q], out=product)
        out = clean_out.index_select(0, image)
        out.index_add_(0, torch.div(rows, cells, rounding_mode="floor"), products)
        return self.tail.from_stem(out)  # type: ignore[attr-defined]


def flatten_then_linear(model: nn.Module, boundary: fx.Node) -> tuple[nn.Linear, fx.Node, fx.Node] | None:
    """``(linear, flatten node, linear node)`` when ``boundary`` feeds only a flatten(1) feeding only an
    ``nn.Linear``."""
    if len(boundary.users) != 1:
        return None
    flatten_node = next(iter(boundary.users))
    if not is_flatten_from_dim1(model, flatten_node, boundary) or len(flatten_node.users) != 1:
        return None
    linear_node = next(iter(flatten_node.users))
    if linear_node.op != "call_module" or linear_node.args != (flatten_node,) or linear_node.kwargs:
        return None
    linear = model.get_submodule(str(linear_node.target))
    if type(linear) is not nn.Linear or has_forward_hooks(linear):
        return None
    return linear, flatten_node, linear_node


def is_flatten_from_dim1(model: nn.Module, node: fx.Node, source: fx.Node) -> bool:
    """``nn.Flatten()``, ``torch.flatten(source, 1)`` or ``source.flatten(1)``, all other dims kept whole."""
    if node.op == "call_module":
        module = model.get_submodule(str(node.target))
        return (type(module) is nn.Flatten and module.start_dim == 1 and module.end_dim == -1
                and node.args == (source,) and not node.kwargs
                and not has_forward_hooks(module))
    is_call = (node.op == "call_function" and node.target is torch.flatten) or \
        (node.op == "call_method" and node.target == "flatten")
    return is_call and node.args == (source, 1) and not node.kwargs


def window_grid(device: torch.device, *extents: tuple[int, int]) -> torch.Tensor:
    """Flat offsets ``sum_k i_k * stride_k`` over ``i_k < size_k``; ``extents`` are (size, stride), outermost first."""
    offsets = torch.zeros((), dtype=torch.long, device=device)
    for size, stride in extents:
        offsets = offsets[..., None] + torch.arange(size, device=device) * stride
    return offsets.reshape(-1)


def _cells(place_rows: torch.Tensor, place_cols: torch.Tensor, window_width: int) -> torch.Tensor:
    """(corners, sh*sw): per flat corner, the window cell ``row * window_width + col`` of each spread cell, -1
    where its row or column is outside the window (per-axis places, -1 outside)."""
    rows, cols = place_rows[:, None, :, None], place_cols[None, :, None, :]
    cell = torch.where((rows >= 0) & (cols >= 0), rows * window_width + cols, -1)
    return cell.reshape(len(place_rows) * len(place_cols), -1)


@dataclass
class AxisPlan:
    """One window stage along one axis, for every initial patch coordinate ``p`` (the table index).

    ``read[p]``: the footprint's first input row/col (padded coordinates);
    ``land[p]``: where in the footprint the incoming patch's first row/col
    lands; ``inside[p, i]``: whether the incoming patch's i-th row/col falls
    inside the footprint. :meth:`WindowPlan.combine` turns the two axes into
    flat offsets.
    """

    read: torch.Tensor
    land: torch.Tensor
    inside: torch.Tensor
    incoming: torch.Tensor  # the incoming patch's first row/col (unpadded input coordinates)
    origin: torch.Tensor  # the output window's first row/col


@dataclass
class WindowPlan:
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
    delta: DeltaConv | None = None  # a stride-1 convolution evaluated on the change only

    @classmethod
    def combine(cls, rows: AxisPlan, cols: AxisPlan, footprint: tuple[int, int], incoming: tuple[int, int],
                padded_width: int) -> WindowPlan:
        """The flat-corner tables from the two per-axis ones."""
        fh, fw = footprint
        device = rows.read.device
        read = (rows.read * padded_width)[:, None] + cols.read[None, :]
        land_first = (rows.land * fw)[:, None] + cols.land[None, :]
        land = land_first[:, :, None] + window_grid(device, (incoming[0], fw), (incoming[1], 1))
        inside = rows.inside[:, None, :, None] & cols.inside[None, :, None, :]
        corners = read.numel()
        return cls(footprint, read.reshape(corners), land.reshape(corners, -1), inside.reshape(corners, -1),
                   window_grid(device, (fh, padded_width), (fw, 1)))
