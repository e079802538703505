"""The cascading model-parameter randomization test (Adebayo et al., 2018) of an importance map.

A map that does not change when the model's weights are destroyed cannot
explain the model; passing is necessary, not sufficient. Part of the
faithfulness checks (:mod:`advspatial.regions.faithfulness`, which names
everything here too).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from ..errors import ShapeError, check_range
from ..models.hooks import forward_hooks
from ..runtime import model_device
from ._checks import _check_maps
from .binarization import top_fraction_mask
from .overlap import iou, pearson, spearman


def _nanmean(t: torch.Tensor) -> float:
    return float(t.double().nanmean()) if t.numel() else math.nan


# -- model randomization -------------------------------------------------------------

def parameterized_layers(model: nn.Module, x: torch.Tensor) -> list[tuple[str, nn.Module]]:
    """Modules that own parameters, in the order of their first call in a forward pass on ``x``.

    Modules that are never called are left out. ``model`` is run once, without
    gradients; its state is not changed (it should be in eval mode).
    """
    order: list[str] = []
    owners = {name: m for name, m in model.named_modules() if any(True for _ in m.parameters(recurse=False))}

    def factory(name: str):  # type: ignore[no-untyped-def]
        return lambda *_: None if name in order else order.append(name)

    with forward_hooks(owners, factory), torch.no_grad():
        model(x)
    return [(name, owners[name]) for name in order]


def _reinitialize(module: nn.Module, gen: torch.Generator) -> None:
    """Re-draw every parameter of ``module`` (not of its children) from ``gen``.

    Weights with >= 2 dims and the biases beside them: U(-1/sqrt(fan_in),
    1/sqrt(fan_in)), PyTorch's default range for Linear/Conv; 1-dim parameters
    of a layer without such a weight (norm-layer scale and shift): U(-1, 1).
    Buffers (BatchNorm running statistics) are kept.
    """
    params = dict(module.named_parameters(recurse=False))
    weights = [p for p in params.values() if p.ndim >= 2]
    fan_in = weights[0][0].numel() if weights else None
    with torch.no_grad():
        for _, p in sorted(params.items()):
            if p.ndim >= 2:
                bound = 1.0 / math.sqrt(max(1, p[0].numel()))
            elif fan_in is not None:
                bound = 1.0 / math.sqrt(max(1, fan_in))
            else:
                bound = 1.0
            draw = torch.empty(p.shape, dtype=torch.float64).uniform_(-bound, bound, generator=gen)
            p.copy_(draw.to(p.dtype))


def evaluation_steps(layers: int, max_steps: int | None) -> set[int]:
    """Steps (1-based) of the cascade after which maps are compared: all, or ``max_steps`` evenly spaced."""
    if max_steps is None or layers <= max_steps:
        return set(range(1, layers + 1))
    if max_steps == 1:
        return {layers}
    return {1 + round(i * (layers - 1) / (max_steps - 1)) for i in range(max_steps)}


def model_randomization_check(
    model: nn.Module,
    x: torch.Tensor,
    importance: Callable[[nn.Module, torch.Tensor], torch.Tensor],
    seed: int = 0,
    max_layers: int | None = None,
    fraction: float = 0.2,
    max_steps: int | None = None,
) -> list[dict[str, Any]]:
    """Cascading model-parameter randomization (Adebayo et al., 2018), on a small subset of images.

    A deep copy of ``model`` (in eval mode; the caller's model is never touched)
    has its parameterized layers (:func:`parameterized_layers`) re-initialized
    from the output backwards, one more per step and cumulatively, from a
    ``torch.Generator`` seeded with ``seed`` (:func:`_reinitialize` gives the
    ranges). After each step ``importance(randomized_model, x)`` -> (N,H,W) is
    compared per image with the map of the unchanged copy. Each step costs one
    map computation on ``x``, so pass a few dozen images, not a test set.

    Returns one row per step: ``step`` (1 = output layer only), ``layer``,
    ``spearman`` (mean rank correlation of the maps), ``pearson`` (mean linear
    correlation), ``top_iou`` (mean IoU of the top-``fraction`` regions, the
    RoIs), ``n`` (images where the correlation is defined) and
    ``n_undefined`` (a constant map, e.g. an all-zero Grad-CAM). A faithful map
    loses its similarity as layers are randomized.

    ``max_steps`` bounds the cost on deep networks (a ResNet-20 has 40
    parameterized layers, EfficientNet-Lite0 about 100): the cascade still
    randomizes every layer in order, but maps are compared only after
    ``max_steps`` evenly spaced steps (always the first and the last), so a row's
    ``layer`` is the deepest layer randomized so far.
    """
    if max_layers is not None:
        check_range("max_layers", max_layers, 1)
    if max_steps is not None:
        check_range("max_steps", max_steps, 1)
    net = copy.deepcopy(model).eval()
    x = x.detach().to(model_device(net))
    n = x.shape[0]
    ids = torch.arange(n)

    def compute() -> torch.Tensor:
        maps = importance(net, x).detach().float()
        _check_maps(maps, "importance maps")
        if maps.shape[0] != n:
            raise ShapeError(f"importance returned {maps.shape[0]} maps for {n} images")
        return maps

    original = compute()
    roi0 = top_fraction_mask(original, fraction, seed, ids).mask
    layers = parameterized_layers(net, x[:1])[::-1]
    if max_layers is not None:
        layers = layers[: int(max_layers)]
    gen = torch.Generator().manual_seed(int(seed))
    compared = evaluation_steps(len(layers), max_steps)
    rows = []
    for step, (name, module) in enumerate(layers, start=1):
        _reinitialize(module, gen)
        if step not in compared:
            continue
        maps = compute()
        rho = spearman(original, maps)
        roi = top_fraction_mask(maps, fraction, seed, ids).mask
        rows.append({
            "step": step, "layer": name,
            "spearman": _nanmean(rho), "pearson": _nanmean(pearson(original, maps)),
            "top_iou": _nanmean(iou(roi0, roi)),
            "n": int(torch.isfinite(rho).sum()), "n_undefined": int((~torch.isfinite(rho)).sum()),
        })
    return rows
