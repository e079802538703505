"""The per-image rows of experiment ``propagation`` (``per_image.csv``): one row per image and k with the attack's
outcome and pixels, then each random control's reach and the locality counts of the successful attacks (blank
elsewhere). Every summary metric is computed from these rows."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch

from ...analysis.propagation import CONTROL_MODES
from ...attacks import AttackResult
from .pixels import format_pixels


def attack_rows(k: int, ids: torch.Tensor, result: AttackResult, ok: torch.Tensor, pixels: torch.Tensor,
                colours: torch.Tensor, peak: torch.Tensor) -> list[dict[str, Any]]:
    """One row per image of a batch: the attack's outcome and, where it succeeded, its pixels."""
    pos, col = format_pixels(pixels, colours)
    columns = {"index": ids, "label": result.labels, "clean_pred": result.clean_pred,
               "correct": result.clean_pred == result.labels, "success": result.success, "analysed": ok,
               "adv_pred": result.adv_pred, "queries": result.queries, "l0": result.l0, "pm_peak_last": peak}
    lists = {name: values.tolist() for name, values in columns.items()}
    out = []
    for i in range(len(ids)):
        row = {"k": k, **{name: lists[name][i] for name in columns}}
        row["pixels"] = pos[i] if lists["success"][i] else ""
        row["colours"] = col[i] if lists["success"][i] else ""
        out.append(row)
    return out


def add_control_columns(rows: list[dict[str, Any]], ok: torch.Tensor, stats: Mapping[str, Any]) -> None:
    """Per successful image: each control's peak PMmax at the last layer and whether it fooled the model."""
    j = 0
    for row, analysed_ in zip(rows, ok.tolist(), strict=True):
        for mode in CONTROL_MODES:
            row[f"control_{mode}_peak_last"] = ""
            row[f"control_{mode}_fooled"] = ""
        if not analysed_:
            continue
        for mode in CONTROL_MODES:
            c = stats["controls"][mode]
            if bool(c["available"][j]):
                row[f"control_{mode}_peak_last"] = float(c["peak"][j, -1])
                row[f"control_{mode}_fooled"] = bool(c["fooled"][j] == 1)
        j += 1


def add_locality_columns(rows: list[dict[str, Any]], index: torch.Tensor, loc: Mapping[str, torch.Tensor],
                         radii: Sequence[int]) -> None:
    """Per successful image: variants tried and fooled at each radius and at random positions (blank elsewhere)."""
    keys = [f"ring{r}" for r in radii]
    matched = [f"matched{r}" for r in radii]
    for row in rows:
        for key in ("original_fooled", *(f"{p}_{s}" for p in (*keys, "random", *matched) for s in ("n", "fooled"))):
            row[key] = ""
    position = {int(i): j for j, i in enumerate(index.tolist())}
    for row in rows:
        j = position.get(int(row["index"])) if row["analysed"] else None
        if j is None:
            continue
        row["original_fooled"] = bool(loc["original_success"][j])
        for col, key in enumerate(keys):
            row[f"{key}_n"] = int(loc["ring_counts"][j, col])
            row[f"{key}_fooled"] = int(loc["ring_successes"][j, col])
        row["random_n"] = int(loc["random_counts"][j])
        row["random_fooled"] = int(loc["random_successes"][j])
        for col, key in enumerate(matched if loc.get("matched_counts") is not None else []):
            row[f"{key}_n"] = int(loc["matched_counts"][j, col])
            row[f"{key}_fooled"] = int(loc["matched_successes"][j, col])



def add_reach_column(rows: list[dict[str, Any]], peak: torch.Tensor) -> None:
    """Per row, ``random_peak_last``: its image's last-layer peak PMmax of the random one-pixel changes (the
    propagation-per-se claim's per-image value; the same for every k, blank with no recorded layer)."""
    for row in rows:
        row["random_peak_last"] = float(peak[int(row["index"]), -1]) if peak.shape[-1] else ""
