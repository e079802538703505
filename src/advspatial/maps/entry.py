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
    "gradcam", "gradcam",
    "Grad-CAM (Selvaraju et al. 2017) of the ``target`` class, (N,H,W) >= 0 at input resolution.\n\n"
    "Examples:\n"
    "    >>> from advspatial.maps import gradcam\n"
    "    >>> roi_map = gradcam(model, images)                # the predicted class (target=\"pred\")\n"
    "    >>> roi_map.shape, bool((roi_map >= 0).all())\n"
    "    (torch.Size([12, 28, 28]), True)\n")
gradcam_pp = _importance_function(
    "gradcam++", "gradcam_pp",
    "Grad-CAM++ (Chattopadhyay et al. 2018) of the ``target`` class, (N,H,W) >= 0.\n\n"
    "Examples:\n"
    "    >>> from advspatial.maps import gradcam_pp\n"
    "    >>> roi_map = gradcam_pp(model, images, target=\"true\", y=labels)\n"
    "    >>> roi_map.shape, bool((roi_map >= 0).all())\n"
    "    (torch.Size([12, 28, 28]), True)\n")
cam = _importance_function(
    "cam", "cam",
    "Class activation map (Zhou et al. 2016) of a GAP + linear head, (N,H,W) >= 0.\n\n"
    "Examples:\n"
    "    >>> import torch\n"
    "    >>> from advspatial.maps import cam\n"
    "    >>> layers = [torch.nn.Conv2d(1, 8, 3, padding=1), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1)]\n"
    "    >>> net = torch.nn.Sequential(*layers, torch.nn.Flatten(), torch.nn.Linear(8, 10)).eval()  # GAP + linear\n"
    "    >>> cam(net, images).shape\n"
    "    torch.Size([12, 28, 28])\n")
hirescam = _importance_function(
    "hirescam", "hirescam",
    "HiResCAM (Draelos & Carin 2020): gradient times activation per position, (N,H,W) >= 0.\n\n"
    "Examples:\n"
    "    >>> from advspatial.maps import hirescam\n"
    "    >>> roi_map = hirescam(model, images)\n"
    "    >>> roi_map.shape, bool((roi_map >= 0).all())\n"
    "    (torch.Size([12, 28, 28]), True)\n")
saliency = _importance_function(
    "saliency", "saliency",
    "Saliency (Simonyan et al. 2014): |d z_target / dx| summed over channels, (N,H,W) >= 0.\n\n"
    "Examples:\n"
    "    >>> from advspatial.maps import saliency\n"
    "    >>> roi_map = saliency(model, images, target=\"true\", y=labels)\n"
    "    >>> roi_map.shape, bool((roi_map >= 0).all())\n"
    "    (torch.Size([12, 28, 28]), True)\n")
input_x_gradient = _importance_function(
    "inputxgrad", "input_x_gradient",
    "Input x gradient: |x * d z_target / dx| summed over channels, (N,H,W) >= 0.\n\n"
    "Examples:\n"
    "    >>> from advspatial.maps import input_x_gradient\n"
    "    >>> roi_map = input_x_gradient(model, images)\n"
    "    >>> roi_map.shape, bool((roi_map >= 0).all())\n"
    "    (torch.Size([12, 28, 28]), True)\n")
integrated_gradients = _importance_function(
    "ig", "integrated_gradients",
    "Integrated gradients (Sundararajan et al. 2017) from a constant baseline image (0 = black), (N,H,W) >= 0.\n\n"
    "Examples:\n"
    "    >>> from advspatial.maps import integrated_gradients\n"
    "    >>> roi_map = integrated_gradients(model, images)\n"
    "    >>> roi_map.shape, bool((roi_map >= 0).all())\n"
    "    (torch.Size([12, 28, 28]), True)\n")
smoothgrad = _importance_function(
    "smoothgrad", "smoothgrad",
    "SmoothGrad (Smilkov et al. 2017): |mean gradient over noisy copies| summed over channels, (N,H,W) >= 0.\n\n"
    "Each image's noise is keyed by its entry of ``sample_ids=`` (global ids; default its position), so its map\n"
    "does not depend on the batch.\n\n"
    "Examples:\n"
    "    >>> from advspatial.maps import smoothgrad\n"
    "    >>> roi_map = smoothgrad(model, images)\n"
    "    >>> roi_map.shape, bool((roi_map >= 0).all())\n"
    "    (torch.Size([12, 28, 28]), True)\n")
