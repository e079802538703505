"""The neutralization defence (METHODS.md §2): fills, region selection, the defended model, its evaluation.

``NeutralizedModel(model, importance_fn, vulnerability_fn, fraction, fill)`` is a
drop-in ``nn.Module``: each forward pass neutralizes ``N = RoA \\ RoI`` computed
from the input alone, then classifies. Beside it: matched random controls and
oracle regions (:mod:`.nonadaptive`), the adaptive ensemble through the identity
and local gradients (:mod:`.adaptive`) with its convergence checks (:mod:`.convergence`), both in one call
(:func:`evaluate_adaptive`, :mod:`.adaptive_evaluation`), and the trivial input transforms a defence must beat at a
matched clean cost (:mod:`.transforms`).
"""

from ..regions.fills import list_fills, register_fill
from .adaptive import (
    AdaptiveBudget, AdaptiveOutcome, Undefended, attack_defence, attack_undefended, ensemble_attack, roi_attack_mask,
)
from .adaptive_evaluation import AdaptiveEvaluation, AdaptivePlan, ComponentOutcome, evaluate_adaptive
from .convergence import Convergence, CurveGrid, convergence_curves, convergence_rule, read_curve
from .neutralize import ClassPriorVulnerability, NeutralizedModel, class_prior_maps
from .selection import RegionSelection, neutralization_region, select_regions
from .nonadaptive import DefenceEvaluation, evaluate_defence
from .transforms import TransformDefence

__all__ = [
    "AdaptiveBudget", "AdaptiveEvaluation", "AdaptiveOutcome", "AdaptivePlan", "ClassPriorVulnerability",
    "ComponentOutcome", "Convergence", "CurveGrid", "DefenceEvaluation", "NeutralizedModel", "RegionSelection",
    "TransformDefence", "Undefended", "attack_defence", "attack_undefended", "class_prior_maps",
    "convergence_curves", "convergence_rule", "ensemble_attack", "evaluate_adaptive", "evaluate_defence",
    "list_fills", "neutralization_region", "read_curve", "register_fill", "roi_attack_mask", "select_regions",
]
