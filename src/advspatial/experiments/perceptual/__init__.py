"""Experiment ``perceptual``: the SSIM-ball attack vs L-inf PGD at matched mean SSIM, and where each
one lowers SSIM compared with where the model looks (METHODS.md §3, with §1's gate and inference).

Stages, each streamed batch by batch and saved in the run directory so that ``--resume`` completes an
interrupted run with identical numbers (each a stage object of :mod:`.stages`, which owns its key):

1. the shared clean pass (predictions) and ``cam/batch-*``: the class activation map (``importance``:
   ``auto`` = Grad-CAM for a GAP+linear head, HiResCAM for a flatten/FC head) of the *true* class on the
   clean image -- the Region of Importance (RoI) side;
2. ``attack/ssim-ball/batch-*``: the SSIM-ball attack (luminance kept by SSIM's own luminance term by
   default); the SSIM of every adversarial image, both the reported (Gaussian-window) SSIM and the window
   SSIM its constraint bounds, is computed from it;
3. ``calibration/eps-*/batch-*``: the PGD budget at matched mean SSIM
   (:func:`advspatial.experiments.perceptual.ssim_matching.bisect_eps`); both attacks use the same loss (``loss``,
   margin) and step budget (``steps``);
4. ``curve/...``: success rate vs mean SSIM of both attacks at several budgets on the calibration images,
   and per image the highest SSIM at which each fools it;
5. ``gate/<method>/...``: the faithfulness gate of that CAM (:func:`advspatial.experiments.measurement.gate.gate_stage`)
   on the run's own cached maps, with the experiment's L-inf PGD at the calibrated budget;
6. ``attack/pgd/batch-*``: L-inf PGD at that budget; ``geometry/<attack>/batch-*``: the geometry null of
   each attack, a random feasible perturbation of its set with its per-image SSIM
   (:func:`advspatial.experiments.perceptual.ssim_matching.geometry_null`).

PGD then runs on all ``n`` images at the calibrated budget; both mean SSIMs over all ``n`` images are
reported (they differ from the calibration ones by sampling only).

The SSIM map ``D = 1 − SSIM_local(x, x')`` (Gaussian window, σ = 1.5, full
resolution, clamped at 0) plays the Region of Attack (RoA) side: it is compared
with the class activation map ``I`` of the true class -- Spearman correlation of
the continuous maps, IoU of their top-``fraction`` regions, and the share of D's
mass inside the CAM region ("energy in CAM", the engine's ``energy_in_roi``); the
statistics, claims and verdicts are in :mod:`.claims`. Statistics are
over the images the model classifies correctly *and* the attack fools
("successful"). The settings are in :mod:`.config`, the findings (``metrics.json``) in :mod:`.findings`;
:mod:`.run` runs the stages, draws the figures (:mod:`.figures`) and renders the report from the findings
(:mod:`.report`).
"""

from .config import PerceptualConfig
from .run import run_perceptual

__all__ = ["PerceptualConfig", "run_perceptual"]
