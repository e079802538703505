"""The neutralization defence (METHODS.md §2): fills, region selection, the defended model, its evaluation.

``NeutralizedModel(model, importance_fn, vulnerability_fn, fraction, fill)`` is a
drop-in ``nn.Module``: each forward pass neutralizes ``N = RoA \\ RoI`` computed
from the input alone, then classifies. Beside it: matched random controls and
oracle regions (:mod:`.evaluate`), the adaptive ensemble through the identity
and local gradients (:mod:`.adaptive`) with its convergence checks (:mod:`.convergence`), and the
trivial input transforms a defence must beat at a matched clean cost
(:mod:`.transforms`).
"""

from ..regions.controls import random_region_like
from ..regions.fills import (
    FillParams, diffusion_inpaint, fill, gaussian_blur, gaussian_kernel1d, list_fills, make_fill, put_back,
    register_fill,
)
from .adaptive import (
    FULL_EOT, GRADIENTS, AdaptiveBudget, AdaptiveOutcome, Undefended, attack_defence, attack_undefended,
    ensemble_attack, roi_mask,
)
from .convergence import CurveGrid, convergence_curves, convergence_rule
from .evaluate import DefenceEvaluation, evaluate_defence
from .neutralize import (
    MODES, ClassPriorVulnerability, NeutralizedModel, RegionSelection, class_mean_maps, map_of, neutralization_region,
    select_regions, top_fraction,
)
from .transforms import BACKWARDS, TRANSFORMS, TransformDefence, jpeg_quantize, through

__all__ = [
    "BACKWARDS", "FULL_EOT", "GRADIENTS", "MODES", "TRANSFORMS", "AdaptiveBudget", "AdaptiveOutcome",
    "ClassPriorVulnerability", "CurveGrid", "DefenceEvaluation", "FillParams", "NeutralizedModel", "RegionSelection",
    "TransformDefence", "Undefended", "attack_defence", "attack_undefended", "class_mean_maps", "convergence_curves",
    "convergence_rule", "diffusion_inpaint", "ensemble_attack", "evaluate_defence", "fill", "gaussian_blur",
    "gaussian_kernel1d", "jpeg_quantize", "list_fills", "make_fill", "map_of", "neutralization_region", "put_back",
    "random_region_like", "register_fill", "roi_mask", "select_regions", "through", "top_fraction",
]
