"""The attacked region of experiment ``localized-training``: the mask the region-only attacks act through (and its
complement), per batch, from the dataset's own masks or cut from a model's importance map of the true class."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from ...data import ImageDataset
from ...maps import importance_map
from ...masks import attack_mask
from ...regions import binarize
from ...runtime import model_device
from .config import LocalizedConfig


def mask_uses_importance(spec: str, data: ImageDataset) -> bool:
    """True when mask ``spec`` is cut from the importance map (so every result under it needs the RoI gate).

    ``roi``/``roi-complement`` always; ``background``/``foreground`` on colour data
    without object masks (the complement of the top region, METHODS §4).
    """
    if spec in ("roi", "roi-complement"):
        return True
    if spec in ("background", "foreground"):
        return data.masks is None and data.pixels.shape[1] > 1
    return False


def importance_region(method: str, model: nn.Module, x: torch.Tensor, y: torch.Tensor, fraction: float,
                      seed: int, ids: torch.Tensor) -> torch.Tensor:
    """(N,H,W) bool: the top ``fraction`` of the true class's ``method`` map (ties broken per sample id)."""
    device = model_device(model)
    imp = importance_map(method, model, x.to(device), target="true", y=y.to(device), batch_size=len(x)).cpu()
    return binarize(imp, fraction=fraction, seed=seed, sample_ids=ids).mask


def region_mask_fn(config: LocalizedConfig, data: ImageDataset, model: nn.Module,
                   method: str = "gradcam") -> Callable[[slice], torch.Tensor]:
    """(N,1,H,W) mask in [0,1] of the attacked region for a batch (importance-map masks use ``model``'s
    ``method`` map of the true class)."""

    def fn(sl: slice) -> torch.Tensor:
        if mask_uses_importance(config.mask, data):
            roi = importance_region(method, model, data.images(sl), data.labels[sl], config.fraction, config.seed,
                                    data.ids[sl])
            region = roi if config.mask == "roi" or config.mask == "foreground" else ~roi
            return region.unsqueeze(1).float()
        mask = attack_mask(config.mask, data, sl, model, fraction=config.fraction, seed=config.seed)
        assert mask is not None  # validate() excludes "none"
        return mask

    return fn


def complement_mask_fn(region: Callable[[slice], torch.Tensor]) -> Callable[[slice], torch.Tensor]:
    """1 - the region mask: the foreground when the region is the background."""
    return lambda sl: 1.0 - region(sl)

