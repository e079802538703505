"""The study's report: the cross-model verdicts first (fixed rules, the single runs' verdict words), a forest plot
per attack and endpoint, the agreement matrices as heat maps, the contrasts and meta-regressions, then the gate and
cost of every model with a link to its own report. Rendered from the findings alone; the figures are drawn first
(:func:`draw_figures`)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from ..report.html import Section, Table
from ..report.sections import drawn_figure
from ..report.verdicts import fmt, fmt_p, interval, verdict_legend, verdict_table
from ..statistics.wording import how_many
from .analysis import ENDPOINTS, MIN_MODELS, MIN_N, Agreement, Endpoint
from .figures import ForestRow, PooledRow, plot_agreement, plot_model_forest
from .findings import StudyFindings

ENDPOINT_AXES = {"beyond": "RoI's energy share minus the weakest region's of the same size",
                 "excess": "excess of the energy share over the same-class null"}


def forest_name(ep: Endpoint) -> str:
    return f"forest-{ep.attack}-{ep.endpoint}.png"


def agreement_name(subject: str) -> str:
    return "agreement-" + subject.replace("RoA: ", "roa-").replace("RoI", "roi").replace(" ", "_") + ".png"


def draw_figures(findings: StudyFindings, folder: Path) -> None:
    """The forest plot of every endpoint and the heat map of every agreement matrix, into ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    for ep in findings.endpoints:
        rows = [ForestRow(e.model, e.effect.mean, e.effect.low, e.effect.high, e.included,
                          "" if e.included else e.reason.split(":")[0]) for e in ep.models]
        rows += [ForestRow(label, math.nan, math.nan, math.nan, False, "run failed") for label in findings.failed]
        pooled = None
        if ep.pooled is not None:
            m = ep.pooled.meta
            pooled = PooledRow(f"pooled ({m.k} models)", m.effect, m.low, m.high, m.prediction_low, m.prediction_high)
        claim = findings.claims[ep.pooled.claim] if ep.pooled is not None else None
        plot_model_forest(rows, pooled, folder / forest_name(ep), title=f"{ep.attack}: {ENDPOINTS[ep.endpoint]}",
                          xlabel=ENDPOINT_AXES[ep.endpoint], sesoi=claim.sesoi if claim and claim.sesoi > 0 else None,
                          pooled_note=ep.note, digits=3)
    labels = list(findings.models)
    for subject in dict.fromkeys(c.subject for c in findings.agreement):
        cells = [c for c in findings.agreement if c.subject == subject]
        excess, low, high, words = agreement_matrix(labels, cells)
        plot_agreement(labels, excess, low, high, folder / agreement_name(subject), verdicts=words,
                       colorbar_label="excess IoU over the same-class null",
                       title=f"{subject}: IoU of two models' regions on the same image, excess over the "
                             "same-class null")


