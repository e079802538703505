"""Per-image rows and bounded stores of kept images: what the experiments' batch loops share.

Every experiment turns a batch's per-image columns into rows (``per_image.csv``) and keeps the first
successful images for the statistics and the figures, with memory bounded for any n.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch

from ...statistics.store import Store


def per_image_rows(columns: Mapping[str, torch.Tensor], **constants: Any) -> list[dict[str, Any]]:
    """One dict per image: the ``constants`` first, then every column's value for that image (as Python values)."""
    lists = {k: v.tolist() for k, v in columns.items()}
    n = len(next(iter(lists.values()), []))
    return [{**constants, **{k: lists[k][i] for k in columns}} for i in range(n)]


def keep_first(store: dict[str, list[torch.Tensor]], limit: int, keep: torch.Tensor, **values: torch.Tensor) -> None:
    """Append ``values[keep]`` (on the CPU) to ``store`` until it holds ``limit`` images in all, counted by its
    ``labels`` (bounded memory for any n); ``store`` maps each key to a list of per-batch tensors."""
    have = sum(len(t) for t in store.get("labels", []))
    chosen = keep.nonzero().squeeze(1)[: max(limit - have, 0)]
    for key, value in values.items():
        store[key].append(value[chosen].cpu())


def keep_first_images(parts: list[Store], limit: int, keep: torch.Tensor, batch: Store) -> None:
    """Append the images of ``batch`` where ``keep`` (on the CPU) to ``parts`` until they hold ``limit`` images in
    all (bounded memory for any n): :func:`keep_first` for a typed store."""
    have = sum(len(part) for part in parts)
    parts.append(batch.select(keep.nonzero().squeeze(1)[: max(limit - have, 0)]))


def keep_across_classes(store: dict[str, list[torch.Tensor]], limit: int, keep: torch.Tensor, classes: int,
                        **values: torch.Tensor | Callable[[torch.Tensor], torch.Tensor]) -> None:
    """Like :func:`keep_first`, but drawn across classes: an image is kept only while its class holds fewer than
    ``max(1, limit // classes)`` of the kept images, so a figure of ``limit`` examples shows as many classes as it
    can, whatever the order of the data (a class-sorted folder would otherwise give only its first class).

    A value may be a function of the chosen images' positions in the batch (a LongTensor, maybe empty) that gives
    their values, for values that cost to make (images decoded from files): only the chosen ones are made.
    """
    labels = values["labels"]
    assert isinstance(labels, torch.Tensor)  # the choice is made on the labels themselves
    held = torch.cat(store["labels"]) if store.get("labels") else torch.zeros(0, dtype=labels.dtype)
    per_class = max(1, limit // max(classes, 1))
    counts: dict[int, int] = {}
    for c in held.tolist():
        counts[c] = counts.get(c, 0) + 1
    chosen: list[int] = []
    for i in keep.nonzero().squeeze(1).tolist():
        c = int(labels[i])
        if len(held) + len(chosen) >= limit:
            break
        if counts.get(c, 0) < per_class:
            counts[c] = counts.get(c, 0) + 1
            chosen.append(i)
    index = torch.tensor(chosen, dtype=torch.long)
    for key, value in values.items():
        store[key].append((value(index) if callable(value) else value[index.to(value.device)]).cpu())
