"""Experiment ``localized-training``: localized attacks and localized adversarial training (METHODS.md §4).

Five models are trained on the same data for the same number of epochs: ``natural`` (clean cross-entropy), ``pgd``
(Madry PGD adversarial training), ``localized`` (each batch: clean plus background-only PGD examples, mixed with
weight ``mix``) and the two controls of localized training, ``mixed-pgd`` (the same mixture with full-image PGD
examples: its clean share without its region) and ``localized-random`` (its loss on a region of the same area per
image at random positions, redrawn every batch: its region without its placement). How depends on ``model``:

- a registered architecture (without ``weights``): trained from scratch, or loaded from the model cache
  (``$ADVSPATIAL_CACHE/models``, keyed by every training setting);
- anything else (a zoo name such as ``cifar10-resnet20``, a factory, a state-dict file, a registered name with
  ``weights``): **fine-tuned** from the pretrained model. The models start from copies of the same weights and get
  the same recipe (:class:`.finetuning.FinetuneConfig`: ``train_epochs`` epochs, SGD ``finetune_lr``), the same
  training images (a class-stratified draw of ``train_limit``, default :data:`.config.FINETUNE_IMAGES`, that
  leaves out the evaluated test images when the dataset has one image set for both splits) in the same order, so
  the loss is the only difference. The localized model's background on each training image is the evaluation's
  ``background`` mask computed once on the *start* model (for colour data without masks: the complement of the top
  ``fraction`` of its importance map of the true class; ties broken by the global sample id).

Each model is then attacked on the ``n`` test images by full-image PGD (the usual L-inf or L2 ball), by PGD
restricted to the ``mask`` region (default ``background``: the pixels with ``x <= 0.05`` on MNIST-like data, the
exact object complement on the synthetic shapes, the complement of the importance map's top region of the true
class on other colour data), optionally by PGD restricted to its complement (``foreground``), by the
autoattack-style ensemble on the whole image and on the region (the first ``ensemble_n`` images), and by
full-image PGD at the budgets of ``eps_sweep``. Besides accuracy, the experiment measures what a background-only
attack does to where the model looks: the share of the importance map (``importance``, ``auto`` = by head type) of
the true class that lies in the attacked region, before and after the attack.

The importance map is used as a Region of Importance (RoI) only after the faithfulness gate
(:func:`advspatial.experiments.measurement.gate.gate_stage`) has judged it on each model. The comparisons become
pre-declared claims, paired per image within each training seed (:func:`advspatial.experiments.paired.seeded_claim`),
corrected and judged by fixed rules (:func:`advspatial.statistics.claims.judge`); a claim that rests on a map that
failed the gate is "not interpretable".

Stages (:mod:`.stages`), saved in the run directory per batch (``--resume``), a batch's attacks and map shift
computed together: ``attack/<model>/<condition>/batch-*``, ``importance/<model>/<method>/batch-*`` (the map's share
outside the region, clean and attacked) and ``gate/<model>/<method>/...``. Models trained from scratch live in the
model cache, fine-tuned ones in the run directory (``finetune/<mode>-<key>``, the key covering every setting, the
start's weights checksum and the training image ids; ``finetune/masks/...`` the training masks; ``finetune/start``
the start's checksum, checked on ``--resume``; ``train_subset.csv`` the training images' global ids).

The package: :mod:`.config` (the settings and what follows from them alone), :mod:`.stages` (the models, their gates
and evaluations) -- compute; :mod:`.findings` (the findings, from the rows) and :mod:`.claims` -- the statistics;
:mod:`.figures` (drawn at run time) and :mod:`.report` (rendered from the findings alone) -- the rendering;
:mod:`.run` (the run, registered as ``localized-training``). The attacked region and the map's share outside it
are :mod:`.attacked_region`'s, the per-model rows :mod:`.attack_rows`', fine-tuning :mod:`.finetuning`'s.
"""

from __future__ import annotations

from .config import LocalizedConfig
from .run import run_localized

__all__ = ["LocalizedConfig", "run_localized"]
