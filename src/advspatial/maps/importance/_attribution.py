"""What the input-attribution methods (saliency, input x gradient, integrated gradients, SmoothGrad, occlusion)
share: the class check and the input leaf before the attribution, and the frozen run that computes it."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from ...models.hooks import frozen_eval
from .._common import check_classes


def run_frozen(model: nn.Module, fn: Callable[[], torch.Tensor]) -> torch.Tensor:
    """Run an attribution with the model frozen in eval mode and gradients enabled."""
    with frozen_eval(model), torch.enable_grad():
        return fn().detach()


def checked_input(model: nn.Module, x: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
    """A leaf copy of ``x`` that requires its gradient, once ``classes`` are checked against the model's outputs
    (one probe forward pass on ``x[:1]``)."""
    with torch.no_grad():
        check_classes(classes, model(x[:1]))
    return x.detach().clone().requires_grad_(True)
