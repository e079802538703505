"""The report of the perceptual experiment: verdicts first, the gate, setup, attacks and curves, maps, nulls, limits;
and the printed summary.

Rendering only (:func:`render`): every number comes from the findings (:mod:`.findings`), every figure from the
PNG files the run drew (:mod:`.figures`), so ``advspatial report DIR`` renders a finished run's report again.
"""

from __future__ import annotations

from pathlib import Path

from ...statistics.claims import NOT_INTERPRETABLE_ROI, failed_gates, sentence_case
from ...statistics.verdicts import sesoi_text, verdict
from ...report.html import Section, Table
from ...report.sections import drawn_figure, explainer_verdict, faithfulness_section
from ...report.verdicts import fmt, fmt_p, verdict_legend, verdict_table, what_this_run_shows
from ..measurement.roi import gate_rule
from ..results import Rendered
from .config import ENGINE_LABELS, PRIMARY_STATISTIC, STAT_LABELS, STATS, PerceptualConfig
from .figures import ATTACKS_SUMMARY, CALIBRATION, EXAMPLES, FOREST, FOREST_ALL, OVERLAP
from .claims import CURVE_RANGE_GATE, DISTORTION_CLAIM
from .findings import MinimalDistortion, PerceptualFindings
from .ssim_matching import Calibration

TERMS = ("Region of Importance (RoI): the pixels the model looks at when it classifies, here the top fraction of "
         "the class activation map of the TRUE class on the clean image. Region of Attack (RoA): the pixels the "
         "attack acts through, here the top fraction of the 1 − SSIM map, 1 − SSIM_local(x, x'), i.e. where the "
         "adversarial image loses structural similarity.")


def render(config: PerceptualConfig, findings: PerceptualFindings, figures: Path) -> Rendered:
    """The printed summary and every section of the perceptual report, in order (figures: those drawn in
    ``figures``)."""
    return Rendered(summary_text(findings), [
        verdict_section(config, findings, figures),
        gate_section(config, findings),
        setup_section(config, findings),
        attacks_section(config, findings, figures),
        maps_section(config, findings, figures),
        overlap_section(config, findings, figures),
        limits_section(config, findings),
    ])


def verdict_section(config: PerceptualConfig, findings: PerceptualFindings, figures: Path) -> Section:
    """The top of the report: terms, what the run shows, one row per primary claim, a forest plot per attack."""
    claims, roi = findings.claims, findings.roi
    paragraphs = [TERMS, f"RoI explainer: {roi.method} of the true class ({roi.why})."]
    if not roi.usable:
        reason = findings.gate.reason
        paragraphs.append(f"{sentence_case(NOT_INTERPRETABLE_ROI)} ({roi.method}: {reason}): every "
                          "RoI-dependent result below (where the 1 − SSIM map lies relative to the CAM: the "
                          "verdicts, the map statistics, the overlap tables) is not evidence about the model. The "
                          "success rates and SSIMs of the attacks do not depend on the RoI and stay valid.")
    elif roi.caveat:
        paragraphs.append(f"{sentence_case(roi.caveat)} ({roi.method}): the RoI-dependent verdicts below stand, read "
                          "with this caveat; the last section lists the images that would decide it.")
    shows = what_this_run_shows(claims)
    paragraphs += ["What this run shows:"] + (shows or [
        "No claim could be tested: fewer than 3 successful images per attack."])
    notes = [verdict_legend() + f" Primary endpoint: {ENGINE_LABELS[PRIMARY_STATISTIC]} (energy_in_roi) vs the "
             f"same-class null, one per attack, Holm across the attacks; every other statistic x null "
             f"Benjamini-Hochberg; alpha (the significance level, setting 'significance') {config.significance} "
             f"after correction; {sesoi_text(config.sesoi)}; n >= 30."]
    forest = drawn_figure(figures, FOREST,
                          "Forest plot per attack: the share of the 1 − SSIM mass inside the CAM region "
                          "against each null (uniform placement, any class, same class, same class and "
                          "foreground share). Grey: a gate failed.")
    tables = [verdict_table([c for c in claims if c.primary],
                            "Verdicts: one row per pre-declared claim (primary endpoint per attack)")]
    return Section("Verdicts", paragraphs, tables=tables, figures=forest, notes=notes, anchor="verdicts")


