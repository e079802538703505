"""One function per attack map, in the idiom of Captum and pytorch-grad-cam: ``contribution(model, x, x_adv)``.

Each attack-map function is :func:`~advspatial.maps.attack_map` with its kind
fixed: ``(model, x, x_adv, y=None, **options) -> AttackMap``. The registry stays
the one owner of the maps; these functions only name them. The importance maps' functions
(``gradcam(model, x)``) are derived from their definitions (:mod:`advspatial.maps.importance`).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from .attack import AttackMap, attack_map


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
    return attack_map("magnitude", None, x, x_adv)  # type: ignore[arg-type]


def contribution(model: nn.Module, x: torch.Tensor, x_adv: torch.Tensor, y: torch.Tensor | None = None,
                 **options: Any) -> AttackMap:
    """Path-integrated contribution of each pixel to the margin drop x -> x_adv, with its completeness check.

    Examples:
        >>> import torch
        >>> _ = torch.manual_seed(0)
        >>> from torch import nn
        >>> model = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),  # any nn.Module
        ...                       nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),  # taking images
        ...                       nn.Flatten(), nn.Linear(16 * 7 * 7, 10)).eval()  # in [0,1]; untrained here
        >>> images = torch.rand(12, 1, 28, 28)            # (N,C,H,W) in [0,1]
        >>> labels = model(images).argmax(1)              # (N,) labels: here the model's own predictions
        >>> from advspatial.attacks import PGD
        >>> from advspatial.maps import contribution
        >>> x_adv = PGD(model, eps=8 / 255, steps=10)(images, labels)
        >>> roa = contribution(model, images, x_adv, labels)
        >>> roa.map.shape, roa.flagged.shape               # flagged: completeness not reached within the tolerance
        (torch.Size([12, 28, 28]), torch.Size([12]))
    """
    return attack_map("contribution", model, x, x_adv, y, **options)


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


ATTACK_MAP_FUNCTIONS = {"magnitude": magnitude, "contribution": contribution, "gradient": gradient}
