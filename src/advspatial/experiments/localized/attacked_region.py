"""The region a localized attack acts through, and how much of a model's importance map lies outside it.

The region is a mask per image (METHODS §4): the dataset's own object masks where it has them (the
background of MNIST-like data, the exact masks of synthetic shapes), else cut from a model's importance
map of the true class (its top ``fraction`` is the Region of Importance; ties broken per sample id, so a
mask never depends on the batch an image is in). The map's share outside the region, before and after an
attack confined to it, says whether the attack moved where the model looks.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from ...data import ImageDataset
from ...maps import importance_map
from ...masks import attack_mask
from ...regions import binarize
from ...runtime import model_device


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


def region_mask(spec: str, data: ImageDataset, sl: slice, model: nn.Module, method: str, fraction: float,
                seed: int) -> torch.Tensor:
    """(N,1,H,W) mask in [0,1] of the region ``spec`` (a kind of :data:`advspatial.masks.MASK_KINDS` or a mask
    file) on the images ``data[sl]``; a region cut from the importance map uses ``model``'s ``method`` map."""
    if mask_uses_importance(spec, data):
        roi = importance_region(method, model, data.images(sl), data.labels[sl], fraction, seed, data.ids[sl])
        region = roi if spec in ("roi", "foreground") else ~roi
        return region.unsqueeze(1).float()
    mask = attack_mask(spec, data, sl, model, fraction=fraction, seed=seed)
    if mask is None:
        raise ValueError("a localized attack needs a region: mask 'none' has none")
    return mask


def foreground_energy(cam: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """(N,) share of each map's mass inside ``keep`` (N,H,W) in [0,1]; NaN for an all-zero map."""
    total = cam.flatten(1).sum(1)
    inside = (cam * keep).flatten(1).sum(1)
    return torch.where(total > 0, inside / total.clamp_min(1e-30), torch.full_like(total, math.nan))


def energy_outside(method: str, model: nn.Module, x: torch.Tensor, x_adv: torch.Tensor, y: torch.Tensor,
                   region: torch.Tensor) -> dict[str, torch.Tensor]:
    """``{"clean", "adv"}``: (N,) share of the true class's ``method`` map outside the (N,1,H,W) ``region``, on
    the clean images ``x`` and on ``x_adv``, attacked within the region."""
    keep = 1.0 - region[:, 0].cpu()
    device = model_device(model)
    cams = [importance_map(method, model, z.to(device), target="true", y=y.to(device), batch_size=len(z)).cpu()
            for z in (x, x_adv)]
    return {"clean": foreground_energy(cams[0], keep), "adv": foreground_energy(cams[1], keep)}


def fooled_first(labels: torch.Tensor, clean_pred: torch.Tensor, adv_pred: torch.Tensor, k: int) -> torch.Tensor:
    """Indices of up to ``k`` images classified correctly when clean: those the attack fools first, then the others
    (the examples a figure shows)."""
    correct = clean_pred == labels
    fooled = correct & (adv_pred != labels)
    return torch.cat([fooled.nonzero().squeeze(1), (correct & ~fooled).nonzero().squeeze(1)])[:k]
