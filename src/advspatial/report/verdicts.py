"""The top of every report: the verdict table, the paragraph it implies, forest plots, the gate table.

A reader should be able to stop after this section and know what the run
shows, how sure it is, and which validity checks it rests on.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..statistics.claims import Claim, failed_gates, sentence_case
from ..statistics.estimates import interval_text
from ..statistics.verdicts import MIN_SEEDS, format_p
from ..statistics.wording import how_many
from .figures import new_figure, save_figure
from .html import Figure, Table
from .planning import not_supported_words

if TYPE_CHECKING:
    from .html import Figure

VERDICT_COLUMNS = ["claim", "subject", "statistic", "observed", "null", "Δ [95% CI]", "ratio", "p", "p_adj",
                   "gates", "verdict"]

#: what each verdict word means, printed once under the table
VERDICT_MEANINGS = {
    "supported": "the CI of the excess over the null lies above 0, the corrected p is below alpha and the estimate "
                 "is at least the smallest effect of interest (for a claim about a training procedure, also: the "
                 "effect has its sign in every training seed)",
    "negligible": "significant, but the estimate is smaller than the smallest effect of interest",
    "reversed": "significant in the opposite direction: the CI lies below 0 and the estimate is at most minus the "
                "smallest effect of interest",
    "equivalent to null": "the CI lies inside ± the smallest effect of interest",
    "not supported": "neither a significant effect nor equivalence: undecided (the report's last section gives the "
                     "images that would decide it)",
    "not interpretable": "a validity gate failed, so the number does not mean what the claim says",
    "insufficient data": "fewer images than the minimum sample size (or, for a claim about a training procedure, "
                         f"fewer than {MIN_SEEDS} training seeds)",
}


def fmt(value: float | None, digits: int = 3) -> str:
    """A number for a table cell ('-' for None/NaN; no sign on a value that rounds to 0, such as a null of 0 that
    floats leave at -1e-19)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    text = f"{value:.{digits}f}"
    return text[1:] if text.startswith("-") and float(text) == 0 else text


def ratio_words(ratio: float) -> str:
    """"ratio R, " for a claim's sentence; nothing where the ratio is undefined (a null of 0)."""
    return "" if math.isnan(ratio) else f"ratio {fmt(ratio, 2)}, "


def fmt_p(p: float | None) -> str:
    """A p-value for a table cell: '-' for None/NaN, '< 1e-10' below that, 2 significant digits below 0.001."""
    if p is None or math.isnan(p) or p < 0.001:
        return format_p(p)
    return f"{p:.3f}"


def interval(effect: Any, digits: int = 3) -> str:
    """'+0.012 [+0.009, +0.015]' from an Estimate (or its dict)."""
    get = (lambda k: effect[k]) if isinstance(effect, Mapping) else (lambda k: getattr(effect, k))
    if effect is None or get("n") == 0 or math.isnan(get("mean")):
        return "-"
    if math.isnan(get("low")) or math.isnan(get("high")):
        return f"{get('mean'):+.{digits}f} [no CI]"
    return f"{get('mean'):+.{digits}f} [{get('low'):+.{digits}f}, {get('high'):+.{digits}f}]"


def seeds_cell(claim: Claim, digits: int = 3) -> str:
    """'2 of 3 seeds agree: +0.120, -0.010, +0.080' (each training seed's own Δ); '-' for a claim without seeds."""
    if claim.per_seed is None:
        return "-"
    return f"{claim.seeds_text()}: " + ", ".join(f"{d:+.{digits}f}" for d in claim.per_seed)


def gate_text(claim: Claim) -> str:
    """The claim's gates for a table cell: "FAILED: ...", "passed" or "-", then its caveats."""
    failed = failed_gates(claim)
    text = "FAILED: " + ", ".join(failed) if failed else "passed" if claim.gates else "-"
    return "; ".join([text, *claim.caveats]) if claim.caveats and not failed else text


def verdict_cell(claim: Claim) -> str:
    """The verdict word, and for an undecided claim ("not supported") the images that would decide it (not for a
    claim about a training procedure: its unit is the training seed, :func:`~advspatial.report.planning.claim_rows`)."""
    if claim.verdict != "not supported" or claim.per_seed is not None:
        return claim.verdict
    return f"{claim.verdict} ({not_supported_words(claim)})"


def verdict_table(claims: Sequence[Claim], caption: str, folded: bool = False) -> Table:
    """One row per claim; where any claim is about a training procedure, a column of its seeds (how many agree
    and each seed's own Δ) before the verdict."""
    seeded = any(c.per_seed is not None for c in claims)
    rows = [[c.claim, c.subject, c.statistic, fmt(c.observed), f"{c.null} {fmt(c.null_value)}",
             interval(c.effect), fmt(c.ratio, 2), fmt_p(c.p), fmt_p(c.p_adjusted), gate_text(c)]
            + ([seeds_cell(c)] if seeded else []) + [verdict_cell(c)] for c in claims]
    columns = VERDICT_COLUMNS[:-1] + ["training seeds: agree, Δ per seed"] + VERDICT_COLUMNS[-1:] if seeded else \
        VERDICT_COLUMNS
    if len({c.claim for c in claims}) == 1:  # one claim for every row: said once, in the caption
        caption, columns, rows = f"{caption}: {claims[0].claim}", columns[1:], [row[1:] for row in rows]
    return Table(caption, columns, rows, folded=folded)


