"""An eval-mode BatchNorm folded into the convolution before it: one operator a call instead of two.

Why: in eval mode a BatchNorm is a fixed affine map per channel, so a convolution followed by it equals one
convolution with scaled weights and a shifted bias, as inference engines run it. On the built-in networks this
saves an eighth to a fifth of a forward and input-gradient pass on a CPU (``benchmarks/README.md``, "BatchNorm
folded"); the output equals the two modules' to float rounding (at most a few millionths of the logits' scale:
2e-6 on the pretrained EfficientNet-Lite0).

The fold is used only where nothing can tell it from the two modules: both in eval mode with running statistics, no
hook on either module and no global module hook (a recorder, a profiler's clock or a user's hook sees both modules
run, as before), no parameter of theirs that a gradient is asked of, and not during a ``torch.fx`` or TorchScript
trace (a traced graph keeps both modules: the incremental patch evaluation reads the BatchNorm's scale there, and a
TorchScript file holds the model's own weights, not a fold of them). Anywhere else the
pair runs as two modules. The folded weights are cached per pair and made again as soon as any of the pair's
tensors changes: its storage, its dtype or device, or its in-place version (an optimizer's step, ``load_state_dict``,
a re-initialization of the randomization checks).

Example::

    >>> import torch
    >>> from torch import nn
    >>> conv, bn = nn.Conv2d(1, 4, 3, padding=1).eval(), nn.BatchNorm2d(4).eval()
    >>> x = torch.rand(2, 1, 8, 8)
    >>> with torch.no_grad():
    ...     bool(torch.allclose(conv_bn(conv, bn, x), bn(conv(x)), atol=1e-6))
    True
"""

from __future__ import annotations

import weakref

import torch
from torch import fx, nn

from .hooks import hooked

#: per BatchNorm, the cache key of its fold and the folded (weight, bias)
_FOLDS: weakref.WeakKeyDictionary[nn.Module, tuple[tuple, torch.Tensor, torch.Tensor]] = weakref.WeakKeyDictionary()


def conv_bn(conv: nn.Conv2d, bn: nn.BatchNorm2d, x: torch.Tensor, pad: nn.Module | None = None) -> torch.Tensor:
    """``bn(conv(x))``: as one convolution with the BatchNorm folded in where :func:`foldable`, else the two modules.

    ``pad``: for a convolution whose own forward pads its input first (a TensorFlow-style "same" convolution such
    as EfficientNet-Lite's), that padding module; the fold then convolves ``pad(x)``. A convolution with any other
    forward of its own than ``nn.Conv2d``'s is never folded.
    """
    if not foldable(conv, bn, x) or (pad is None and type(conv).forward is not nn.Conv2d.forward):
        return bn(conv(x))
    weight, bias = _folded(conv, bn)
    return conv._conv_forward(x if pad is None else pad(x), weight, bias)


def foldable(conv: nn.Conv2d, bn: nn.BatchNorm2d, x: torch.Tensor) -> bool:
    """Whether ``bn(conv(x))`` may run folded: see the module's docstring for each condition."""
    if tracing(x):
        return False
    if conv.training or bn.training or bn.running_mean is None or bn.running_var is None:
        return False
    if conv.weight.is_inference() or bn.running_var.is_inference():  # made in inference mode: no version to key on
        return False
    if hooked(conv, bn):
        return False
    return not (torch.is_grad_enabled() and any(p.requires_grad for p in _parameters(conv, bn)))


def tracing(x: torch.Tensor) -> bool:
    """Whether ``x`` is passing through a ``torch.fx`` or TorchScript trace (checked before any of a module's
    attributes: a traced module's tensors are proxies too)."""
    return isinstance(x, fx.Proxy) or torch.jit.is_tracing()


def _parameters(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> list[torch.Tensor]:
    return [t for t in (conv.weight, conv.bias, bn.weight, bn.bias) if t is not None]


def _folded(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> tuple[torch.Tensor, torch.Tensor]:
    """The pair's folded (weight, bias), from the cache while none of its tensors changed."""
    tensors = [conv.weight, conv.bias, bn.weight, bn.bias, bn.running_mean, bn.running_var]
    key = (id(conv), bn.eps, *((None,) if t is None else (t.data_ptr(), t._version, t.dtype, t.device)
                               for t in tensors))
    cached = _FOLDS.get(bn)
    if cached is not None and cached[0] == key:
        return cached[1], cached[2]
    with torch.inference_mode(False), torch.no_grad():  # normal tensors, usable by a later pass with autograd
        weight, bias = _fold(conv, bn)
    _FOLDS[bn] = (key, weight, bias)
    return weight, bias


def _fold(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> tuple[torch.Tensor, torch.Tensor]:
    """``bn(conv(x)) = conv'(x)``: per output channel ``s = gamma / sqrt(var + eps)``, ``W' = s W`` and
    ``b' = s (b - mean) + beta``, in float64, returned in the weight's dtype and memory layout."""
    assert bn.running_mean is not None and bn.running_var is not None  # foldable() checked
    scale = (bn.running_var.double() + bn.eps).rsqrt()
    if bn.weight is not None:
        scale = scale * bn.weight.double()
    shift = -bn.running_mean.double() if conv.bias is None else conv.bias.double() - bn.running_mean.double()
    bias = shift * scale + (0.0 if bn.bias is None else bn.bias.double())
    weight = torch.empty_like(conv.weight).copy_(conv.weight.double() * scale.view(-1, *[1] * (conv.weight.ndim - 1)))
    return weight, bias.to(conv.weight.dtype)
