"""The report of the spatial experiment: the measurement's sections
(:mod:`advspatial.experiments.measurement.sections`) with the attacks table, the defence (the adaptive verdicts, the
convergence panel, the trade-off, the non-adaptive tables and the clean cost) and the limits; and the printed
summary. Pure rendering (:func:`render`) from the findings and the figures drawn (:mod:`.figures`)."""

from __future__ import annotations

import math
from pathlib import Path

from ...defence.convergence import Convergence
from ...report.html import Figure, Section, Table
from ...report.verdicts import fmt, fmt_p, interval
from ...statistics.accuracy import Proportion
from ...statistics.claims import NOT_INTERPRETABLE_ROI, sentence_case
from ..measurement.sections import (
    claims_lines, compact_claims_lines, measurement_limits, measurement_sections, onepixel_limits, shown,
)
from ..results import Rendered
from .claims import AT_CHANCE, MASKING_SUSPECTED, WEAK_EOT
from .config import SpatialConfig
from .figures import CONVERGENCE, SWEEP, TRADEOFF
from .findings import Adaptive, Comparison, SettingRow, ShareSummary, SpatialFindings


def render(config: SpatialConfig, findings: SpatialFindings, figures: Path) -> Rendered:
    """The summary and every section of the spatial report, in order: the measurement's, with the attacks table,
    the defence and the limits."""
    ad = findings.adaptive_part()
    verdicts, gate, setup, where, overlap = measurement_sections(config, findings, figures, (defence_headline(ad),))
    sections = [verdicts, gate, setup, attacks_section(findings), where, overlap,
                defence_section(config, findings, figures), limits_section(config, findings)]
    return Rendered("\n".join([summary_table(findings), *compact_claims_lines(findings)]), sections,
                    "\n".join(claims_lines(findings)))


def defence_headline(ad: Adaptive) -> str:
    """One sentence on the defence for the top of the report: its verdict, the numbers behind it, and the harm
    claim when it holds."""
    main = ad.main()
    m = main.measured()
    helps = [row.label for row in ad.settings.values() if row.verdict == "helps"]
    harm = ad.harm
    harm_text = (f" It {harm.claim}{harm_caveat(ad)}: with the attack confined to the RoI it spares, accuracy "
                 f"{wilson(ad.roi_restricted['defended (white-box, worst gradient)'])} defended vs "
                 f"{wilson(ad.roi_restricted['undefended (white-box)'])} undefended, Δ "
                 f"{paired_text(harm.comparison)}." if harm.verdict == harm.claim else "")
    return (f"Defence: the main neutralization defence: {main.verdict}{why_text(main)} (adaptive accuracy "
            f"{wilson(m.adaptive_worst)} vs {wilson(ad.undefended.white_box)} undefended white-box and "
            f"{wilson(m.control)} for its matched control{control_label(ad)}; attack on the defence "
            f"{convergence_word(m.convergence.defended)}).{harm_text} "
            + (f"Configurations that help by the rule: {', '.join(helps)}." if helps else
               "No configuration attacked adaptively helps by the rule."))


def harm_caveat(ad: Adaptive) -> str:
    """What the harm claim's "RoI" is when the RoI failed its faithfulness gate (the main defence then reads not
    interpretable): the region the defence spares, a fact about the defended model that stands without the gate
    (the harm rule is not gated), but no longer where the model looks; "" when the gate did not fail."""
    if ad.main().verdict != "not interpretable":
        return ""
    return (" (the RoI here is the region the defence spares; it failed the faithfulness gate, so this says where "
            "the defence leaves the model open, not where the model looks)")


def control_label(ad: Adaptive) -> str:
    """', an upper bound (weak EOT)' when the randomized components were attacked below full strength."""
    return "" if ad.budget.full_eot else f", an {WEAK_EOT}"


def convergence_word(conv: Convergence) -> str:
    """'converged' / 'NOT converged' (and 'does not reach 0 at the largest eps' where measured)."""
    word = "converged" if conv.converged else "NOT converged"
    if conv.reaches_zero is False:
        word += f", does NOT reach 0 at {conv.largest_eps} ({MASKING_SUSPECTED})"
    return word


def wilson(acc: Proportion | ShareSummary | None) -> str:
    """'0.123 [0.100, 0.150]' from an accuracy (``value``, ``low``, ``high``)."""
    if acc is None or math.isnan(acc.value):
        return "-"
    return f"{acc.value:.3f} [{acc.low:.3f}, {acc.high:.3f}]"


