"""Experiment ``pse``: the promotion–suppression effect (METHODS.md §5).

Which pixel groups of an adversarial perturbation push the true class down
(suppression), which push a pre-specified class t up (promotion), where those
groups lie relative to the class activation maps, which units of a layer the
attack moves, what masking those units does, and whether the sensitive units
are the interpretable ones (network dissection of the analysed model).

Stages, each streamed batch by batch through ``ctx.each_batch`` (so that a
``torchrun`` launch shares them) and saved in the run directory so that
``--resume`` completes an interrupted run with identical numbers:

1. the clean pass (shared) and ``CAM_t0(x)`` (the true class) of every image;
   attack targets (seeded random class != label, least-likely or next class)
   and the clean runner-up class, the pre-specified t of untargeted attacks;
2. per attack variant (CW-L2 / PGD, untargeted / targeted): the attack with
   per-sample seeds; the group-wise promotion/suppression towards t (exact by
   default, 2x2 blocks) measured isolated (δ_G on x) and leave-one-out (δ_G
   removed from x'), groups under the noise floor left untyped, the post-hoc
   class argmax f(x') as a secondary view; ``CAM_t(x')``; the typing's
   stability across kappa, the measurement and the pixel groups (4x4, SLIC);
3. the units ranked on attacks of *training* images, then the masking curve on
   the test images (against random units) and an attack run on the masked model (PGD, or the ensemble);
4. the faithfulness gate of the CAM explainer (:func:`.gate.gate_stage`) on the
   run's own cached ``CAM_t0(x)``: every CAM-dependent result is read only if it passes;
5. image level: ``pse_vs_cam`` on the first ``permutation_images`` successful
   images of each variant, against the exact partner null of the inference
   engine; each (CAM, group type) share becomes a pre-declared claim, the
   primary ones corrected by Holm, the rest by Benjamini-Hochberg, each given a
   verdict word (:mod:`advspatial.statistics.claims`);
6. dissection of the analysed model on its test images with concept masks that
   are not its labels (the dataset's own, or a user file), correlated with the
   units' relative sensitivity under ``dissection_attack``; never-active units
   left out; without concept masks the report says so and dissects nothing.

"Successful" images are those the model classifies correctly *and* the attack
fools (targeted: the prediction is the target): only there does the
perturbation explain a decision change. Metrics are computed from the
per-image rows, so the two always agree.

Modules, each importing only modules named before it: :mod:`.config` (the settings); :mod:`.claims` (the
pre-declared claims, their corrections and verdicts); :mod:`.findings` (the per-image rows and the typed findings,
:class:`~.findings.PSEFindings`); :mod:`.stages` (the cached stages, each a module-level ``Stage``); :mod:`.figures`
(drawn at run time); :mod:`.report` (rendered from the findings alone); :mod:`.run` (the registered ``run``).
The computations that need no run context are beside them: :mod:`.targets` (the classes t), :mod:`.rows` (the
per-image rows and their statistics), :mod:`.control` (the typing's energy shares and their random-sign control),
:mod:`.units` (unit sums, masking curves, concepts), :mod:`.stability` (typing agreement). What a user may call on
its own (:func:`~advspatial.analysis.pse.promotion_suppression`, unit sensitivity, dissection) is
:mod:`advspatial.analysis`'s.
"""

from .config import PSEConfig
from .run import run_pse

__all__ = ["PSEConfig", "run_pse"]