def gate_section(config: PerceptualConfig, findings: PerceptualFindings) -> Section:
    """The faithfulness gate of the CAM and the cascading model-randomization check."""
    roi, gate = findings.roi, findings.gate
    return faithfulness_section([
        explainer_verdict("RoI explainer", f"{roi.method} of the true class", roi.why, gate.status,
                          None if gate.passed else gate.reason),
        gate_rule(config, min(config.gate_n, findings.n), config.fraction, findings.pgd_eps, "the CAM")
        + f" {gate.n} images entered; eps is the calibrated budget of the PGD baseline."],
        findings.faithfulness, per_class_of=[roi.method])


def setup_section(config: PerceptualConfig, findings: PerceptualFindings) -> Section:
    window = config.window_value()
    return Section("Setup", [
        f"Model {config.model} on the first {findings.n} {config.dataset} test images; clean accuracy "
        f"{fmt(findings.clean_accuracy)}. Seed {config.seed}; device {config.device}.",
        f"SSIM-ball attack: {config.loss} loss, {config.steps} projected steps (step {config.step_size} of each "
        f"window's size) inside the intersection of per-window SSIM balls (contrast-structure term >= "
        f"{config.alpha} in every non-overlapping "
        f"{'4x4 (28 px) / 8x8' if window == 'auto' else f'{window}x{window}'} window), "
        + (f"SSIM's luminance term >= {config.alpha_l} per window (so every window's SSIM >= "
           f"{config.alpha * config.alpha_l:.3f})" if config.luminance == "term" else
           f"the absolute luminance bound |mean change| <= {config.beta} per window (not an SSIM bound)")
        + ", and the box [0,1]."
        + (f" On the success-rate vs SSIM curve a budget alpha above alpha_l {config.alpha_l} bounds the luminance "
           "term by alpha too (every window's SSIM >= alpha^2), so the ball shrinks to the clean image as alpha "
           "nears 1." if config.luminance == "term" else ""),
        f"Baseline: L-inf PGD with the same loss ({config.loss}) and step budget ({config.steps} steps, step "
        f"2.5*eps/steps, seeded random start), its budget eps calibrated so that its mean SSIM matches the SSIM-ball "
        "attack's; beside that single point, both attacks at several budgets (success rate vs SSIM curves) and per "
        "image the highest SSIM at which each fools it.",
        "Geometry null: per attack and image, a random feasible perturbation of the same set (a random direction in "
        "every window taken to the edge of the SSIM ball; random signs times eps for PGD), scaled toward 0 until "
        "its SSIM equals the attack's on that image. Its 1 − SSIM map against the CAM is the baseline of the "
        "co-location claim: where the set lets any perturbation lower SSIM, not where the attacker chose to.",
        "SSIM is Wang et al.'s, as scikit-image computes it (Gaussian window sigma 1.5, 11 taps, population "
        "statistics; the image score averages the map away from a 5-pixel border). The SSIM map is "
        "1 - SSIM_local(x, x') at every pixel (borders reflected): the RoA side.",
        f"Class activation map (the RoI side): {findings.roi.method} of the TRUE class on the clean image "
        f"({findings.roi.why}). Regions: the top {config.fraction:.0%} of each map (strictly positive pixels; ties "
        "at the cut broken by a seeded random order).",
        "Success rate: share of correctly classified images whose prediction the attack changes. Map statistics: "
        f"over images classified correctly and fooled (successful), the first {config.permutation_images} per "
        "attack entering the nulls.",
    ])


