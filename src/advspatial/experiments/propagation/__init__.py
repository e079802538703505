"""Experiment ``propagation``: how far a one-pixel (k-pixel) perturbation spreads through the
layers, and whether the attack's colour works only at its exact position (METHODS.md §6).

Stages, each cached in the run directory so that ``--resume`` completes an
interrupted run with identical numbers:

0. ``random/batch-NNNNN``: propagation per se, with no attack: ``random_draws`` random one-pixel
   changes of every image (a uniformly random position set to a uniformly random corner of the
   colour cube, seeded by (seed, sample id)) and per layer their peak PMmax, averaged over the draws
   (:func:`~advspatial.analysis.propagation.random_pixel_reach`);
1. ``attack/k{k}/batch-NNNNN``: the k-pixel attack (differential evolution) of
   every batch, for every k in ``pixels_list``, with per-sample seeds;
2. ``propagation/k{k}/batch-NNNNN``: propagation maps of the batch's
   *successful* attacks (images the model classifies correctly and the attack
   fools), reduced at once to per-layer sums and summaries (memory does not grow
   with n), plus per image and layer the peak PMmax, mean PMmax and spread; and
   the same per-image statistics of the two *controls* of each attack: a random,
   non-adversarial change of the same |Δ| per pixel at a random position, and at
   the attack's position with a random colour
   (:func:`~advspatial.analysis.propagation.random_pixel_change`, seeded by
   (seed, sample id));
3. ``locality/k{k}/chunk-NNNNN``: the attack's colours moved to Chebyshev radius r (rings),
   to context-matched random placements (same edge-strength x intensity
   stratum, the primary control) and to uniformly random positions (secondary
   view), on the successful attacks of that k, in chunks of ``batch_size`` attacks.

Claims (:mod:`advspatial.statistics.claims`, judged by the one engine): the
primary family (Holm) is propagation per se -- the random pixel's last-layer
peak PMmax against 0 and against ``reach_fraction`` of the layer's largest
clean activation -- and per k the r = min(radii) success share minus the
context-matched control's; the per-se claims of the other layers, the attack
against each random control at every layer x statistic (DE selects the pixel
for its effect on the logits, so beating a random pixel is close to true by
construction) and every other locality comparison are secondary
(Benjamini-Hochberg). Effects are per-image (paired) differences with a
bootstrap CI over images; locality rates carry
cluster-bootstrap CIs over images (placements of one image are not independent).

The perturbed pixels are read off the adversarial image: the positions where
``x_adv`` differs from ``x`` in any channel, the colour is ``x_adv`` there.
Every summary metric is computed from the per-image rows (so the two agree),
except the depth curves, which are merged from the per-batch sums of stage 2.

Default budget: n = 100 images, DE population 100 and 20 generations (at most
2100 queries per image and k) instead of the literature's 400 x 75 (30,400):
an attack that fails spends its whole budget, and most one-pixel attacks fail,
so the literature budget on 500 images and three k would take hours on a CPU.
The default run (k = 1, 3, 5, with the controls) took 277 s of wall time on 2
shared cores at load average 6-7 (benchmarks/README.md); the controls, the
locality test, the claims and the report cost about 37 s of CPU of that.

The package: :mod:`.config` (the settings), :mod:`.stages` (the cached stages, as
:class:`~advspatial.experiments.stage.Stage` objects, and the per-image rows), :mod:`.findings` (the findings,
``metrics.json``) and :mod:`.claims` (the statistics), :mod:`.figures` (drawn at run time) and :mod:`.report`
(rendered from the config and the findings alone), :mod:`.run` (the run, registered as ``propagation``). The
attack's pixels are read off the adversarial image by :mod:`.pixel_changes`, the maps reduced batch by
batch by :mod:`.totals`.
"""

from __future__ import annotations

from .config import PropagationConfig
from .pixel_changes import perturbed_pixels
from .run import run_propagation

__all__ = ["PropagationConfig", "perturbed_pixels", "run_propagation"]
