"""Experiment ``maps``: where attacks act (RoA) vs where the model looks (RoI), without a defence (METHODS.md §1).

Stages, each streamed batch by batch and saved in the run directory so that ``--resume`` completes an
interrupted run with identical numbers (:mod:`.stages`):

1. the importance map (RoI side) of every clean image, the explainer panel's maps;
2. every attack (FGSM, PGD-Linf, PGD-L2, CW-L2, DeepFool; one-pixel on a prefix subset) with per-sample seeds;
3. attack maps (RoA side: ``contribution`` for all, plus ``magnitude`` for L2 attacks), regions, the four-part
   segregation and the overlap statistics per image; the successful images kept for the permutation nulls
   (the first ``permutation_images``: bounded memory for any n).

Then the faithfulness gate of every explainer, the comparisons against the nulls, the claims and verdicts
(:mod:`.claims`), the findings (:class:`MapsFindings`, :mod:`.metrics`; metrics.json is their serialization), the
figures drawn at run time (:mod:`.figures`) and the report rendered from the findings alone (:mod:`.report`).
Statistics are over the images the model classifies correctly *and* the attack fools ("successful"): only there
does the perturbation explain a decision change. :func:`maps_analysis` is the measurement the ``advspatial maps``
command and the ``analyze`` experiment run; the spatial experiment (:mod:`advspatial.experiments.spatial`) adds the
defence.
"""

from .config import MapsConfig, MeasurementConfig
from .metrics import MapsFindings
from .run import maps_analysis, run_maps

__all__ = ["MapsConfig", "MapsFindings", "MeasurementConfig", "maps_analysis", "run_maps"]
