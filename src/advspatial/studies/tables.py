"""The study's tidy tables: ``per_model.csv`` (one row per model, attack and endpoint, with the model's covariates)
and ``per_image_per_model.csv`` (one row per model, attack and image: the per-image values behind each effect),
long format, ready for pandas."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .findings import StudyFindings
from .records import ModelRecord


def per_model_rows(findings: StudyFindings) -> list[dict[str, Any]]:
    """A row per (model, attack, endpoint): the effect, its CI and se, whether it was pooled and why not, beside the
    model's covariates, gate and cost; failed models get a row each with their reason."""
    rows = []
    for ep in findings.endpoints:
        for e in ep.models:
            m = findings.models[e.model]
            rows.append({"model": e.model, "spec": m.spec, "parameters": m.parameters, "depth": m.depth,
                         "clean_accuracy": m.clean_accuracy, "robust_accuracy": m.robust_accuracy,
                         "roi_method": m.roi_method, "roi_status": m.roi_status, "attack": ep.attack,
                         "endpoint": ep.endpoint, "n": e.n, "effect": e.effect.mean, "low": e.effect.low,
                         "high": e.effect.high, "se": e.se, "observed": e.observed, "null": e.null,
                         "reference": e.reference, "included": e.included, "reason": e.reason,
                         "run_verdict": e.run_verdict, "wall_seconds": m.wall_seconds, **m.covariates})
    rows += [{"model": label, "included": False, "reason": f"run failed: {why}"}
             for label, why in findings.failed.items()]
    return rows


def per_image_rows(records: Sequence[ModelRecord]) -> list[dict[str, Any]]:
    """A row per (model, attack, kept image): its energy share, same-class null and excess value, and its excess
    beyond each model-free reference (NaN where the reference had no value)."""
    rows = []
    for r in records:
        for name, a in r.attacks.items():
            beyond = {ref: dict(zip(v.ids.tolist(), v.values.tolist(), strict=True)) for ref, v in a.beyond.items()}
            label_of = dict(zip(a.ids.tolist(), a.labels.tolist(), strict=True))
            for i, index in enumerate(a.excess.ids.tolist()):
                rows.append({"model": r.label, "attack": name, "index": index, "label": label_of[index],
                             "observed": float(a.excess.observed[i]), "null": float(a.excess.null[i]),
                             "excess": float(a.excess.values[i]),
                             **{f"beyond:{ref}": values.get(index, float("nan")) for ref, values in beyond.items()}})
    return rows
