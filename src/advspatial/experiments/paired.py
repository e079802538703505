"""A claim on per-image pairs, the shape of every claim of ``localized-training`` and ``propagation``.

Both experiments compare two numbers measured on the same images (a model's
correctness against another's, an attack's reach against a random control's,
a map's share after an attack against before it): the effect is the mean of
the per-image differences with its bootstrap CI over images, the p-value the
two-sided sign-flip test of their mean (the estimand of the CI)
(:mod:`advspatial.statistics.inference`); :func:`advspatial.statistics.claims.judge`
corrects and judges them afterwards. A claim about a training procedure compares models trained with
several seeds: :func:`seeded_claim` takes (seeds, images) tables and carries each seed's own effect and a
CI over seeds and images (:func:`~advspatial.statistics.inference.crossed_mean_ci`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch

from ..errors import ShapeError
from ..statistics.claims import Claim
from ..statistics.estimates import bootstrap_mean_ci, paired_p, share_difference_ci
from ..statistics.seeds import crossed_mean_ci


def ratio(observed: float, null: float) -> float:
    """``observed / null``; NaN where the null is 0 or either is not finite."""
    return observed / null if null != 0 and math.isfinite(null) and math.isfinite(observed) else math.nan


def paired_claim(claim: str, subject: str, statistic: str, null: str, observed: Any, control: Any, seed: int,
                 primary: bool, gates: Mapping[str, bool] | None = None, shares: bool = False) -> Claim:
    """The claim that ``observed`` exceeds ``control``, per image: both (N,) values of the same images, an image
    left out where either is not finite. ``observed``/``null_value`` are the two means over the images kept.
    ``shares``: both are per-image shares in [0, 1] (correctness, success), whose CI must not collapse to zero
    width when no image differs (:func:`~advspatial.statistics.inference.share_difference_ci`)."""
    a = torch.as_tensor(observed, dtype=torch.float64).reshape(-1)
    b = torch.as_tensor(control, dtype=torch.float64).reshape(-1)
    keep = torch.isfinite(a) & torch.isfinite(b)
    a, b = a[keep], b[keep]
    diff = a - b
    obs = float(a.mean()) if len(a) else math.nan
    null_value = float(b.mean()) if len(b) else math.nan
    return Claim(claim=claim, subject=subject, statistic=statistic, null=null, observed=obs, null_value=null_value,
                 effect=(share_difference_ci if shares else bootstrap_mean_ci)(diff, seed=seed),
                 ratio=ratio(obs, null_value),
                 p=paired_p(diff) if len(diff) else math.nan, gates=dict(gates or {}), primary=primary)


def seeded_claim(claim: str, subject: str, statistic: str, null: str, observed: Any, control: Any, primary: bool,
                 gates: Mapping[str, bool] | None = None, shares: bool = False) -> Claim:
    """The claim that a training procedure's ``observed`` exceeds ``control``: both (S seeds, N images) tables,
    seed s of each from the models of training seed s, on the same images. An image not finite in every seed of
    both is left out (the design stays crossed). The effect is the mean of the per-image differences over seeds
    and images with the CI and p of :func:`~advspatial.statistics.inference.crossed_mean_ci` (between-run variance
    included); ``per_seed`` each seed's own mean difference, on which the verdict's seed rule acts. ``shares``:
    per-image shares in [0, 1], as for :func:`paired_claim`."""
    a = torch.as_tensor(observed, dtype=torch.float64)
    b = torch.as_tensor(control, dtype=torch.float64)
    if a.ndim != 2 or a.shape != b.shape:
        raise ShapeError(f"observed and control must be (seeds, images) tables of one shape, got {tuple(a.shape)} "
                         f"and {tuple(b.shape)}")
    keep = torch.isfinite(a).all(0) & torch.isfinite(b).all(0)
    a, b = a[:, keep], b[:, keep]
    result = crossed_mean_ci(a - b, shares=shares)
    obs = float(a.mean()) if a.numel() else math.nan
    null_value = float(b.mean()) if b.numel() else math.nan
    return Claim(claim=claim, subject=subject, statistic=statistic, null=null, observed=obs, null_value=null_value,
                 effect=result.effect, ratio=ratio(obs, null_value), p=result.p, gates=dict(gates or {}),
                 primary=primary, per_seed=result.per_seed)
