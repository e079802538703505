"""The metrics of experiment ``propagation`` (``metrics.json``), computed from the per-image rows (so the two agree)
except the depth curves, which come from the per-batch totals, and the controls' and the context balance's counts,
which come from the per-image statistics of each k's summary."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch

from ...analysis.locality import cluster_bootstrap_rate
from ...analysis.propagation import CONTROL_MODES
from ...regions.inference import bootstrap_mean_ci, wilson_interval
from .config import PropagationConfig
from .stages import KSummary, RandomReach
from .totals import PropagationTotals


def rate_with_ci(successes: int, trials: int) -> dict[str, float]:
    """Rate and Wilson 95% interval of one Bernoulli trial per image; with no trial the rate is NaN and the interval
    the whole of [0, 1]."""
    if not trials:
        return {"successes": successes, "trials": trials, "rate": math.nan, "ci_low": 0.0, "ci_high": 1.0}
    share = wilson_interval(successes, trials)
    return {"successes": successes, "trials": trials, "rate": successes / trials, "ci_low": share.low,
            "ci_high": share.high}


def count_of(value: Any) -> int:
    """A count column of the rows as an int (blank: 0)."""
    return 0 if value == "" or value is None else int(value)


def clustered_rate(successes: Sequence[int], trials: Sequence[int], seed: int = 0) -> dict[str, Any]:
    """Pooled rate of per-image counts with its cluster-bootstrap 95% CI over images, and the mean of the
    per-image rates with its bootstrap CI over images (the placements of one image are not independent)."""
    est = cluster_bootstrap_rate(list(successes), list(trials), seed=seed)
    per_image = [s / t for s, t in zip(successes, trials, strict=True) if t]
    return {"successes": int(sum(successes)), "trials": int(sum(trials)), "images": est.images,
            "rate": est.rate, "ci_low": est.low, "ci_high": est.high, "ci": "cluster bootstrap over images",
            "per_image_mean": bootstrap_mean_ci(per_image, seed=seed).as_dict()}


def placement_rate(rows: Sequence[Mapping[str, Any]], prefix: str, seed: int = 0) -> dict[str, Any]:
    """:func:`clustered_rate` of the placements counted in the rows' ``{prefix}_n`` and ``{prefix}_fooled`` columns
    (``ring1``, ``random``, ``matched1``...)."""
    return clustered_rate([count_of(r.get(f"{prefix}_fooled")) for r in rows],
                          [count_of(r.get(f"{prefix}_n")) for r in rows], seed)


def per_image_shares(rows: Sequence[Mapping[str, Any]], prefix: str) -> list[float]:
    """Per row, the share of its placements in the ``{prefix}_n``/``{prefix}_fooled`` columns that fool (NaN: none)."""
    return [(count_of(r.get(f"{prefix}_fooled")) / count_of(r.get(f"{prefix}_n"))) if count_of(r.get(f"{prefix}_n"))
            else math.nan for r in rows]


def k_metrics(rows: list[dict[str, Any]], k: int, radii: Sequence[int], seed: int = 0) -> dict[str, Any]:
    """Attack success and locality of one k, computed from its per-image rows only.

    Attack success has one trial per image (Wilson interval); every locality
    rate pools several placements per image, so its CI is a cluster bootstrap
    over images (:func:`clustered_rate`).
    """
    group = [r for r in rows if r["k"] == k]
    correct = [r for r in group if r["correct"]]
    ok = [r for r in correct if r["analysed"]]
    queries = sorted(r["queries"] for r in ok)
    locality = {"original": clustered_rate([int(r["original_fooled"] is True) for r in ok], [1] * len(ok), seed)}
    for radius in radii:
        locality[f"r{radius}"] = placement_rate(ok, f"ring{radius}", seed)
    locality["random"] = placement_rate(ok, "random", seed)
    for radius in radii:
        locality[f"matched_r{radius}"] = placement_rate(ok, f"matched{radius}", seed)
    peaks = [r["pm_peak_last"] for r in ok]
    return {
        "images": len(group),
        "correct": len(correct),
        "success": rate_with_ci(len(ok), len(correct)),
        "median_queries": queries[len(queries) // 2] if queries else math.nan,
        "mean_l0": sum(r["l0"] for r in ok) / len(ok) if ok else math.nan,
        "max_pm_last_layer": max(peaks) if peaks else math.nan,
        "locality": locality,
    }


def control_metrics(summary: KSummary) -> dict[str, Any]:
    """How many successful attacks got each control, and how often the control itself fooled the model."""
    out: dict[str, Any] = {}
    for mode in CONTROL_MODES:
        c = summary.paired.get(mode)
        if c is None:
            out[mode] = {"available": 0, "attacks": 0, "fooled": clustered_rate([], [])}
            continue
        avail = c["available"].bool()
        fooled = c["fooled"][avail]
        out[mode] = {"available": int(avail.sum()), "attacks": int(avail.numel()),
                     "fooled": rate_with_ci(int((fooled == 1).sum()), int(avail.sum()))}
    return out


def context_metrics(summary: KSummary) -> dict[str, Any]:
    """Balance of the locality controls: mean over images of the placements' mean edge strength and intensity."""
    out: dict[str, Any] = {}
    for which, groups in (summary.context or {}).items():
        out[which] = {name: float(torch.nanmean(torch.as_tensor(values, dtype=torch.float64)))
                      if torch.isfinite(torch.as_tensor(values, dtype=torch.float64)).any() else math.nan
                      for name, values in groups.items()}
    return out