occlusion = _importance_function(
    "occlusion", "occlusion",
    "Occlusion (Zeiler & Fergus 2014): mean drop of the ``target`` logit over the windows hiding a pixel,\n"
    "(N,H,W) >= 0.\n\n"
    "Examples:\n"
    "    >>> from advspatial.maps import occlusion\n"
    "    >>> roi_map = occlusion(model, images)\n"
    "    >>> roi_map.shape, bool((roi_map >= 0).all())\n"
    "    (torch.Size([12, 28, 28]), True)\n")

token_gradcam = _importance_function(
    "token-gradcam", "token_gradcam",
    "Grad-CAM on a vision transformer's patch tokens (class and register tokens dropped), (N,H,W) >= 0."
    "\n\nExamples:\n"
    "    >>> from advspatial.models.vit import vit_tiny\n"
    "    >>> from advspatial.maps import token_gradcam\n"
    "    >>> vit = vit_tiny(in_channels=1, input_size=28).eval()   # patch 4: a 7 x 7 token grid\n"
    "    >>> roi_map = token_gradcam(vit, images)\n"
    "    >>> roi_map.shape, bool((roi_map >= 0).all())\n"
    "    (torch.Size([12, 28, 28]), True)\n")
token_hirescam = _importance_function(
    "token-hirescam", "token_hirescam",
    "HiResCAM on a vision transformer's patch tokens: gradient times token per patch, (N,H,W) >= 0."
    "\n\nExamples:\n"
    "    >>> from advspatial.models.vit import vit_tiny\n"
    "    >>> from advspatial.maps import token_hirescam\n"
    "    >>> vit = vit_tiny(in_channels=1, input_size=28).eval()   # patch 4: a 7 x 7 token grid\n"
    "    >>> roi_map = token_hirescam(vit, images)\n"
    "    >>> roi_map.shape, bool((roi_map >= 0).all())\n"
    "    (torch.Size([12, 28, 28]), True)\n")
rollout = _importance_function(
    "rollout", "rollout",
    "Attention rollout (Abnar & Zuidema 2020) of a vision transformer, class-agnostic, (N,H,W) >= 0."
    "\n\nExamples:\n"
    "    >>> from advspatial.models.vit import vit_tiny\n"
    "    >>> from advspatial.maps import rollout\n"
    "    >>> vit = vit_tiny(in_channels=1, input_size=28).eval()   # patch 4: a 7 x 7 token grid\n"
    "    >>> roi_map = rollout(vit, images)\n"
    "    >>> roi_map.shape, bool((roi_map >= 0).all())\n"
    "    (torch.Size([12, 28, 28]), True)\n")
chefer = _importance_function(
    "chefer", "chefer",
    "Gradient-weighted attention relevance of a vision transformer (Chefer et al. 2021), (N,H,W) >= 0."
    "\n\nExamples:\n"
    "    >>> from advspatial.models.vit import vit_tiny\n"
    "    >>> from advspatial.maps import chefer\n"
    "    >>> vit = vit_tiny(in_channels=1, input_size=28).eval()   # patch 4: a 7 x 7 token grid\n"
    "    >>> roi_map = chefer(vit, images)\n"
    "    >>> roi_map.shape, bool((roi_map >= 0).all())\n"
    "    (torch.Size([12, 28, 28]), True)\n")


def magnitude(x: torch.Tensor, x_adv: torch.Tensor) -> AttackMap:
    """||x_adv - x|| over channels per pixel: where the perturbation is, whatever it does (no model needed).

    Examples:
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
        >>> from advspatial.maps import gradient
        >>> gradient(model, images).map.shape               # from the input alone: what a deployed defence can use
        torch.Size([12, 28, 28])
    """
    return attack_map("gradient", model, x)


IMPORTANCE_FUNCTIONS = {"gradcam": gradcam, "gradcam++": gradcam_pp, "cam": cam, "hirescam": hirescam,
                        "saliency": saliency, "inputxgrad": input_x_gradient, "ig": integrated_gradients,
                        "smoothgrad": smoothgrad, "occlusion": occlusion, "token-gradcam": token_gradcam,
                        "token-hirescam": token_hirescam, "rollout": rollout, "chefer": chefer}
ATTACK_MAP_FUNCTIONS = {"magnitude": magnitude, "contribution": contribution, "gradient": gradient}
