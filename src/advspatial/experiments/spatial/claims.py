"""The defence's statistics and verdicts (METHODS.md §2): per-image outcomes into accuracies with Wilson CIs,
paired comparisons (McNemar / sign-flip p, bootstrap CI of Δ accuracy), Holm across each table, and one
verdict per configuration by one fixed rule (:data:`DEFENCE_RULE`)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import replace
from typing import Any, Protocol, TypeVar

import numpy as np
import torch

from ...defence.convergence import Convergence
from ...defence.adaptive_evaluation import AdaptivePlan
from ...statistics.accuracy import Proportion, accuracy, paired_accuracy
from ...statistics.estimates import bootstrap_mean_ci
from ...statistics.verdicts import holm
from .config import DefenceSetting
from .findings import (
    Adaptive, BaselineRow, Comparison, DrawSpread, Harm, HarmConvergence, PairedComparisons, SettingConvergence,
    SettingMeasures, SettingRow, ShareSummary, SweepCell, UndefendedSummary,
)
from .records import AdaptiveOutcomes, BaselineOutcome, SettingOutcome, UndefendedOutcome
from .stages import SpatialContext, SweepColumns

#: the fixed rule behind every defence verdict (printed in the report)
DEFENCE_RULE = ("A configuration 'helps' only when (1) its accuracy minus its random control's (the control attacked "
                "with EOT at full strength) has a 95% CI above 0 and a Holm-adjusted p below the significance level, "
                "and (2) its accuracy minus the undefended model's white-box accuracy (same attack, same budget) does "
                "too. It is 'worse than undefended' when that CI lies below 0 with an adjusted p below the level, "
                "'worse than its control' likewise, and otherwise it 'does not help'. Every verdict rests on the "
                "convergence curves of the attacks it compares, measured on the same images with the same attack: "
                "the attack on the defence must be converged (more iterations and restarts lower it by at most one "
                "image or 1 point) and reach 0 at the largest eps (else 'not converged': the classic sign of "
                "gradient masking), the control's and the white-box attack's curves must be flat too, and a "
                "randomized component must be attacked at full EOT strength (else 'not checked', naming what "
                "failed). 'Worse than undefended' needs only the white-box curve: a weaker attack on the defence "
                "can only understate it. A configuration not attacked adaptively is 'not evaluated adaptively' "
                "(--eval full attacks every one).")

#: the pre-declared harm claim: the attack confined to the RoI the defence spares, defended vs undefended (paired)
HARM_CLAIM = "makes the model more vulnerable inside the RoI"
HARM_RULE = ("The defence 'makes the model more vulnerable inside the RoI' when, with the attack confined to the clean "
             "image's RoI (which the defence never neutralizes), the defended model's white-box accuracy minus the "
             "undefended model's has a 95% CI below 0 and a Holm-adjusted p (in the table's family) below the "
             "level, the undefended attack's convergence curve being flat (a weaker attack on the defended model "
             "can only understate the harm).")

VERDICT_WORDS = ("helps", "does not help", "worse than its control", "worse than undefended", "not converged",
                 "not checked", "not evaluated adaptively", "not interpretable", "insufficient data")
HARM_WORDS = ("makes the model more vulnerable inside the RoI", "no harm shown inside the RoI", "not checked",
              "insufficient data")
#: what a convergence check says of an attack whose accuracy stays above 0 at the largest budget: a finding about
#: the defence (its gradients may be masked), so a smoke test marks it as it marks a verdict
MASKING_SUSPECTED = "suspect gradient masking"
#: the label of a randomized component's number when its EOT was weak (``--quick``): never plotted nor tested
WEAK_EOT = "upper bound (weak EOT)"
#: the label of a baseline whose clean accuracy is not above chance (its Wilson/bootstrap CI reaches 1/K): it has no
#: clean accuracy left to trade for robustness, so its point says nothing in the trade-off plot (kept out of it).
#: Seen on the CIFAR-10 ResNet-20 under Fashion-MNIST's noise sd 0.2: clean accuracy 0 of 50, robust 0 of 50.
AT_CHANCE = "clean accuracy at chance: no trade-off to show"


def summarize_adaptive(ctx: SpatialContext, outcomes: AdaptiveOutcomes, roi_faithful: bool,
                       with_prior: bool) -> Adaptive:
    """Accuracies with Wilson CIs, convergence per component, paired comparisons, Holm across the table (and the
    harm claim), and one verdict each."""
    cfg = ctx.config
    plan = cfg.adaptive_plan()
    undefended = outcomes.undefended
    white = plan.convergence(undefended.white_box)
    every = cfg.defence_settings(with_prior)
    measured = {s: setting_measures(ctx, plan, o, undefended) for s in every
                if (o := outcomes.settings.get(s)) is not None}
    main = next(o for s, o in outcomes.settings.items() if s.role == "main")
    harm_test = Comparison.of(paired_accuracy(main.restricted().roi.worst, undefended.roi.worst, seed=cfg.seed))
    adjusted, (harm_comparison,) = adjust_family(list(measured.values()), [harm_test])
    measured = dict(zip(measured, adjusted, strict=True))
    rows = {s: setting_row(s, measured.get(s), roi_faithful, cfg.significance, white) for s in every}
    harm_curve = HarmConvergence(plan.convergence(undefended.roi))
    harm = Harm(HARM_CLAIM, HARM_RULE, harm_comparison, harm_curve,
                harm_verdict(harm_comparison, harm_curve.undefended, cfg.significance))
    return Adaptive(
        images=int(undefended.clean.numel()),
        budget=plan.budget,
        rule=DEFENCE_RULE,
        undefended=UndefendedSummary(accuracy(undefended.clean), accuracy(undefended.white_box.worst),
                                     accuracy(undefended.roi.worst), white),
        settings=rows,
        harm=harm,
        roi_restricted=roi_restricted(main, undefended),
        transfer={
            "made on the defence, scored undefended": accuracy(main.restricted().transfer),
            "made on the undefended model, scored defended": accuracy(undefended.transfer),
        },
        baselines={(t, s): baseline_row(t, o, plan, chance=1.0 / ctx.data.num_classes)
                   for (t, s), o in outcomes.baselines.items()},
        convergence=rows[DefenceSetting("main", cfg.fraction, cfg.fill)].measured().convergence.defended,
    )


def roi_restricted(main: SettingOutcome, undefended: UndefendedOutcome) -> dict[str, Proportion]:
    """The attack confined to the RoI on the main defence and on the undefended model, and the transfer of its
    examples from each to the other, labelled for the report."""
    restricted = main.restricted()
    return {"defended (white-box, worst gradient)": accuracy(restricted.roi.worst),
            "undefended (white-box)": accuracy(undefended.roi.worst),
            "transfer: made on the defence, scored undefended": accuracy(restricted.roi_transfer),
            "transfer: made on the undefended model, scored defended": accuracy(undefended.roi_transfer)}


def setting_measures(ctx: SpatialContext, plan: AdaptivePlan, o: SettingOutcome,
                     undefended: UndefendedOutcome) -> SettingMeasures:
    """The adaptive numbers of a configuration attacked adaptively: its accuracies, convergence per component and
    paired comparisons (not yet adjusted across the table)."""
    seed = ctx.config.seed
    correct = o.defended.correct
    return SettingMeasures(
        clean=accuracy(o.clean), adaptive_identity=accuracy(correct["identity"]),
        adaptive_local=accuracy(correct["local"]), adaptive_worst=accuracy(o.defended.worst),
        control=share_summary(o.control.worst),
        vs_control=Comparison.of(paired_accuracy(o.defended.worst, o.control.worst, seed=seed)),
        vs_undefended=Comparison.of(paired_accuracy(o.defended.worst, undefended.white_box.worst, seed=seed)),
        convergence=SettingConvergence(plan.convergence(o.defended), plan.convergence(o.control, True)),
        control_full_strength=plan.budget.full_eot)


def setting_row(s: DefenceSetting, measures: SettingMeasures | None, roi_faithful: bool, alpha: float,
                white: Convergence) -> SettingRow:
    """One configuration's row: what it is, its numbers (None when it was not attacked adaptively) and its
    verdict."""
    verdict, why = defence_verdict(measures, roi_faithful, alpha, white)
    return SettingRow(s.label, s.fraction, s.fill, s.vulnerability, measures, verdict, why)


def baseline_row(transform: str, o: BaselineOutcome, plan: AdaptivePlan, *, chance: float) -> BaselineRow:
    """A baseline's clean and robust accuracy, its convergence and the labels that keep it out of the plot: a
    randomized one attacked with weak EOT (:data:`WEAK_EOT`), one whose clean accuracy's CI reaches ``chance``
    (1/K; :data:`AT_CHANCE`)."""
    randomized = transform == "noise"
    clean = share_summary(o.clean)
    labels = [WEAK_EOT] if randomized and not plan.budget.full_eot else []
    if clean.low <= chance:
        labels.append(AT_CHANCE)
    return BaselineRow(clean, share_summary(o.baseline.worst), plan.convergence(o.baseline, randomized), randomized,
                       "; ".join(labels))


def share_summary(shares: torch.Tensor) -> ShareSummary:
    """Mean of per-image shares (a randomized defence over its draws); Wilson CI when they are all 0/1."""
    v = shares.double()
    if bool(((v == 0) | (v == 1)).all()):
        wilson = accuracy(v)
        return ShareSummary(wilson.value, wilson.low, wilson.high, wilson.k, wilson.n)
    est = bootstrap_mean_ci(v)
    return ShareSummary(est.mean, est.low, est.high, math.nan, est.n)


class Paired(Protocol):
    """A defence's two paired comparisons (a configuration's adaptive numbers, a non-adaptive pair)."""

    @property
    def vs_control(self) -> Comparison: ...

    @property
    def vs_undefended(self) -> Comparison: ...


P = TypeVar("P", bound=Paired)


def adjust_family(pairs: Sequence[P], more: Sequence[Comparison] = ()) -> tuple[list[P], list[Comparison]]:
    """Holm across every pair's two comparisons (vs control, vs undefended) and ``more`` (the harm claim): one
    family per table. The pairs and the ``more`` comparisons with their adjusted p, in order."""
    entries = [c for pair in pairs for c in (pair.vs_control, pair.vs_undefended)] + list(more)
    adjusted: np.ndarray | list[float] = holm(np.array([c.p for c in entries], dtype=float)) if entries else []
    done = iter([c.adjusted(float(p)) for c, p in zip(entries, adjusted, strict=True)])
    # every Paired here is a frozen dataclass (SettingMeasures, PairedComparisons)
    out = [replace(pair, vs_control=next(done), vs_undefended=next(done)) for pair in pairs]  # type: ignore[type-var]
    return out, list(done)


def above(c: Comparison, alpha: float) -> bool:
    return c.delta.low > 0 and adjusted_p(c) < alpha


def below(c: Comparison, alpha: float) -> bool:
    return c.delta.high < 0 and adjusted_p(c) < alpha


def adjusted_p(c: Comparison) -> float:
    return math.nan if c.p_adjusted is None else c.p_adjusted


def unchecked(m: SettingMeasures, white: Convergence) -> list[str]:
    """What a configuration's verdict cannot rest on: components whose curve is not flat or whose EOT was weak."""
    control = m.convergence.control
    missing = []
    if not m.control_full_strength:
        missing.append(f"the control's EOT was weak ({WEAK_EOT})")
    elif not control.converged:
        missing.append(f"the control's EOT curve is not flat (gap {control.eot_gap:.3g})")
    if not white.converged:
        missing.append("the white-box attack's curve is not flat")
    return missing