def what_this_run_shows(claims: Sequence[Claim]) -> list[str]:
    """One generated sentence per primary claim, built from its verdict word (never from point estimates)."""
    sentences = []
    for c in claims:
        if not c.primary:
            continue
        head = f"{c.subject}: {c.claim} — {c.verdict.upper()}"
        if c.verdict == "not interpretable":
            body = f"the {' and '.join(failed_gates(c))} gate failed, so this number is not evidence either way."
        elif c.verdict == "insufficient data":
            body = f"only {c.effect.n} images entered the comparison."
            if c.per_seed is not None and len(c.per_seed) < MIN_SEEDS:
                body = (f"{c.effect.n} images and {how_many(len(c.per_seed), 'training seed')}; a claim about a "
                        f"training procedure needs at least {MIN_SEEDS} seeds.")
        else:
            direction = "above" if c.effect.mean > 0 else ("below" if c.effect.mean < 0 else "equal to")
            seeds = f", {c.seeds_text()}" if c.per_seed is not None else ""
            body = (f"{c.statistic} {fmt(c.observed)} is {direction} {c.null_words()} {fmt(c.null_value)} by "
                    f"{interval(c.effect)} ({ratio_words(c.ratio)}n = {c.effect.n}, p_adj {fmt_p(c.p_adjusted)}"
                    f"{seeds}).")
            if c.verdict == "not supported" and c.per_seed is None:
                words = not_supported_words(c)
                body += f" {sentence_case(words)}" + (" (a projection)." if words.startswith("undecided") else ".")
        if c.caveats and c.verdict != "not interpretable":
            body += " Caveat: " + "; ".join(c.caveats) + "."
        sentences.append(f"{head}: {body}")
    return sentences


def claim_line(c: Claim) -> str:
    """One claim in one terminal line: subject, statistic, null, observed, null value, effect with CI, p_adj,
    verdict (a leading ``*`` marks a primary claim)."""
    e = c.effect
    values = "" if e.n == 0 else f"observed {c.observed:.3f} null {c.null_value:.3f} "  # no image: no values
    return (f"  {'*' if c.primary else ' '} {c.subject:<28} {c.statistic:<14} vs {c.null:<18} "
            f"{values}excess {interval_text(e.mean, e.low, e.high)} p_adj {fmt_p(c.p_adjusted)}  {c.verdict}")


def secondary_count_line(claims: Sequence[Claim]) -> str:
    """The secondary claims counted by verdict in one line ('' without any): what a compact summary says of them."""
    rest = [c for c in claims if not c.primary]
    if not rest:
        return ""
    counts: dict[str, int] = {}
    for c in rest:
        counts[c.verdict] = counts.get(c.verdict, 0) + 1
    listed = ", ".join(f"{n} {v}" for v, n in sorted(counts.items(), key=lambda kv: -kv[1]))
    return f"  {len(rest)} secondary claims: {listed} (--verbose lists each; the report has them all)"


def verdict_legend() -> str:
    return "Verdict words: " + "; ".join(f"{k} = {v}" for k, v in VERDICT_MEANINGS.items()) + "."


def plot_forest(groups: Mapping[str, Sequence[Claim]], path: str | Path, title: str) -> Path:
    """One panel per group (e.g. per attack): each claim's excess over its null with its 95% CI, 0 marked."""
    names = [g for g, claims in groups.items() if claims]
    if not names:
        raise ValueError("plot_forest needs at least one group with claims")
    rows = max(len(groups[g]) for g in names)
    fig = new_figure(figsize=(5.2 * min(len(names), 3), 0.45 * rows + 1.6), dpi=100)
    for k, name in enumerate(names):
        ax = fig.add_subplot(math.ceil(len(names) / 3), min(len(names), 3), k + 1)
        claims = list(groups[name])
        y = np.arange(len(claims))[::-1]
        for yi, c in zip(y, claims, strict=True):
            color = "#777" if failed_gates(c) else ("#c0392b" if c.effect.mean < 0 else "#1f6fb2")
            if c.effect.n:
                ax.errorbar(c.effect.mean, yi, xerr=[[c.effect.mean - c.effect.low], [c.effect.high - c.effect.mean]],
                            fmt="o", color=color, capsize=3, ms=4)
            else:
                ax.annotate("no images with partners", (0, yi), xytext=(4, 0), textcoords="offset points",
                            va="center", fontsize=7, color="#777")
        ax.axvline(0, color="k", lw=0.8)
        ax.set_yticks(y, [f"{c.statistic} vs {c.null}" for c in claims], fontsize=7)
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("observed − null (95% CI)", fontsize=8)
        ax.tick_params(axis="x", labelsize=7)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return save_figure(fig, path)


def forest_groups(claims: Sequence[Claim]) -> dict[str, list[Claim]]:
    """Each primary claim's subject with every claim on the same subject and statistic (one forest panel each)."""
    return {c.subject: [d for d in claims if d.subject == c.subject and d.statistic == c.statistic]
            for c in claims if c.primary}


def forest_figures(claims: Sequence[Claim], path: str | Path, title: str, caption: str) -> list[Figure]:
    """The forest plot of :func:`forest_groups` as a report figure, or none when no primary claim has a null
    beside it (a forest of single rows says nothing)."""
    groups = forest_groups(claims)
    if not any(len(v) > 1 for v in groups.values()):
        return []
    return [Figure(plot_forest(groups, path, title=title), caption)]
