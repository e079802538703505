"""The headline as a decomposition a reader can check: where the attack's map falls, region by region.

For one attack map and its kept images, the share of the attack map inside the model's RoI is set against its
share inside every other region of the same pixel count, paired per image:

- the **fixed regions**, the same (or nearly the same) in every image and made without this image: the centre,
  the class layout and the dataset layout (the mean RoI of the other images of the class, of all classes);
- the **content regions**, made from the image without the model: its brightest pixels and its strongest edges;
- a **same-class image's RoI**: the image-specific part (the excess over the same-class null, as the plain
  co-location row), which a region that is the same in every image cannot show.

Each row is read by the specificity rule of :mod:`~advspatial.statistics.outcomes` with the claim's smallest effect
of interest as its margin (5% of the compared region's share): *beats* (the RoI catches more), *equivalent* (as
much, within the margin), *does less* (the region catches more) or *undecided*. :func:`headline_sentence` says it in
plain words; "beyond layout and image content" is said only where the RoI beats every row on the raw paired share
by at least the margin. The primary claim (:func:`~advspatial.experiments.measurement.colocation.headline_claim`) is the
intersection-union test over the same rows.

Examples:
    >>> import numpy as np
    >>> from advspatial.statistics.estimates import Estimate
    >>> from advspatial.statistics.outcomes import SPECIFICITY, decide
    >>> rng = np.random.default_rng(0)
    >>> rows = (RegionRow("centre", Estimate(0.284, 0.27, 0.30, 244),
    ...                   decide(rng.normal(-0.0007, 0.04, 244), SPECIFICITY, margin=0.014)),
    ...         RegionRow("same-class", Estimate(0.270, 0.26, 0.28, 244),
    ...                   decide(rng.normal(0.014, 0.04, 244), SPECIFICITY, margin=0.0135)))
    >>> d = Decomposition("pgd", "contribution", Estimate(0.2838, 0.27, 0.30, 244), 0.2, rows)
    >>> text = headline_sentence(d)
    >>> text[:68]
    'pgd puts 28% of its contribution map in the RoI (20% of the pixels);'
    >>> "a centred region of the same size catches as much" in text, "at the centre of the image" in text
    (True, True)
    >>> "beyond layout" in text
    False
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ...statistics.claims import estimate_of
from ...statistics.estimates import Estimate, interval_text
from ...statistics.outcomes import (
    BEATS, DOES_LESS, MARGIN_LEVEL, SPECIFICITY, Decision, decide, images_to_decide,
)
from ...statistics.store import PRIMARY_STATISTIC, StoreComparison
from ...statistics.verdicts import sesoi_for
from ...statistics.wording import listed

#: the regions that are the same (or nearly so) in every image, made without this image
FIXED_REGIONS = ("centre", "class-layout", "dataset-layout")
#: the regions made from the image's own content, without the model
CONTENT_REGIONS = ("intensity", "edges")
#: the row of the image-specific part: a same-class image's RoI
SAME_CLASS = "same-class"
#: a decided direction's size when its estimate lies inside the margin and its CI past it (:func:`size_words`)
SIZE_UNDECIDED_WORDS = "its estimate inside the margin and its CI past it"
#: every row in the order a report gives them
REGION_ORDER = (*FIXED_REGIONS, *CONTENT_REGIONS, SAME_CLASS)

#: each region as the subject of a sentence
REGION_NOUNS = {
    "centre": "a centred region",
    "class-layout": "the class-layout region",
    "dataset-layout": "the dataset-layout region",
    "intensity": "the image's brightest pixels",
    "edges": "the image's strongest edges",
    SAME_CLASS: "a same-class image's RoI",
}
#: the regions whose noun is plural ("the image's strongest edges catch"), for the verb to agree
PLURAL_REGIONS = frozenset({"intensity", "edges"})
#: where an attack acts when a fixed region catches as much of it as the RoI
REGION_PLACES = {
    "centre": "at the centre of the image",
    "class-layout": "where objects of the class usually are",
    "dataset-layout": "where objects usually are in this dataset",
}


@dataclass(frozen=True)
class RegionRow:
    """One region against the RoI: the mean share of the attack map inside the region (``share``) and the paired
    per-image difference RoI minus region, read by the specificity rule with the SESOI as margin (``difference``)."""

    region: str
    share: Estimate
    difference: Decision

    def as_dict(self) -> dict[str, Any]:
        return {"region": self.region, "share": self.share.as_dict(), "difference": self.difference.as_dict()}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RegionRow:
        return cls(str(data["region"]), estimate_of(data["share"]), Decision.from_dict(data["difference"]))


@dataclass(frozen=True)
class Decomposition:
    """Where one attack map falls: its share inside the RoI (``roi_share``; the RoI covers ``roi_pixels`` of the
    image) and every other region of the same size (``rows``, in :data:`REGION_ORDER`). ``roi_faithful``: the RoI's
    gate did not fail; when it did, the sentences say where the explainer's map points, not where the model looks."""

    attack: str
    kind: str
    roi_share: Estimate
    roi_pixels: float
    rows: tuple[RegionRow, ...]
    roi_faithful: bool = True

    def row(self, region: str) -> RegionRow | None:
        """The row of ``region``, or None when it was not measured."""
        return next((r for r in self.rows if r.region == region), None)

    def as_dict(self) -> dict[str, Any]:
        return {"attack": self.attack, "kind": self.kind, "roi_share": self.roi_share.as_dict(),
                "roi_pixels": self.roi_pixels, "rows": [r.as_dict() for r in self.rows],
                "roi_faithful": self.roi_faithful}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Decomposition:
        return cls(str(data["attack"]), str(data["kind"]), estimate_of(data["roi_share"]), float(data["roi_pixels"]),
                   tuple(RegionRow.from_dict(r) for r in data["rows"]), bool(data.get("roi_faithful", True)))


