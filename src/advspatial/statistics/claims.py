"""Pre-declared claims: one row each, corrected for multiplicity and judged by a fixed rule.

An experiment declares its claims before it looks at the numbers: each is a
:class:`Claim` with the comparison it rests on (an effect with its CI and a
two-sided p from :mod:`advspatial.statistics.inference`), the validity gates it
needs (RoI faithfulness, completeness of the attack map, ...) and whether it
is *primary* (the one endpoint a claim is about) or secondary.
:func:`judge` then applies Holm's correction across the primary family and
Benjamini-Hochberg across the rest, and gives every claim its verdict word
(:data:`~advspatial.statistics.inference.VERDICTS`). Verdicts never come from two
point estimates: only from an effect's CI, its corrected p and its gates.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .estimates import Estimate
from .verdicts import benjamini_hochberg, holm, verdict
from .verdicts import DEFAULT_SESOI, MIN_SEEDS, seeds_agreeing, sesoi_for

#: the gate every RoI-dependent claim carries, and the word it turns into when it fails
NOT_INTERPRETABLE_ROI = "not interpretable: the RoI failed the faithfulness gate"


#: the openings of a null that reads as it stands in a sentence (beside one that opens with a number)
BARE_NULLS = ("every ", "one ")

#: how a claim against every region of the same size names the row it quotes ("every region of the same size;
#: weakest: the class-layout region"): the one the claim is weakest against, not the region with the largest share
WEAKEST = "weakest"
#: the same row's label in a metrics.json written before it was "weakest" (read back as WEAKEST)
OLD_WEAKEST = "closest"


@dataclass
class Claim:
    """One pre-declared claim and, after :func:`judge`, its corrected p and verdict.

    Attributes:
        claim: what is claimed, in words ("the attack acts where the model looks").
        subject: what it is about (an attack, an explainer, a fraction).
        statistic: the statistic compared (``energy_in_roi``...).
        null: the null it is compared against (``same-class``...).
        observed, null_value: the two means.
        effect: observed minus null per image, mean with its 95% CI.
        ratio: observed / null.
        p: two-sided p-value before correction.
        gates: validity checks the claim rests on (name -> passed).
        primary: part of the primary family (Holm) rather than the secondary one (BH).
        scale: the statistic whose smallest effect of interest applies
            (:data:`~advspatial.statistics.verdicts.SESOI`; empty: ``statistic``).
        p_adjusted, verdict: set by :func:`judge`.
        sesoi: the smallest effect of interest the verdict used, in the effect's units (set by :func:`judge`).
        per_seed: for a claim about a training procedure, each training seed's own effect (None: not one);
            its verdict then needs :data:`~advspatial.statistics.verdicts.MIN_SEEDS` seeds and the sign in every one
            (:func:`~advspatial.statistics.verdicts.verdict`).
        caveats: what the verdict is read with, without changing it (an undecided RoI faithfulness gate:
            "RoI faithfulness undecided (about 2,150 correct images would decide)").
    """

    claim: str
    subject: str
    statistic: str
    null: str
    observed: float
    null_value: float
    effect: Estimate
    ratio: float
    p: float
    gates: dict[str, bool] = field(default_factory=dict)
    primary: bool = False
    p_adjusted: float = math.nan
    verdict: str = ""
    scale: str = ""
    sesoi: float = math.nan
    per_seed: tuple[float, ...] | None = None
    caveats: list[str] = field(default_factory=list)

    def seeds_text(self) -> str:
        """'2 of 3 seeds agree' (seeds whose own effect has the claim's sign, > 0); '' for a claim without seeds."""
        if self.per_seed is None:
            return ""
        return f"{seeds_agreeing(self.per_seed)} of {len(self.per_seed)} seeds agree"

    def as_dict(self) -> dict[str, Any]:
        out = {
            "claim": self.claim, "subject": self.subject, "statistic": self.statistic, "null": self.null,
            "observed": self.observed, "null_value": self.null_value, "effect": self.effect.as_dict(),
            "ratio": self.ratio, "p": self.p, "p_adjusted": self.p_adjusted, "gates": dict(self.gates),
            "primary": self.primary, "verdict": self.verdict, "sesoi": self.sesoi,
        }
        if self.per_seed is not None:
            out["per_seed"] = list(self.per_seed)
            out["seeds_agree"] = seeds_agreeing(self.per_seed)
            out["seeds"] = len(self.per_seed)
        if self.caveats:
            out["caveats"] = list(self.caveats)
        return out


    def null_words(self) -> str:
        """What a sentence compares the statistic with: "the same-class null"; for the primary claim against every
        region of the RoI's size ("every region of the same size; weakest: the class-layout region"), the region
        it quotes, "the region of the same size the claim is weakest against (the class-layout region)"; a null
        that is a value or a bound as it stands ("0.1 x the layer's largest clean activation", "one half", a study's
        pooled "every region of the same size"), itself; a null described in a list, "the null (random signs, same
        per-group energy)"."""
        regions, sep, rest = self.null.partition("; ")
        if not sep:
            if self.null[:1].isdigit() or self.null.startswith(BARE_NULLS):
                return self.null
            return f"the null ({self.null})" if "," in self.null else f"the {self.null} null"
        named, _, region = rest.partition(": ")
        if named == WEAKEST:
            return f"the {regions.removeprefix('every ')} the claim is weakest against ({region})"
        return f"{regions} ({rest})"

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Claim:
        """The claim :meth:`as_dict` wrote (metrics.json), as a :class:`Claim`. A primary claim written when its
        weakest row was labelled "closest" (the same row, by the same rule) reads "weakest", as the legend says."""
        null = str(data["null"]).replace(f"; {OLD_WEAKEST}: ", f"; {WEAKEST}: ")
        return cls(claim=data["claim"], subject=data["subject"], statistic=data["statistic"], null=null,
                   observed=float_of(data["observed"]), null_value=float_of(data["null_value"]),
                   effect=estimate_of(data["effect"]),
                   ratio=float_of(data["ratio"]), p=float_of(data["p"]), gates=dict(data.get("gates", {})),
                   primary=bool(data.get("primary", False)), p_adjusted=float_of(data.get("p_adjusted")),
                   verdict=str(data.get("verdict", "")), sesoi=float_of(data.get("sesoi")),
                   per_seed=None if data.get("per_seed") is None else tuple(float(v) for v in data["per_seed"]),
                   caveats=[str(c) for c in data.get("caveats", [])])


def estimate_of(data: Mapping[str, Any]) -> Estimate:
    """The :class:`Estimate` :meth:`Estimate.as_dict` wrote (NaN for a missing bound)."""
    return Estimate(float_of(data["mean"]), float_of(data["low"]), float_of(data["high"]), int(data["n"]))


def float_of(value: Any) -> float:
    """A float of metrics.json (NaN for a missing value)."""
    return math.nan if value is None else float(value)

def claim_from(comparison: Any, claim: str, subject: str, gates: Mapping[str, bool], primary: bool = False) -> Claim:
    """A :class:`Claim` from a :class:`~advspatial.statistics.inference.NullComparison`."""
    return Claim(claim=claim, subject=subject, statistic=comparison.statistic, null=comparison.null,
                 observed=float(comparison.observed), null_value=float(comparison.null_mean),
                 effect=comparison.excess, ratio=float(comparison.ratio), p=float(comparison.p),
                 gates=dict(gates), primary=primary, scale=comparison.statistic)


def judge(claims: Sequence[Claim], sesoi: float = DEFAULT_SESOI.value, alpha: float = 0.05,
          min_n: int = 30) -> list[Claim]:
    """Correct the p-values (Holm on the primary claims, BH on the rest) and set every verdict; returns ``claims``.

    Each claim's smallest effect of interest is its statistic's own
    (:func:`~advspatial.statistics.verdicts.sesoi_for`, e.g. 5% of the null for an
    energy share) scaled by ``sesoi / 0.01``: the experiments' ``--sesoi`` setting
    (default 0.01) is the SESOI of a statistic without a default of its own, in
    its units, and scales every default with it (0.02 doubles them all, 0 turns
    the effect-size rule off). Claims on fewer than ``min_n`` images, or claims
    about a training procedure on fewer than :data:`~advspatial.statistics.verdicts.MIN_SEEDS`
    seeds, cannot be judged ("insufficient data"): they keep p_adjusted NaN and do
    not enter a family, so they do not dilute it.
    """
    scale = float(sesoi) / DEFAULT_SESOI.value
    for family, correct in ((True, holm), (False, benjamini_hochberg)):
        members = [c for c in claims if c.primary == family and c.effect.n >= min_n
                   and (c.per_seed is None or len(c.per_seed) >= MIN_SEEDS)]
        adjusted: np.ndarray | list[float] = correct(np.array([c.p for c in members], dtype=float)) if members else []
        for c, p_adj in zip(members, adjusted, strict=True):
            c.p_adjusted = float(p_adj)
    for c in claims:
        c.sesoi = sesoi_for(c.scale or c.statistic, c.null_value, scale)
        c.verdict = verdict(c.effect, c.p_adjusted, c.gates, sesoi=c.sesoi, alpha=alpha, min_n=min_n,
                            per_seed=c.per_seed)
    return list(claims)


def by_statement(claims: Iterable[Claim]) -> dict[str, list[Claim]]:
    """``claims`` grouped by what they claim, in the order each statement first appears: a run's primary family can
    hold several statements (a one-pixel attack's is against the same-class null, the others' beyond every region),
    and a sentence names each with its own claims only."""
    groups: dict[str, list[Claim]] = {}
    for c in claims:
        groups.setdefault(c.claim, []).append(c)
    return groups


def sentence_case(text: str) -> str:
    """``text`` with its first letter upper-cased and the rest untouched (keeps "RoI" intact)."""
    return text[:1].upper() + text[1:]


def failed_gates(claim: Claim) -> list[str]:
    """Names of the gates the claim failed."""
    return [name for name, ok in claim.gates.items() if not ok]
