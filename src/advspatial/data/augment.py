"""Training-time data augmentation: random horizontal flips and random crops of a reflect-padded image.

Why: a vision transformer trained from scratch on a few thousand images overfits within a few epochs; the
flip-and-crop augmentation of the CIFAR literature (He et al. 2016: 4 pixels of padding, a random 32x32 crop,
a flip with probability 1/2) is what lets ``vit-tiny`` learn the CIFAR-10 JPEG folder. Only training uses it
(:class:`advspatial.training.TrainConfig` ``augment``); the images of every experiment are never changed.

The draws are separate from the transform, so that the transform is a pure function of the images and the draws
(:func:`flip_crop`) and the draws come from a generator the caller seeds (:func:`draw_flip_crop`).

Examples:
    >>> import torch
    >>> from advspatial.data.augment import draw_flip_crop, flip_crop
    >>> x = torch.rand(4, 3, 32, 32)
    >>> flips, offsets = draw_flip_crop(4, pad=4, generator=torch.Generator().manual_seed(0))
    >>> flip_crop(x, flips, offsets, pad=4).shape
    torch.Size([4, 3, 32, 32])
"""

from __future__ import annotations

from typing import Any

import torch

from ..errors import ConfigError, unknown_name
from ..runtime import make_generator, stream_seed

#: the augmentations :class:`advspatial.training.TrainConfig` accepts
AUGMENTATIONS = ("none", "flip-crop")
#: pixels of reflect padding before the random crop (He et al. 2016 use 4 on 32x32 images)
CROP_PAD = 4
#: random stream of the augmentation's draws
AUGMENT_STREAM = 0xA0C


def check_augmentation(name: str, mode: str) -> None:
    """:class:`ConfigError` for an unknown augmentation, or one with a training ``mode`` whose loss reads foreground
    masks (``localized``...: a moved image no longer fits its mask)."""
    if name not in AUGMENTATIONS:
        raise unknown_name("augmentation", name, AUGMENTATIONS)
    if name != "none" and mode.startswith("localized"):
        raise ConfigError(f"augment={name!r} would move the images away from their foreground masks; valid with "
                          "the natural, pgd and mixed-pgd training modes")


class FlipCrop:
    """Flip-crop augmentation of training batches with draws from one generator seeded by ``seed``.

    ``augment(x)`` draws for the batch; ``augment(x, shard)`` with a shard of a global batch (``shard.size``
    images, this process's at ``shard.positions``, as under DistributedDataParallel) draws for the global batch
    and takes the shard's draws, so the images are augmented alike on any number of processes.
    """

    def __init__(self, seed: int, pad: int = CROP_PAD) -> None:
        self.pad = pad
        self.generator = make_generator(stream_seed(seed, AUGMENT_STREAM))

    def __call__(self, x: torch.Tensor, shard: Any = None) -> torch.Tensor:
        flips, offsets = draw_flip_crop(x.shape[0] if shard is None else int(shard.size), self.pad, self.generator)
        if shard is not None:
            flips, offsets = flips[shard.positions.cpu()], offsets[shard.positions.cpu()]
        return flip_crop(x, flips, offsets, self.pad)


def draw_flip_crop(n: int, pad: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """(flips (n,) bool, offsets (n, 2) int64 in [0, 2 pad]) for :func:`flip_crop`, drawn from ``generator``."""
    flips = torch.rand(n, generator=generator) < 0.5
    offsets = torch.randint(0, 2 * pad + 1, (n, 2), generator=generator)
    return flips, offsets


def flip_crop(x: torch.Tensor, flips: torch.Tensor, offsets: torch.Tensor, pad: int) -> torch.Tensor:
    """Images ``x`` (N,C,H,W) flipped left-right where ``flips`` is set, then cut at ``offsets`` (row, column)
    from the image reflect-padded by ``pad`` pixels: the same size, values from the image only."""
    if pad < 0 or (pad and pad >= min(x.shape[-2:])):
        raise ConfigError(f"crop padding must lie in [0, {min(x.shape[-2:]) - 1}] for {tuple(x.shape[-2:])} images, "
                          f"got {pad}")
    flipped = torch.where(flips.to(x.device).view(-1, 1, 1, 1), x.flip(-1), x)
    if not pad:
        return flipped
    padded = torch.nn.functional.pad(flipped, (pad, pad, pad, pad), mode="reflect")
    h, w = x.shape[-2:]
    return torch.stack([padded[i, :, int(r):int(r) + h, int(c):int(c) + w] for i, (r, c) in enumerate(offsets)])
