"""The exact test of where one-pixel attacks land: how many hit the RoI, against each image's own chance.

Why a test of its own: a one-pixel attack changes one pixel per image, so the per-image overlap statistics
do not apply; the count of hits follows a Poisson-binomial law under the null (each image's chance is its
RoI's share of the image), which is computed exactly.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from ..errors import ConfigError, ShapeError
from .estimates import bootstrap_mean_ci
from .inference import ratio_to_null


def poisson_binomial_pmf(probabilities: Any) -> np.ndarray:
    """(N+1,) pmf of the number of successes of independent Bernoulli(p_i) trials (DP convolution)."""
    probs = np.asarray(probabilities, dtype=float).reshape(-1)
    if np.any(~np.isfinite(probs)) or np.any((probs < 0) | (probs > 1)):
        raise ConfigError("probabilities must lie in [0, 1]")
    pmf = np.zeros(probs.size + 1)
    pmf[0] = 1.0
    for k, p in enumerate(probs):
        pmf[1:k + 2] = pmf[1:k + 2] * (1 - p) + pmf[:k + 1] * p
        pmf[0] *= 1 - p
    return pmf


def pixel_in_roi_test(hits: Any, roi_share: Any, seed: int = 0) -> dict[str, Any]:
    """Exact test of how many one-pixel attacks land in the RoI, against per-image chance.

    Image i's pixel lies in its RoI with chance ``roi_share[i]`` (|RoI|/P) if placed
    at random, so the count is Poisson-binomial under the null. Two-sided p = sum of
    the pmf values <= pmf(observed) * (1 + 1e-7) (the rule of ``scipy.stats.binomtest``).
    Images with a non-finite share are left out. Returns observed and expected
    counts, their ratio, p, n and ``excess`` = mean(hit - share) with a bootstrap CI.
    """
    h = torch.as_tensor(hits).detach().cpu().reshape(-1)
    share = torch.as_tensor(roi_share).detach().cpu().double().reshape(-1)
    if h.dtype != torch.bool or h.shape != share.shape:
        raise ShapeError(f"hits must be an (N,) bool tensor and roi_share (N,), got {tuple(h.shape)} {h.dtype} "
                         f"and {tuple(share.shape)}")
    keep = torch.isfinite(share)
    landed, chance = h[keep].double().numpy(), share[keep].numpy()
    pmf = poisson_binomial_pmf(chance)
    observed = int(landed.sum())
    expected = float(chance.sum())
    p = float(min(1.0, pmf[pmf <= pmf[observed] * (1 + 1e-7)].sum())) if landed.size else math.nan
    return {"observed": observed, "expected": expected, "ratio": ratio_to_null(float(observed), expected), "p": p,
            "n": int(landed.size), "excess": bootstrap_mean_ci(torch.from_numpy(landed - chance), seed)}