def defence_verdict(m: SettingMeasures | None, roi_faithful: bool, alpha: float, white: Convergence,
                    min_n: int = 30) -> tuple[str, str]:
    """(one of :data:`VERDICT_WORDS`, why) by :data:`DEFENCE_RULE` for a configuration's adaptive numbers
    (None: not attacked adaptively)."""
    if not roi_faithful:
        return "not interpretable", "the RoI failed the faithfulness gate"
    if m is None:
        return "not evaluated adaptively", "use --eval full"
    if m.vs_control.delta.n < min_n:
        return "insufficient data", f"n < {min_n}"
    if below(m.vs_undefended, alpha) and white.converged:
        return "worse than undefended", ""
    defended = m.convergence.defended
    if not defended.converged or not defended.reaches_zero:
        why = [] if defended.converged else [f"more effort lowers it (iterations {defended.steps_gap:+.3g}, "
                                             f"restarts {defended.restarts_gap:+.3g})"]
        if not defended.reaches_zero:
            at_largest = defended.accuracy.get(defended.largest_eps, math.nan)
            why.append(f"accuracy at {defended.largest_eps} is {at_largest:.3g}, not 0 ({MASKING_SUSPECTED})")
        return "not converged", "; ".join(why)
    missing = unchecked(m, white)
    if missing:
        return "not checked", "; ".join(missing)
    if below(m.vs_control, alpha):
        return "worse than its control", ""
    if above(m.vs_control, alpha) and above(m.vs_undefended, alpha):
        return "helps", ""
    return "does not help", ""


