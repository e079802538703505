"""The pre-declared claims of experiment ``localized-training``, paired per image (:mod:`..paired`), corrected and
judged by fixed rules (:func:`advspatial.regions.claims.judge`): a claim that rests on a map that failed the
faithfulness gate is "not interpretable"."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from ...data import ImageDataset
from ...regions.claims import Claim, judge
from ..gate import roi_label
from ..paired import paired_claim
from .config import CONTROLS, MODE_NAMES, MODES, ROI_GATE, LocalizedConfig, condition_labels, region_names
from .region import mask_uses_importance
from .stages import ModelEvaluation


def correctness(evs: list[ModelEvaluation], cond: str, labels: torch.Tensor) -> torch.Tensor:
    """Per image, the share of the models ``evs`` (one per training seed) correct under ``cond``."""
    return torch.stack([(ev.preds[cond].cpu() == labels).double() for ev in evs]).mean(0)


def accuracy_claim(config: LocalizedConfig, labels: torch.Tensor, evaluations: dict[str, ModelEvaluation],
                   cond: str, a: str, b: str, gates: dict[str, bool], primary: bool,
                   seeds: dict[str, list[ModelEvaluation]] | None = None) -> Claim:
    """Model ``a`` vs model ``b`` under condition ``cond``: per image correct_a - correct_b on the same images,
    each image's correctness averaged over the training seeds' models (``seeds``: those beyond the first)."""
    label = condition_labels(config)[cond]
    attacked = evaluations[a].preds[cond].cpu() != -1  # the ensemble attacks the first ensemble_n images only
    more = seeds or {}
    correct_a = correctness([evaluations[a], *more.get(a, [])], cond, labels)[attacked]
    correct_b = correctness([evaluations[b], *more.get(b, [])], cond, labels)[attacked]
    return paired_claim(f"{MODE_NAMES[a]} training raises {label} accuracy over {MODE_NAMES[b]} training",
                        f"{a} vs {b} model", f"{label} accuracy", f"{b} model", correct_a, correct_b, config.seed,
                        primary, gates, shares=True)


def energy_claim(config: LocalizedConfig, mode: str, ev: ModelEvaluation, gate_passed: bool,
                 primary: bool = True) -> Claim:
    """A region-only attack draws the true class's map into the attacked region: per image, its share of the map
    in the region after the attack minus on the clean image (images with a map that is all zero are left out)."""
    region = region_names(config.mask)[0]
    before = 1.0 - ev.cam_energy_clean.double().cpu()
    after = 1.0 - ev.cam_energy_adv.double().cpu()
    return paired_claim(f"{region}-only PGD draws the true class's {ev.importance} energy into the {region}",
                        f"{mode} model", f"{ev.importance} energy share in the {region}", "clean image", after, before,
                        config.seed, primary, {ROI_GATE: bool(gate_passed)})


def build_claims(config: LocalizedConfig, labels: torch.Tensor, evaluations: dict[str, ModelEvaluation],
                 gates: dict[str, dict[str, Any]], mask_gated: bool,
                 seeds: dict[str, list[ModelEvaluation]] | None = None) -> list[Claim]:
    """The pre-declared claims (not yet judged), primary first.

    Primary (Holm): localized training raises accuracy under the region-only
    ensemble (:func:`primary_condition`) over natural training, over PGD training,
    and over its two controls (mixed PGD training with the same clean share; the
    random-mask localized training); for the natural, PGD and localized models, the
    region-only PGD draws the importance map into the region. Secondary (BH): the
    other conditions (region-only PGD-20 among them, a diagnostic), the controls'
    energy shift, and PGD vs natural on the primary endpoint. Accuracy claims under
    a mask cut from the importance map carry the RoI gate of both models compared
    (``mask_gated``); mask-free ones carry none.
    """
    labels = labels.cpu()

    def acc_gates(cond: str, *modes: str) -> dict[str, bool]:
        if mask_gated and cond in ("region", "complement", "region-ensemble"):
            return {ROI_GATE: all(bool(gates[m]["passed"]) for m in modes)}
        return {}

    others = [m for m in MODES if m != "localized"]
    endpoint = primary_condition(config, evaluations["localized"].preds)
    claims = [accuracy_claim(config, labels, evaluations, endpoint, "localized", b,
                             acc_gates(endpoint, "localized", b), primary=True, seeds=seeds) for b in others]
    claims += [energy_claim(config, mode, evaluations[mode], gates[mode]["passed"], primary=mode not in CONTROLS)
               for mode in MODES]
    conditions = [c for c in evaluations["localized"].preds if c != endpoint]
    for cond in conditions:
        for b in others:
            claims.append(accuracy_claim(config, labels, evaluations, cond, "localized", b,
                                         acc_gates(cond, "localized", b), primary=False, seeds=seeds))
    claims.append(accuracy_claim(config, labels, evaluations, endpoint, "pgd", "natural",
                                 acc_gates(endpoint, "pgd", "natural"), primary=False, seeds=seeds))
    return claims


def primary_condition(config: LocalizedConfig, conditions: Mapping[str, Any]) -> str:
    """The primary endpoint: accuracy under the region-only ensemble (APGD-CE, APGD-DLR, Square restricted to
    the region), the strongest localized attack; region-only PGD is then a diagnostic. Without the ensemble
    (``ensemble_n`` 0, or no such condition among the evaluated ``conditions``) it is region-only PGD."""
    return "region-ensemble" if config.ensemble_n and "region-ensemble" in conditions else "region"


def measure(config: LocalizedConfig, data: ImageDataset, evaluations: dict[str, ModelEvaluation],
            gates: dict[str, dict[str, Any]], methods: dict[str, dict[str, str]],
            metrics: dict[str, Any], seeds: dict[str, list[ModelEvaluation]] | None = None) -> list[Claim]:
    """Claims, corrections and verdicts; the gate results and the RoI labels written into ``metrics``."""
    mask_gated = mask_uses_importance(config.mask, data)
    claims = judge(build_claims(config, data.labels, evaluations, gates, mask_gated, seeds), sesoi=config.sesoi,
                   alpha=config.significance)
    metrics["faithfulness"] = gates
    metrics["importance"] = {}
    for mode in MODES:
        label = roi_label(gates[mode]) or "interpretable"
        metrics["importance"][mode] = {**methods[mode], "faithful": bool(gates[mode]["passed"]),
                                       "interpretation": label}
        metrics["models"][mode]["cam_interpretation"] = label
        metrics["models"][mode]["mask_interpretation"] = label if mask_gated else "interpretable (mask-free)"
    metrics["mask_from_importance"] = mask_gated
    metrics["claims"] = [c.as_dict() for c in claims]
    return claims

