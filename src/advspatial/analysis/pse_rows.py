"""The per-image rows of a promotion–suppression measurement: one row per attacked image, its outcome and typing.

A row holds the attack's outcome, the typing of the pre-specified class t (isolated, and leave-one-out
``loo:``), the post-hoc view (``posthoc:``, t = the class the attack reached), the whole-perturbation and per-group
effects, and the energy shares of the typing beside those of its random-sign control (``control:energy:``). An
experiment's statistics are computed from these rows, so the statistics and ``per_image.csv`` always agree.
"""

from __future__ import annotations

from typing import Any

import torch

from ..attacks.base import AttackResult
from .pse import TYPE_NAMES, PSEResult, secondary_view
from .pse_control import SHARE_NAMES, energy_shares, untyped_count_share
from .pse_targets import adversarial_class


def type_columns(prefix: str, pse: PSEResult) -> dict[str, torch.Tensor]:
    """Per-image share and group count of each type: the columns ``{prefix}share:{type}``, ``{prefix}groups:{type}``."""
    out: dict[str, torch.Tensor] = {}
    for t, name in enumerate(TYPE_NAMES):
        out[f"{prefix}share:{name}"] = pse.shares[:, t]
        out[f"{prefix}groups:{name}"] = (pse.types == t).sum(1)
    return out


def type_name_list(pse: PSEResult) -> list[str]:
    """The dominant type of each image by name ('none' when no group is typed)."""
    return ["none" if int(c) < 0 else TYPE_NAMES[int(c)] for c in pse.perturbation_type]


def energy_columns(pse: PSEResult, control: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per-image share of the whole perturbation energy of each type and untyped (``energy:{name}``), the same of
    its random-sign control (``control:energy:{name}``, (N,5) in :data:`SHARE_NAMES` order), and the untyped share
    of the perturbed groups by count."""
    observed = energy_shares(pse.types, pse.energy)
    out = {"untyped_count_share": untyped_count_share(pse.types)}
    for k, name in enumerate(SHARE_NAMES):
        out[f"energy:{name}"] = observed[:, k]
        out[f"control:energy:{name}"] = control[:, k]
    return out


def pse_rows(ids: torch.Tensor, y: torch.Tensor, pred: torch.Tensor, result: AttackResult, pse: PSEResult,
             loo: PSEResult, ok: torch.Tensor, control: torch.Tensor, **constants: Any) -> list[dict[str, Any]]:
    """One row per image of a batch: the ``constants`` (e.g. the attack's name), the attack's outcome, perturbation
    type and shares (pre-specified t, isolated; leave-one-out ``loo``; post-hoc t as the secondary view), totals,
    untyped groups, and the energy shares of the typing with those of its random-sign ``control`` ((N,5), NaN for
    images without one). ``ok``: the successful attacks (clean-correct and fooled)."""
    posthoc = secondary_view(pse)
    columns: dict[str, torch.Tensor] = {
        "index": ids, "label": y, "clean_pred": pred, "correct": pred == y,
        "target": pse.target_class, "posthoc_target": adversarial_class(result), "adv_pred": result.adv_pred,
        "success": result.success, "successful": ok, "l2": result.l2, "linf": result.linf,
        "groups_perturbed": (pse.energy > 0).sum(1), "groups_untyped": pse.untyped, "loo:groups_untyped": loo.untyped,
        "s_total": pse.s_total, "p_total": pse.p_total,
        "s_groups_sum": pse.s.sum(1), "p_groups_sum": pse.p.sum(1),
        "loo:s_groups_sum": loo.s.sum(1), "loo:p_groups_sum": loo.p.sum(1),
        **type_columns("", pse), **type_columns("loo:", loo), **type_columns("posthoc:", posthoc),
        **energy_columns(pse, control),
    }
    lists: dict[str, list[Any]] = {k: v.tolist() for k, v in columns.items()}
    lists |= {"perturbation_type": type_name_list(pse), "loo:perturbation_type": type_name_list(loo),
              "posthoc:perturbation_type": type_name_list(posthoc)}
    return [{**constants, **{k: v[i] for k, v in lists.items()}} for i in range(len(ids))]