def attacks_section(config: PerceptualConfig, findings: PerceptualFindings, figures: Path) -> Section:
    calibration = findings.calibration
    rows = []
    for name, m in findings.attacks.items():
        budget = ((f"alpha {config.alpha}, "
                   + (f"alpha_l {config.alpha_l}" if config.luminance == "term" else f"beta {config.beta}"))
                  if name == "ssim-ball" else f"eps {calibration.eps:.4f}")
        rows.append([name, budget, m.images, fmt(m.success_rate), m.successful, fmt(m.mean_ssim, 4),
                     fmt(m.mean_ssim_window, 4), fmt(m.mean_ssim_successful, 4), fmt(m.mean_l2), fmt(m.mean_linf)])
    table = Table("Attacks at matched mean SSIM (SSIM over all attacked images; norms over successful ones)",
                  ["attack", "budget", "images", "success rate", "successful", "mean SSIM (Gaussian, all)",
                   "mean window SSIM (the constraint's, all)", "mean SSIM (successful)", "mean L2", "mean Linf"], rows)
    curve_rows = [[name, curve_budget(config, name, p.budget), fmt(p.mean_ssim, 4), fmt(p.success_rate)]
                  for name, points in findings.curves.items() for p in points]
    curve_table = Table("Success rate vs mean SSIM on the calibration images (budget: alpha for SSIM-ball, eps for "
                        "PGD)", ["attack", "budget", "mean SSIM", "success rate"], curve_rows)
    state = ("matched within the tolerance" if calibration.matched else
             "NOT matched within the tolerance" + ("" if calibration.reachable else
                                                  f": even eps_max={config.eps_max} keeps SSIM above the target"))
    paragraphs = [
        f"Calibration on the first {min(config.calibration_n, findings.n)} images: target mean SSIM "
        f"{calibration.target:.4f} (SSIM-ball attack), PGD budget eps = {calibration.eps:.4f} gives "
        f"{calibration.mean_ssim:.4f} after {len(calibration.history)} PGD runs ({state}, tolerance "
        f"{calibration.tolerance}). Over all {findings.n} images the PGD mean SSIM minus the SSIM-ball mean SSIM is "
        f"{findings.ssim_gap:+.4f}.",
        "At equal mean SSIM, the attack with the higher success rate uses its perceptual budget better. These numbers "
        "do not depend on the RoI. Two SSIMs are shown: the reported one (Gaussian 11-tap window, a 5-pixel border "
        "left out of the average) and the window SSIM the constraint bounds (non-overlapping windows, every pixel).",
    ]
    md = findings.minimal_distortion
    if md is not None:
        excess = md.comparison.excess
        paragraphs.append(
            f"Minimal distortion, per image: of {md.images_both} calibration images fooled by both attacks at some "
            f"budget, the SSIM-ball attack's highest SSIM at which it succeeds minus PGD's is {fmt(excess.mean, 4)} "
            f"[{fmt(excess.low, 4)}, {fmt(excess.high, 4)}] (verdict in the table at the top); "
            f"{md.only_ssim_ball} images only the SSIM-ball attack fooled, {md.only_pgd} only PGD. Each "
            "attack's highest SSIM at which it succeeds is capped by its least distorting budget on the curve "
            "(mean SSIM there: "
            + ", ".join(f"{name} {fmt(v, 4)}" for name, v in md.ceilings.items())
            + "): where the caps differ, so does what the comparison can show. "
            + curve_range_words(md, findings, config))
    shown = (drawn_figure(figures, ATTACKS_SUMMARY,
                          "Success rate (left) and the per-image SSIM of every attacked image "
                          "(right) for both attacks.")
             + drawn_figure(figures, CALIBRATION,
                            "Calibration of the PGD budget: mean SSIM on the calibration images at "
                            "each budget tried."))
    return Section("Attacks at matched SSIM", paragraphs, tables=[table, curve_table], figures=shown,
                   anchor="attacks-at-matched-ssim")


def curve_budget(config: PerceptualConfig, name: str, budget: float) -> str:
    """A curve point's budget in words: PGD's eps, the SSIM-ball attack's alpha (with its luminance bound where the
    budget raises it above the run's alpha_l)."""
    alpha_l = config.curve_alpha_l(budget)
    if name != "ssim-ball" or alpha_l == config.alpha_l:
        return f"{budget:.4g}"
    return f"{budget:.4g} (alpha_l {alpha_l:.4g})"


def curve_range_words(md: MinimalDistortion, findings: PerceptualFindings, config: PerceptualConfig) -> str:
    """How many images each curve caps, how far they could move the difference, the difference and verdict at each
    curve's end, and the curve-range gate's outcome, with what would decide it where it failed."""
    claim = next((c for c in findings.claims if c.claim == DISTORTION_CLAIM), None)
    if claim is None or not md.capped:
        return ""
    text = (f"Of those {md.images_both}, {md.capped.get('ssim-ball', 0)} are fooled already at the SSIM-ball attack's "
            f"least distorting budget and {md.capped.get('pgd', 0)} at PGD's: their highest fooling SSIM lies "
            f"between the curve's and 1, which could move the difference by up to "
            f"+{small(md.reach.get('ssim-ball', 0.0))} (SSIM-ball) or -{small(md.reach.get('pgd', 0.0))} (PGD)")
    ends = " and ".join(f"{fmt(b.effect.mean, 4)} [{fmt(b.effect.low, 4)}, {fmt(b.effect.high, 4)}] at "
                        f"{END_NAMES[name]} ('{b.verdict}')" for name, b in md.bounds.items())
    text += (f". With every capped image at 1, the difference would be {ends}" if ends else "")
    if claim.gates.get(CURVE_RANGE_GATE, True):
        return text + ": the curve-range gate passed (neither end changes what the claim concludes)."
    own = verdict(claim.effect, claim.p_adjusted, {}, sesoi=claim.sesoi, alpha=config.significance)
    return (text + f", against '{own}' at the curves' own values: the curve-range gate failed (the verdict depends on "
            "values the grid leaves open), so the claim reads 'not interpretable'; budgets where the attacks stop "
            "fooling decide it (alphas nearer 1 in curve_alphas, smaller curve_eps_factors"
            + ("" if config.luminance == "term" else
               "; with luminance absolute a window's luminance term may fall however near 1 alpha is, so a smaller "
               "beta or luminance term")
            + ").")