def decompose(attack: str, kind: str, result: StoreComparison, roi_pixels: float, sesoi_scale: float,
              seed: int, roi_faithful: bool = True) -> Decomposition:
    """The decomposition of one store's comparison (:func:`~advspatial.statistics.store.compare_store`): every
    reference region's raw paired difference and the image-specific part, each with the margin the claim uses
    (:func:`~advspatial.statistics.verdicts.sesoi_for` of the compared region's share, times ``sesoi_scale``)."""
    rows = []
    for region in REGION_ORDER:
        if region == SAME_CLASS:
            values, share = result.values.excess, _share(result.values.excess.null, result.primary.excess.n)
        elif region in result.values.beyond:
            values, share = result.values.beyond[region], result.shares[region]
        else:
            continue
        margin = sesoi_for(PRIMARY_STATISTIC, compared_share(values.null), sesoi_scale)
        rows.append(RegionRow(region, share, decide(values.values, SPECIFICITY, margin, seed)))
    return Decomposition(attack, kind, result.shares["roi"], float(roi_pixels), tuple(rows), roi_faithful)


def compared_share(values: Any) -> float:
    """The mean share of the compared region over the images of a row's difference (NaN without one): the
    claim's null value, 5% of which is its smallest effect of interest."""
    return float(np.mean(values)) if len(values) else math.nan


def _share(values: Any, n: int) -> Estimate:
    """The mean of a same-class null's per-image values (its CI is not needed: the row's difference carries it)."""
    return Estimate(compared_share(values), math.nan, math.nan, n)


def clears_margin(d: Decision) -> bool:
    """The RoI beats the region by at least the margin: its CI above 0, not within the margin, estimate >= margin."""
    return d.outcome == BEATS and not d.within_margin and d.mean >= d.margin


def as_much(d: Decision) -> bool:
    """The region catches as much as the RoI: equivalent, or a direction within the margin."""
    return d.inside_margin


def size_undecided(d: Decision) -> bool:
    """A decided direction whose size against the margin is not decided: its estimate lies inside the margin, but
    its 90% CI does not (else it reads *as much*), so the 95% CI it is quoted with reaches past the margin. Saying
    "by less than the margin" here would contradict the interval printed beside it."""
    return d.outcome in (BEATS, DOES_LESS) and not as_much(d) and abs(d.mean) < d.margin


