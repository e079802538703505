"""The answer a report opens with: what the run found, or what it could not decide and what would decide it.

A researcher who opens a report should read the answer before any table: whether the RoI the run used is what the
model uses (the faithfulness gate's status), each primary claim's verdict with its effect, what the RoI adds beyond
maps that need no model, and how many comparisons are undecided. :func:`answer_lines` builds those sentences from a
run's findings alone (every experiment's: it reads the gates and claims wherever they sit,
:func:`~advspatial.report.planning.findings_parts`), so a re-rendered report opens with the same answer.

Examples:
    >>> from advspatial.statistics.claims import Claim
    >>> from advspatial.statistics.estimates import Estimate
    >>> claim = Claim("the attack acts where the model looks", "pgd", "energy_in_roi", "same-class", 0.32, 0.30,
    ...               Estimate(0.02, 0.01, 0.03, 200), 1.07, 0.001, primary=True, verdict="supported", sesoi=0.015)
    >>> from dataclasses import dataclass
    >>> @dataclass
    ... class Found:
    ...     claims: list
    >>> answer_lines(Found([claim]))[0]
    'pgd: the attack acts where the model looks — SUPPORTED (energy_in_roi +0.020 [+0.010, +0.030] above...'

"""

from __future__ import annotations

from typing import Any

from ..faithfulness.record import GateResult
from ..statistics.claims import Claim, by_statement, failed_gates
from ..statistics.estimates import interval_text
from ..statistics.wording import how_many
from .planning import KIND_ORDER, findings_parts, not_supported_words, plan_rows

#: what every Δ of the headline sentences is, said once under them
DELTA_WORDS = ("Δ: the share of the attack map inside the RoI minus its share inside the region, per image, with "
               "its 95% CI, or the 90% CI that 'as much' and 'within the margin' are decided on; margin: the smallest "
               "effect of interest; weakest: the region of the same size the primary claim quotes, the one with the "
               "lowest 95% bound among those the RoI does not beat by the margin, or, where it beats every one, "
               "among all")
#: how the RoI stands by its gate's status, first words of the answer's first sentence
STATUS_SENTENCES = {
    "passed": "is faithful by its gate: the RoI-dependent verdicts below are evidence about the model",
    "failed": "is NOT faithful by its gate",
    "undecided": "is undecided by its gate",
    "cannot judge": "cannot be judged by its gate on this model and data",
}


def _interval(claim: Claim) -> str:
    e = claim.effect
    return interval_text(e.mean, e.low, e.high)


def claim_sentence(claim: Claim) -> str:
    """One primary claim in one sentence: its verdict, effect, and what would decide it when undecided."""
    head = f"{claim.subject}: {claim.claim} — {claim.verdict.upper()}"
    if claim.verdict == "not interpretable":
        return f"{head} (the {' and '.join(failed_gates(claim))} gate failed)."
    if claim.effect.n == 0:
        return f"{head}."
    side = "above" if claim.effect.mean > 0 else "below" if claim.effect.mean < 0 else "at"
    text = f"{head} ({claim.statistic} {_interval(claim)} {side} {claim.null_words()}, n = {claim.effect.n}"
    if claim.verdict == "not supported" and claim.per_seed is None:
        text += f"; {undecided_words(claim)}"
    return text + ")."


def undecided_words(claim: Claim) -> str:
    """Why a claim reads "not supported" (:func:`~advspatial.report.planning.not_supported_words`)."""
    return not_supported_words(claim)


def roi_sentences(roi: Any, gate: GateResult | None) -> list[str]:
    """The RoI's status in one line (what it adds beyond model-free maps is the gate section's, said once)."""
    status = getattr(roi, "status", "") or (gate.status if gate is not None else "")
    words = STATUS_SENTENCES.get(status, f"has gate status {status!r}")
    text = f"The RoI ({roi.method}) {words}"
    if status == "failed":
        text += f": {roi.interpretation}; every RoI-dependent verdict below reads 'not interpretable'"
    elif getattr(roi, "caveat", ""):
        rest = roi.caveat.removeprefix("RoI faithfulness undecided")  # ' (about N ...)' or ': why'
        if len(rest) > SHORT_CAVEAT:  # the gate's full reason belongs to its section, not to the first screen
            rest = " (its section gives each undecided row)"
        text += (rest if rest != roi.caveat else f" ({roi.caveat})") + (
            ". The verdicts below stand, read with this caveat")
    return [text + "."]


#: the longest caveat the answer's first line quotes (a longer one is the gate section's)
SHORT_CAVEAT = 120


