"""The RoI/RoA measurement's inference (METHODS.md §1): the faithfulness gate of every explainer, the
co-location comparisons against the nulls, the explainer-sensitivity panel, the claims, their corrections
and verdicts (:class:`~.metrics.Measured`)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch

from ...faithfulness.record import GateResult
from ...faithfulness import specificity
from ...regions import binarize
from ...statistics.claims import Claim, claim_from, judge
from ...statistics.inference import compare_to_nulls
from .. import colocation
from ..gate import gate_stage
from .config import MeasurementConfig
from ..roi import Roi, with_roi_caveat
from .metrics import AttackOutcome, Measured, PanelRow
from .stages import AttackSummary, Context


def run_gates(ctx: Context) -> dict[str, GateResult]:
    """The faithfulness gate of the RoI's explainer (on ``gate_n`` images) and of every panel explainer, on the
    run's own maps; and of the RoI's explainer at every other panel fraction, each at its own fraction
    (:func:`fraction_key`); the panel's gates on ``panel_gate_n`` images."""
    cfg = ctx.config

    def panel_maps(m: str) -> Callable[[int], torch.Tensor]:
        return lambda b: ctx.panel_maps(m, b)

    gates = {m: gate_stage(ctx, m, cfg.fraction, cfg.eps_linf, maps=panel_maps(m),
                           n=cfg.gate_n if m == ctx.importance else cfg.panel_gate_n)
             for m in ctx.panel}
    for fraction in cfg.panel_fractions:
        if fraction != cfg.fraction:
            gates[fraction_key(ctx.importance, fraction)] = gate_stage(
                ctx, ctx.importance, fraction, cfg.eps_linf, maps=ctx.importance_of,
                n=cfg.panel_gate_n)
    return gates


def fraction_key(method: str, fraction: float) -> str:
    """The name of an explainer's gate at a panel fraction other than the run's ("hirescam @ top 10%")."""
    return f"{method} @ top {fraction:.0%}"


def measure(ctx: Context, summaries: list[AttackSummary], attacks: dict[str, AttackOutcome],
            gates: dict[str, GateResult]) -> Measured:
    """The RoI/RoA inference: engine results, claims, corrections and verdicts; every attack map's statistics get
    the RoI's interpretation."""
    cfg = ctx.config
    roi_gate = gates[ctx.importance]
    roi = Roi.judged(ctx.importance, ctx.importance_reason, roi_gate)
    label = roi.interpretation
    inference: dict[str, dict[str, Any]] = {}
    content: dict[str, dict[str, Any]] = {}
    claims: list[Claim] = []
    for s in summaries:
        main = s.kinds()[0]
        for kind in s.kinds():
            subject = f"{s.name} ({kind} RoA)"
            gate_set = claim_gates(roi_gate, attacks[s.name].maps[kind], cfg)
            if s.kept(kind) < 3:
                continue
            if s.norm == "l0":
                claims += with_roi_caveat(colocation.pixel_claims(s.store(kind), subject, gate_set,
                                                                  cfg.permutations, cfg.seed), roi_gate)
                continue
            comparisons = colocation.compare_store(s.store(kind), cfg.permutations, cfg.seed, cfg.strata)
            inference.setdefault(s.name, {})[kind] = colocation.comparisons_dict(comparisons)
            claims += with_roi_caveat(content_claims(
                ctx, s.store(kind), subject, kind, comparisons, gate_set, primary=kind == main,
                out=content.setdefault(s.name, {}), inseparable=specificity.inseparable(roi_gate)), roi_gate)
            claims += with_roi_caveat(colocation.attack_claims(subject, comparisons, gate_set, primary=False),
                                      roi_gate)
        for stats in attacks[s.name].maps.values():
            stats["interpretation"] = label
    main_attack = next((s for s in summaries if s.name == cfg.defence_attack), None)
    panel = None
    if main_attack is not None and main_attack.kept(cfg.attack_map) >= 3:
        panel_of = panel_claims(ctx, main_attack, gates, attacks[main_attack.name].maps[cfg.attack_map])
        panel = [PanelRow(c.subject, c.observed, c.null_value, c.effect.as_dict(), c.p) for c in panel_of]
        claims += panel_of
    judge(claims, sesoi=cfg.sesoi, alpha=cfg.significance)
    return Measured(gates, roi, inference, content or None, panel, claims, label)