def agreement_matrix(labels: list[str], cells: list[Agreement]
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """k x k matrices (symmetric; NaN diagonal and missing pairs) of excess, CI bounds and verdicts."""
    k = len(labels)
    excess, low, high = (np.full((k, k), np.nan) for _ in range(3))
    words = np.full((k, k), None, dtype=object)
    at = {label: i for i, label in enumerate(labels)}
    for c in cells:
        for i, j in ((at[c.a], at[c.b]), (at[c.b], at[c.a])):
            excess[i, j], low[i, j], high[i, j], words[i, j] = c.effect.mean, c.effect.low, c.effect.high, c.verdict
    return excess, low, high, words


def render(findings: StudyFindings, figures: Path, quick: bool = False) -> tuple[str, list[Section]]:
    """The printed summary and the report's sections (``quick``: a smoke test's study, whose sizes pool nothing)."""
    sections = [verdicts_section(findings, quick), forest_section(findings, figures),
                agreement_section(findings, figures), contrasts_section(findings), regression_section(findings),
                models_section(findings)]
    return summary(findings, quick), sections


def smoke_pools_nothing(findings: StudyFindings, quick: bool) -> str:
    """For a quick study that pooled nothing, the one sentence saying so and why ('' otherwise): its sizes (models,
    images kept, gate checks) are a smoke test's, not a pooled verdict's."""
    if not quick or any(ep.pooled is not None for ep in findings.endpoints):
        return ""
    effects = [e for ep in findings.endpoints for e in ep.models]
    why = [f"{how_many(len(findings.models), 'model')} measured"]
    kept = [e.n for e in effects if e.n > 0]
    if kept and min(kept) < MIN_N:
        why.append(f"at most {max(kept)} images kept per model and attack")
    why += sorted({e.reason for e in effects if e.reason.startswith("gate")})
    return (f"nothing pooled: a quick study is a smoke test ({'; '.join(why)}), and a pooled verdict needs "
            f"{MIN_MODELS} models whose gates passed on at least {MIN_N} images each; run it without --quick")


def summary(findings: StudyFindings, quick: bool = False) -> str:
    """One line per pooled claim (or one line when a quick study pooled nothing), and the models left out."""
    lines = [f"study of {len(findings.models)} models on {findings.dataset} (n = {findings.n} images each)"]
    smoke = smoke_pools_nothing(findings, quick)
    if smoke:
        lines.append(f"  {smoke}")
    for ep in [] if smoke else findings.endpoints:
        if ep.pooled is None:
            lines.append(f"  {ep.attack}, {ENDPOINTS[ep.endpoint]}: {ep.note}")
            continue
        c = findings.claims[ep.pooled.claim]
        lines.append(f"  {ep.attack}, {ENDPOINTS[ep.endpoint]}: pooled Δ {interval(c.effect)} over "
                     f"{ep.pooled.meta.k} models (HKSJ, p {fmt_p(ep.pooled.meta.p)}), {c.verdict} "
                     f"({ep.pooled.heterogeneity})")
    for subject in dict.fromkeys(c.subject for c in findings.agreement):
        cells = [c for c in findings.agreement if c.subject == subject]
        words = ", ".join(f"{c.a}~{c.b} Δ {interval(c.effect)} {c.verdict}" for c in cells)
        lines.append(f"  agreement, {subject}: {words}")
    lines += [f"  {label}: run failed ({why})" for label, why in findings.failed.items()]
    return "\n".join(lines)


def verdicts_section(findings: StudyFindings, quick: bool = False) -> Section:
    """What the study shows, first: the pooled verdicts (or why there are none), then the agreement verdicts, the
    method and the legend; the tables of the pooled claims and of the heterogeneity."""
    smoke = smoke_pools_nothing(findings, quick)
    paragraphs = [*([smoke[0].upper() + smoke[1:] + "."] if smoke else pooled_sentences(findings)),
                  *agreement_sentences(findings), POOLING_RULE, verdict_legend()]
    notes = [f"{label}: run failed ({why}); resume the study to complete it" for label, why in findings.failed.items()]
    rows = [[ep.attack, ep.endpoint, p.meta.k, interval(findings.claims[p.claim].effect), fmt_p(p.meta.p),
             f"{p.meta.i2:.0%}", fmt(p.meta.tau2, 4), fmt_p(p.meta.q_p), pred(ep), p.heterogeneity]
            for ep in findings.endpoints if (p := ep.pooled) is not None]
    tables = []
    if findings.claims:
        tables.append(verdict_table(findings.claims, "Cross-model verdicts (pooled over the models that passed "
                                                     "their gates)"))
    if rows:
        tables.append(Table("Heterogeneity between models", ["attack", "endpoint", "models", "pooled Δ [95% CI]",
                                                             "p (t, k-1 df)", "I²", "τ²", "Q p",
                                                             "prediction interval", "reading"], rows))
    return Section("Cross-model verdicts", paragraphs, tables, notes=notes, anchor="verdicts")


#: how the study pools, in the words of its report
POOLING_RULE = (
    "Each model was measured by the maps experiment on the same images with the same seeds. A model's effect enters "
    f"the pooled estimate only when the gates its claim rests on passed (its RoI gate passed, not merely undecided; "
    f"complete attack maps) and it kept at least {MIN_N} images, and a pooled estimate needs at least {MIN_MODELS} "
    "such models. The pooled effect is a DerSimonian-Laird random-effects estimate with a Hartung-Knapp-Sidik-Jonkman "
    "95% CI and p (t with k - 1 degrees of freedom, its scale never below 1), which stays honest with few models; "
    "the prediction interval says where a new model's effect would lie. Its verdict follows the single runs' fixed "
    "rule (Holm across attacks for the primary endpoint, co-location beyond layout and image content; "
    "Benjamini-Hochberg for the plain excess).")


def pooled_sentences(findings: StudyFindings) -> list[str]:
    """One sentence per attack and endpoint: the pooled verdict, or why there is none and who was left out."""
    out = []
    for ep in findings.endpoints:
        left_out = "; ".join(f"{e.model}: {e.reason}" for e in ep.models if not e.included)
        head = f"{ep.attack}, {ENDPOINTS[ep.endpoint]}: "
        if ep.pooled is None:
            out.append(head + f"no pooled verdict: {ep.note.removeprefix('not pooled: ')}"
                       + (f". Left out: {left_out}." if left_out else "."))
            continue
        c = findings.claims[ep.pooled.claim]
        out.append(head + f"{c.verdict} across {ep.pooled.meta.k} models, pooled Δ {interval(c.effect)} "
                   f"({ep.pooled.heterogeneity})" + (f". Left out: {left_out}." if left_out else "."))
    return out


def agreement_sentences(findings: StudyFindings) -> list[str]:
    """One sentence per agreement matrix: each pair's excess IoU over the same-class null and its verdict."""
    out = []
    for subject in dict.fromkeys(c.subject for c in findings.agreement):
        cells = [c for c in findings.agreement if c.subject == subject]
        what = "Do the models look at the same place?" if subject == "RoI" else \
            f"Do the models' attacks ({subject.removeprefix('RoA: ')}) act in the same place?"
        pairs = "; ".join(f"{c.a} and {c.b}: Δ IoU {interval(c.effect)}, {c.verdict}" for c in cells)
        out.append(f"{what} {pairs}.")
    return out


def pred(ep: Endpoint) -> str:
    m = ep.pooled.meta if ep.pooled is not None else None
    if m is None or not math.isfinite(m.prediction_low):
        return "-"
    return f"[{m.prediction_low:+.3f}, {m.prediction_high:+.3f}]"


def forest_section(findings: StudyFindings, figures: Path) -> Section:
    rows = [[ep.attack, ep.endpoint, e.model, e.n, interval(e.effect), fmt(e.se, 4), e.reference or "-",
             "yes" if e.included else f"no: {e.reason}", e.run_verdict or "-"]
            for ep in findings.endpoints for e in ep.models]
    table = Table("Effect per model", ["attack", "endpoint", "model", "images", "Δ [95% CI]", "se",
                                       "worst reference", "pooled", "single-run verdict"], rows)
    figs = [f for ep in findings.endpoints for f in drawn_figure(
        figures, forest_name(ep), f"{ep.attack}: {ENDPOINTS[ep.endpoint]}, per model (grey: not pooled) and pooled "
                                  "(diamond: 95% HKSJ CI; line: prediction interval)")]
    return Section("Effect per model", ["Per model its effect with the bootstrap CI of its own run; the se weighs it "
                                        "in the meta-analysis (sd of the per-image values / sqrt n)."], [table],
                   figs, anchor="forest")


def agreement_section(findings: StudyFindings, figures: Path) -> Section:
    rows = [[c.subject, c.a, c.b, c.n, fmt(c.observed), fmt(c.null), interval(c.effect), fmt_p(c.p),
             fmt_p(c.p_adjusted), ", ".join(k for k, ok in c.gates.items() if not ok) or "passed", c.verdict]
            for c in findings.agreement]
    table = Table("Agreement between models (IoU of the two models' regions on the same image vs the same-class null)",
                  ["regions", "model a", "model b", "images", "IoU", "same-class null", "Δ [95% CI]", "p",
                   "p_adj (BH)", "gates", "verdict"], rows)
    figs = [f for subject in dict.fromkeys(c.subject for c in findings.agreement) for f in drawn_figure(
        figures, agreement_name(subject), f"{subject}: pairwise agreement (excess IoU over the same-class null)")]
    text = ("Do different models' attacks act in the same place, and do the models look at the same place? Per image "
            "both models kept, the IoU of model a's region with model b's region of the same image, against a's "
            "region of another image of the same class; maps on a common grid, regions re-taken as the top "
            "fraction there. RoA agreement rests on both attack maps' completeness; RoI agreement on neither RoI "
            "failing its faithfulness gate.")
    return Section("Do the models' attacks act in the same place?", [text], [table], figs, anchor="agreement")


def contrasts_section(findings: StudyFindings) -> Section:
    rows = [[c.attack, c.a, c.b, c.effect.n, interval(c.effect), fmt_p(c.p), fmt_p(c.p_adjusted),
             ", ".join(k for k, ok in c.gates.items() if not ok) or "passed", c.verdict] for c in findings.contrasts]
    table = Table("Paired contrasts (model a minus model b, excess over the same-class null, same images)",
                  ["attack", "model a", "model b", "images", "Δ [95% CI]", "p", "p_adj (Holm)", "gates", "verdict"],
                  rows)
    return Section("Paired contrasts between models", [
        "On the images both models kept, the mean per-image difference of their excess over the same-class null "
        "(a sign-flip test; Holm across every pair and attack). 'supported': model a's attack co-locates more with "
        "its RoI than model b's."], [table], anchor="contrasts")


def regression_section(findings: StudyFindings) -> Section:
    rows = [[r.attack, r.endpoint, r.fit.covariate, r.fit.k, fmt(r.fit.slope, 4),
             f"[{r.fit.low:+.4f}, {r.fit.high:+.4f}]", fmt(r.fit.tau2, 4), fmt_p(r.fit.p), fmt_p(r.p_adjusted)]
            for r in findings.regressions]
    text = ("Exploratory: a mixed-effects meta-regression of the pooled models' effects on one covariate at a time "
            "(needs 3 or more pooled models and a covariate that varies); BH across all, no verdicts.")
    notes = [] if rows else ["No meta-regression: fewer than 3 models were pooled for every endpoint."]
    return Section("Meta-regression on model covariates", [text], [Table(
        "Meta-regression", ["attack", "endpoint", "covariate", "models", "slope", "95% CI", "τ² (residual)", "p",
                            "p_adj (BH)"], rows)], notes=notes, anchor="regression")


def models_section(findings: StudyFindings) -> Section:
    rows = [[label, m.spec, m.parameters, m.depth, "x".join(map(str, m.image_shape)), fmt(m.clean_accuracy),
             fmt(m.robust_accuracy), m.roi_method, m.roi_status, fmt(m.wall_seconds, 1),
             m.report] for label, m in findings.models.items()]
    rows += [[label, "-", "-", "-", "-", "-", "-", "-", "-", "-", f"run failed: {why}"]
             for label, why in findings.failed.items()]
    table = Table("Models", ["model", "spec", "parameters", "depth (conv+linear)", "input", "clean accuracy",
                             "robust accuracy (PGD)", "RoI explainer", "RoI gate", "wall seconds", "own report"], rows)
    skipped = [f"{label}: {attack} not compared ({why})" for label, m in findings.models.items()
               for attack, why in m.skipped.items()]
    links = [(f"{label}: its own report", m.report) for label, m in findings.models.items()]
    return Section("Models: gates, covariates, cost", ["Every model's own report (all its claims, gates and "
                                                        "figures) is linked below."], [table], notes=skipped,
                   anchor="models", links=links)
