"""The findings of experiment ``propagation`` (``metrics.json`` is their serialization), computed from the per-image
rows (so the two agree) except the depth curves, which come from the per-batch totals, and the controls' and the
context balance's counts, which come from the per-image statistics of each k's summary."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch

from ...analysis.locality import cluster_bootstrap_rate
from ...analysis.propagation import CONTROL_MODES
from ...statistics.accuracy import wilson_interval
from ...statistics.claims import Claim
from ...statistics.estimates import Estimate
from ...statistics.estimates import bootstrap_mean_ci
from ..findings import Findings, dataclass_from_json, to_json
from .config import PropagationConfig
from .stages import KSummary, RandomReach, Row
from .totals import PropagationTotals


@dataclass
class WilsonRate:
    """A rate of one Bernoulli trial per image with its Wilson 95% interval (with no trial: NaN in [0, 1])."""

    successes: int
    trials: int
    rate: float
    ci_low: float
    ci_high: float


@dataclass
class PooledRate:
    """A pooled rate of per-image counts with its cluster-bootstrap 95% CI over images, and the mean of the
    per-image rates with its bootstrap CI (the placements of one image are not independent)."""

    successes: int
    trials: int
    images: int
    rate: float
    ci_low: float
    ci_high: float
    ci: str
    per_image_mean: Estimate


@dataclass
class Locality:
    """The locality rates of one k: the original placement, the rings per radius, the uniform control and the
    context-matched control per radius (``original``, ``r{r}``, ``random``, ``matched_r{r}`` in metrics.json)."""

    original: PooledRate
    rings: dict[int, PooledRate]
    random: PooledRate
    matched: dict[int, PooledRate]

    def as_dict(self) -> dict[str, Any]:
        return {"original": to_json(self.original), **{f"r{r}": to_json(v) for r, v in self.rings.items()},
                "random": to_json(self.random), **{f"matched_r{r}": to_json(v) for r, v in self.matched.items()}}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Locality:
        def rate(key: str) -> PooledRate:
            return dataclass_from_json(PooledRate, data[key], f"locality.{key}")

        def radii(prefix: str) -> list[int]:
            return [int(key[len(prefix):]) for key in data if re.fullmatch(prefix + r"\d+", key)]

        return cls(rate("original"), {r: rate(f"r{r}") for r in radii("r")}, rate("random"),
                   {r: rate(f"matched_r{r}") for r in radii("matched_r")})


@dataclass
class ControlOutcome:
    """How many successful attacks got a random control of one mode, and how often the control fooled the model
    (a Wilson rate; with no successful attack at all, an empty pooled rate, as metrics.json has always held)."""

    available: int
    attacks: int
    fooled: WilsonRate | PooledRate

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ControlOutcome:
        kind = PooledRate if "ci" in data["fooled"] else WilsonRate
        return cls(int(data["available"]), int(data["attacks"]), dataclass_from_json(kind, data["fooled"], "fooled"))


@dataclass
class ContextBalance:
    """Mean over images of one local context statistic of the placements: per radius the ring's and the matched
    control's, and the uniform control's (``ring_{r}``, ``random``, ``matched_{r}`` in metrics.json)."""

    ring: dict[int, float]
    random: float
    matched: dict[int, float]

    def as_dict(self) -> dict[str, float]:
        return {**{f"ring_{r}": v for r, v in self.ring.items()}, "random": self.random,
                **{f"matched_{r}": v for r, v in self.matched.items()}}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ContextBalance:
        def group(prefix: str) -> dict[int, float]:
            return {int(key[len(prefix):]): float(v) for key, v in data.items() if re.fullmatch(prefix + r"\d+", key)}

        return cls(group("ring_"), float(data["random"]), group("matched_"))


@dataclass
class DepthPoint:
    """One recorded layer of the depth curve of one k (over its successful attacks)."""

    depth: int
    relative_depth: float
    layer: str
    height: int
    width: int
    mean_pm_max: float
    max_pm_max: float
    mean_pm_avg: float
    max_pm_avg: float
    spread: float


@dataclass
class KFindings:
    """One k: attack success, locality (from the rows), the depth curve, the controls and the context balance."""

    images: int
    correct: int
    success: WilsonRate
    median_queries: int | float  # a query count, NaN without a successful attack
    mean_l0: float
    max_pm_last_layer: float
    locality: Locality
    depth: list[DepthPoint]
    controls: dict[str, ControlOutcome]
    context: dict[str, ContextBalance]


@dataclass
class PerSeLayer:
    """Propagation per se at one layer: the per-image peak PMmax of a random pixel (mean, bootstrap CI) and the
    share of images above the claim's bar."""

    depth: int
    relative_depth: float
    layer: str
    ratio: Estimate
    share_above_fraction: float


