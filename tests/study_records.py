"""Synthetic study records: models whose per-image values and maps are known, for the cross-model analysis."""

from __future__ import annotations

import torch

from advspatial.studies.records import AttackRecord, ModelRecord, Values

CLASSES = 4


def values(ids: torch.Tensor, shift: float, seed: int, spread: float = 0.05) -> Values:
    """Per-image values around ``shift`` on a same-class null of 0.3."""
    noise = torch.randn(len(ids), generator=torch.Generator().manual_seed(seed), dtype=torch.float64) * spread
    v = noise + shift
    return Values(ids, v, v + 0.3, torch.full((len(ids),), 0.3, dtype=torch.float64))


def model(label: str, shift: float = 0.05, seed: int = 0, n: int = 60, faithful: bool = True,
          maps: torch.Tensor | None = None, parameters: int = 1000, depth: int = 4,
          attacks: tuple[str, ...] = ("pgd",), roi_status: str = "") -> ModelRecord:
    """A model record: ``n`` images of 4 classes, effect ``shift`` on both endpoints (the ``edges`` reference 0.01
    lower than the ``centre`` one, so ``edges`` is the worst), its maps (default random 8x8); its RoI gate
    ``roi_status`` (default: passed when ``faithful``, else failed; "undecided" leaves the claim gate open)."""
    ids = torch.arange(n)
    labels = ids % CLASSES
    grid = maps if maps is not None else torch.rand(n, 8, 8, generator=torch.Generator().manual_seed(seed + 100))
    records = {}
    for attack in attacks:
        excess = values(ids, shift, seed)
        beyond = {"centre": values(ids, shift, seed + 1), "edges": values(ids, shift - 0.01, seed + 2)}
        records[attack] = AttackRecord(attack, "contribution", ids, labels, grid, excess, beyond,
                                       {"RoI faithfulness": faithful, "completeness": True},
                                       {"excess": "supported", "beyond": "supported"})
    return ModelRecord(label, label, parameters, depth, (8, 8), 1.0, 0.9, 0.2, "gradcam",
                       roi_status or ("passed" if faithful else "failed"), ids, labels,
                       torch.ones(n, dtype=torch.bool), grid, records)