def size_words(d: Decision) -> str:
    """The words a decided direction's size adds to it: none where its estimate clears the margin, else that its
    estimate lies inside the margin and its CI past it (:func:`size_undecided`)."""
    return f", {SIZE_UNDECIDED_WORDS}" if size_undecided(d) else ""


def beyond_every_region(d: Decomposition) -> bool:
    """Does the RoI catch more of the attack than every other region, each by at least its margin?"""
    return bool(d.rows) and all(clears_margin(r.difference) for r in d.rows)


def interval(d: Decision) -> str:
    """'+0.014 [+0.009, +0.019]'."""
    return interval_text(d.mean, d.low, d.high)


def interval90(d: Decision) -> str:
    """'90% CI [-0.005, +0.004]': the interval a within-the-margin reading is decided on
    (:data:`~advspatial.statistics.outcomes.MARGIN_LEVEL`), not the 95% CI a direction is."""
    return f"{MARGIN_LEVEL:.0%} CI [{d.low90:+.3f}, {d.high90:+.3f}]"


def margin_interval(d: Decision) -> str:
    """'+0.001, 90% CI [-0.005, +0.004] inside the margin ±0.014' (:func:`interval90`)."""
    return f"{d.mean:+.3f}, {interval90(d)} inside the margin ±{d.margin:.3f}"


def row_clause(row: RegionRow, projection: bool = True) -> str:
    """One region against the RoI in words that follow its numbers ("the RoI catches more than a centred region
    (Δ +0.031 [+0.012, +0.050], margin ±0.014)": the 95% CI a direction is decided on; "a centred region catches
    as much (Δ -0.001, 90% CI [-0.005, +0.004] inside the margin ±0.014)": the 90% CI equivalence is decided on;
    Δ: the RoI's share minus the region's, per image)."""
    d, noun = row.difference, REGION_NOUNS[row.region]
    catches = "catch" if row.region in PLURAL_REGIONS else "catches"
    numbers = f"Δ {interval(d)}, margin ±{d.margin:.3f}"
    if d.n == 0 or not math.isfinite(d.mean):
        return f"{noun}: not measured"
    if as_much(d):
        return f"{noun} {catches} as much (Δ {margin_interval(d)})"
    if d.outcome == BEATS:
        return f"the RoI catches more than {noun} ({numbers}){size_words(d)}"
    if d.outcome == DOES_LESS:
        return f"{noun} {catches} more ({numbers}){size_words(d)}"
    return f"against {noun} it is undecided ({numbers}" + (f"; {images_to_decide(d).text()})" if projection else ")")


def _fixed_as_much(d: Decomposition) -> list[str]:
    """The fixed regions that catch as much of the attack as the RoI, or more, the weakest row first (the one the
    sentence names)."""
    rows = sorted((r for r in d.rows if r.region in FIXED_REGIONS),
                  key=lambda r: (clears_margin(r.difference), r.difference.low))
    return [r.region for r in rows if as_much(r.difference) or r.difference.outcome == DOES_LESS]


def content_words(d: Decomposition) -> str:
    """The content regions that catch more of the attack than the RoI, then those that catch as much, in one
    clause ("the image's brightest pixels catch more of the attack than the RoI"); "" where the RoI beats or is
    undecided against both. Every content noun is plural, so the verb is."""
    content = [r for r in d.rows if r.region in CONTENT_REGIONS]
    more = [REGION_NOUNS[r.region] for r in content if not as_much(r.difference) and r.difference.outcome == DOES_LESS]
    same = [REGION_NOUNS[r.region] for r in content if as_much(r.difference)]
    clauses = ([f"{listed(more)} catch more of the attack than the RoI"] if more else []) + (
        [f"{listed(same)} catch as much of the attack as the RoI"] if same else [])
    return ", and ".join(clauses)


