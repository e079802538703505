"""One function per map, in the idiom of Captum and pytorch-grad-cam: ``gradcam(model, x)``.

Each importance function is :func:`~advspatial.maps.importance_map` with its
method fixed: ``(model, x, target="pred", y=None, **method options) -> (N,H,W)``.
Each attack-map function is :func:`~advspatial.maps.attack_map` with its kind
fixed: ``(model, x, x_adv, y=None, **options) -> AttackMap``. The registries stay
the one owner of the methods; these functions only name them.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ._common import Target
from .attack import AttackMap, attack_map
from .importance import importance_map


def gradcam(model: nn.Module, x: torch.Tensor, target: Target = "pred", y: torch.Tensor | None = None,
            **options: Any) -> torch.Tensor:
    """Grad-CAM (Selvaraju et al. 2017) of the ``target`` class, (N,H,W) >= 0 at input resolution."""
    return importance_map("gradcam", model, x, target=target, y=y, **options)


def gradcam_pp(model: nn.Module, x: torch.Tensor, target: Target = "pred", y: torch.Tensor | None = None,
               **options: Any) -> torch.Tensor:
    """Grad-CAM++ (Chattopadhyay et al. 2018) of the ``target`` class, (N,H,W) >= 0."""
    return importance_map("gradcam++", model, x, target=target, y=y, **options)


def cam(model: nn.Module, x: torch.Tensor, target: Target = "pred", y: torch.Tensor | None = None,
        **options: Any) -> torch.Tensor:
    """Class activation map (Zhou et al. 2016) of a GAP + linear head, (N,H,W) >= 0."""
    return importance_map("cam", model, x, target=target, y=y, **options)


def hirescam(model: nn.Module, x: torch.Tensor, target: Target = "pred", y: torch.Tensor | None = None,
             **options: Any) -> torch.Tensor:
    """HiResCAM (Draelos & Carin 2020): gradient times activation per position, (N,H,W) >= 0."""
    return importance_map("hirescam", model, x, target=target, y=y, **options)


def saliency(model: nn.Module, x: torch.Tensor, target: Target = "pred", y: torch.Tensor | None = None,
             **options: Any) -> torch.Tensor:
    """Saliency (Simonyan et al. 2014): |d z_target / dx| summed over channels, (N,H,W) >= 0."""
    return importance_map("saliency", model, x, target=target, y=y, **options)


def input_x_gradient(model: nn.Module, x: torch.Tensor, target: Target = "pred", y: torch.Tensor | None = None,
                     **options: Any) -> torch.Tensor:
    """Input x gradient: |x * d z_target / dx| summed over channels, (N,H,W) >= 0."""
    return importance_map("inputxgrad", model, x, target=target, y=y, **options)


def integrated_gradients(model: nn.Module, x: torch.Tensor, target: Target = "pred", y: torch.Tensor | None = None,
                         **options: Any) -> torch.Tensor:
    """Integrated gradients (Sundararajan et al. 2017) from a constant baseline image (0 = black), (N,H,W) >= 0."""
    return importance_map("ig", model, x, target=target, y=y, **options)


def smoothgrad(model: nn.Module, x: torch.Tensor, target: Target = "pred", y: torch.Tensor | None = None,
               **options: Any) -> torch.Tensor:
    """SmoothGrad (Smilkov et al. 2017): |mean gradient over noisy copies| summed over channels, (N,H,W) >= 0.

    Each image's noise is keyed by its entry of ``sample_ids=`` (global ids; default its position), so its map
    does not depend on the batch.
    """
    return importance_map("smoothgrad", model, x, target=target, y=y, **options)


def occlusion(model: nn.Module, x: torch.Tensor, target: Target = "pred", y: torch.Tensor | None = None,
              **options: Any) -> torch.Tensor:
    """Occlusion (Zeiler & Fergus 2014): mean drop of the ``target`` logit over the windows hiding a pixel, (N,H,W) >= 0."""
    return importance_map("occlusion", model, x, target=target, y=y, **options)


def magnitude(x: torch.Tensor, x_adv: torch.Tensor) -> AttackMap:
    """||x_adv - x|| over channels per pixel: where the perturbation is, whatever it does (no model needed)."""
    return attack_map("magnitude", None, x, x_adv)  # type: ignore[arg-type]


def contribution(model: nn.Module, x: torch.Tensor, x_adv: torch.Tensor, y: torch.Tensor | None = None,
                 **options: Any) -> AttackMap:
    """Path-integrated contribution of each pixel to the margin drop x -> x_adv, with its completeness check."""
    return attack_map("contribution", model, x, x_adv, y, **options)


def gradient(model: nn.Module, x: torch.Tensor) -> AttackMap:
    """|d CE(z(x), predicted class) / dx| summed over channels: the deployable RoA map (needs no clean image, no label)."""
    return attack_map("gradient", model, x)


IMPORTANCE_FUNCTIONS = {"gradcam": gradcam, "gradcam++": gradcam_pp, "cam": cam, "hirescam": hirescam,
                        "saliency": saliency, "inputxgrad": input_x_gradient, "ig": integrated_gradients,
                        "smoothgrad": smoothgrad, "occlusion": occlusion}
ATTACK_MAP_FUNCTIONS = {"magnitude": magnitude, "contribution": contribution, "gradient": gradient}
