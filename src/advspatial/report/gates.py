"""The faithfulness gate in a report: per explainer its status, every cell's outcome, the positive control, the
specificity rows, the restricted attack (reported apart), randomization and the location comparison per class.
Every table of paired effects prints each measure's equivalence margin with its scale.

Pure rendering of :class:`~advspatial.faithfulness.record.GateResult` records (an experiment's ``faithfulness``
findings), so a re-rendered report shows the same tables.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

from ..faithfulness.gate import SURVIVES_RANDOMIZATION
from ..faithfulness.sanity import randomization_passed
from ..faithfulness.mprt import EFFICIENT_MPRT_MIN_RISE, SMOOTH_MPRT_MAX_SPEARMAN
from ..faithfulness.record import GRADIENT_MASS, Comparison, GateResult, PairedEffect
from ..faithfulness.specificity import specificity_rows
from ..statistics.estimates import interval_text
from ..statistics.outcomes import BEATS, EQUIVALENT, NOT_BETTER, SPECIFICITY, Decision, images_to_decide
from .html import Table

GATE_CAPTION = ("Faithfulness gate: Δ = damage done through the explainer's region minus damage through the "
                "comparison's region of equal size (> 0: the explainer's region matters more), mean [95% CI], and "
                "the measure's outcome (beats: CI above 0; not better: 90% CI below the margin; equivalent: 90% CI "
                "inside ± the margin; does less: CI below 0; undecided: with the correct images that would decide it "
                "at 80% power, a projection at the observed effect). Faithfulness rows decide the gate; specificity "
                "rows are a finding about the model. Each explainer's 'equivalence margin' row gives δ per measure "
                "in its units and as a share of the RoI's own mean damage")


def decision_cell(d: Decision | None, digits: int = 3) -> str:
    """'+0.267 [-0.250, +0.820] undecided (~2,146)' or '-'. A specificity difference within the margin reads
    'within the margin (CI below 0)', never 'does less' or 'beats'."""
    if d is None or d.n == 0:
        return "-"
    text = interval_text(d.mean, d.low, d.high, f"+.{digits}f") + " "
    if d.within_margin and d.rule == SPECIFICITY:
        text += f"within the margin (CI {'above' if d.outcome == BEATS else 'below'} 0)"
    else:
        text += d.outcome + (" (within the margin)" if d.within_margin else "")
    if d.within_margin or d.outcome in (EQUIVALENT, NOT_BETTER):
        text += f"; 90% CI [{d.low90:+.{digits}f}, {d.high90:+.{digits}f}]"
    if not d.decided:
        need = images_to_decide(d).images
        text += f" (~{int(need):,})" if math.isfinite(need) else " (no n decides)"
    return text


def _measures(gates: Mapping[str, GateResult]) -> list[str]:
    """The deletion measures of the gates' comparisons (the restricted attack has its own table)."""
    found = {m for g in gates.values() for c in g.comparisons.values() for m in c.decisions}
    return sorted(m for m in found if m.startswith("deletion:"))


def _measure_title(measure: str) -> str:
    return f"deletion Δlogit ({measure.split(':', 1)[1]})" if measure.startswith("deletion:") else \
        "restricted attack Δmargin removed (gradient mass)"


def margin_text(margin: float, share: float, measure: str, whose: str = "the RoI") -> str:
    """The equivalence margin with its scale: '±0.864 logits (10% of the RoI's mean damage, 8.64)'."""
    if not math.isfinite(margin):
        return "-"
    unit = "logits" if measure.startswith("deletion:") else "logits of margin"
    if not (math.isfinite(share) and share > 0):
        return f"±{margin:.3g} {unit}"
    return f"±{margin:.3g} {unit} ({share:.0%} of {whose}'s mean damage, {margin / share:.3g})"


def _margin_row(name: str, comparisons: Mapping[str, Comparison], share: float, measures: Sequence[str],
                whose: str = "the RoI") -> list[str]:
    """The cells of one gate's margin row: per measure its δ with its scale (every comparison of a region shares
    it: a share of that region's own damage)."""
    found = {m: d.margin for c in comparisons.values() for m, d in c.decisions.items()}
    return [name, "equivalence margin δ"] + [margin_text(found[m], share, m, whose) if m in found else "-"
                                              for m in measures]


def _row(name: str, c: Comparison, measures: Sequence[str], control: Comparison | None = None) -> list[str]:
    cells = [decision_cell(c.decisions.get(m)) for m in measures]
    if control is not None:
        cells = [cell + ("" if m not in control.decisions else f"; control {control.decisions[m].outcome}")
                 for cell, m in zip(cells, measures, strict=True)]
    return [name, f"beats {c.words}", c.role, c.outcome, *cells]


