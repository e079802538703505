"""2x2 max pooling that a CPU evaluates faster without autograd, with ``nn.MaxPool2d(2)``'s numbers; and where the
ReLU before it may run after it, on a quarter of the values (:func:`commutes`)."""

from __future__ import annotations

import torch
from torch import fx, nn

from .folding import tracing
from .hooks import hooked


class MaxPool2x2(nn.MaxPool2d):
    """``nn.MaxPool2d(2)``: the same numbers and gradient; without autograd, the maximum of four strided slices.

    PyTorch's CPU max pooling of NCHW maps computes argmax indices even when nothing needs them, which makes it
    several times slower than four strided maxima (measured: SmallCNN's no-grad forward of 150 Fashion-MNIST
    images, 12 ms -> 5 ms on 2 cores; occlusion maps and the defence's control draws are such forwards). Whenever a
    gradient may flow (the input requires one), or a side is odd, it is exactly ``nn.MaxPool2d(2)``. NaN
    propagates in both paths. The patch forward treats it as the window layer it is (:data:`WINDOW_POOLS`).
    """

    def __init__(self) -> None:
        super().__init__(2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if (torch.is_grad_enabled() and x.requires_grad) or torch.jit.is_tracing() or x.ndim != 4 \
                or x.shape[-1] % 2 or x.shape[-2] % 2:
            return super().forward(x)
        rows = torch.maximum(x[..., 0::2, :], x[..., 1::2, :])
        return torch.maximum(rows[..., 0::2], rows[..., 1::2])


def commutes(relu: nn.Module, pool: nn.Module, x: torch.Tensor) -> bool:
    """Whether ``pool(relu(x))`` may run as ``relu(pool(x))``: the ReLU then on a quarter of the values.

    Why it is exact: the ReLU is monotone, so the maximum of a window's ReLUs is the ReLU of its maximum (NaN
    included); and the input gradient reaches the same pixel either way. Where the window's maximum is positive
    both orders pick the same first maximal pixel (a NaN: the same last NaN); where it is not, the ReLU's gradient
    is zero in both orders. On SmallCNN at batch 150 on a CPU this saves a third of a forward pass and a tenth of
    a forward and input-gradient pass (``benchmarks/relu_pooling.py``). Used only where nothing can tell the
    order: exactly an ``nn.ReLU``, not in place (it would no longer overwrite its input, which a hook on the module
    before may hold), and a :class:`MaxPool2x2`; neither hooked nor any global module hook registered (a hook sees
    the ReLU's full map, as before); and not inside a ``torch.fx`` or TorchScript trace (a traced graph keeps the
    modules' order).
    """
    return (type(relu) is nn.ReLU and not relu.inplace and type(pool) is MaxPool2x2
            and not tracing(x) and not hooked(relu, pool))


#: the pooling modules the patch forward (:mod:`.patch.forward`, :mod:`.patch.graph`) computes itself; exact types,
#: since another subclass may compute something else
WINDOW_POOLS = (nn.MaxPool2d, nn.AvgPool2d, MaxPool2x2)


class PoolLeafTracer(fx.Tracer):
    """``torch.fx``'s tracer, with :data:`WINDOW_POOLS` kept as modules (as torch's own layers are)."""

    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        return type(m) in WINDOW_POOLS or super().is_leaf_module(m, module_qualified_name)
