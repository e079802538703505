"""Experiment ``maps``: where attacks act (RoA) vs where the model looks (RoI), without a defence (METHODS.md §1).

Stages, each streamed batch by batch and saved in the run directory so that ``--resume`` completes an
interrupted run with identical numbers (:mod:`advspatial.experiments.measurement.stages`):

1. the importance map (RoI side) of every clean image, the explainer panel's maps;
2. every attack (FGSM, PGD-Linf, PGD-L2, CW-L2, DeepFool; one-pixel on a prefix subset) with per-sample seeds;
3. attack maps (RoA side: ``contribution`` for all, plus ``magnitude`` for L2 attacks), regions, the four-part
   segregation and the overlap statistics per image; the successful images kept for the permutation nulls
   (the first ``permutation_images``: bounded memory for any n).

Then the faithfulness gate of every explainer, the comparisons against the nulls, the claims and verdicts, and the
figures drawn at run time: the measurement is :mod:`advspatial.experiments.measurement`'s, shared with ``analyze``,
the spatial experiment and the studies. This package holds what is the ``maps`` experiment's alone: its settings
(:mod:`.config`), its findings (:class:`MapsFindings`, :mod:`.findings`; metrics.json is their serialization), its
report rendered from the findings alone (:mod:`.report`) and its registration (:mod:`.run`).
Statistics are over the images the model classifies correctly *and* the attack fools ("successful"): only there
does the perturbation explain a decision change. :func:`maps_analysis` is the measurement as this experiment's
findings; the spatial experiment (:mod:`advspatial.experiments.spatial`) adds the defence.
"""

from ..measurement.config import MeasurementConfig
from .config import MapsConfig
from .findings import MapsFindings
from .run import maps_analysis, run_maps

__all__ = ["MapsConfig", "MapsFindings", "MeasurementConfig", "maps_analysis", "run_maps"]
