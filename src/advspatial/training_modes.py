"""Training modes: the loss of one batch, registered by name in :data:`TRAINING_MODES`.

``natural``, ``pgd``, ``localized``, and the two controls of localized training: ``mixed-pgd`` (its
clean/adversarial mixture with full-image examples) and ``localized-random`` (its loss on a region of the same area
at random positions). A loss gets the batch's foreground masks from :func:`advspatial.training.fit`'s ``masks_fn``
(by default the dataset's own masks), so a localized loss can train against any background, e.g. one cut from a
model's importance map. Training from scratch and fine-tuning read these through the config's ``mode``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

import torch
from torch import nn

from .data_parallel import current_shard, unwrap
from .errors import ConfigError


class LossSettings(Protocol):
    """What a training loss reads from its config (:class:`TrainConfig` and :class:`FinetuneConfig` have it;
    read-only, as in those frozen dataclasses)."""

    @property
    def dataset(self) -> str: ...
    @property
    def mode(self) -> str: ...
    @property
    def eps(self) -> float: ...
    @property
    def norm(self) -> str: ...
    @property
    def attack_steps(self) -> int: ...
    @property
    def mix(self) -> float: ...


#: loss(model, x, y, foreground_mask_or_None, config) -> scalar loss
LossFn = Callable[[nn.Module, torch.Tensor, torch.Tensor, "torch.Tensor | None", Any], torch.Tensor]
TRAINING_MODES: dict[str, LossFn] = {}


def register_training_mode(name: str) -> Callable[[LossFn], LossFn]:
    """Register a training mode: a function computing the loss of one batch."""

    def wrap(fn: LossFn) -> LossFn:
        TRAINING_MODES[name] = fn
        return fn

    return wrap


@register_training_mode("natural")
def natural_loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor, masks: torch.Tensor | None,
                 config: LossSettings) -> torch.Tensor:
    """Plain cross-entropy on clean images."""
    return nn.functional.cross_entropy(model(x), y)


def _training_attack(model: nn.Module, config: LossSettings, seed: int):
    """The PGD attack used to make training examples (random start, ``attack_steps`` steps)."""
    from .attacks.pgd import PGD, PGDL2

    cls = PGD if config.norm == "linf" else PGDL2
    return cls(model, eps=config.eps, alpha="auto", steps=config.attack_steps, random_start=True, seed=seed)


def _adversarial_batch(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, config: LossSettings, mask: torch.Tensor | None
) -> torch.Tensor:
    """PGD examples for one batch; the attack puts the model in eval mode and restores train mode."""
    seed = int(torch.randint(0, 2**31 - 1, (1,)).item())  # drawn from the seeded global stream
    attack = _training_attack(unwrap(model), config, seed)
    shard = current_shard()  # under DistributedDataParallel: each image's position in the global batch
    return attack.run(x, y, mask=mask, sample_ids=None if shard is None else shard.positions).x_adv.detach()


@register_training_mode("pgd")
def pgd_loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor, masks: torch.Tensor | None,
             config: LossSettings) -> torch.Tensor:
    """Madry PGD adversarial training: cross-entropy on full-image PGD examples only."""
    return nn.functional.cross_entropy(model(_adversarial_batch(model, x, y, config, None)), y)


@register_training_mode("localized")
def localized_loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor, masks: torch.Tensor | None,
                   config: LossSettings) -> torch.Tensor:
    """Localized adversarial training: (1-mix)*CE(clean) + mix*CE(background-only PGD examples).

    ``masks``: (N,H,W) bool foreground of the batch (whatever :func:`fit`'s
    ``masks_fn`` gives: the dataset's own masks, or a map-derived region);
    the attack acts on their complement.
    """
    if masks is None:
        raise ConfigError(f"training mode 'localized' needs foreground masks; dataset {config.dataset!r} has none "
                          "and no masks function was given")
    background = (~masks).unsqueeze(1).to(x.dtype)
    x_adv = _adversarial_batch(model, x, y, config, background)
    clean = nn.functional.cross_entropy(model(x), y)
    adversarial = nn.functional.cross_entropy(model(x_adv), y)
    return (1 - config.mix) * clean + config.mix * adversarial


@register_training_mode("mixed-pgd")
def mixed_pgd_loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor, masks: torch.Tensor | None,
                   config: LossSettings) -> torch.Tensor:
    """Mixed PGD adversarial training: (1-mix)*CE(clean) + mix*CE(full-image PGD examples).

    The control of localized training for its clean share: the same mixture, the
    attack on the whole image. With ``mix = 0`` no example is made, so it is
    natural training step for step.
    """
    clean = nn.functional.cross_entropy(model(x), y)
    if config.mix == 0:
        return clean
    adversarial = nn.functional.cross_entropy(model(_adversarial_batch(model, x, y, config, None)), y)
    return (1 - config.mix) * clean + config.mix * adversarial


@register_training_mode("localized-random")
def localized_random_loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor, masks: torch.Tensor | None,
                          config: LossSettings) -> torch.Tensor:
    """The control of localized training for *where* it attacks: its loss with an attacked region of the same
    area per image at random positions, redrawn every batch (:func:`random_masks_like`, global torch stream)."""
    if masks is None:
        raise ConfigError(f"training mode 'localized-random' needs foreground masks (their areas); dataset "
                          f"{config.dataset!r} has none and no masks function was given")
    return localized_loss(model, x, y, random_masks_like(masks), config)


def random_masks_like(masks: torch.Tensor) -> torch.Tensor:
    """(N,H,W) bool masks with as many True pixels per image as ``masks``, at uniformly random positions
    (one draw of the global torch stream per call; of the whole global batch's under DistributedDataParallel,
    ``masks`` being the shard's)."""
    n = masks.shape[0]
    flat = masks.reshape(n, -1)
    shard = current_shard()
    if shard is None:
        keys = torch.rand(flat.shape, device=masks.device)
    else:
        keys = torch.rand((shard.size, flat.shape[1]), device=masks.device)[shard.positions.to(masks.device)]
    ranks = keys.argsort(dim=1).argsort(dim=1)
    return (ranks < flat.sum(1, keepdim=True)).reshape(masks.shape)