def paired_text(comparison: Comparison) -> str:
    """'Δ [CI], p_adj' of a paired accuracy comparison."""
    p = comparison.p if comparison.p_adjusted is None else comparison.p_adjusted
    return f"{interval(comparison.delta)}, p_adj {fmt_p(p)}"


def defence_section(cfg: SpatialConfig, f: SpatialFindings, figures: Path) -> Section:
    """The defence: adaptive verdicts first, the harm claim, the convergence panel, the trade-off, and the
    non-adaptive tables."""
    ad = f.adaptive_part()
    main = ad.main()
    m = main.measured()
    conv = m.convergence
    budget = ad.budget
    through = " and ".join(budget.eot_gradients)
    eot = (f"EOT {budget.eot_iter} at full strength (APGD-CE and APGD-DLR on every image, no early stop, "
           f"{budget.eot_restarts} restart each, through the {through} gradient"
           f"{'s' if ' and ' in through else ''})" if budget.full_eot else
           f"EOT {budget.eot_iter}{' with early stop' if budget.eot_early_stop else ''}: a weak attack, so its "
           f"numbers are labelled '{WEAK_EOT}', kept out of the plot and of every verdict")
    paragraphs = [
        f"Verdict of the main defence ({main.label}): {main.verdict}{why_text(main)}. Under the adaptive ensemble "
        f"(APGD-CE, APGD-DLR through the identity-BPDA and the local gradient, {budget.restarts} restarts x "
        f"{budget.steps} iterations, then Square with {budget.queries} queries on what both left standing; worst "
        f"case per image) its accuracy is {wilson(m.adaptive_worst)} on the first {ad.images} images, against "
        f"{wilson(ad.undefended.white_box)} for the undefended model under the same attack (white-box) and "
        f"{wilson(m.control)} for its matched random control, attacked with {eot} and scored over "
        f"{budget.draws} fresh draws.",
        "Rule: " + ad.rule,
        f"Convergence, on the same images with the same attack: the defence {convergence_word(conv.defended)} "
        f"(gap to more iterations {fmt(conv.defended.steps_gap)}, to more restarts "
        f"{fmt(conv.defended.restarts_gap)}); its control's EOT curve "
        f"{'is flat' if conv.control.converged else 'is NOT flat'} (gap to EOT "
        f"{max(int(k.split('=')[1]) for k in conv.control.accuracy)}: {fmt(conv.control.eot_gap)}); the "
        f"white-box attack {convergence_word(ad.undefended.convergence)}.",
        f"Harm (pre-declared): {ad.harm.rule} Verdict: {ad.harm.verdict} "
        f"(Δ {paired_text(ad.harm.comparison)}).",
    ]
    tables = [adaptive_table(ad), roi_table(ad), baseline_table(ad), nonadaptive_table(cfg, f), clean_table(f)]
    notes = ["Transfer numbers (examples made on one model, scored on another) are labelled 'transfer' and are never "
             "a robustness number. The clean-restore diagnostic (the region's clean pixels put back) shows what the "
             "region holds; it is not a bound.",
             f"Controls: as many pixels as the neutralized region, drawn outside the RoI (the defence never touches "
             f"it), matched on {cfg.control_match}, {cfg.control_draws} draws per image keyed by the global image id "
             "(accuracies are means over draws, ± the SD across draws)."]
    if not cfg.sweep_adaptive:
        notes.append("Only the main defence, its control and the baselines are attacked adaptively here; the other "
                     "configurations are 'not evaluated adaptively' (--eval full attacks every one).")
    if f.defence_interpretation != "interpretable":
        notes.append(f"{sentence_case(NOT_INTERPRETABLE_ROI)}: the defence spares the RoI, so what it neutralizes is "
                     "defined by an explainer that does not mark what the model uses.")
    return Section("Defence", paragraphs, tables=tables, notes=notes, figures=defence_figures(figures),
                   anchor="defence")


def why_text(row: SettingRow) -> str:
    """' (why)' after a verdict, when it says why."""
    return f" ({row.why})" if row.why else ""


