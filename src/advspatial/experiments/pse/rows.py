"""The per-image rows of a promotion–suppression measurement, and what the typing explains over them.

A row (:func:`pse_rows`) holds the attack's outcome, the typing of the pre-specified class t (isolated, and
leave-one-out ``loo:``), the post-hoc view (``posthoc:``, t = the class the attack reached), the whole-perturbation
and per-group effects, and the energy shares of the typing beside those of its random-sign control
(``control:energy:``). The statistics are computed from these rows (:func:`typing_of`), so they and
``per_image.csv`` always agree.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from ...analysis.pse_cam import PSECamResult
from ...analysis.pse_types import TYPE_NAMES, PSEResult, secondary_view
from ...attacks.base import AttackResult
from ...statistics.estimates import finite_mean
from ...statistics.inference import ratio_to_null
from .control import CONTROL, SHARE_NAMES, energy_shares, untyped_count_share
from .targets import adversarial_class


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


@dataclass
class Additivity:
    """The whole-delta effects beside the sums of the isolated and leave-one-out group effects, and their ratios."""

    s_total: float
    s_isolated_sum: float
    s_leave_one_out_sum: float
    p_total: float
    p_isolated_sum: float
    p_leave_one_out_sum: float
    s_isolated_over_total: float
    s_leave_one_out_over_total: float
    p_isolated_over_total: float
    p_leave_one_out_over_total: float


@dataclass
class UntypedShare:
    """The untyped share of the perturbation: of its groups (pooled over images) and of its energy."""

    by_count: float
    by_energy: float


@dataclass
class Typing:
    """What the typing explains: energy shares by type and untyped, those of the random-sign control, additivity."""

    energy_shares: dict[str, float]
    control_energy_shares: dict[str, float]
    control: str
    untyped_share: UntypedShare
    additivity: Additivity


#: the two CAMs of the image-level test, as they prefix the rows' overlap columns (``true_cam:suppression``)
CAM_KEYS = ("true_cam", "target_cam")


def cam_columns(rows: Sequence[dict[str, Any]], test: PSECamResult | None, ids: torch.Tensor) -> None:
    """Write into ``rows`` whether each image entered the image-level ``test`` (``in_cam_test``) and its share of
    each type inside each CAM region (``{cam}:{type}``; NaN for an image outside the test). ``ids``: the global
    sample ids of the tested images, in the test's order."""
    by_index = {int(i): k for k, i in enumerate(ids)} if test is not None else {}
    for row in rows:
        k = by_index.get(row["index"])
        row["in_cam_test"] = k is not None
        for key in CAM_KEYS:
            for t, name in enumerate(TYPE_NAMES):
                row[f"{key}:{name}"] = float(getattr(test, key).per_image[k, t]) if k is not None else math.nan


def energy_shares_of(rows: Sequence[Mapping[str, Any]], prefix: str = "") -> dict[str, list[float]]:
    """Per-image energy shares (``{prefix}energy:{name}``) of ``rows``, by share name: ``prefix`` "control:" gives
    those of the random-sign control."""
    return {name: [float(r[f"{prefix}energy:{name}"]) for r in rows] for name in SHARE_NAMES}


def column_mean(rows: Sequence[Mapping[str, Any]], column: str) -> float:
    """Mean of a column over ``rows``, NaN cells left out (NaN when none is left)."""
    return finite_mean([r[column] for r in rows])


def typing_of(ok: Sequence[Mapping[str, Any]]) -> Typing:
    """What the typing explains over the successful images ``ok``: the mean energy share of each type and untyped
    (denominator: the whole perturbation's energy) with those of the random-sign control; the untyped share by count
    (pooled over images) and by energy; the additivity gap (ratios of the mean sums to the whole-delta effect)."""
    s, p = column_mean(ok, "s_total"), column_mean(ok, "p_total")
    sums = {k: column_mean(ok, k) for k in ("s_groups_sum", "loo:s_groups_sum", "p_groups_sum", "loo:p_groups_sum")}
    return Typing(
        {name: column_mean(ok, f"energy:{name}") for name in SHARE_NAMES},
        {name: column_mean(ok, f"control:energy:{name}") for name in SHARE_NAMES},
        f"{CONTROL}: every element of delta with an independent random sign (same per-group energy and place), typed "
        "with the attack's absolute noise floor",
        UntypedShare(ratio_to_null(sum(r["groups_untyped"] for r in ok), sum(r["groups_perturbed"] for r in ok)),
                     column_mean(ok, "energy:untyped")),
        Additivity(s, sums["s_groups_sum"], sums["loo:s_groups_sum"], p, sums["p_groups_sum"], sums["loo:p_groups_sum"],
                   ratio_to_null(sums["s_groups_sum"], s), ratio_to_null(sums["loo:s_groups_sum"], s),
                   ratio_to_null(sums["p_groups_sum"], p), ratio_to_null(sums["loo:p_groups_sum"], p)))