def conclusion(d: Decomposition) -> str:
    """What the rows say together, in one sentence, never more than they show."""
    if beyond_every_region(d):
        by = "each by at least the margin" + ("" if all(r.difference.low >= r.difference.margin for r in d.rows)
                                               else " at its point estimate")
        if not d.roi_faithful:
            return (f"The RoI catches more than every region of the same size, {by}; but its map failed the "
                    "faithfulness gate, so this says where the explainer points, not where the model looks.")
        return ("So the attack acts where this model looks, beyond layout and image content: the RoI catches more "
                f"than every region of the same size, {by}.")
    fixed, content = _fixed_as_much(d), content_words(d)
    if fixed:
        also = "where the model also looks" if d.roi_faithful else "where the explainer's map also points"
        return f"On this model the attack acts {REGION_PLACES[fixed[0]]}, {also}" + (f"; {content}." if content
                                                                                   else ".")
    if content:
        return f"{content[:1].upper()}{content[1:]}."
    return "Beyond these regions: undecided on these images."


def weakest(rows: Sequence[RegionRow]) -> RegionRow | None:
    """The row the RoI is least shown to beat: the lowest CI bound among the rows that do not clear their margin (or
    among all, where every row clears it)."""
    measured = [r for r in rows if r.difference.n and math.isfinite(r.difference.mean)]
    return min(measured, key=lambda r: (clears_margin(r.difference), r.difference.low)) if measured else None


def _fixed_clause(d: Decomposition) -> str:
    """The fixed regions in one clause: the one that catches as much as the RoI or more (the region the
    :func:`conclusion` names, quoted so that it rests on numbers shown), else the weakest of them, or all beaten."""
    fixed = [r for r in d.rows if r.region in FIXED_REGIONS]
    worst = weakest(fixed)
    if worst is None:
        return ""
    if all(clears_margin(r.difference) for r in fixed):
        return (f"the RoI catches more than every fixed region of the same size (centre, class layout, dataset "
                f"layout; by the lowest bound, against {REGION_NOUNS[worst.region]}: Δ {interval(worst.difference)})")
    named = _fixed_as_much(d)[:1]
    shown = next((r for r in fixed if r.region in named), worst)
    return row_clause(shown, projection=False).replace(REGION_NOUNS[shown.region],
                                                       f"{REGION_NOUNS[shown.region]} of the same size", 1)


def _content_clause(d: Decomposition) -> str:
    """The content regions in one clause: those that catch as much or more, or all beaten, or the weakest."""
    content = [r for r in d.rows if r.region in CONTENT_REGIONS]
    worst = weakest(content)
    if worst is None:
        return ""
    if all(clears_margin(r.difference) for r in content):
        return "the image's brightest pixels and strongest edges catch less"
    return row_clause(worst, projection=False)


def headline_sentence(d: Decomposition) -> str:
    """The decomposition in a few plain sentences for a report's first screen and the terminal: the RoI's share,
    the weakest fixed region, the content regions, what they say together, then the image-specific part (every row
    is in the report's table, :func:`row_clause` each, with the images that would decide an undecided one). Δ is
    the RoI's share minus the region's, per image, said once where the sentences are shown
    (:data:`advspatial.report.answer.DELTA_WORDS`)."""
    head = (f"{d.attack} puts {d.roi_share.mean:.0%} of its {d.kind} map in the RoI ({d.roi_pixels:.0%} of the "
            "pixels)")
    clauses = [c for c in (_fixed_clause(d), _content_clause(d)) if c]
    body = f"{head}; {'; '.join(clauses)}." if clauses else f"{head}."
    specific = d.row(SAME_CLASS)
    tail = ""
    if specific is not None and specific.difference.n:
        tail = f" Against {REGION_NOUNS[SAME_CLASS]} (the image-specific part): {_specific_words(specific.difference)}."
    return f"{body} {conclusion(d)}{tail}"



def _specific_words(d: Decision) -> str:
    """The image-specific part with the interval its reading is decided on (the 90% CI for within the margin)."""
    if as_much(d):
        return f"Δ {margin_interval(d)}, nothing image-specific to speak of"
    numbers = f"Δ {interval(d)}, margin ±{d.margin:.3f}"  # the margin its reading is decided against
    if d.outcome == BEATS:
        return f"{numbers}, this image's RoI catches more{size_words(d)}"
    if d.outcome == DOES_LESS:
        return f"{numbers}, a same-class image's RoI catches more{size_words(d)}"
    return f"{numbers}, undecided"
