"""The RoI/RoA measurement's inference (METHODS.md §1): the co-location comparisons against the nulls, the
explainer-sensitivity panel, the claims, their corrections and verdicts (:class:`~.findings.Measured`); the
gates they rest on come from :func:`~.gate.run_gates`."""

from __future__ import annotations

from typing import Any

import torch

from ...faithfulness.record import GateResult
from ...regions import binarize
from ...regions.references import REFERENCE_WORDS
from ...statistics.claims import Claim, claim_from, judge
from ...statistics.inference import NullComparison
from ...statistics.store import PRIMARY_STATISTIC, Store, StoreComparison, compare_store
from ...statistics.verdicts import SESOI_SETTING_DEFAULT
from . import colocation
from .decomposition import decompose, headline_sentence
from .gate import fraction_key
from .roi import Roi, with_roi_caveat
from .config import MeasurementConfig
from .findings import AttackOutcome, Measured, PanelRow
from .stages import AttackSummary, Context


def infer(ctx: Context[MeasurementConfig], summaries: list[AttackSummary], attacks: dict[str, AttackOutcome],
          gates: dict[str, GateResult], roi: Roi) -> Measured:
    """The RoI/RoA inference: engine results, claims, corrections and verdicts, for the RoI judged by its gate
    (``roi``). Each kept store enters the engine once (:func:`~advspatial.statistics.store.compare_store`; the
    defence attack's main store brings the explainer panel's RoIs)."""
    cfg = ctx.config
    roi_gate = gates[ctx.importance]
    inference: dict[str, dict[str, Any]] = {}
    content: dict[str, dict[str, Any]] = {}
    claims: list[Claim] = []
    panel_of: list[Claim] | None = None
    for s in summaries:
        main = s.kinds()[0]
        for kind in s.kinds():
            subject = f"{s.name} ({kind} RoA)"
            gate_set = claim_gates(roi_gate, attacks[s.name].maps[kind], cfg)
            if s.kept(kind) < 3:
                continue
            store = s.store(kind)
            if s.norm == "l0":
                claims += with_roi_caveat(colocation.pixel_claims(store, subject, gate_set, cfg.permutations,
                                                                  cfg.seed), roi_gate)
                continue
            panel_store = (s.name, kind) == (cfg.defence_attack, cfg.attack_map)
            rois = panel_rois(ctx, store) if panel_store else {}
            result = compare_store(store, cfg.permutations, cfg.seed, cfg.strata,
                                              panel={key: mask for key, (_, mask) in rois.items()})
            if panel_store:
                panel_of = panel_claims(s.name, rois, result.panel, gates, attacks[s.name].maps[kind], cfg)
            inference.setdefault(s.name, {})[kind] = colocation.comparisons_dict(result.comparisons)
            claims += with_roi_caveat(content_claims(
                result, store, subject, s.name, kind, gate_set, primary=kind == main,
                out=content.setdefault(s.name, {}), cfg=cfg), roi_gate)
            claims += with_roi_caveat(colocation.attack_claims(subject, result.comparisons, gate_set, primary=False),
                                      roi_gate)
    panel = None
    if panel_of is not None:
        panel = [PanelRow(c.subject, c.observed, c.null_value, c.effect.as_dict(), c.p) for c in panel_of]
        claims += panel_of
    judge(claims, sesoi=cfg.sesoi, alpha=cfg.significance)
    return Measured(gates, roi, inference, content or None, panel, claims, roi.interpretation)


def content_claims(result: StoreComparison, store: Store, subject: str, attack: str, kind: str,
                   gates: dict[str, bool], primary: bool, out: dict[str, Any], cfg: MeasurementConfig) -> list[Claim]:
    """Where the attack falls beyond layout and image content: the decomposition against every region of the same
    size (:mod:`~.decomposition`) with its plain sentence, the layout steps (written into
    ``out[kind]``), the primary claim over the decomposition's rows and the reference RoIs' own rows."""
    steps = colocation.layout_steps(result.comparisons[PRIMARY_STATISTIC])
    parts = decompose(attack, kind, result, float(store.roi.float().mean()), cfg.sesoi / SESOI_SETTING_DEFAULT,
                      cfg.seed, roi_faithful=gates.get("RoI faithfulness", True))
    out[kind] = {"references": colocation.comparisons_dict(result.references),
                 "beyond": {r: d.as_dict() for r, d in result.beyond.items()}, "layout": steps,
                 "decomposition": parts.as_dict(), "sentence": headline_sentence(parts)}
    claims = [colocation.headline_claim(subject, result, parts, gates)] if primary and result.beyond else []
    model_free = {k: v for k, v in gates.items() if k != "RoI faithfulness"}   # a reference needs no faithful RoI
    for name, by_null in result.references.items():
        words = REFERENCE_WORDS[name]
        for comparison in by_null.values():
            claims.append(claim_from(comparison, f"the attack co-locates with {words}", f"{subject}: {name} RoI",
                                     model_free))
    return claims


def claim_gates(roi_gate: GateResult, map_stats: dict[str, Any], cfg: MeasurementConfig) -> dict[str, bool]:
    """The validity gates of a co-location claim: the RoI is not shown unfaithful (its gate did not fail: an
    undecided gate puts a caveat on the claim instead, :func:`~.roi.roi_caveat`); the RoA map
    is complete enough."""
    gates = {"RoI faithfulness": not roi_gate.failed}
    if "flagged_share" in map_stats:
        share = map_stats["flagged_share"]
        gates["completeness"] = not (share > cfg.max_flagged_share)
    return gates


def panel_rois(ctx: Context[MeasurementConfig], store: Store) -> dict[str, tuple[str, torch.Tensor]]:
    """The explainer-sensitivity panel's RoIs on the defence attack's store, ``{gate key: (the RoI in words,
    RoI)}``: every other gated explainer's at the run's fraction, then the RoI explainer's at each other fraction."""
    cfg = ctx.config
    ids = store.ids
    rois = {method: (f"{method} RoI, top {cfg.fraction:.0%}",
                     binarize(store.panel[method], fraction=cfg.fraction, seed=cfg.seed, sample_ids=ids).mask)
            for method in ctx.panel[1:]}
    for fraction in cfg.panel_fractions:
        if fraction != cfg.fraction:
            rois[fraction_key(ctx.importance, fraction)] = (
                f"{ctx.importance} RoI, top {fraction:.0%}",
                binarize(store.importance, fraction=fraction, seed=cfg.seed, sample_ids=ids).mask)
    return rois


def panel_claims(attack: str, rois: dict[str, tuple[str, torch.Tensor]], compared: dict[str, NullComparison],
                 gates: dict[str, GateResult], map_stats: dict[str, Any], cfg: MeasurementConfig) -> list[Claim]:
    """Explainer-sensitivity panel: the primary statistic under each gated explainer and each region fraction
    (``compared``: :attr:`~advspatial.statistics.store.StoreComparison.panel`), each row gated on its own RoI."""
    out = []
    for key, (words, _) in rois.items():
        claim = claim_from(compared[key], colocation.CLAIM, f"{attack}: {words}",
                           claim_gates(gates[key], map_stats, cfg), primary=False)
        out += with_roi_caveat([claim], gates[key])
    return out
