"""Per-image rows and bounded stores of kept images: what the experiments' batch loops share.

Every experiment turns a batch's per-image columns into rows (``per_image.csv``) and keeps the first
successful images for the statistics and the figures, with memory bounded for any n.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch


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
