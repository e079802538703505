"""The magnitude map: ``magnitude``, the perturbation's L2 norm over channels at each pixel.

Where the perturbation is, whatever it does (METHODS.md section 1): ``||delta_{:,h,w}||_2``. Nearly flat for L-inf
attacks (|delta| = eps almost everywhere) -- a property of the attack, not a bug.
"""

from __future__ import annotations

import torch
from torch import nn

from .._common import check_pair
from ._registry import AttackMap, attack_map, register_attack_map


def magnitude(x: torch.Tensor, x_adv: torch.Tensor) -> AttackMap:
    """||x_adv - x|| over channels per pixel: where the perturbation is, whatever it does (no model needed).

    Examples:
        >>> import torch
        >>> _ = torch.manual_seed(0)
        >>> from torch import nn
        >>> model = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),  # any nn.Module
        ...                       nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),  # taking images
        ...                       nn.Flatten(), nn.Linear(16 * 7 * 7, 10)).eval()  # in [0,1]; untrained here
        >>> images = torch.rand(12, 1, 28, 28)            # (N,C,H,W) in [0,1]
        >>> labels = model(images).argmax(1)              # (N,) labels: here the model's own predictions
        >>> from advspatial.attacks import PGDL2
        >>> from advspatial.maps import magnitude
        >>> roa = magnitude(images, PGDL2(model, eps=1.0, steps=10)(images, labels))   # no model needed
        >>> roa.map.shape
        torch.Size([12, 28, 28])
    """
    return attack_map("magnitude", None, x, x_adv)


@register_attack_map("magnitude", function=magnitude)
def magnitude_map(
    model: nn.Module | None, x: torch.Tensor, x_adv: torch.Tensor | None, y: torch.Tensor | None = None
) -> AttackMap:
    """||delta_{:,h,w}||_2 over channels (the model is not used)."""
    x_adv = check_pair(x, x_adv, "magnitude")
    return AttackMap((x_adv - x).detach().norm(p=2, dim=1), "magnitude")
