"""Analyses of one model under attack, beyond RoI vs RoA (METHODS §3, §5, §6).

* :mod:`.ssim` - SSIM maps (scikit-image's definition) for the perceptual experiment;
* :mod:`.pse` - promotion-suppression effects of pixel groups, and their overlap with class activation maps;
* :mod:`.units` - unit sensitivity: activation change under attack, ranking, masking curves;
* :mod:`.dissection` - network dissection of units with concept masks, and its correlation with sensitivity;
* :mod:`.propagation` - per-layer propagation maps of a one-pixel perturbation, and its random same-|Δ| control;
* :mod:`.locality` - whether a found adversarial pixel still works when moved (ring, context-matched and uniform
  placements; cluster-bootstrap rates);

Listing and recording layer outputs is :mod:`advspatial.models.hooks`'s.
"""

from .dissection import DissectionResult, dissect, sensitivity_vs_interpretability
from .locality import LocalityResult, cluster_bootstrap_rate, locality_analysis
from .locality_placements import context_maps, matched_variants
from .propagation import (
    PropagationMap, average_propagation, depth_summary, per_image_layer_stats, propagation_maps, random_pixel_change,
)
from .pse import promotion_suppression
from .pse_cam import pse_vs_cam
from .pse_types import PSEResult
from .ssim import ssim, ssim_map
from .units import mask_units, masking_curve, rank_sensitive_units, unit_activation_change

__all__ = [
    "DissectionResult", "LocalityResult", "PSEResult", "PropagationMap", "average_propagation",
    "cluster_bootstrap_rate", "context_maps", "depth_summary", "dissect", "locality_analysis", "mask_units",
    "masking_curve", "matched_variants", "per_image_layer_stats", "promotion_suppression", "propagation_maps",
    "pse_vs_cam", "random_pixel_change", "rank_sensitive_units", "sensitivity_vs_interpretability", "ssim", "ssim_map",
    "unit_activation_change",
]
