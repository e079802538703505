"""What ``localized-training``'s reference runs do not count, priced on this model: the training of its models.

Why apart: the run's cost is mostly training (the training set x epochs x the PGD steps of each example, for five
modes x ``training_seeds`` seeds), which follows the training set and the settings, not n, and which the pass ledger
does not count (:mod:`advspatial.passes`: the passes of models a run trains). A reference run on the default model,
its models cached, holds the evaluation; this module counts the training of every model not cached from the settings
(:func:`models_to_train`, :func:`training_images`) and prices it on this model (:func:`training_seconds`): each
training example's PGD passes at the forecast's measured price of a call, and each optimizer step at a timed step
of a copy of the model (:func:`step_seconds_per_image`).

Example::

    >>> from advspatial.experiments.localized.config import LocalizedConfig
    >>> attack_passes(LocalizedConfig(train_attack_steps=5), "pgd")  # forward, backward per example
    (7, 5)
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from ...data import load_dataset
from ...model_cache import checkpoint_paths
from ..forecast import PROBE_REPEATS, CallPrice, fastest_seconds, probe_batch
from ..measurement.gate import RANDOMIZATION_CHECKS
from .config import (
    FINETUNE_IMAGES, MIXED, MODES, LocalizedConfig, finetunes, natural_epochs, seeded, train_config,
)
from .finetuning import FinetuneConfig

#: the stages whose images a setting caps (the registry's ``sized_by``): the ensemble's on ``ensemble_n`` images, the
#: gate's looks, maps and control on ``gate_n``, its randomization checks on ``randomization_images``
SIZED_STAGES = {
    r"^attack/[^/]+/(region-)?ensemble$": "ensemble_n",
    r"^gate/[^/]+/[^/]+/(maps$|f\d)": "gate_n",
    **RANDOMIZATION_CHECKS,
}
#: the stages of training seeds 1, 2, ... (``attack/pgd@seed1/full``), repeats of seed 0's (the registry's
#: ``repeated_by``)
REPEATED_STAGES = {r"@seed\d+": "training_seeds"}
#: the part of a run :func:`training_seconds` prices, as the forecast's sentence names it
TRAINING = "the models' training"
#: forward passes of a PGD example beyond its steps (the random start's check and the final one): a 20-step PGD of
#: the ``pse`` reference runs made 22 forward and 20 backward passes per image
PGD_EXTRA_FORWARD = 2


def attack_passes(config: LocalizedConfig, mode: str) -> tuple[int, int]:
    """(forward, backward) passes of the PGD example a training step of ``mode`` makes per image (none for natural
    training, or for mixed PGD with ``mix`` 0)."""
    if mode == "natural" or (mode == "mixed-pgd" and config.mix == 0):
        return 0, 0
    return config.train_attack_steps + PGD_EXTRA_FORWARD, config.train_attack_steps


def loss_images(config: LocalizedConfig, mode: str) -> int:
    """Images a training step of ``mode`` sends through its loss per training image: the clean and the adversarial
    image for the mixed modes, one for the others."""
    return 2 if mode in MIXED and attack_passes(config, mode) != (0, 0) else 1


def epochs_of(config: LocalizedConfig, mode: str) -> int:
    """Epochs of model ``mode``: the natural model from scratch may have its own."""
    return natural_epochs(config) if mode == "natural" and not finetunes(config) else config.train_epochs


def models_to_train(config: LocalizedConfig) -> list[tuple[str, int]]:
    """(mode, seed offset) of every model the run trains: from scratch, those the model cache does not hold;
    fine-tuning, every one (a new run's directory holds none; a resumed run has less to do)."""
    wanted = [(mode, k) for k in range(config.training_seeds) for mode in MODES]
    if finetunes(config):
        return wanted
    return [(mode, k) for mode, k in wanted
            if not checkpoint_paths(train_config(seeded(config, k), mode))[0].exists()]


def training_images(config: LocalizedConfig) -> int:
    """Training images per epoch: fine-tuning, ``train_limit`` (0: :data:`FINETUNE_IMAGES`); from scratch, the
    dataset's training split up to ``train_limit``."""
    if finetunes(config):
        return config.train_limit or FINETUNE_IMAGES
    available = len(load_dataset(config.dataset, "train"))
    return min(available, config.train_limit) if config.train_limit else available


def step_seconds_per_image(model: nn.Module, images: torch.Tensor, repeats: int = PROBE_REPEATS) -> float:
    """Seconds per image of one training step on ``images`` (forward in train mode, cross-entropy, backward into
    the weights, an SGD step), timed on a copy of ``model`` (its weights and the global random stream untouched)."""
    trainee = copy.deepcopy(model).train()
    for parameter in trainee.parameters():
        parameter.requires_grad_(True)
    optimizer = torch.optim.SGD(trainee.parameters(), lr=1e-6)
    labels = torch.zeros(len(images), dtype=torch.long, device=images.device)  # what they are costs nothing

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        nn.functional.cross_entropy(trainee(images), labels).backward()
        optimizer.step()

    devices = [images.device] if images.device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):  # dropout in train mode draws; the run's stream must not move
        return fastest_seconds(step, repeats) / len(images)


def training_seconds(config: LocalizedConfig, model: nn.Module, images: torch.Tensor,
                     price: CallPrice) -> dict[str, float]:
    """The forecast's part the reference does not count (:data:`TRAINING`): per model :func:`models_to_train`,
    epochs x training images x (its PGD example's passes at ``price``, in calls of the training batch, and its
    loss's images at :func:`step_seconds_per_image`); fine-tuning adds the start model's importance map of every
    training image (a forward and a backward pass). Nothing when every model is cached."""
    todo = models_to_train(config)
    if not todo:
        return {}
    batch = FinetuneConfig.batch_size if finetunes(config) else train_config(config, "natural").batch_size
    # a step of the training batch, or of as many images as the probe's pixels allow (on the default model a step
    # costs 0.38 to 0.48 ms an image at 32 to 200 images, one thread)
    stepped = probe_batch(batch, *images.shape[2:])
    per_step = step_seconds_per_image(model, images[torch.arange(stepped) % len(images)])
    total = 0.0
    count = training_images(config)
    for mode, _ in todo:
        forward, backward = attack_passes(config, mode)
        per_image = (forward * (price.forward_per_image + price.forward_fixed / batch)
                     + backward * (price.backward_per_image + price.backward_fixed / batch)
                     + loss_images(config, mode) * per_step)
        total += epochs_of(config, mode) * count * per_image
    if finetunes(config):
        total += count * (price.forward_per_image + price.backward_per_image)
    return {TRAINING: total}