def relative_depth(depth: int, layers: int) -> float:
    """A layer's place in the network, (depth + 1) / number of recorded layers: the first 1/L, the last 1.0, so
    networks of different depth (ResNet-20, ResNet-56) share one axis."""
    return (depth + 1) / layers


def depth_metrics(totals: PropagationTotals) -> list[dict[str, Any]]:
    """The depth curve of one k as plain dicts (empty when no attack succeeded)."""
    if totals.count == 0:
        return []
    rows = totals.depth_rows()
    return [{"depth": r.depth, "relative_depth": relative_depth(r.depth, len(rows)), "layer": r.layer,
             "height": r.height, "width": r.width, "mean_pm_max": r.mean_pm_max, "max_pm_max": r.max_pm_max,
             "mean_pm_avg": r.mean_pm_avg, "max_pm_avg": r.max_pm_avg, "spread": r.spread} for r in rows]


def per_se_metrics(config: PropagationConfig, reach: RandomReach) -> dict[str, Any]:
    """Propagation per se: per recorded layer, its depth index, relative depth and the ratio "peak |activation
    change| of a random one-pixel change / the layer's largest clean activation" (mean over images with the
    engine's bootstrap 95% CI over images), and the share of images above ``reach_fraction``."""
    n_layers = len(reach.layers)
    layers = []
    for depth, layer in enumerate(reach.layers):
        values = reach.peak[:, depth]
        layers.append({"depth": depth, "relative_depth": relative_depth(depth, n_layers), "layer": layer,
                       "ratio": bootstrap_mean_ci(values, seed=config.seed).as_dict(),
                       "share_above_fraction": float((values > config.reach_fraction).double().mean())
                       if len(values) else math.nan})
    return {"change": "one random pixel set to a random corner of the colour cube", "images": int(reach.peak.shape[0]),
            "draws": config.random_draws, "fraction": config.reach_fraction, "layers": layers}



def build_metrics(config: PropagationConfig, n: int, rows: list[dict[str, Any]], reach: RandomReach,
                  summaries: Sequence[KSummary]) -> dict[str, Any]:
    """Everything ``metrics.json`` holds but the claims: the budget, propagation per se (per layer, with depth and
    relative depth), and per k the attack's success, the locality rates, the depth curve, the controls and the
    context balance."""
    return {
        "per_se": per_se_metrics(config, reach),
        "n": n,
        "clean_accuracy": sum(r["correct"] for r in rows if r["k"] == config.pixels_list[0]) / n,
        "budget": {"popsize": config.popsize, "maxiter": config.maxiter,
                   "max_queries_per_image": config.popsize * (config.maxiter + 1)},
        "k": {str(s.k): {**k_metrics(rows, s.k, config.radii, config.seed), "depth": depth_metrics(s.totals),
                         "controls": control_metrics(s), "context": context_metrics(s)}
              for s in summaries},
    }