def harm_verdict(comparison: Comparison, undefended_roi: Convergence, alpha: float, min_n: int = 30) -> str:
    """One of :data:`HARM_WORDS` by :data:`HARM_RULE`, from the harm comparison and the curve of the RoI-restricted
    attack on the undefended model."""
    if comparison.delta.n < min_n:
        return "insufficient data"
    if below(comparison, alpha):
        return HARM_CLAIM if undefended_roi.converged else "not checked"
    return "no harm shown inside the RoI"


def nonadaptive_comparisons(rows: list[dict[str, Any]], attacks: list[str],
                            seed: int) -> dict[tuple[str, str], PairedComparisons]:
    """Per (attack, deployable defence): defended vs its control and vs undefended, paired; Holm over the family."""
    out: dict[tuple[str, str], PairedComparisons] = {}
    for name in attacks:
        group = [r for r in rows if r["attack"] == name]
        for tag in ("gradient", "prior"):
            if not group or f"{tag}:pred_defended_adv" not in group[0]:
                continue
            defended = [float(r[f"{tag}:pred_defended_adv"] == r["label"]) for r in group]
            control = [r[f"{tag}:correct_control_adv"] for r in group]
            undefended = [float(r["adv_pred"] == r["label"]) for r in group]
            out[name, tag] = PairedComparisons(Comparison.of(paired_accuracy(defended, control, seed=seed)),
                                               Comparison.of(paired_accuracy(defended, undefended, seed=seed)))
    adjusted, _ = adjust_family(list(out.values()))
    return dict(zip(out, adjusted, strict=True))


def spread(hits: torch.Tensor) -> DrawSpread:
    """(N, draws) correctness of a control: accuracy of each draw over the images, as mean and SD across draws."""
    per_draw = hits.mean(0)
    return DrawSpread(float(per_draw.mean()), float(per_draw.std(unbiased=True)) if per_draw.numel() > 1 else 0.0,
                      int(per_draw.numel()))


def draw_spread(draws: dict[str, list[torch.Tensor]]) -> dict[str, DrawSpread]:
    """:func:`spread` of every control column, its batches concatenated."""
    return {key: spread(torch.cat(parts)) for key, parts in draws.items()}


def sweep_summary(ctx: SpatialContext, sweep: SweepColumns) -> dict[tuple[str, float, str], SweepCell]:
    """Per (adv|clean, fraction, fill): defended accuracy (Wilson), control mean ± SD over draws, paired Δ."""
    cfg = ctx.config
    out = {}
    for tag in ("adv", "clean"):
        for f in cfg.fractions:
            for fill in cfg.fills:
                defended, control = sweep[tag, f, fill]
                out[tag, f, fill] = SweepCell(accuracy(defended), spread(control), Comparison.of(
                    paired_accuracy(defended, control.mean(1), seed=cfg.seed)))
    return out