def headline_sentences(findings: Any) -> list[str]:
    """Per attack, the plain sentence of where its main attack map falls (the decomposition's, kept in the
    findings' ``content``), or none for findings without one."""
    content = getattr(findings, "content", None) or {}
    out = []
    for by_kind in content.values():
        main: Any = next(iter(by_kind.values()), {})
        if isinstance(main, dict) and main.get("sentence"):
            out.append(str(main["sentence"]))
    return [*out, f"({DELTA_WORDS}.)"] if out else []


def verdict_line(claims: list[Claim]) -> str:
    """The primary claims' verdicts in one line, their statistic left to the tables ("Primary claim (...): pgd:
    not supported; fgsm: SUPPORTED."). Primary claims of other statements (a one-pixel attack's is against the
    same-class null, not beyond every region) get a sentence each, so no attack's verdict is read on a claim it
    was not tested on; they are one Holm family all the same."""
    sentences = []
    for statement, group in by_statement(claims).items():
        parts = []
        for c in group:
            word = c.verdict.upper() if c.verdict in ("supported", "reversed") else c.verdict
            if c.verdict == "not supported" and c.per_seed is None:
                word += f" ({undecided_words(c)})"
            parts.append(f"{c.subject}: {word}")
        sentences.append(f"Primary claim ({statement}; Holm across attacks): " + "; ".join(parts) + ".")
    return " ".join(sentences)


#: primary claims up to which the answer gives each its own sentence (more are summarized by verdict)
SENTENCE_CLAIMS = 2


def claims_summary(claims: list[Claim]) -> str:
    """Primary claims grouped by verdict in one sentence: "Primary claims (the attack acts where the model looks):
    3 supported (fgsm, pgd, pgd-l2); 2 not supported, undecided (cw-l2: about 900 images would decide it; ...)".
    Where the primary claims are not one claim, each member names its own and its null ("ssim-ball vs pgd: the
    SSIM-ball attack fools images at a higher SSIM than L-inf PGD, against the pgd null"). The not interpretable
    ones say which gate failed: once where they share it, else each its own."""
    one_claim = len({c.claim for c in claims}) == 1
    by_verdict: dict[str, list[Claim]] = {}
    for c in claims:
        by_verdict.setdefault(c.verdict, []).append(c)
    parts = []
    for verdict, group in by_verdict.items():
        names = [c.subject if one_claim else f"{c.subject}: {c.claim}, against {c.null_words()}" for c in group]
        label = f"{len(group)} {verdict}"
        if verdict == "not supported":
            names = [f"{name}: {undecided_words(c)}" if c.per_seed is None
                     else f"{name}: the training seeds disagree or the CI holds 0"
                     for name, c in zip(names, group, strict=True)]
        if verdict == "not interpretable":
            reasons = [gates_failed_words(c) for c in group]
            if len(set(reasons)) == 1:
                label += f", {reasons[0]}"
            else:
                names = [f"{name}, {reason}" for name, reason in zip(names, reasons, strict=True)]
        parts.append(f"{label} ({'; '.join(names)})")
    head = f"Primary claims ({claims[0].claim}): " if one_claim else "Primary claims: "
    return head + "; ".join(parts) + ". The table below gives each effect."


def gates_failed_words(claim: Claim) -> str:
    """"the RoI faithfulness gate failed" (or "the a and b gates failed"): why a claim reads not interpretable."""
    failed = failed_gates(claim)
    if not failed:
        return "no gate failed"
    return f"the {' and '.join(failed)} gate{'s' if len(failed) > 1 else ''} failed"


def answer_lines(findings: Any) -> list[str]:
    """The report's opening sentences (module docstring): the gate in one line, where each attack falls (when the
    findings hold the decomposition; else each primary claim in a sentence), the primary verdicts, the count of
    undecided rows; empty when the findings hold no gate and no claim."""
    gates, claims = findings_parts(findings)
    lines: list[str] = []
    roi = getattr(findings, "roi", None)
    if roi is not None and hasattr(roi, "method"):
        lines += roi_sentences(roi, gates.get(roi.method))
    primary = [c for c in claims if c.primary]
    headlines = headline_sentences(findings)
    if headlines:
        lines += headlines
        if primary:
            lines.append(verdict_line(primary))
    elif len(primary) > SENTENCE_CLAIMS:
        lines.append(claims_summary(primary))
    else:
        lines += [claim_sentence(c) for c in primary]
    undecided = plan_rows(gates, claims)
    if undecided:
        counts = {kind: sum(r.kind == kind for r in undecided) for kind in KIND_ORDER}
        nouns = {"faithfulness": "gate cell", "primary claim": "primary claim", "specificity": "specificity cell",
                 "claim": "secondary claim"}
        listed = ", ".join(how_many(n, nouns[kind]) for kind, n in counts.items() if n)
        lines.append(f"Undecided: {listed}; the last section gives the images each would need.")
    return lines
