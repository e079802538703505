"""Choosing n images of a dataset: the first n, a seeded random draw, or a seeded stratified draw.

``stratified`` gives every class as equal a share as possible: a class with
fewer images than its share gives all it has and its remainder goes to the
others; when the rest does not divide evenly, the seeded generator decides
which classes get one more. All draws use one ``torch.Generator`` seeded by
``seed``, so (labels, n, mode, seed) always gives the same indices. A draw for
a larger n need not contain the draw for a smaller one.
"""

from __future__ import annotations

import torch

from ..errors import ConfigError
from .base import ImageDataset

SUBSET_MODES = ("first", "stratified", "random")


def subset_indices(labels: torch.Tensor, n: int, mode: str, seed: int) -> torch.Tensor:
    """Sorted int64 dataset indices of ``min(n, len(labels))`` images chosen by ``mode`` (module doc)."""
    if mode not in SUBSET_MODES:
        raise ConfigError(f"subset mode {mode!r} is not valid; valid: {', '.join(SUBSET_MODES)}")
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ConfigError(f"n={n!r} is out of range; valid: an integer >= 1")
    labels = torch.as_tensor(labels).reshape(-1)
    k = min(n, len(labels))
    gen = torch.Generator().manual_seed(int(seed))
    if mode == "first":
        return torch.arange(k, dtype=torch.int64)
    if mode == "random":
        chosen = torch.randperm(len(labels), generator=gen)[:k]
    else:
        chosen = _stratified(labels, k, gen)
    return chosen.to(torch.int64).sort().values


def class_quotas(counts: torch.Tensor, k: int, gen: torch.Generator) -> torch.Tensor:
    """How many of ``k`` images each class gives: equal shares, capped by ``counts``, the +1s drawn by ``gen``."""
    quotas = torch.zeros_like(counts)
    remaining, left = k, len(counts)
    order = torch.argsort(counts, stable=True)
    for position, c in enumerate(order.tolist()):
        share = remaining // left
        if counts[c] > share:  # this class and all larger ones can give a full share (+1)
            rest = order[position:]
            quotas[rest] = share
            extra = rest[torch.randperm(len(rest), generator=gen)[: remaining - share * len(rest)]]
            quotas[extra] += 1
            return quotas
        quotas[c] = counts[c]
        remaining -= int(counts[c])
        left -= 1
    return quotas


def _stratified(labels: torch.Tensor, k: int, gen: torch.Generator) -> torch.Tensor:
    """Indices of a stratified draw of ``k`` images (classes in sorted label order)."""
    classes, counts = torch.unique(labels, sorted=True, return_counts=True)
    quotas = class_quotas(counts, k, gen)
    picked = []
    for cls, quota in zip(classes.tolist(), quotas.tolist(), strict=True):
        members = torch.nonzero(labels == cls).reshape(-1)
        picked.append(members[torch.randperm(len(members), generator=gen)[:quota]])
    return torch.cat(picked) if picked else torch.empty(0, dtype=torch.int64)


def select(data: ImageDataset, n: int, mode: str, seed: int) -> ImageDataset:
    """``data.subset`` of the images :func:`subset_indices` picks; ids (and laziness) are kept."""
    return data.subset(subset_indices(data.labels, n, mode, seed))
