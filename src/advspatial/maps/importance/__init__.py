"""Importance maps: where the classifier looks (the Region of Importance side), one module per method.

Every method returns an (N,H,W) float map >= 0 at input resolution, for one
class per image (``target``: ``"pred"`` (default), ``"true"`` with labels ``y``,
an int, or an (N,) tensor).

Channel reduction (documented choice):

- CAM family (``gradcam``, ``gradcam++``, ``cam``, ``hirescam``): the
  class-weighted sum of the feature maps is rectified (ReLU, positive evidence
  only), then upsampled bilinearly (``align_corners=False``) to the input size.
- gradient family (``saliency``, ``inputxgrad``, ``ig``, ``smoothgrad``): sum
  over channels of the absolute per-channel attribution.
- ``occlusion``: ReLU of the channel mean of the score drop (a pixel is
  important when hiding it *lowers* the class score).

The model runs in eval mode with parameter gradients off; its modes and flags
are restored afterwards, and every hook is removed, also when an exception is
raised. Methods that Captum implements use Captum; Grad-CAM++ and CAM are
written here on top of a forward hook that captures the feature maps, and
SmoothGrad here with per-image noise keyed by the image's sample id (Captum's
NoiseTunnel draws one stream for the whole batch).

Grad-CAM layer: the ``layer`` argument (dotted name or module), else the
model's ``cam_layer`` attribute (found also inside wrappers such as
``Normalized``), else the last module whose output is a 4-D map with H*W > 1.

Default explainer by head type (METHODS.md section 1, :func:`~advspatial.maps.heads.default_importance_method`;
the pseudo-method ``auto`` resolves through it): ``gradcam`` when the final
linear layer receives the global average of the Grad-CAM layer's feature map
(GAP + linear head: Grad-CAM is exact there, CAM up to a positive scale), else
``hirescam`` (flatten/FC head: Grad-CAM averages the position-specific weights
away; HiResCAM, ReLU(sum_k dz_c/dA_k * A_k), keeps them).

Layout: each public module of this package (``gradcam.py``, ``smoothgrad.py``, ...) defines one method: its batch
function, registered with :func:`register_importance_method` (its registry entry and its ``advspatial list maps``
line), and its public function (``gradcam(model, x)``), which :mod:`advspatial.maps` imports by name; the modules
with a leading underscore hold what several methods share (the registry, the CAM layer's capture and the CAM
formulas, the input-attribution helpers, the token helpers). Adding a method is one new module here, its name on
the import line below and its public function's import in :mod:`advspatial.maps`.
"""

from __future__ import annotations

from . import (  # noqa: F401  (each module registers its method)
    auto, cam, chefer, gradcam, gradcam_pp, hirescam, input_x_gradient, integrated_gradients, occlusion, rollout,
    saliency, smoothgrad, token_gradcam, token_hirescam,
)
from ._cam import FeatureCapture, gradcam_formula, hirescam_formula
from ._registry import (
    IMPORTANCE_METHODS, ImportanceMethod, describe_importance_methods, importance_functions, importance_map,
    list_importance_methods, method_function, register_importance_method,
)

__all__ = ["IMPORTANCE_METHODS", "FeatureCapture", "ImportanceMethod", "describe_importance_methods",
           "gradcam_formula", "hirescam_formula", "importance_functions", "importance_map", "list_importance_methods",
           "method_function", "register_importance_method"]