@dataclass
class PerSe:
    """Propagation per se: a random one-pixel change per image, ``draws`` times, at every recorded layer."""

    change: str
    images: int
    draws: int
    fraction: float
    layers: list[PerSeLayer]


@dataclass
class Budget:
    """The DE budget of every attack."""

    popsize: int
    maxiter: int
    max_queries_per_image: int


@dataclass
class PropagationFindings(Findings):
    """Everything a propagation run found: propagation per se, the budget, per k (``"1"``, ``"3"``...) its
    findings, and the judged claims."""

    per_se: PerSe
    n: int
    clean_accuracy: float
    budget: Budget
    k: dict[str, KFindings]
    claims: list[Claim]


def rate_with_ci(successes: int, trials: int) -> WilsonRate:
    """Rate and Wilson 95% interval of one Bernoulli trial per image; with no trial the rate is NaN and the interval
    the whole of [0, 1]."""
    if not trials:
        return WilsonRate(successes, trials, math.nan, 0.0, 1.0)
    share = wilson_interval(successes, trials)
    return WilsonRate(successes, trials, successes / trials, share.low, share.high)


def count_of(value: Any) -> int:
    """A count column of the rows as an int (blank: 0)."""
    return 0 if value == "" or value is None else int(value)


def clustered_rate(successes: Sequence[int], trials: Sequence[int], seed: int = 0) -> PooledRate:
    """:class:`PooledRate` of per-image counts."""
    est = cluster_bootstrap_rate(list(successes), list(trials), seed=seed)
    per_image = [s / t for s, t in zip(successes, trials, strict=True) if t]
    return PooledRate(int(sum(successes)), int(sum(trials)), est.images, est.rate, est.low, est.high,
                      "cluster bootstrap over images", bootstrap_mean_ci(per_image, seed=seed))


def placement_rate(rows: Sequence[Row], prefix: str, seed: int = 0) -> PooledRate:
    """:func:`clustered_rate` of the placements counted in the rows' ``{prefix}_n`` and ``{prefix}_fooled`` columns
    (``ring1``, ``random``, ``matched1``...)."""
    return clustered_rate([count_of(r.get(f"{prefix}_fooled")) for r in rows],
                          [count_of(r.get(f"{prefix}_n")) for r in rows], seed)


def per_image_shares(rows: Sequence[Row], prefix: str) -> list[float]:
    """Per row, the share of its placements in the ``{prefix}_n``/``{prefix}_fooled`` columns that fool (NaN: none)."""
    return [(count_of(r.get(f"{prefix}_fooled")) / count_of(r.get(f"{prefix}_n"))) if count_of(r.get(f"{prefix}_n"))
            else math.nan for r in rows]


