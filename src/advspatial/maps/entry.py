"""One function per map, in the idiom of Captum and pytorch-grad-cam: ``gradcam(model, x)``.

Each importance function is :func:`~advspatial.maps.importance_map` with its
method fixed: ``(model, x, target="pred", y=None, **method options) -> (N,H,W)``.
Each attack-map function is :func:`~advspatial.maps.attack_map` with its kind
fixed: ``(model, x, x_adv, y=None, **options) -> AttackMap``. The registries stay
the one owner of the methods; these functions only name them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from ._common import Target
from .attack import AttackMap, attack_map
from .importance import importance_map


def _importance_function(method: str, name: str, doc: str) -> Callable[..., torch.Tensor]:
    """The function ``name(model, x, target="pred", y=None, **options)``: :func:`importance_map` with
    ``method`` fixed (one signature for every named importance function)."""

    def named(model: nn.Module, x: torch.Tensor, target: Target = "pred", y: torch.Tensor | None = None,
              **options: Any) -> torch.Tensor:
        return importance_map(method, model, x, target=target, y=y, **options)

    named.__name__ = named.__qualname__ = name
    named.__doc__ = doc
    return named


gradcam = _importance_function(
    "gradcam", "gradcam", "Grad-CAM (Selvaraju et al. 2017) of the ``target`` class, (N,H,W) >= 0 at input resolution.")
gradcam_pp = _importance_function(
    "gradcam++", "gradcam_pp", "Grad-CAM++ (Chattopadhyay et al. 2018) of the ``target`` class, (N,H,W) >= 0.")
cam = _importance_function(
    "cam", "cam", "Class activation map (Zhou et al. 2016) of a GAP + linear head, (N,H,W) >= 0.")
hirescam = _importance_function(
    "hirescam", "hirescam", "HiResCAM (Draelos & Carin 2020): gradient times activation per position, (N,H,W) >= 0.")
saliency = _importance_function(
    "saliency", "saliency", "Saliency (Simonyan et al. 2014): |d z_target / dx| summed over channels, (N,H,W) >= 0.")
input_x_gradient = _importance_function(
    "inputxgrad", "input_x_gradient", "Input x gradient: |x * d z_target / dx| summed over channels, (N,H,W) >= 0.")
integrated_gradients = _importance_function(
    "ig", "integrated_gradients",
    "Integrated gradients (Sundararajan et al. 2017) from a constant baseline image (0 = black), (N,H,W) >= 0.")
smoothgrad = _importance_function(
    "smoothgrad", "smoothgrad",
    "SmoothGrad (Smilkov et al. 2017): |mean gradient over noisy copies| summed over channels, (N,H,W) >= 0.\n\n"
    "Each image's noise is keyed by its entry of ``sample_ids=`` (global ids; default its position), so its map\n"
    "does not depend on the batch.")
occlusion = _importance_function(
    "occlusion", "occlusion",
    "Occlusion (Zeiler & Fergus 2014): mean drop of the ``target`` logit over the windows hiding a pixel,\n"
    "(N,H,W) >= 0.")


def magnitude(x: torch.Tensor, x_adv: torch.Tensor) -> AttackMap:
    """||x_adv - x|| over channels per pixel: where the perturbation is, whatever it does (no model needed)."""
    return attack_map("magnitude", None, x, x_adv)  # type: ignore[arg-type]


def contribution(model: nn.Module, x: torch.Tensor, x_adv: torch.Tensor, y: torch.Tensor | None = None,
                 **options: Any) -> AttackMap:
    """Path-integrated contribution of each pixel to the margin drop x -> x_adv, with its completeness check."""
    return attack_map("contribution", model, x, x_adv, y, **options)


def gradient(model: nn.Module, x: torch.Tensor) -> AttackMap:
    """|d CE(z(x), predicted class) / dx| summed over channels: the deployable RoA map (needs no clean image, no
    label)."""
    return attack_map("gradient", model, x)


IMPORTANCE_FUNCTIONS = {"gradcam": gradcam, "gradcam++": gradcam_pp, "cam": cam, "hirescam": hirescam,
                        "saliency": saliency, "inputxgrad": input_x_gradient, "ig": integrated_gradients,
                        "smoothgrad": smoothgrad, "occlusion": occlusion}
ATTACK_MAP_FUNCTIONS = {"magnitude": magnitude, "contribution": contribution, "gradient": gradient}
