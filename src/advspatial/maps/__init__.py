"""Importance maps (where the model looks) and attack maps (where the perturbation acts).

Both are (N,H,W) float maps >= 0 at input resolution. One function per map::

    from advspatial.maps import gradcam, contribution
    roi_map = gradcam(model, x)                       # (N,H,W), predicted class
    roa = contribution(model, x, x_adv, y)           # AttackMap: .map, .completeness_error, .flagged

or both at once::

    from advspatial.maps import compute_maps
    maps = compute_maps(model, x, x_adv, y)          # Grad-CAM + contribution by default
    maps.importance, maps.attack.map, maps.attack.completeness_error, maps.attack.flagged

``importance="auto"`` picks the explainer by structure (:func:`default_importance_method`:
Grad-CAM on a GAP + linear head, HiResCAM on a flatten/FC head; on a vision transformer the
gradient-weighted attention relevance, ``chefer``, or HiResCAM on its patch tokens). The contribution
map's default RoA is its margin-drop part (``attack_kw={"part": "absolute"}`` for |.|).

Add a map: one function, decorated with :func:`register_importance_method` (``fn(model, x,
classes, **options) -> (N,H,W)``) or :func:`register_attack_map` (``fn(model, x, x_adv, y,
**options) -> AttackMap``); its docstring's first line is its ``advspatial list maps`` entry. A map of this
package is one module of :mod:`advspatial.maps.importance` or :mod:`advspatial.maps.attack` holding that function
and its public one (``gradcam_pp(model, x)``, registered with it: ``register_importance_method("gradcam++",
function=gradcam_pp)``), which is imported by name here.

The examples in the docstrings take ``model`` (a classifier on images in [0,1]), ``images`` (N,C,H,W) and
``labels`` as given; the test suite runs every one of them with a small CNN and twelve 28x28 images.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ._common import Target
from .attack import AttackMap, attack_map, describe_attack_maps, list_attack_maps, register_attack_map
from .attack.contribution import contribution
from .attack.gradient import gradient
from .attack.magnitude import magnitude
from .importance import describe_importance_methods, importance_map, list_importance_methods, register_importance_method
from .importance.cam import cam
from .importance.chefer import chefer
from .importance.gradcam import gradcam
from .importance.gradcam_pp import gradcam_pp
from .importance.hirescam import hirescam
from .importance.input_x_gradient import input_x_gradient
from .importance.integrated_gradients import integrated_gradients
from .importance.occlusion import occlusion
from .importance.rollout import rollout
from .importance.saliency import saliency
from .importance.smoothgrad import smoothgrad
from .importance.token_gradcam import token_gradcam
from .importance.token_hirescam import token_hirescam


@dataclass
class Maps:
    """The importance map of the clean images and the attack map of the perturbation."""

    importance: torch.Tensor
    attack: AttackMap


def compute_maps(
    model: nn.Module,
    x: torch.Tensor,
    x_adv: torch.Tensor | None,
    y: torch.Tensor | None = None,
    importance: str = "gradcam",
    attack: str = "contribution",
    target: Target = "pred",
    importance_kw: dict[str, Any] | None = None,
    attack_kw: dict[str, Any] | None = None,
    sample_ids: torch.Tensor | None = None,
) -> Maps:
    """Importance map of ``x`` (class ``target``, default the prediction on x) and attack map of x -> x_adv.

    ``y`` are the true labels (used by ``target="true"`` and as the margin
    label of the ``contribution`` map; None: the clean prediction). ``sample_ids``
    are the images' global ids (keys of any per-image noise; default positions).

    Examples:
        >>> import torch
        >>> _ = torch.manual_seed(0)
        >>> from torch import nn
        >>> model = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),  # any nn.Module
        ...                       nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),  # taking images
        ...                       nn.Flatten(), nn.Linear(16 * 7 * 7, 10)).eval()  # in [0,1]; untrained here
        >>> images = torch.rand(12, 1, 28, 28)            # (N,C,H,W) in [0,1]
        >>> labels = model(images).argmax(1)              # (N,) labels: here the model's own predictions
        >>> from advspatial.attacks import FGSM
        >>> from advspatial.maps import compute_maps
        >>> maps = compute_maps(model, images, FGSM(model, eps=8 / 255)(images, labels), labels)
        >>> maps.importance.shape, maps.attack.map.shape     # Grad-CAM and the contribution map by default
        (torch.Size([12, 28, 28]), torch.Size([12, 28, 28]))
    """
    imp = importance_map(importance, model, x, target=target, y=y, sample_ids=sample_ids, **(importance_kw or {}))
    att = attack_map(attack, model, x, x_adv=x_adv, y=y, **(attack_kw or {}))
    return Maps(imp, att)


__all__ = [
    "AttackMap", "Maps", "attack_map", "cam", "chefer", "compute_maps", "contribution", "gradcam", "gradcam_pp",
    "gradient", "hirescam", "input_x_gradient", "integrated_gradients", "magnitude", "occlusion", "rollout", "saliency",
    "smoothgrad", "token_gradcam", "token_hirescam",
    "describe_attack_maps", "describe_importance_methods", "importance_map", "list_attack_maps",
    "list_importance_methods", "register_attack_map", "register_importance_method",
]
