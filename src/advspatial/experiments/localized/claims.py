"""The pre-declared claims of experiment ``localized-training``, paired per image within each training seed
(:func:`..paired.seeded_claim`: the seed is the unit of a claim about a training procedure), corrected and judged by
fixed rules (:func:`advspatial.statistics.claims.judge`): a claim that rests on a map that failed the faithfulness gate
is "not interpretable"; one on fewer than 3 seeds "insufficient data"; "supported" needs its sign in every seed."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from ...faithfulness.record import GateResult
from ...statistics.claims import Claim
from ..paired import seeded_claim
from ..measurement.roi import with_roi_caveat
from .config import CONTROLS, MODE_NAMES, MODES, ROI_GATE, LocalizedConfig, condition_labels, region_names
from .stages import ModelEvaluation


def seed_evaluations(evaluations: dict[str, ModelEvaluation], seeds: dict[str, list[ModelEvaluation]] | None,
                     mode: str) -> list[ModelEvaluation]:
    """The evaluations of ``mode``'s models in training-seed order: the first seed's, then ``seeds[mode]``."""
    return [evaluations[mode], *(seeds or {}).get(mode, [])]


def correctness(evs: list[ModelEvaluation], cond: str, labels: torch.Tensor) -> torch.Tensor:
    """(S, N): per training seed's model (``evs``) and image, 1.0 when it is correct under ``cond``."""
    return torch.stack([(ev.preds[cond].cpu() == labels).double() for ev in evs])


def accuracy_claim(config: LocalizedConfig, labels: torch.Tensor, evaluations: dict[str, ModelEvaluation],
                   cond: str, a: str, b: str, gates: dict[str, bool], primary: bool,
                   seeds: dict[str, list[ModelEvaluation]] | None = None) -> Claim:
    """Training procedure ``a`` vs ``b`` under condition ``cond``: per training seed and image correct_a -
    correct_b on the same images (seed k of ``a`` against seed k of ``b``; ``seeds``: the models beyond the
    first seed), with each seed's own Δ and a CI over seeds and images (:func:`..paired.seeded_claim`)."""
    label = condition_labels(config)[cond]
    attacked = evaluations[a].preds[cond].cpu() != -1  # the ensemble attacks the first ensemble_n images only
    correct_a = correctness(seed_evaluations(evaluations, seeds, a), cond, labels)[:, attacked]
    correct_b = correctness(seed_evaluations(evaluations, seeds, b), cond, labels)[:, attacked]
    return seeded_claim(f"{MODE_NAMES[a]} training raises {label} accuracy over {MODE_NAMES[b]} training",
                        f"{a} vs {b} model", f"{label} accuracy", f"{b} model", correct_a, correct_b, primary,
                        gates, shares=True)


def energy_claim(config: LocalizedConfig, mode: str, evs: list[ModelEvaluation], gate_passed: bool,
                 primary: bool = True) -> Claim:
    """A region-only attack draws the true class's map into the attacked region: per training seed's model
    (``evs``) and image, its share of the map in the region after the attack minus on the clean image (images
    with a map that is all zero on some seed's model are left out). The gate is the first seed's model's
    (``gate_passed``: it did not fail)."""
    region = region_names(config.mask)[0]
    before = torch.stack([1.0 - ev.cam_energy_clean.double().cpu() for ev in evs])
    after = torch.stack([1.0 - ev.cam_energy_adv.double().cpu() for ev in evs])
    return seeded_claim(f"{region}-only PGD draws the true class's {evs[0].importance} energy into the {region}",
                        f"{mode} model", f"{evs[0].importance} energy share in the {region}", "clean image", after,
                        before, primary, {ROI_GATE: bool(gate_passed)})


def build_claims(config: LocalizedConfig, labels: torch.Tensor, evaluations: dict[str, ModelEvaluation],
                 gates: dict[str, GateResult], mask_gated: bool,
                 seeds: dict[str, list[ModelEvaluation]] | None = None) -> list[Claim]:
    """The pre-declared claims (not yet judged), primary first.

    Primary (Holm): localized training raises accuracy under the region-only
    ensemble (:func:`primary_condition`) over natural training, over PGD training,
    and over its two controls (mixed PGD training with the same clean share; the
    random-mask localized training); for the natural, PGD and localized models, the
    region-only PGD draws the importance map into the region. Secondary (BH): the
    other conditions (region-only PGD-20 among them, a diagnostic), the controls'
    energy shift, and PGD vs natural on the primary endpoint. Every claim is about a
    training procedure: per training seed (``seeds``: the models beyond the first
    seed's ``evaluations``) and image, with each seed's own Δ and a CI over seeds
    and images (:func:`..paired.seeded_claim`); fewer than 3 seeds -> "insufficient
    data", and "supported" needs the sign in every seed. Accuracy claims under
    a mask cut from the importance map carry the RoI gate of both models compared
    (``mask_gated``); mask-free ones carry none.
    """
    labels = labels.cpu()

    def accuracy(cond: str, a: str, b: str, primary: bool) -> Claim:
        gated = mask_gated and cond in ("region", "complement", "region-ensemble")
        claim = accuracy_claim(config, labels, evaluations, cond, a, b,
                               {ROI_GATE: not (gates[a].failed or gates[b].failed)} if gated else {},
                               primary=primary, seeds=seeds)
        return with_roi_caveat(with_roi_caveat([claim], gates[a]), gates[b])[0] if gated else claim

    others = [m for m in MODES if m != "localized"]
    endpoint = primary_condition(config, evaluations["localized"].preds)
    claims = [accuracy(endpoint, "localized", b, True) for b in others]
    claims += [with_roi_caveat([energy_claim(config, mode, seed_evaluations(evaluations, seeds, mode),
                                             not gates[mode].failed, primary=mode not in CONTROLS)], gates[mode])[0]
               for mode in MODES]
    conditions = [c for c in evaluations["localized"].preds if c != endpoint]
    claims += [accuracy(cond, "localized", b, False) for cond in conditions for b in others]
    claims.append(accuracy(endpoint, "pgd", "natural", False))
    return claims


def primary_condition(config: LocalizedConfig, conditions: Mapping[str, Any]) -> str:
    """The primary endpoint: accuracy under the region-only ensemble (APGD-CE, APGD-DLR, Square restricted to
    the region), the strongest localized attack; region-only PGD is then a diagnostic. Without the ensemble
    (``ensemble_n`` 0, or no such condition among the evaluated ``conditions``) it is region-only PGD."""
    return "region-ensemble" if config.ensemble_n and "region-ensemble" in conditions else "region"