#: each curve's end in words
END_NAMES = {"ssim-ball": "the SSIM-ball curve's end", "pgd": "PGD's"}


def small(value: float) -> str:
    """A non-negative reach: four decimals, or two significant digits below 0.001 (not a bare 0.0000)."""
    return f"{value:.1e}" if 0 < value < 1e-3 else fmt(value, 4)


def maps_section(config: PerceptualConfig, findings: PerceptualFindings, figures: Path) -> Section:
    method = findings.roi.method
    rows = [[name, m.successful] + [fmt(getattr(m.maps, s)) for s in STATS] + [m.maps.interpretation]
            for name, m in findings.attacks.items()]
    table = Table(f"SSIM map vs {method} of the true class (means over successful images)",
                  ["attack", "images"] + [STAT_LABELS[s] for s in STATS] + ["interpretation"], rows)
    shown = drawn_figure(figures, EXAMPLES,
                         "Images fooled by both attacks: clean image, CAM of the true class, then per "
                         "attack the adversarial image and its 1-SSIM map; cyan contour: CAM top region "
                         "(RoI), white dashed contour: top region of the 1-SSIM map (RoA).")
    notes = [] if shown else ["No image was fooled by both attacks, so no side-by-side example is shown."]
    if not findings.roi.usable:
        notes.append(f"{sentence_case(NOT_INTERPRETABLE_ROI)}: these statistics describe the map "
                     f"{method}, not what the model uses.")
    return Section("SSIM maps vs CAM", ["Where each attack lowers SSIM (1 - SSIM_local) compared with where the "
                                        "model looks for the true class. Means only: whether they differ from "
                                        "chance is in the next section and the verdicts."], tables=[table],
                   figures=shown, notes=notes, anchor="ssim-maps-vs-cam")


def overlap_section(config: PerceptualConfig, findings: PerceptualFindings, figures: Path) -> Section:
    """Every statistic against every null (folded), with corrected p-values and verdicts, and their levels."""
    rest = [c for c in findings.claims if not c.primary]
    tables = [verdict_table(rest, f"Every statistic vs every null ({config.permutations} permutations per pair-based "
                                  "null; two-sided p; Benjamini-Hochberg)", folded=True)]
    shown, notes = [], []
    if findings.inference:
        shown += drawn_figure(figures, OVERLAP,
                              "Observed mean of each statistic next to the mean each null expects, per "
                              "attack (confidence intervals of the differences: forest plot below, "
                              "verdict tables).")
        shown += drawn_figure(figures, FOREST_ALL,
                              "Every statistic x null per attack: per-image excess over the null with "
                              "its 95% bootstrap CI. Grey: a gate failed.")
    else:
        notes.append("Fewer than 3 successful images per attack: no comparison with the nulls.")
    if not findings.roi.usable:
        notes.append(f"{sentence_case(NOT_INTERPRETABLE_ROI)}: every row here is RoI-dependent.")
    return Section("Overlap vs the nulls", [
        "Nulls, from the weakest to the most matched: uniform (the CAM region placed at random, analytic), "
        "any-class (the 1 − SSIM map of image i paired with the CAM of any other image), same-class (of another "
        "image of the same class), object-conditioned (same class and same foreground-share stratum). Observed below "
        "a null means the attack lowers SSIM away from where the model looks, more than that null: a finding in its "
        "own right, never hidden as p = 1."], tables=tables, figures=shown, notes=notes,
        anchor="overlap-vs-baseline")