@dataclass(kw_only=True)
class RowStatistics:
    """The statistics of one attack's rows: its outcome (success rate on the correctly classified images; norms,
    reached t, untyped groups and mean effects over the successful ones), the dominant types and mean shares of the
    three views, the CAM overlap shares of the images in the image-level test, and what the typing explains."""

    images: int
    clean_accuracy: float
    success_rate: float
    successful: int
    mean_l2: float
    mean_linf: float
    reached_target: float
    untyped_groups: int
    perturbed_groups: int
    loo_untyped_groups: int
    mean_s_total: float
    mean_p_total: float
    mean_s_groups_sum: float
    mean_p_groups_sum: float
    mean_loo_s_groups_sum: float
    mean_loo_p_groups_sum: float
    cam_test_images: int
    type_fractions: dict[str, float]
    mean_shares: dict[str, float]
    type_fractions_loo: dict[str, float]
    mean_shares_loo: dict[str, float]
    type_fractions_posthoc: dict[str, float]
    mean_shares_posthoc: dict[str, float]
    true_cam_observed: dict[str, float]
    target_cam_observed: dict[str, float]
    typing: Typing


def row_statistics(rows: Sequence[Mapping[str, Any]]) -> RowStatistics:
    """The :class:`RowStatistics` of one attack's rows (successful: clean-correct and fooled)."""
    correct = [r for r in rows if r["correct"]]
    ok = [r for r in rows if r["successful"]]
    tested = [r for r in ok if r.get("in_cam_test")]

    def fractions(prefix: str) -> dict[str, float]:
        return {t: finite_mean([float(r[f"{prefix}perturbation_type"] == t) for r in ok]) for t in TYPE_NAMES}

    def shares(group: Sequence[Mapping[str, Any]], prefix: str) -> dict[str, float]:
        return {t: column_mean(group, f"{prefix}{t}") for t in TYPE_NAMES}

    typing = typing_of(ok)
    add = typing.additivity
    return RowStatistics(
        images=len(rows), clean_accuracy=finite_mean([float(r["correct"]) for r in rows]),
        success_rate=finite_mean([float(r["success"]) for r in correct]), successful=len(ok),
        mean_l2=column_mean(ok, "l2"), mean_linf=column_mean(ok, "linf"),
        reached_target=finite_mean([float(r["adv_pred"] == r["target"]) for r in ok]),
        untyped_groups=sum(r["groups_untyped"] for r in ok), perturbed_groups=sum(r["groups_perturbed"] for r in ok),
        loo_untyped_groups=sum(r["loo:groups_untyped"] for r in ok), mean_s_total=add.s_total,
        mean_p_total=add.p_total, mean_s_groups_sum=add.s_isolated_sum, mean_p_groups_sum=add.p_isolated_sum,
        mean_loo_s_groups_sum=add.s_leave_one_out_sum, mean_loo_p_groups_sum=add.p_leave_one_out_sum,
        cam_test_images=len(tested), type_fractions=fractions(""), mean_shares=shares(ok, "share:"),
        type_fractions_loo=fractions("loo:"), mean_shares_loo=shares(ok, "loo:share:"),
        type_fractions_posthoc=fractions("posthoc:"), mean_shares_posthoc=shares(ok, "posthoc:share:"),
        true_cam_observed=shares(tested, "true_cam:"), target_cam_observed=shares(tested, "target_cam:"), typing=typing)