def k_findings(rows: list[Row], summary: KSummary, radii: Sequence[int], seed: int = 0) -> KFindings:
    """One k: attack success and locality computed from its per-image rows only, the depth curve from the totals,
    the controls and the context balance from the summary's per-image statistics.

    Attack success has one trial per image (Wilson interval); every locality
    rate pools several placements per image, so its CI is a cluster bootstrap
    over images (:func:`clustered_rate`).
    """
    group = [r for r in rows if r["k"] == summary.k]
    correct = [r for r in group if r["correct"]]
    ok = [r for r in correct if r["analysed"]]
    queries = sorted(r["queries"] for r in ok)
    locality = Locality(clustered_rate([int(r["original_fooled"] is True) for r in ok], [1] * len(ok), seed),
                        {radius: placement_rate(ok, f"ring{radius}", seed) for radius in radii},
                        placement_rate(ok, "random", seed),
                        {radius: placement_rate(ok, f"matched{radius}", seed) for radius in radii})
    peaks = [r["pm_peak_last"] for r in ok]
    return KFindings(len(group), len(correct), rate_with_ci(len(ok), len(correct)),
                     queries[len(queries) // 2] if queries else math.nan,
                     sum(r["l0"] for r in ok) / len(ok) if ok else math.nan, max(peaks) if peaks else math.nan,
                     locality, depth_points(summary.totals), control_outcomes(summary), context_balance(summary))


def control_outcomes(summary: KSummary) -> dict[str, ControlOutcome]:
    """How many successful attacks got each control, and how often the control itself fooled the model."""
    out: dict[str, ControlOutcome] = {}
    for mode in CONTROL_MODES:
        c = summary.paired.get(mode)
        if c is None:
            out[mode] = ControlOutcome(0, 0, clustered_rate([], []))
            continue
        avail = c["available"].bool()
        fooled = c["fooled"][avail]
        out[mode] = ControlOutcome(int(avail.sum()), int(avail.numel()),
                                   rate_with_ci(int((fooled == 1).sum()), int(avail.sum())))
    return out


def nan_mean(values: torch.Tensor) -> float:
    """The mean of the finite values (NaN when there is none)."""
    values = torch.as_tensor(values, dtype=torch.float64)
    return float(torch.nanmean(values)) if torch.isfinite(values).any() else math.nan


def context_balance(summary: KSummary) -> dict[str, ContextBalance]:
    """Balance of the locality controls: mean over images of the placements' mean edge strength and intensity."""
    out = {}
    for which, groups in summary.context.items():
        means = {name: nan_mean(values) for name, values in groups.items()}
        out[which] = ContextBalance.from_dict(means)
    return out


def relative_depth(depth: int, layers: int) -> float:
    """A layer's place in the network, (depth + 1) / number of recorded layers: the first 1/L, the last 1.0, so
    networks of different depth (ResNet-20, ResNet-56) share one axis."""
    return (depth + 1) / layers


def depth_points(totals: PropagationTotals) -> list[DepthPoint]:
    """The depth curve of one k (empty when no attack succeeded)."""
    if totals.count == 0:
        return []
    rows = totals.depth_rows()
    return [DepthPoint(**asdict(r), relative_depth=relative_depth(r.depth, len(rows))) for r in rows]


def per_se_findings(config: PropagationConfig, reach: RandomReach) -> PerSe:
    """Propagation per se: per recorded layer, its depth index, relative depth and the ratio "peak |activation
    change| of a random one-pixel change / the layer's largest clean activation" (mean over images with the
    engine's bootstrap 95% CI over images), and the share of images above ``reach_fraction``."""
    n_layers = len(reach.layers)
    layers = []
    for depth, layer in enumerate(reach.layers):
        values = reach.peak[:, depth]
        layers.append(PerSeLayer(depth, relative_depth(depth, n_layers), layer,
                                 bootstrap_mean_ci(values, seed=config.seed),
                                 float((values > config.reach_fraction).double().mean()) if len(values) else math.nan))
    return PerSe("one random pixel set to a random corner of the colour cube", int(reach.peak.shape[0]),
                 config.random_draws, config.reach_fraction, layers)


def build_findings(config: PropagationConfig, n: int, rows: list[Row], reach: RandomReach,
                   summaries: Sequence[KSummary], claims: list[Claim]) -> PropagationFindings:
    """The findings: the budget, propagation per se (per layer, with depth and relative depth), per k the attack's
    success, the locality rates, the depth curve, the controls and the context balance, and the judged claims."""
    return PropagationFindings(
        per_se_findings(config, reach), n,
        sum(r["correct"] for r in rows if r["k"] == config.pixels_list[0]) / n,
        Budget(config.popsize, config.maxiter, config.popsize * (config.maxiter + 1)),
        {str(s.k): k_findings(rows, s, config.radii, config.seed) for s in summaries}, claims)