def limits_section(config: PerceptualConfig, findings: PerceptualFindings) -> Section:
    luminance = ("The SSIM-ball attack keeps SSIM's own luminance term >= alpha_l in every window, so it cannot "
                 "brighten a black window by more than ~0.001 (alpha_l 0.99)." if config.luminance == "term" else
                 "This run used the absolute luminance bound |mean change| <= beta, which permits such shifts in "
                 "every window: the SSIM-ball attack's 1-SSIM map then marks the background too.")
    return Section("Limits", [
        "The source study attacks MobileNetV2 on ImageNet (224x224 colour images). Where an image has flat dark "
        "regions (the black backgrounds of Fashion-MNIST, for one), SSIM collapses under tiny changes there: its "
        "luminance term (2 mx my + C1) / (mx^2 + my^2 + C1) with C1 = 1e-4 drops from 1 to 0.04 when a black "
        "region (mx = 0) is brightened by 0.05, and its contrast term likewise (almost no local variance). An "
        "attack allowed to touch such regions (L-inf PGD) therefore lowers SSIM there first. " + luminance,
        "SSIM-ball windows are non-overlapping 4x4 (8x8 above 28 px) blocks, while the reported SSIM uses an 11-tap "
        "Gaussian window and leaves a 5-pixel border out of its average (59% of a 28x28 image, 9% of a 224x224 "
        "one): the constraint "
        "bounds the window SSIM (reported beside it), not the reported SSIM, which is why the PGD budget is "
        "calibrated on the reported SSIM and the curves compare both attacks at several budgets.",
        f"The PGD budget is calibrated on {min(config.calibration_n, findings.n)} images; the matched quantity is "
        "the mean SSIM over all attacked images, not the SSIM of each image, and the two attacks spread it "
        "differently (see the SSIM distributions).",
        f"The CAM ({findings.roi.method}) of a small CNN is coarse (upsampled from its last feature maps) and is "
        f"interpreted only where it passes the faithfulness gate; regions are the top {config.fraction:.0%} of each "
        "map, so IoU depends on that choice, and only observed-vs-null differences are interpreted.",
    ], anchor="limits")


def calibration_words(cal: Calibration) -> str:
    """PGD's budget against the SSIM it was chosen to match, in words that follow the numbers ("PGD eps 0.0187
    matches the SSIM-ball's mean SSIM 0.9415: 0.9412 on the calibration images, tolerance 0.005"); "matches" only
    where the calibration says so, else the closest budget evaluated and by how much it misses."""
    if cal.matched:
        return (f"PGD eps {cal.eps:.4f} matches the SSIM-ball's mean SSIM {cal.target:.4f}: {cal.mean_ssim:.4f} on "
                f"the calibration images, tolerance {cal.tolerance:g}")
    why = "" if cal.reachable else ": even the largest budget keeps SSIM above the target"
    return (f"PGD eps {cal.eps:.4f}, the closest budget evaluated, gives mean SSIM {cal.mean_ssim:.4f} against the "
            f"SSIM-ball's {cal.target:.4f} on the calibration images (NOT matched within the tolerance "
            f"{cal.tolerance:g}{why})")


def summary_text(findings: PerceptualFindings) -> str:
    """The summary printed at the end of ``advspatial run perceptual``."""
    cal, roi = findings.calibration, findings.roi
    lines = [f"clean accuracy {fmt(findings.clean_accuracy, 4)} on {findings.n} images; {calibration_words(cal)}",
             f"RoI: {roi.method} of the true class, faithfulness gate "
             f"{findings.gate.status}{'' if roi.faithful else ' (' + findings.gate.why() + ')'}"]
    header = f"{'attack':<10} {'success':>8} {'SSIM':>7} " + " ".join(f"{s:>14}" for s in STATS)
    lines += ["map statistics: mean over successful images", header, "-" * len(header)]
    for name, m in findings.attacks.items():
        lines.append(f"{name:<10} {fmt(m.success_rate):>8} {fmt(m.mean_ssim, 4):>7} "
                     + " ".join(f"{fmt(getattr(m.maps, s)):>14}" for s in STATS))
    for c in findings.claims:
        if c.primary:
            e = c.effect
            statistic = "energy in CAM" if c.statistic == PRIMARY_STATISTIC else c.statistic
            null = f"{c.null} null" if c.null in ("same-class", "geometry") else c.null
            lines.append(f"{c.subject}: {statistic} {fmt(c.observed)} vs {null} {fmt(c.null_value)}"
                         f", excess {fmt(e.mean)} [{fmt(e.low)}, {fmt(e.high)}], p_adj "
                         f"{fmt_p(c.p_adjusted)} -> {c.verdict}"
                         + (f" (the {' and '.join(failed_gates(c))} gate failed)" if failed_gates(c) else ""))
    if not roi.usable:
        lines.append(f"map statistics and verdicts: {NOT_INTERPRETABLE_ROI}")
    return "\n".join(lines)
