"""The pieces of an incremental (patch) forward pass: layer stages, patch geometry and plans.

Why: :mod:`.forward` (a chain of layers), :mod:`.graph` (any traced graph) and
:mod:`.updates` (the change paths) all work with the same stem nodes, axes and window plans;
they live here so that each of those modules imports them from below instead of from each other.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ...errors import ModelError, ShapeError
from ..pooling import WINDOW_POOLS


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
class StemNode:
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


def as_pair(value: int | tuple[int, ...]) -> tuple[int, int]:
    return (value, value) if isinstance(value, int) else (int(value[0]), int(value[1]))


def conv_padding(conv: nn.Conv2d) -> tuple[tuple[int, int], tuple[int, int]]:
    """(before, after) zero padding per axis, resolving ``'same'``/``'valid'``."""
    if conv.padding_mode != "zeros":
        raise UnsupportedModel(f"{type(conv).__name__} with padding_mode={conv.padding_mode!r}")
    if conv.padding == "valid":
        return (0, 0), (0, 0)
    if conv.padding == "same":
        total = [d * (k - 1) for d, k in zip(conv.dilation, conv.kernel_size, strict=True)]
        return tuple((t // 2, t - t // 2) for t in total)  # type: ignore[return-value]
    ph, pw = as_pair(conv.padding)  # type: ignore[arg-type]
    return (ph, ph), (pw, pw)


def window_stage_of(module: nn.Module, size_in: tuple[int, int]) -> StemNode:
    """The stage of a conv or pooling module whose input maps are ``size_in`` (H, W)."""
    if type(module) is nn.Conv2d:
        pads = conv_padding(module)
        geometry = zip(module.kernel_size, module.stride, module.dilation, pads, size_in, strict=True)
        axes = tuple(Axis(k, s, d, p[0], p[1], n) for k, s, d, p, n in geometry)

        def conv(footprint: torch.Tensor, m: nn.Conv2d = module) -> torch.Tensor:
            return F.conv2d(footprint.permute(0, 3, 1, 2), m.weight, m.bias, m.stride, 0, m.dilation, m.groups)

        return StemNode(conv, module, axes, 0.0)  # type: ignore[arg-type]
    if type(module) in WINDOW_POOLS:
        if module.ceil_mode:
            raise UnsupportedModel(f"{type(module).__name__} with ceil_mode=True")
        kernel, padding = as_pair(module.kernel_size), as_pair(module.padding)
        stride = as_pair(module.stride if module.stride else module.kernel_size)
        if isinstance(module, nn.MaxPool2d):
            if module.return_indices:
                raise UnsupportedModel("MaxPool2d with return_indices=True")
            dilation = as_pair(module.dilation)

            def pool(footprint: torch.Tensor, k: tuple = kernel, s: tuple = stride,
                     d: tuple = dilation) -> torch.Tensor:
                return max_pool_window(footprint.permute(0, 3, 1, 2), k, s, d)

            def pool_full(maps: torch.Tensor, k: tuple = kernel, s: tuple = stride,
                          d: tuple = dilation) -> torch.Tensor:
                return max_pool_window(maps, k, s, d)  # the module's values (a maximum is exact), faster

            axes = tuple(Axis(k, s, d, p, p, n)
                         for k, s, d, p, n in zip(kernel, stride, dilation, padding, size_in, strict=True))
            return StemNode(pool, module if any(padding) else pool_full, axes, -math.inf,  # type: ignore[arg-type]
                         max_pool=True)
        if any(padding) and not module.count_include_pad:
            raise UnsupportedModel("AvgPool2d with padding and count_include_pad=False")

        def average(footprint: torch.Tensor, k: tuple = kernel, s: tuple = stride,
                    div: int | None = module.divisor_override) -> torch.Tensor:
            return F.avg_pool2d(footprint.permute(0, 3, 1, 2), k, s, 0, divisor_override=div)

        axes = tuple(Axis(k, s, 1, p, p, n) for k, s, p, n in zip(kernel, stride, padding, size_in, strict=True))
        return StemNode(average, module, axes, 0.0)  # type: ignore[arg-type]
    raise UnsupportedModel(f"{type(module).__name__} is not a window layer")


def max_pool_window(footprint: torch.Tensor, kernel: tuple[int, int], stride: tuple[int, int],
                    dilation: tuple[int, int]) -> torch.Tensor:
    """``F.max_pool2d(footprint, kernel, stride, 0, dilation)`` of an (N, C, h, w) footprint, in any memory format.

    A 2x2 window with stride 2 (LeNet, VGG, the registry's small nets) is pooled as two
    elementwise maxima of strided views, first along rows, then along columns: the same
    values (a maximum is exact; NaN propagates in both), about twice as fast as
    ``max_pool2d`` on the small channels-last footprints of incremental evaluation, which
    also writes the indices it is not asked for (benchmarks/README.md, 2026-11-23, bf9e192).
    """
    if kernel == stride == (2, 2) and dilation == (1, 1):
        rows, cols = footprint.shape[2] // 2 * 2, footprint.shape[3] // 2 * 2
        half = torch.maximum(footprint[:, :, 0:rows:2], footprint[:, :, 1:rows:2])
        return torch.maximum(half[:, :, :, 0:cols:2], half[:, :, :, 1:cols:2])
    return F.max_pool2d(footprint, kernel, stride, 0, dilation)


def is_positionless(value: object) -> bool:
    """A number, or a tensor that broadcasts to the same value at every position and sample."""
    if isinstance(value, (int, float, bool)):
        return True
    if not isinstance(value, torch.Tensor):
        return False
    if value.numel() == 1:
        return True
    per_channel = 2 <= value.dim() <= 4 and value.shape[-2:] == (1, 1)
    return per_channel and (value.dim() < 4 or value.shape[0] == 1)


def usable_in_eval(module: nn.Module) -> bool:
    """A pointwise module that really acts pointwise: BatchNorm/Dropout only in eval mode, BN with running stats."""
    if isinstance(module, nn.BatchNorm2d):
        return not module.training and module.running_mean is not None
    if isinstance(module, (nn.Dropout, nn.Dropout2d, nn.AlphaDropout)):
        return not module.training
    return True


def check_patch_inputs(who: str, clean: torch.Tensor, patch_size: tuple[int, int]) -> tuple[int, int]:
    """(H, W) of ``clean``; a one-line :class:`ShapeError` (naming ``who``) unless it is (n, C, H, W) and the
    patch fits it."""
    if clean.dim() != 4:
        raise ShapeError(f"{who}: clean images must be (n, C, H, W), got {tuple(clean.shape)}")
    height, width = clean.shape[2:]
    if not (1 <= patch_size[0] <= height and 1 <= patch_size[1] <= width):
        raise ShapeError(f"{who}: patch {patch_size} does not fit images of {height}x{width}")
    return int(height), int(width)