def gate_table(gates: Mapping[str, GateResult], caption: str = GATE_CAPTION) -> Table:
    """One row per explainer and comparison: every measure's effect, CI and outcome (faithfulness rows with the
    positive control's outcome beside it), and the row's outcome; randomization with its numbers."""
    measures = _measures(gates)
    columns = ["explainer", "comparison", "role", "outcome"] + [_measure_title(m) for m in measures] + ["detail"]
    rows = []
    for name, g in gates.items():
        margin = _margin_row(name, g.comparisons, g.margin, measures)
        rows.append(margin[:2] + ["-", "-"] + margin[2:] + ["δ: the largest difference read as the same damage"])
        for key, c in g.comparisons.items():
            if key == "randomization":
                rows.append([name, f"beats {c.words}", c.role, c.outcome] + ["-"] * len(measures)
                            + [randomization_detail(c.effects)])
                continue
            rows.append(_row(name, c, measures, g.control.get(key) if c.role == "faithfulness" else None) + [""])
    return Table(caption, columns, rows)


def attack_table(gates: Mapping[str, GateResult]) -> Table | None:
    """The restricted attack on every row, reported apart from the gate (None when no gate measured it)."""
    rows = []
    for name, g in gates.items():
        measured = {k: c for k, c in g.comparisons.items() if GRADIENT_MASS in c.decisions}
        if not measured:
            continue
        margin = _margin_row(name, measured, g.margin, [GRADIENT_MASS])
        rows.append([margin[0], margin[1], "-", margin[2]])
        rows += [[name, c.short, c.role, decision_cell(c.decisions[GRADIENT_MASS])] for c in measured.values()]
    if not rows:
        return None
    return Table("Restricted attack, reported apart and not counted in the gate: Δ = true-label margin removed by "
                 "L-inf PGD confined to the RoI minus confined to the comparison's region (calibrated budget). To "
                 "first order it is the budget times the margin's input gradient summed over the region (gradient "
                 "mass, first-order saliency): it says where the gradient is large, not what the model uses, and "
                 "it has no positive control (the margin gradient's own top region has the most gradient mass by "
                 "definition)", ["explainer", "comparison", "role", _measure_title(GRADIENT_MASS)], rows)


def control_table(gates: Mapping[str, GateResult]) -> Table | None:
    """The positive control's faithfulness rows per explainer's gate (None when no gate ran one)."""
    measures = _measures(gates)
    rows = []
    for name, g in gates.items():
        if g.control:
            margin = _margin_row(name, g.control, g.margin, measures, "the control")
            rows.append(margin[:2] + ["-", "-"] + margin[2:])
            rows += [_row(name, c, measures) for c in g.control.values()]
    if not rows:
        return None
    return Table("Positive control: a map faithful by construction to deletion (occlusion under the gate's blur "
                 "fill), gated on the same images at the same fraction; its margin is a share of its own damage. "
                 "Where the control does not beat a comparison, the gate cannot judge that cell",
                 ["gate", "comparison", "role", "outcome"] + [_measure_title(m) for m in measures], rows)


def randomization_detail(effects: Mapping[str, PairedEffect]) -> str:
    """The randomization row's numbers (value [95% CI over draws and images], on n check images) against their pass
    bounds, in one line."""
    bounds = {"cascade spearman": f"|ρ| after every layer < {SURVIVES_RANDOMIZATION:g}",
              "smooth MPRT spearman": f"sMPRT ρ < {SMOOTH_MPRT_MAX_SPEARMAN:g}",
              "efficient MPRT rise": f"eMPRT rise > {EFFICIENT_MPRT_MIN_RISE:g}"}

    def value(e: PairedEffect) -> str:
        est = e.estimate
        ci = "" if est.low == est.high else f" [{est.low:+.2f}, {est.high:+.2f}]"
        return f"{est.mean:+.2f}{ci}, n {est.n}"

    return "; ".join(f"{bounds.get(k, k)}: {value(e)}" for k, e in effects.items())


def _budget(g: GateResult) -> str:
    b = g.restricted_attack
    if not b:
        return "-"
    flip = b.get("flip_rate", math.nan)
    shown = f", flips {flip:.0%}" if isinstance(flip, float) and math.isfinite(flip) else ""
    return f"{b['eps']:.4g} of {b['planned_eps']:.4g}" + (" (calibrated" + shown + ")" if b.get("calibrated") else "")


def gate_summary_table(gates: Mapping[str, GateResult]) -> Table:
    """One row per explainer: its status and why, on how many images it was decided, the restricted attack's
    budget, the blur control and the maps' complexity."""
    rows = []
    for name, g in gates.items():
        as_good = "-" if g.blurred is None else (
            "yes: passing may come from smoothness alone" if g.blurred.as_good else "no")
        rows.append([name, g.status, g.reason, g.decided(), _budget(g), as_good,
                     _fmt(g.complexity.get("map", math.nan)), _fmt(g.complexity.get("blurred", math.nan))])
    return Table("Faithfulness gate per explainer: its status (passed, failed, undecided, cannot judge) and why, on "
                 "how many images it was decided (a gate stops at an interim look once every row passes |z| >= 3.29, "
                 "and leaves out the randomization checks once it has failed, docs/methods.md), the restricted "
                 "attack's budget, whether a Gaussian-blurred copy of the map beats everything the map beats (the blur "
                 "control), and the maps' Gini sparseness (0 = flat, 1 = one pixel)",
                 ["explainer", "status", "why", "decided", "restricted attack eps", "blurred copy as good",
                  "sparseness (map)", "sparseness (blurred)"], rows)