def adaptive_table(ad: Adaptive) -> Table:
    rows = []
    for row in ad.settings.values():
        m = row.measures
        if m is None:
            rows.append([row.label, *["-"] * 8, row.verdict, row.why])
            continue
        conv = m.convergence
        converged = (f"defence {convergence_word(conv.defended)}; "
                     f"control {'flat' if conv.control.converged else 'NOT flat'}")
        control = wilson(m.control) + ("" if m.control_full_strength else f" ({WEAK_EOT})")
        rows.append([row.label, wilson(m.clean), wilson(m.adaptive_identity), wilson(m.adaptive_local),
                     wilson(m.adaptive_worst), control, paired_text(m.vs_control), paired_text(m.vs_undefended),
                     converged, row.verdict, row.why])
    return Table(f"Adaptive evaluation of every configuration (first {ad.images} images; undefended white-box "
                 f"accuracy {wilson(ad.undefended.white_box)}, clean {wilson(ad.undefended.clean)}; "
                 "accuracies with Wilson 95% CIs, Δ with paired bootstrap CIs, Holm across the table and the harm "
                 "claim)",
                 ["configuration", "clean", "APGD: identity-BPDA", "APGD: local gradient", "worst (with Square)",
                  "control (adaptive, EOT)", "Δ vs control", "Δ vs undefended white-box", "convergence", "verdict",
                  "why"], rows)


def roi_table(ad: Adaptive) -> Table:
    rows = [[k, wilson(v)] for k, v in ad.roi_restricted.items()]
    harm = ad.harm
    rows.append([f"defended − undefended (both white-box): {harm.verdict}", paired_text(harm.comparison)])
    rows += [[f"whole image, transfer: {k}", wilson(v)] for k, v in ad.transfer.items()]
    return Table("The ensemble confined to the clean image's RoI (which the defence never neutralizes), and transfer",
                 ["attack", "accuracy [Wilson 95% CI] or Δ"], rows)


def baseline_table(ad: Adaptive) -> Table:
    rows = [[f"{transform} {strength:g}", wilson(b.clean), wilson(b.robust) + (f" ({b.label})" if b.label else ""),
             convergence_word(b.convergence)]
            for (transform, strength), b in ad.baselines.items()]
    return Table("Trivial input transforms under the same adaptive attack (the baselines of the trade-off plot)",
                 ["baseline (strength)", "clean accuracy", "adaptive robust accuracy", "convergence"], rows)


def nonadaptive_table(cfg: SpatialConfig, f: SpatialFindings) -> Table:
    rows = []
    for name, m in f.attacks.items():
        d, spread = m.defence, m.control_draws
        for tag in ("gradient", "prior"):
            if (name, tag) not in f.nonadaptive.comparisons:
                continue
            cmp = f.nonadaptive.comparisons[name, tag]
            control = spread.get(f"{tag}:pred_control_adv")
            mean, sd = (math.nan, math.nan) if control is None else (control.mean, control.sd)
            rows.append([name, tag, fmt(d.get(f"{tag}:adv", math.nan)), fmt(d.get(f"{tag}:defended_adv", math.nan)),
                         f"{fmt(mean)} ± {fmt(sd)}", paired_text(cmp.vs_control), paired_text(cmp.vs_undefended),
                         fmt(d.get(f"{tag}:oracle_adv", math.nan)), fmt(d.get(f"{tag}:oracle_control_adv", math.nan)),
                         fmt(d.get(f"{tag}:clean_restore_adv", math.nan))])
    return Table(f"Non-adaptive attacker: the run's attacks, made on the undefended model, scored on the defence "
                 f"(fill {cfg.fill}, fraction {cfg.fraction}; all n images; Holm across the table)",
                 ["attack", "defence", "undefended", "defended", "control (mean ± SD over draws)", "Δ vs control",
                  "Δ vs undefended", "oracle (true delta)", "oracle control (in RoA)", "clean-restore diagnostic"],
                 rows)


def clean_table(f: SpatialFindings) -> Table:
    cost = f.clean_cost
    return Table("Clean cost: accuracy on clean images with the deployable defence on (all n images)",
                 ["defence", "defended", "matched control (mean over draws)", "undefended"],
                 [[tag, fmt(cost.get(f"{tag}:defended_clean", math.nan)),
                   fmt(cost.get(f"{tag}:control_clean", math.nan)), fmt(f.clean_accuracy)]
                  for tag in ("gradient", "prior") if f"{tag}:defended_clean" in cost])


