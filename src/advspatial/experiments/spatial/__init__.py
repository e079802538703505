"""Experiment ``spatial`` (the main job): where attacks act vs where the model looks, and the
neutralization defence evaluated honestly (METHODS.md §1-2).

Stages, each streamed batch by batch and saved in the run directory so that
``--resume`` completes an interrupted run with identical numbers:

1. clean predictions and the importance map (RoI side) of every clean image (:mod:`.context`);
2. every attack (FGSM, PGD-Linf, PGD-L2, CW-L2, DeepFool; one-pixel on a
   prefix subset) with per-sample seeds (:mod:`.attack_stage`);
3. attack maps (RoA side: ``contribution`` for all, plus ``magnitude`` for
   L2/L0 attacks), regions, the four-part segregation and the overlap
   statistics per image; permutation baselines on the first
   ``permutation_images`` successful images (bounded memory for any n) (:mod:`.maps_stage`, :mod:`.statistics`);
4. the neutralization defence per attack: deployable (gradient map; per-class
   prior), random-region controls, oracle (true delta) with its control inside
   RoA, the clean-pixels-back upper bound, the clean cost; a sweep over the
   neutralized fraction and the fills for ``defence_attack`` (:mod:`.defence`); the adaptive
   attacks (BPDA-PGD through the defence, the RoI-restricted attack) (:mod:`.adaptive`,
   :mod:`.defence_verdicts`).

Statistics are over the images the model classifies correctly *and* the attack
fools ("successful"): only there does the perturbation explain a decision change.
The measurement alone, without the defence, is the registered ``maps`` experiment (:func:`.run_maps`,
also the ``advspatial maps`` command). The settings are in :mod:`.config`, the metrics in :mod:`.metrics`;
:mod:`.experiment` runs the stages and
hands the computed values to the report (:mod:`.report`, :mod:`.defence_report`, :mod:`.figures`).
"""

from .attack_stage import build_attack
from .config import MapsConfig, MeasurementConfig, SpatialConfig
from .experiment import maps_analysis, run_maps, run_spatial

__all__ = ["MapsConfig", "MeasurementConfig", "SpatialConfig", "build_attack", "maps_analysis", "run_maps",
           "run_spatial"]
