"""The memory layout a built-in architecture's convolutions run fastest in on a CPU.

Why: PyTorch's CPU convolutions, batch norms and max pooling run faster on channels-last (NHWC) tensors than on
the default NCHW ones for the small CNNs of this package, most of all in the backward passes that attacks and
gradient maps make. Measured on a 2-core x86 CPU, one thread, forward + backward to the input (2026-11-26):
SmallCNN 1.2-1.9x faster (batch 5 to 150), the CIFAR-10 ResNet-20 1.14-1.23x. An architecture says so with the
class attribute ``memory_format``; :func:`in_fast_layout` moves a model's weights there (its numbers then agree
with the NCHW model's to float rounding, not bit for bit). A model whose classes say nothing (the user's own) is
left as it is, since its code may ``.view`` an activation that channels-last makes non-contiguous.

Example::

    >>> import torch
    >>> from advspatial.models import build_model
    >>> model = in_fast_layout(build_model("smallcnn", in_channels=1, num_classes=10, input_size=28).eval())
    >>> model.block1[0][0].weight.is_contiguous(memory_format=torch.channels_last)
    True
"""

from __future__ import annotations

import torch
from torch import nn


def in_fast_layout(model: nn.Module) -> nn.Module:
    """``model`` (in place) with the weights of every submodule whose class declares a ``memory_format`` in that
    format, where those weights are on the CPU (a GPU's layout is unmeasured here and left as it is)."""
    for module in model.modules():
        layout = getattr(type(module), "memory_format", None)
        if isinstance(layout, torch.memory_format) and all(p.device.type == "cpu" for p in module.parameters()):
            module.to(memory_format=layout)  # type: ignore[call-overload]  # a documented keyword the stubs lack
    return model