def defence_figures(figures: Path) -> list[Figure]:
    """The convergence panel, the trade-off and the sweep, where drawn."""
    return [*shown(figures, CONVERGENCE,
                   "Convergence panel, on the images and with the attack of the reported numbers: robust accuracy "
                   "of the main defence vs APGD iterations, restarts and eps (points beyond the budget extend the "
                   "reported attack on the images it left standing), and of every randomized component vs EOT draws."),
            *shown(figures, TRADEOFF,
                   "Clean accuracy vs adaptive robust accuracy for every configuration attacked adaptively and the "
                   "trivial transforms (global blur, Gaussian noise, JPEG-style quantization) on the same images; "
                   f"numbers from a weak EOT ({WEAK_EOT}) and baselines whose clean accuracy is at chance "
                   f"({AT_CHANCE}) are left out."),
            *shown(figures, SWEEP, "Non-adaptive sweep over the neutralized fraction and the fill; dashed: matched "
                                   "control.")]


def attacks_section(f: SpatialFindings) -> Section:
    rows = []
    for name, m in f.attacks.items():
        rows.append([name, m.images, fmt(m.success_rate), fmt(m.adversarial_accuracy), m.successful,
                     fmt(m.mean_l0, 1), fmt(m.mean_l2), fmt(m.mean_linf)])
    table = Table("Attacks (success rate on correctly classified images; norms over successful attacks)",
                  ["attack", "images", "success rate", "adversarial accuracy", "successful", "mean L0 (px)",
                   "mean L2", "mean Linf"], rows)
    return Section("Attacks", tables=[table])


def limits_section(cfg: SpatialConfig, f: SpatialFindings) -> Section:
    """The spatial report's limits: the measurement's, then the defence's."""
    ad = f.adaptive_part()
    return Section("Limits of the method", [
        *measurement_limits(cfg),
        "The oracle defence needs the clean image and is an analysis tool, not a defence. The deployable defence's "
        "robustness is its adaptive number"
        + ("" if ad.convergence.converged else
           " - and the adaptive attack did NOT converge on the main defence, so even that number may overstate it")
        + f"; the adaptive evaluation covers the first {ad.images} images"
        + (" (all of them: --eval full)." if ad.images == f.n else
           " (--eval full covers every image)."),
        *onepixel_limits(cfg, f),
    ], anchor="limits")


def summary_table(f: SpatialFindings) -> str:
    """The summary printed at the end of ``advspatial run``."""
    header = (f"{'attack':<10} {'success':>8} {'L2':>7} {'Linf':>6} {'IoU':>6} {'E_in_RoI':>9} "
              f"{'undef':>6} {'defended':>9} {'control':>8} {'oracle':>7}")
    lines = [f"clean accuracy {f.clean_accuracy:.4f} on {f.n} images", header, "-" * len(header)]
    for name, m in f.attacks.items():
        first = next(iter(m.maps.values()))
        d = m.defence
        lines.append(f"{name:<10} {fmt(m.success_rate):>8} {fmt(m.mean_l2):>7} {fmt(m.mean_linf):>6} "
                     f"{fmt(first['iou']):>6} {fmt(first['energy_in_roi']):>9} "
                     f"{fmt(d.get('gradient:adv', math.nan)):>6} "
                     f"{fmt(d.get('gradient:defended_adv', math.nan)):>9} "
                     f"{fmt(d.get('gradient:control_adv', math.nan)):>8} "
                     f"{fmt(d.get('gradient:oracle_adv', math.nan)):>7}")
    lines.append("(defence columns: non-adaptive attacker, examples made on the undefended model)")
    ad = f.adaptive_part()
    main = ad.main()
    numbers = main.measured()
    lines.append(f"adaptive ensemble on {ad.images} images: defended {wilson(numbers.adaptive_worst)}, control "
                 f"{wilson(numbers.control)}{control_label(ad)}, undefended white-box "
                 f"{wilson(ad.undefended.white_box)}; attack {convergence_word(ad.convergence)}; verdict: "
                 f"{main.verdict}{why_text(main)}")
    if ad.harm.verdict == ad.harm.claim:
        lines.append(f"harm: the defence {ad.harm.claim}{harm_caveat(ad)} (RoI-confined white-box accuracy, "
                     f"defended - undefended: {paired_text(ad.harm.comparison)})")
    return "\n".join(lines)