def content_claims(ctx: Context, store: dict[str, torch.Tensor], subject: str, kind: str,
                   comparisons: dict[str, dict[str, Any]], gates: dict[str, bool], primary: bool,
                   out: dict[str, Any], inseparable: Sequence[str] = ()) -> list[Claim]:
    """Co-location beyond image content: the reference RoIs' rows, the primary "beyond every reference" claim,
    the layout steps and the plain sentence (written into ``out[kind]``; ``inseparable``: the references the RoI is
    equivalent to in importance, :func:`~advspatial.faithfulness.specificity.inseparable`)."""
    cfg = ctx.config
    references = colocation.reference_rois(store, cfg.seed)
    rows = colocation.reference_comparisons(store, references, cfg.permutations, cfg.seed, cfg.strata)
    differences = colocation.beyond_references(store, references, cfg.seed)
    same_class = comparisons[colocation.PRIMARY_STATISTIC][colocation.PRIMARY_NULL]
    steps = colocation.layout_steps(comparisons[colocation.PRIMARY_STATISTIC])
    out[kind] = {"references": {r: {n: c.as_dict() for n, c in by_null.items()} for r, by_null in rows.items()},
                 "beyond": {r: d.as_dict() for r, d in differences.items()},
                 "explained_by": colocation.explained_by(differences), "layout": steps,
                 "sentence": colocation.layout_sentence(kind, steps, same_class, differences, inseparable),
                 "inseparable": list(inseparable)}
    claims = [colocation.beyond_claim(subject, differences, same_class, gates)] if primary and differences else []
    model_free = {k: v for k, v in gates.items() if k != "RoI faithfulness"}   # a reference needs no faithful RoI
    for name, by_null in rows.items():
        words = colocation.REFERENCE_WORDS[name]
        for comparison in by_null.values():
            claims.append(claim_from(comparison, f"the attack co-locates with {words}", f"{subject}: {name} RoI",
                                     model_free))
    return claims


def claim_gates(roi_gate: GateResult, map_stats: dict[str, Any], cfg: MeasurementConfig) -> dict[str, bool]:
    """The validity gates of a co-location claim: the RoI is not shown unfaithful (its gate did not fail: an
    undecided gate puts a caveat on the claim instead, :func:`~advspatial.experiments.roi.roi_caveat`); the RoA map
    is complete enough."""
    gates = {"RoI faithfulness": not roi_gate.failed}
    if "flagged_share" in map_stats:
        share = map_stats["flagged_share"]
        gates["completeness"] = not (share > cfg.max_flagged_share)
    return gates


def panel_claims(ctx: Context, summary: AttackSummary, gates: dict[str, GateResult],
                 map_stats: dict[str, Any]) -> list[Claim]:
    """Explainer-sensitivity panel: the primary statistic under each gated explainer and each region fraction."""
    cfg = ctx.config
    kind = cfg.attack_map
    store = summary.store(kind)
    out = []
    ids = store["ids"]
    roa = store["roa"]
    for method in ctx.panel[1:]:
        imp = store[f"panel:{method}"]
        roi = binarize(imp, fraction=cfg.fraction, seed=cfg.seed, sample_ids=ids).mask
        claim = panel_claim(ctx, f"{summary.name}: {method} RoI, top {cfg.fraction:.0%}", imp, store["attack"], roi,
                            roa, store, claim_gates(gates[method], map_stats, cfg))
        out += with_roi_caveat([claim], gates[method])
    for fraction in cfg.panel_fractions:
        if fraction == cfg.fraction:
            continue
        roi = binarize(store["importance"], fraction=fraction, seed=cfg.seed, sample_ids=ids).mask
        roa_f = binarize(store["attack"], fraction=fraction, seed=cfg.seed + 1, sample_ids=ids).mask
        gate = gates[fraction_key(ctx.importance, fraction)]
        claim = panel_claim(ctx, f"{summary.name}: {ctx.importance} RoI, top {fraction:.0%}", store["importance"],
                            store["attack"], roi, roa_f, store, claim_gates(gate, map_stats, cfg))
        out += with_roi_caveat([claim], gate)
    return out


def panel_claim(ctx: Context, subject: str, imp: torch.Tensor, attack: torch.Tensor, roi: torch.Tensor,
                roa: torch.Tensor, store: dict[str, torch.Tensor], gates: dict[str, bool]) -> Claim:
    cfg = ctx.config
    result = compare_to_nulls(imp, attack, roi, roa, store["labels"], statistics=(colocation.PRIMARY_STATISTIC,),
                              n_permutations=cfg.permutations, seed=cfg.seed, nulls=(colocation.PRIMARY_NULL,))
    comparison = result[colocation.PRIMARY_STATISTIC][colocation.PRIMARY_NULL]
    return claim_from(comparison, colocation.CLAIM, subject, gates, primary=False)
