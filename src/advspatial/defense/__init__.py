"""The neutralization defence (METHODS.md §2): fills, region selection, the defended model, adaptive attacks.

``NeutralizedModel(model, importance_fn, vulnerability_fn, fraction, fill)`` is a
drop-in ``nn.Module``: each forward pass neutralizes ``N = RoA \\ RoI`` computed
from the input alone, then classifies. Controls (random positions, oracle
regions), the diagnostic upper bound and the adaptive attacks (BPDA/EOT PGD,
RoI-restricted) live beside it.
"""

from .adaptive import bpda_pgd, eot_gradient, roi_restricted_attack
from .evaluate import DefenceEvaluation, evaluate_defence
from .fills import FillParams, diffusion_inpaint, fill, gaussian_blur, gaussian_kernel1d, list_fills, make_fill, put_back, register_fill
from .neutralize import (
    MODES, ClassPriorVulnerability, NeutralizedModel, RegionSelection, class_mean_maps, map_of,
    neutralization_region, random_region_like, select_regions, top_fraction,
)

__all__ = [
    "MODES", "ClassPriorVulnerability", "DefenceEvaluation", "FillParams", "NeutralizedModel", "RegionSelection",
    "bpda_pgd", "class_mean_maps", "diffusion_inpaint", "eot_gradient", "evaluate_defence", "fill",
    "gaussian_blur", "gaussian_kernel1d", "list_fills", "make_fill", "map_of", "neutralization_region",
    "put_back", "random_region_like", "register_fill", "roi_restricted_attack", "select_regions", "top_fraction",
]
