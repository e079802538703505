"""Shared helpers of the map modules: input checks, target classes, option checks, upsampling.

Kept separate so that importance maps (RoI side) and attack maps (RoA side)
validate their inputs and pick target classes in exactly the same way.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable, Sequence

import torch
from torch import nn

from ..errors import ConfigError, ModelError, ShapeError, images_outside
from ..host_syncs import require
from ..runtime import outside_unit_interval
from ..models.hooks import declared_cam_layer, find_feature_layer, forward_hooks, module_by_name, resolve_layer
from ..models.tokens import token_layout

#: the layer lookup and the hooks live in :mod:`advspatial.models.hooks` (the one hook module); named here too
__all__ = ["Target", "check_classes", "check_images", "check_options", "check_pair", "declared_cam_layer",
           "feature_map_size", "find_feature_layer", "forward_hooks", "module_by_name", "predict",
           "reduce_channels_abs", "resolve_layer", "resolve_target", "upsample"]

Target = str | int | torch.Tensor


def check_images(x: torch.Tensor, name: str = "images") -> None:
    """Raise unless ``x`` is a floating (N,C,H,W) tensor with values in [0,1]."""
    if not isinstance(x, torch.Tensor) or x.ndim != 4:
        raise ShapeError(f"{name} must be a (N,C,H,W) tensor, got {getattr(x, 'shape', type(x))}")
    if not x.is_floating_point():
        raise ShapeError(f"{name} must be floating point in [0,1], got dtype {x.dtype}")
    if x.numel():  # one read, or held to the stage's end on a device (NaN passes, as it compares False)
        error = images_outside(name)
        require(error, outside_unit_interval(x), 1, lambda _bad, _n: ConfigError(error))


def check_pair(x: torch.Tensor, x_adv: torch.Tensor | None, kind: str) -> torch.Tensor:
    """``x_adv`` on ``x``'s device once both are checked images of one shape; attack map ``kind`` needs it, so None
    is a one-line error."""
    check_images(x)
    if x_adv is None:
        raise ConfigError(f"attack map {kind!r} needs x_adv (the adversarial images)")
    check_images(x_adv, "x_adv")
    if x_adv.shape != x.shape:
        raise ShapeError(f"x_adv must have the shape of x {tuple(x.shape)}, got {tuple(x_adv.shape)}")
    return x_adv.to(x.device)


def predict(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Predicted classes (N,) of ``model`` on ``x`` without building a graph."""
    with torch.no_grad():
        return model(x).argmax(1)


def resolve_target(
    model: nn.Module, x: torch.Tensor, target: Target, y: torch.Tensor | None = None
) -> torch.Tensor:
    """The (N,) int64 class explained for each image.

    ``"pred"``: the model's prediction on ``x``; ``"true"``: the labels ``y``
    (required then); an int: that class for every image; a tensor: one class
    per image (shape (N,)) or a scalar.
    """
    n = x.shape[0]
    if isinstance(target, str):
        if target == "pred":
            return predict(model, x)
        if target == "true":
            if y is None:
                raise ConfigError("target='true' needs the labels y; valid targets: 'pred', 'true' (with y), int, "
                                  "tensor")
            target = y
        else:
            raise ConfigError(f"unknown target {target!r}; valid: 'pred', 'true', an int class, a (N,) tensor")
    out = torch.as_tensor(target, device=x.device).long()
    if out.ndim == 0:
        out = out.expand(n).clone()
    if out.shape != (n,):
        raise ShapeError(f"target must be a scalar or have shape ({n},), got {tuple(out.shape)}")
    return out


def check_classes(classes: torch.Tensor, logits: torch.Tensor) -> None:
    """Raise when a class index does not exist among the model's outputs."""
    k = logits.shape[1]
    if classes.numel():  # one read, or held to the stage's end on a device
        require(f"class indices in [0, {k - 1}]", ((classes < 0) | (classes > k - 1)).sum(), classes.numel(),
                lambda _bad, _n: ConfigError(f"class indices must lie in [0, {k - 1}] for this model, got "
                                             f"{classes.tolist()}"))


def check_options(kind: str, name: str, fn: Callable[..., object], options: Iterable[str],
                  inputs: Sequence[str]) -> None:
    """Raise a one-line :class:`ConfigError` naming the valid options when ``options`` holds a keyword that
    map function ``fn`` (registered as ``kind`` ``name``) does not take; ``inputs`` are its non-option arguments."""
    allowed = [p for p in inspect.signature(fn).parameters if p not in inputs]
    bad = sorted(set(options) - set(allowed))
    if bad:
        raise ConfigError(f"{kind} {name!r} has no parameter(s) {bad}; valid: {allowed}")


def reduce_channels_abs(attr: torch.Tensor) -> torch.Tensor:
    """(N,C,H,W) -> (N,H,W): sum of absolute values over channels."""
    return attr.abs().sum(dim=1)


def upsample(maps: torch.Tensor, size: tuple[int, ...]) -> torch.Tensor:
    """Bilinear upsampling of (N,1,h,w) maps to (N,H,W), clamped at 0 (align_corners=False)."""
    if tuple(maps.shape[-2:]) != tuple(size):
        maps = nn.functional.interpolate(maps, size=size, mode="bilinear", align_corners=False)
    return maps[:, 0].clamp_min(0.0)


def feature_map_size(model: nn.Module, x: torch.Tensor, layer: str | nn.Module | None = None) -> tuple[int, int]:
    """(h, w) of the Grad-CAM layer's output (:func:`resolve_layer`), from one probe forward pass on ``x[:1]``; a
    vision transformer's patch grid (:func:`~advspatial.models.tokens.token_layout`) when ``layer`` is not given."""
    layout = token_layout(model, x) if layer is None else None
    if layout is not None:
        return layout.grid
    name, module = resolve_layer(model, x, layer)
    sizes: list[tuple[int, int]] = []

    def factory(_name: str) -> Callable[..., None]:
        return lambda _m, _i, out: sizes.append(tuple(out.shape[-2:]))

    with forward_hooks({name: module}, factory), torch.no_grad():
        model(x[:1])
    if not sizes:
        raise ModelError(f"layer {name!r} did not run in the forward pass")
    return sizes[-1]
