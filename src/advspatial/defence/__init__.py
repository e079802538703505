"""The neutralization defence (METHODS.md §2): fills, region selection, the defended model, its evaluation.

``NeutralizedModel(model, importance_fn, vulnerability_fn, fraction, fill)`` is a
drop-in ``nn.Module``: each forward pass neutralizes ``N = RoA \\ RoI`` computed
from the input alone, then classifies. Beside it: matched random controls and
oracle regions (:mod:`.evaluate`), the adaptive ensemble through the identity
and local gradients (:mod:`.adaptive`) with its convergence checks (:mod:`.convergence`), and the
trivial input transforms a defence must beat at a matched clean cost
(:mod:`.transforms`).
"""

from ..regions.fills import list_fills, register_fill
from .adaptive import (
    AdaptiveBudget, AdaptiveOutcome, Undefended, attack_defence, attack_undefended, ensemble_attack, roi_attack_mask,
)
from .convergence import convergence_curves, convergence_rule
from .evaluate import DefenceEvaluation, evaluate_defence
from .neutralize import (
    ClassPriorVulnerability, NeutralizedModel, RegionSelection, class_prior_maps, neutralization_region, select_regions,
)
from .transforms import TransformDefence

__all__ = [
    "AdaptiveBudget", "AdaptiveOutcome", "ClassPriorVulnerability", "DefenceEvaluation", "NeutralizedModel",
    "RegionSelection", "TransformDefence", "Undefended", "attack_defence", "attack_undefended", "class_prior_maps",
    "convergence_curves", "convergence_rule", "ensemble_attack", "evaluate_defence", "list_fills",
    "neutralization_region", "register_fill", "roi_attack_mask", "select_regions",
]
