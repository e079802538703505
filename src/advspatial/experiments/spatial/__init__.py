"""Experiment ``spatial`` (the main job): where attacks act vs where the model looks, and the neutralization
defence evaluated honestly (METHODS.md §1-2).

The measurement is the shared one (:mod:`advspatial.experiments.measurement`: clean maps, the gates, every attack
with its attack maps, regions and statistics, the claims), which takes the defence's columns. This package adds the
defence, each stage streamed batch by batch and saved in the run directory so that ``--resume`` completes an
interrupted run with identical numbers (:mod:`.stages`): the per-class prior on training images; per attack batch
the deployable defence (gradient RoA; prior RoA), its random controls, the oracle (true delta) with its control
inside RoA, the clean-restore diagnostic and the clean cost; a sweep over the neutralized fraction and the fills for
``defence_attack``; the adaptive attacks (the ensemble through the defence, EOT on the randomized components, the
RoI-restricted attack, the trivial input-transform baselines) with their convergence curves. Then the paired
comparisons and verdicts (:mod:`.claims`), the metrics (:mod:`.findings`), the figures (:mod:`.figures`) and the
report (:mod:`.report`). The settings are :class:`SpatialConfig` (:mod:`.config`)."""

from .config import SpatialConfig
from .run import run_spatial

__all__ = ["SpatialConfig", "run_spatial"]
