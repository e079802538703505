"""The report sections of the RoI/RoA measurement: verdicts first, the gate, setup, where the attacks act, the
overlap against the nulls, limits; and the printed claim lines (each experiment's ``report.render`` puts them
together: the ``maps`` experiment alone, ``analyze`` with its examples, spatial with its attacks table and defence).

Pure rendering: every number comes from the findings (:mod:`.findings`); a figure is shown when its file was drawn
(:mod:`.figures`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol

from ...faithfulness.calibration import Budget
from ...faithfulness.record import GateResult
from ...faithfulness.specificity import specificity_sentence
from ...statistics.claims import NOT_INTERPRETABLE_ROI, Claim, by_statement, sentence_case
from ...statistics.estimates import interval_text
from ...statistics.verdicts import sesoi_text
from ...report.answer import headline_sentences
from ...report.html import Figure, Section, Table
from ...report.sections import explainer_verdict, faithfulness_section
from ...report.verdicts import (
    claim_line, fmt, fmt_p, interval, secondary_count_line, verdict_legend, verdict_table, what_this_run_shows,
)
from ...statistics.outcomes import BEATS, DOES_LESS, Decision, images_to_decide
from .decomposition import REGION_NOUNS, Decomposition, as_much, interval90, size_undecided
from .roi import gate_rule
from .config import MeasurementConfig
from .figures import FOREST, frequency_file, frequency_title, regions_file
from .roi import Roi
from .findings import AttackOutcome
from .stages import PARTS

STAT_LABELS = {
    "iou": "IoU(RoI, RoA)", "dice": "Dice", "energy_in_roi": "attack energy in RoI",
    "pointing_game": "pointing game", "spearman": "Spearman(I, A)", "pearson": "Pearson(I, A)",
}

#: why a row's p and its CI can disagree, said once
P_AND_CI = ("Each row's p is a permutation test (the RoIs exchanged among the images its null pairs), its CI a "
            "bootstrap over images of the same excess: two approximations of one question that can disagree near "
            "the boundary (a p below 0.05 with a CI that holds 0, or the reverse). The verdict needs both: "
            "'supported' a corrected p below the level and a CI above 0; 'equivalent to null' a CI inside the "
            "smallest effect of interest, whatever the p.")
TERMS = ("Region of Importance (RoI): the pixels the model looks at when it classifies, the top fraction of an "
         "importance map. Region of Attack (RoA): the pixels the attacker's perturbation acts through, the top "
         "fraction of an attack map.")

GRADIENT_FREE = ("occlusion", "cam")


class MeasuredReport(Protocol):
    """What the measurement's report reads of a run's findings (``maps``, ``analyze`` and ``spatial`` alike)."""

    @property
    def n(self) -> int: ...
    @property
    def clean_accuracy(self) -> float: ...
    @property
    def attacks(self) -> Mapping[str, AttackOutcome]: ...
    @property
    def faithfulness(self) -> dict[str, GateResult]: ...
    @property
    def roi(self) -> Roi: ...
    @property
    def content(self) -> dict[str, dict[str, Any]] | None: ...
    @property
    def claims(self) -> list[Claim]: ...


def measurement_sections(config: MeasurementConfig, f: MeasuredReport, figures: Path,
                         headline: tuple[str, ...] = ()) -> list[Section]:
    """The sections of the measurement (before the limits; the spatial experiment adds its attacks table and
    defence); ``headline``: more sentences for the top of the report (the defence's)."""
    return [verdict_section(config, f, figures, headline), gate_section(config, f), setup_section(config, f),
            where_section(config, f, figures), overlap_section(config, f.claims)]


def shown(figures: Path, name: str, caption: str) -> list[Figure]:
    """The figure ``name`` with its caption when it was drawn, else none."""
    path = figures / name
    return [Figure(path, caption)] if path.is_file() else []


def verdict_section(config: MeasurementConfig, f: MeasuredReport, figures: Path,
                    headline: tuple[str, ...] = ()) -> Section:
    """The top of the report: one row per primary claim, what the run shows, a forest plot per attack."""
    claims = f.claims
    primary = [c for c in claims if c.primary]
    paragraphs = ["What this run shows:"] + what_this_run_shows(claims)
    paragraphs += headline
    if not f.roi.usable:
        label = f.roi.interpretation or NOT_INTERPRETABLE_ROI   # names what the RoI is not better than
        paragraphs.insert(0, f"{sentence_case(label)} ({f.roi.method}): every RoI-dependent "
                             "result below (co-location, the defence, which spares the RoI) is not evidence about the "
                             "model. The sensitivity panel shows what other explainers give.")
    elif f.roi.caveat:
        paragraphs.insert(0, f"{sentence_case(f.roi.caveat)} ({f.roi.method}): the verdicts stand, read with "
                             "this caveat; the last section lists the images that would decide each undecided "
                             "comparison.")
    legend = (verdict_legend() + f" Primary endpoint: {STAT_LABELS['energy_in_roi']} beyond layout and image "
              "content -- per image, the share of the attack map inside the model's RoI minus its share inside each "
              "other region of the same pixel count: the fixed regions (centre, class layout, dataset layout), the "
              "content regions (brightest pixels, strongest edges) and a same-class image's RoI (the image-specific "
              "part); supported only when the RoI beats every one (an intersection-union test: the row shows the "
              "weakest difference and the largest p); Holm across attacks; every other row (the plain excess over "
              "the same-class null, the references' own co-location) Benjamini-Hochberg; significance level "
              f"{config.significance}; {sesoi_text(config.sesoi)}; n >= 30 (smaller claims are not judged and "
              "enter no family). " + P_AND_CI)
    notes = [TERMS]
    forest = shown(figures, FOREST, "Forest plot: the primary statistic against each null (uniform placement, any "
                                    "class, same class, same class and composition). Grey: a gate failed.")
    panel = [c for c in claims if ": " in c.subject and "RoI, top" in c.subject]
    tables = [verdict_table(primary, "Verdicts: one row per pre-declared claim")]
    if f.content:
        tables.append(decomposition_table(f.content))
    if panel:
        tables.append(panel_table(panel))
    for method in left_out_of_panel(config, f):
        notes.append(f"{method} is left out of the panel: its maps equal an earlier explainer's up to scale on this "
                     "model.")
    return Section("Verdicts", paragraphs, tables=tables, figures=forest, notes=notes, anchor="verdicts",
                   tables_first=True, folded=[("What the verdict words, the primary endpoint, p and the CI mean",
                                               legend)])


def decomposition_table(content: Mapping[str, Mapping[str, Any]]) -> Table:
    """Where each attack map falls: its share inside the RoI and inside every other region of the same size, with
    the paired difference, its margin and its reading (:mod:`~advspatial.experiments.measurement.decomposition`)."""
    rows = []
    for by_kind in content.values():
        for parts in by_kind.values():
            if "decomposition" not in parts:
                continue
            d = Decomposition.from_dict(parts["decomposition"])
            label = f"{d.attack} ({d.kind})"
            rows.append([label, f"the RoI ({d.roi_pixels:.0%} of the pixels)", interval(d.roi_share), "-", "-", "-"])
            for r in d.rows:
                rows.append([label, REGION_NOUNS[r.region], fmt(r.share.mean), interval(r.difference.estimate),
                             f"±{r.difference.margin:.3f}", reading_words(r.difference)])
    return Table("Where each attack's map falls: the share of the attack map inside the RoI and inside every other "
                 "region of the same pixel count (Δ: the RoI's share minus the region's, per image, 95% CI; margin: "
                 "the smallest effect of interest, 5% of the region's share; 'as much' is decided on the 90% CI, "
                 "which its reading gives)",
                 ["attack (map)", "region", "share inside", "Δ [95% CI]", "margin", "reading"], rows)


def reading_words(d: Decision) -> str:
    """A decomposition row's reading in words."""
    if as_much(d):
        return f"as much ({interval90(d)} inside the margin)"
    size = " (estimate inside the margin, CI past it)" if size_undecided(d) else ""
    if d.outcome == BEATS:
        return "the RoI catches more" + size
    if d.outcome == DOES_LESS:
        return "the region catches more" + size
    return f"undecided ({images_to_decide(d).text()})"


def left_out_of_panel(config: MeasurementConfig, f: MeasuredReport) -> list[str]:
    """The panel's explainers without a gate: left out as duplicates of an earlier one."""
    return [m for m in dict.fromkeys(config.panel) if m != f.roi.method and m not in f.faithfulness]


def gate_section(config: MeasurementConfig, f: MeasuredReport) -> Section:
    """The faithfulness gate of every explainer the run used, and the model-randomization check."""
    roi = f.roi
    gate = f.faithfulness[roi.method]
    budget = Budget.from_dict(gate.restricted_attack) if gate.restricted_attack else None
    return faithfulness_section([explainer_verdict("RoI explainer", roi.method, roi.why, gate.status,
                                                   None if gate.passed else gate.reason),
                                 *([specificity_sentence(gate)] if specificity_sentence(gate) else []),
                                 gate_rule(config, min(config.gate_n, f.n), config.fraction, config.eps_linf,
                                           budget=budget)],
                                f.faithfulness, per_class_of=[roi.method])


def panel_table(panel: list[Claim]) -> Table:
    """Explainer-sensitivity panel: the primary statistic under each explainer and region fraction."""
    rows = []
    for c in panel:
        method = c.subject.split(": ", 1)[1].split(" RoI")[0]
        kind = "gradient-free" if method in GRADIENT_FREE else "gradient-based (partly circular with the RoA)"
        rows.append([c.subject, kind, fmt(c.observed), fmt(c.null_value), interval(c.effect), fmt(c.ratio, 2),
                     fmt_p(c.p_adjusted),
                     "passed" if all(c.gates.values()) else "FAILED", c.verdict])
    return Table("Explainer sensitivity: attack energy in RoI vs the same-class null under other explainers and "
                 "region fractions (a conclusion that changes sign across faithful explainers is explainer-dependent)",
                 ["RoI", "explainer kind", "observed", "same-class null", "Δ [95% CI]", "ratio", "p_adj (BH)",
                  "gates", "verdict"], rows)


def setup_section(config: MeasurementConfig, f: MeasuredReport) -> Section:
    return Section("Setup", [
        TERMS,
        f"Model {config.model} on the first {f.n} {config.dataset} test images; clean accuracy "
        f"{fmt(f.clean_accuracy)}. Seed {config.seed}; device {config.device}.",
        f"RoI: {f.roi.method} of the predicted class on the clean image ({f.roi.why}). RoA: the "
        f"{config.attack_map} map of the perturbation ({config.contribution_part} part; magnitude added for L2 "
        f"attacks). Both regions are the top {config.fraction:.0%} of their map (only strictly positive pixels; ties "
        "at the cut broken by a seeded random order)"
        + (", compared at the CAM layer's resolution (both maps average-pooled)." if config.common_scale else
           ", at the input's resolution."),
        "Statistics are over images the model classifies correctly and the attack fools (successful attacks), "
        f"leaving out images whose contribution map stays outside the completeness tolerance "
        f"({config.completeness_tolerance:.0%}) after refinement.",
    ])


def where_section(config: MeasurementConfig, f: MeasuredReport, figures: Path) -> Section:
    shown_figures, part_rows = [], []
    for name, outcome in f.attacks.items():
        for kind, stats in outcome.maps.items():
            part_rows.append([name, kind] + [fmt(stats[p]) for p in PARTS]
                             + [fmt(stats.get("completeness_error_median", math.nan), 4),
                                fmt(stats.get("completeness_error_max", math.nan), 4),
                                fmt(stats.get("flagged_share", math.nan))])
        kind = next(iter(outcome.maps))
        shown_figures += shown(figures, regions_file(name), f"{name}: adversarial image, {f.roi.method} (RoI), "
                                                            f"{kind} map (RoA) and the four-part partition.")
    main = config.defence_attack if config.defence_attack in f.attacks else next(iter(f.attacks))
    shown_figures += frequency_figures(f.roi.method, main, next(iter(f.attacks[main].maps)), figures)
    table = Table("Four-part segregation (mean share of the image) and completeness of the contribution map",
                  ["attack", "attack map", "both", "roi_only", "roa_only", "neither", "completeness err. (median)",
                   "completeness err. (max)", "share flagged (excluded)"], part_rows)
    notes = ["For L-inf attacks the magnitude map is nearly flat (|delta| = eps almost everywhere); that is why "
             "the contribution map is the default RoA for them."]
    return Section("Where the attacks act", tables=[table], figures=shown_figures, notes=notes,
                   anchor="where-they-act")


def frequency_figures(importance: str, attack: str, kind: str, figures: Path) -> list[Figure]:
    """P(pixel in RoI | class), P(pixel in RoA | class) and their difference, over successful attacks."""
    out = []
    for key in ("roi", "roa"):
        label = frequency_title(key, importance, kind, attack)
        out += shown(figures, frequency_file(key), f"{label}: how often each pixel is in the region, per class.")
    return out + shown(figures, frequency_file("difference"),
                       "Red: pixels the attack uses more often than the model looks at them; blue: the reverse. "
                       "Class-level alignment or anti-alignment shows here before any statistic.")


def overlap_section(cfg: MeasurementConfig, claims: list[Claim]) -> Section:
    """Every statistic against every null (folded), with corrected p-values and verdicts."""
    rest = [c for c in claims if not c.primary and "RoI, top" not in c.subject]
    table = verdict_table(rest, f"Every statistic vs every null ({cfg.permutations} permutations per pair-based "
                                "null; two-sided p; Benjamini-Hochberg)", folded=True)
    return Section("Overlap vs the nulls", [
        "Nulls, from the weakest to the most matched: uniform (regions placed independently at random, analytic), "
        "any-class (RoA paired with the RoI of any other image), same-class (of another image of the same class), "
        "object-conditioned (same class and same foreground-share stratum). Observed below a null means the attack "
        "avoids the RoI more than that null: anti-alignment, a finding in its own right, never hidden as p = 1.",
        "IoU and Dice are not computed for one-pixel attacks (degenerate for a one-pixel RoA): they get the exact "
        "'attacked pixel in RoI' test against per-image chance instead."],
        tables=[table], anchor="overlap-vs-baseline")


def measurement_limits_section(cfg: MeasurementConfig, f: MeasuredReport, external: bool) -> Section:
    """The limits of the measurement alone (``maps``, ``analyze``); ``external``: the adversarial examples were
    made elsewhere (``analyze``)."""
    # external examples (analyze) were made elsewhere, by whatever attack: our one-pixel budget never ran
    paragraphs = [*measurement_limits(cfg), *([] if external else onepixel_limits(cfg, f))]
    if external:
        paragraphs.append(
            "The adversarial examples were made elsewhere: how strong their attack was (its budget, its "
            "convergence) is the maker's to show; this report measures where the given perturbations act, not "
            "whether a stronger attack would act elsewhere.")
    else:
        paragraphs.append(
            "No defence is evaluated here: the overlap of RoI and RoA says where the attacks act, not that removing "
            "either region protects the model (`advspatial run spatial` evaluates that, with controls and adaptive "
            "attacks).")
    return Section("Limits of the method", paragraphs, anchor="limits")


def measurement_limits(cfg: Any) -> list[str]:
    """What every RoI-vs-RoA measurement rests on: faithful maps, the choice of attack map, the region fraction."""
    return [
        "Maps are explanations, not ground truth: an RoI is interpreted only when its explainer passes the "
        "faithfulness gate, and the RoA depends on the attack map chosen (contribution, magnitude, gradient answer "
        "different questions).",
        "Gradient-based RoIs (Grad-CAM, HiResCAM, saliency, IG) are partly circular with a gradient-based RoA (the "
        "contribution map integrates the same model's gradients); occlusion is the gradient-free reference.",
        f"Regions are the top {cfg.fraction:.0%} of each map; other fractions change IoU mechanically. The nulls "
        "control for that, which is why only observed-vs-null differences are interpreted (the panel shows other "
        "fractions).",
    ]


def onepixel_limits(cfg: Any, f: MeasuredReport) -> list[str]:
    """The one-pixel attack's reduced budget, when it ran, and how many images its statistics rest on (this run's
    own count: on Fashion-MNIST it fools few, on a CIFAR-10 ResNet-20 about half)."""
    if "onepixel" not in f.attacks:
        return []
    attack = f.attacks["onepixel"]
    return [f"One-pixel attacks run on the first {min(cfg.onepixel_n, f.n)} images with a reduced DE "
            f"budget (population {cfg.onepixel_popsize}, {cfg.onepixel_steps} generations; the literature uses 400 "
            f"and 75); here they fool {attack.successful} of the correctly classified images (success rate "
            f"{attack.success_rate:.3f}), and their statistics rest on those."]


def gate_line(f: MeasuredReport, full: bool = False) -> str:
    """The RoI's gate in one line: its status, with its reason when ``full`` or short enough to read at a glance
    (else where to find it)."""
    gate = f.faithfulness[f.roi.method]
    head = f"RoI {f.roi.method}: faithfulness gate {gate.status}"
    if gate.passed:
        return head
    if full or len(gate.why()) <= SHORT_REASON:
        return f"{head} ({gate.why()})"
    return f"{head} (the report's gate section gives each row; advspatial plan lists what would decide them)"


#: the longest gate reason the compact summary prints (a longer one is for --verbose and the report)
SHORT_REASON = 100


def compact_claims_lines(f: MeasuredReport) -> list[str]:
    """What a person reads in a terminal: the gate in one line, the primary claim's statement, then each attack's
    verdict on it in one line (its weakest row with its CI, no p: the verdict needs both, the report explains why
    they can disagree), the secondary claims counted by verdict; ``--verbose`` prints every row
    (:func:`claims_lines`). The statement stands on a line of its own, named as the claim, so that it never reads
    as what the run found."""
    lines = [gate_line(f)]
    for statement, claims in by_statement(c for c in f.claims if c.primary).items():
        lines.append(f"Primary claim, Holm across attacks: {statement}")
        for c in claims:
            e = c.effect
            lines.append(f"  {c.subject}: {c.verdict.upper() if c.verdict == 'supported' else c.verdict} "
                         f"(against {c.null}: {interval_text(e.mean, e.low, e.high)}, n = {e.n})")
    lines += headline_sentences(f)
    count = secondary_count_line(f.claims)
    return lines + ([count] if count else [])


def claims_lines(f: MeasuredReport) -> list[str]:
    """The RoI's gate and every claim's verdict, one line each (``--verbose`` of ``maps`` and ``analyze``)."""
    lines = [gate_line(f, full=True)]
    lines += [claim_line(c) for c in f.claims]
    lines.append("(* = primary endpoint)")
    return lines