def _fmt(value: float) -> str:
    return "-" if value != value else f"{value:.3f}"


def specificity_table(gates: Mapping[str, GateResult]) -> Table | None:
    """The specificity rows of every gate: each reference and measure, beats / equivalent / does less / undecided
    (None when no gate measured one)."""
    measures = _measures(gates)
    rows = []
    for name, g in gates.items():
        found = specificity_rows(g)
        if found:
            margin = _margin_row(name, found, g.margin, measures)
            rows.append(margin[:2] + ["-"] + margin[2:])
            rows += [[name, c.short, c.outcome, *[decision_cell(c.decisions.get(m)) for m in measures]]
                     for c in found.values()]
    if not rows:
        return None
    return Table("Specificity on deletion: the RoI's damage against model-free regions of the same size (a finding "
                 "about the model, not part of the gate): beats = the RoI does more; equivalent = within ± the "
                 "margin δ (90% CI, two one-sided tests); within the margin = a difference whose CI excludes 0 but "
                 "whose 90% CI lies inside ± δ; does less; undecided (correct images that would decide it); mixed = "
                 "the fills read differently (each cell gives its own). The restricted attack's rows are in their "
                 "own table",
                 ["explainer", "reference", "outcome on deletion"] + [_measure_title(m) for m in measures], rows)


def _collapsed(g: GateResult) -> str:
    """'cascade 3 of 640, sMPRT 0 of 640, eMPRT 3 of 640': the randomized maps that collapsed to constants, per
    check ('-' for a record that does not count them)."""
    records = [("cascade", (g.randomization or [{}])[-1])]
    records += [(name, (g.mprt or {}).get(key, {})) for name, key in (("sMPRT", "smooth_mprt"),
                                                                      ("eMPRT", "efficient_mprt"))]
    parts = [f"{name} {r['n_collapsed']} of {r.get('maps', '?')}" for name, r in records if "n_collapsed" in r]
    return ", ".join(parts) or "-"


def randomization_table(gates: Mapping[str, GateResult]) -> Table:
    """The cascading model-randomization check of every gated explainer (first and last step), its draws and check
    images, and the randomized maps of every check that collapsed to constants.

    A map still rank-correlated with the trained model's map (|ρ| >= 0.5) after every layer is re-initialized
    depends little on the weights: it fails the gate.
    """
    rows = []
    for name, g in gates.items():
        steps = g.randomization or []
        if steps:
            last = steps[-1].get("spearman", math.nan)
            verdict = randomization_passed(steps)
            flag = ("-" if last != last else "passes" if verdict else "FAILS: the map survives randomization"
                    if verdict is False else "undecided")
            table = steps[-1].get("per_draw") or [steps[-1].get("per_image") or []]
            rows.append([name, len(steps), len(table), len(table[0]), _fmt(steps[0].get("spearman", math.nan)),
                         _fmt(last), _collapsed(g), flag])
    return Table("Cascading model randomization (Adebayo et al. 2018): Spearman of the map with the trained model's "
                 "map after re-initializing layers from the top, mean over independent re-initializations (draws) "
                 "and check images; the steps before the last, which no rule reads, on the first draws only "
                 "(randomization_curve_draws). Near 0 = the map depends on the weights; a map that survives every "
                 "layer's randomization fails the gate. A randomized map that collapsed to a constant is counted, not "
                 "dropped: as Spearman 0 (it kept no ranking) and, in efficient MPRT, as a fall of its complexity",
                 ["explainer", "steps compared", "draws", "check images", "after the first", "after all",
                  "randomized maps collapsed to constants", "cascade check (MPRT's checks: the gate table)"], rows)


def per_class_table(gate: GateResult, name: str) -> Table | None:
    """The location comparison per class (folded), or None when the gate has no per-class results."""
    measures = sorted({m for c in gate.per_class.values() for m in c.effects})
    rows = [[cls, c.n] + [_interval(c.effects.get(m)) for m in measures] for cls, c in gate.per_class.items()]
    if not rows:
        return None
    return Table(f"Gate of {name} per class: the location comparison", ["class", "n"] + [
        _measure_title(m) for m in measures], rows, folded=True)


def _interval(e: PairedEffect | None) -> str:
    if e is None or e.estimate.n == 0:
        return "-"
    return interval_text(e.estimate.mean, e.estimate.low, e.estimate.high)


def gate_tables(gates: Mapping[str, GateResult], per_class_of: Sequence[str] = (),
                caption: str = GATE_CAPTION) -> list[Table]:
    """Every table of a report's gate section: the gate per explainer, every row, the positive control, the
    specificity rows, the restricted attack, the randomization check, per class."""
    tables = [gate_summary_table(gates), gate_table(gates, caption)]
    tables += [t for t in (control_table(gates), specificity_table(gates), attack_table(gates)) if t is not None]
    tables.append(randomization_table(gates))
    for name in per_class_of:
        table = per_class_table(gates[name], name)
        if table is not None:
            tables.append(table)
    return tables
