"""The gradient map: ``gradient``, the deployable RoA map, from the input alone.

``|grad_x CE(z(x~), y^)|`` summed over channels at the input x~ alone (x_adv when given, else x), y^ the model's
prediction on x~ (METHODS.md section 1). It needs no clean image and no label, so a deployed defence can compute it.
"""

from __future__ import annotations

import torch
from torch import nn

from ...models.hooks import frozen_eval
from ...stacked_runs import input_gradient
from .._common import check_images, predict
from ._registry import AttackMap, attack_map, register_attack_map


def gradient(model: nn.Module, x: torch.Tensor) -> AttackMap:
    """|d CE(z(x), predicted class) / dx| summed over channels: the deployable RoA map (needs no clean image, no
    label).

    Examples:
        >>> import torch
        >>> _ = torch.manual_seed(0)
        >>> from torch import nn
        >>> model = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),  # any nn.Module
        ...                       nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),  # taking images
        ...                       nn.Flatten(), nn.Linear(16 * 7 * 7, 10)).eval()  # in [0,1]; untrained here
        >>> images = torch.rand(12, 1, 28, 28)            # (N,C,H,W) in [0,1]
        >>> from advspatial.maps import gradient
        >>> gradient(model, images).map.shape               # from the input alone: what a deployed defence can use
        torch.Size([12, 28, 28])
    """
    return attack_map("gradient", model, x)


@register_attack_map("gradient", function=gradient)
def gradient_map(
    model: nn.Module, x: torch.Tensor, x_adv: torch.Tensor | None = None, y: torch.Tensor | None = None
) -> AttackMap:
    """|grad_x CE(z(x~), y^)| summed over channels, x~ = x_adv if given else x, y^ = prediction on x~.

    ``y`` is ignored: the deployable map must not need the true label.
    """
    inp = x if x_adv is None else x_adv
    check_images(inp, "x_adv" if x_adv is not None else "x")
    with frozen_eval(model):
        pred = predict(model, inp)
        grad, _ = input_gradient(model, inp, lambda logits, rows: nn.functional.cross_entropy(
            logits, pred[rows], reduction="sum"))
    return AttackMap(grad.abs().sum(1), "gradient", pred)
