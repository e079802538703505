"""Independent stationary random maps on a torus: the simulations of the calibration and coverage tests.

Maps are sums of Gaussian blobs at uniform random centres with torus distance,
so every placement and every pairing of two maps is as likely as any other
(stationary), and RoI-side and RoA-side maps drawn independently make every null
of the engine exactly true in mean. Attack maps are sparse (blobs times U^6, most
mass on few pixels), as real attribution maps of an attack are.
"""

from __future__ import annotations

import numpy as np
import torch

from advspatial.regions import binarize


def blob_maps(rng: np.random.Generator, n: int, size: int = 12, blobs: int = 4, width: float = 1.5) -> np.ndarray:
    """(n, size, size) sums of ``blobs`` Gaussian blobs with random centres and amplitudes (torus distance)."""
    grid = np.arange(size)
    centres = rng.uniform(0, size, size=(n, blobs, 2))
    amplitude = rng.uniform(0.5, 1.5, size=(n, blobs, 1, 1))
    dy = np.abs(grid[None, None, :] - centres[..., 0:1])
    dx = np.abs(grid[None, None, :] - centres[..., 1:2])
    dy, dx = np.minimum(dy, size - dy), np.minimum(dx, size - dx)
    d2 = dy[..., :, None] ** 2 + dx[..., None, :] ** 2
    return (amplitude * np.exp(-d2 / (2 * width ** 2))).sum(1)


def simulate(rng: np.random.Generator, n: int = 200, size: int = 12, signal: float = 0.0) -> dict[str, torch.Tensor]:
    """One data set: importance and attack maps, their top-20% regions, labels (10 classes) and a composition.

    ``signal`` > 0 adds ``signal * importance * U^3`` to the attack map: an image-specific alternative (the
    attack leans towards this image's own important pixels).
    """
    importance = blob_maps(rng, n, size)
    attack = blob_maps(rng, n, size) * rng.uniform(size=(n, size, size)) ** 6
    if signal:
        attack = attack + signal * importance * rng.uniform(size=(n, size, size)) ** 3
    foreground = blob_maps(rng, n, size)
    imp, att = torch.from_numpy(importance), torch.from_numpy(attack)
    ids = torch.arange(n)
    roi = binarize(imp, fraction=0.2, seed=0, sample_ids=ids).mask
    roa = binarize(att, fraction=0.2, seed=1, sample_ids=ids).mask
    fg = torch.from_numpy(foreground > np.quantile(foreground, 0.6, axis=(1, 2), keepdims=True))
    composition = (roa & fg).flatten(1).sum(1).double() / roa.flatten(1).sum(1).double()
    return {"importance": imp, "attack": att, "roi": roi, "roa": roa, "labels": ids % 10,
            "composition": composition}
