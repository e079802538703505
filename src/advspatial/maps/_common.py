"""Shared helpers of the map modules: input checks, target classes, layer lookup.

Kept separate so that importance maps (RoI side) and attack maps (RoA side)
validate their inputs and pick target classes in exactly the same way.
"""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import Callable, Iterable, Iterator, Sequence

import torch
from torch import nn

from ..errors import ConfigError, ModelError, ShapeError

Target = str | int | torch.Tensor


def check_images(x: torch.Tensor, name: str = "images") -> None:
    """Raise unless ``x`` is a floating (N,C,H,W) tensor with values in [0,1]."""
    if not isinstance(x, torch.Tensor) or x.ndim != 4:
        raise ShapeError(f"{name} must be a (N,C,H,W) tensor, got {getattr(x, 'shape', type(x))}")
    if not x.is_floating_point():
        raise ShapeError(f"{name} must be floating point in [0,1], got dtype {x.dtype}")
    if x.numel() and (float(x.min()) < 0 or float(x.max()) > 1):
        raise ConfigError(f"{name} must lie in [0, 1]; wrap a model that needs normalization in Normalized")


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
                raise ConfigError("target='true' needs the labels y; valid targets: 'pred', 'true' (with y), int, tensor")
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
    if classes.numel() and (int(classes.min()) < 0 or int(classes.max()) >= k):
        raise ConfigError(f"class indices must lie in [0, {k - 1}] for this model, got {classes.tolist()}")


def module_by_name(model: nn.Module, name: str) -> nn.Module:
    """The submodule called ``name`` (dotted, as in ``named_modules``)."""
    modules = dict(model.named_modules())
    if name not in modules:
        names = [k for k in modules if k]
        shown = ", ".join(names[:40]) + (" ..." if len(names) > 40 else "")
        raise ConfigError(f"model has no layer {name!r}; valid: {shown}")
    return modules[name]


def declared_cam_layer(model: nn.Module) -> str | None:
    """The dotted name declared by the outermost ``cam_layer`` attribute, or None.

    Wrappers such as ``Normalized(model)`` have none themselves; the attribute of
    the wrapped model is then found and prefixed (``"model.features.4"``).
    """
    for prefix, module in model.named_modules():
        declared = getattr(module, "cam_layer", None)
        if isinstance(declared, str) and declared:
            return f"{prefix}.{declared}" if prefix else declared
    return None


@contextlib.contextmanager
def forward_hooks(modules: dict[str, nn.Module], hook_factory) -> Iterator[None]:  # type: ignore[no-untyped-def]
    """Register ``hook_factory(name)`` as a forward hook on each module; always removed."""
    handles = []
    try:
        for name, module in modules.items():
            handles.append(module.register_forward_hook(hook_factory(name)))
        yield
    finally:
        for handle in handles:
            handle.remove()


def find_feature_layer(model: nn.Module, x: torch.Tensor) -> str:
    """Name of the last module (in order of completion) whose output is a 4-D map with H*W > 1.

    One probe forward pass on ``x[:1]``. On Sequential-style nets this is the
    output of the last convolutional block after its activation (and pooling,
    if a pooling layer that keeps H*W > 1 follows it). An activation applied
    functionally (``F.relu``) is invisible to hooks; name the layer then.
    """
    order: list[str] = []
    modules = {name: m for name, m in model.named_modules() if name}

    def factory(name: str):  # type: ignore[no-untyped-def]
        def hook(_module: nn.Module, _inputs: object, output: object) -> None:
            if isinstance(output, torch.Tensor) and output.ndim == 4 and output.shape[2] * output.shape[3] > 1:
                order.append(name)

        return hook

    with forward_hooks(modules, factory), torch.no_grad():
        model(x[:1])
    if not order:
        raise ModelError("found no layer with a 4-D feature map of spatial size > 1; name the layer explicitly")
    return order[-1]


def resolve_layer(model: nn.Module, x: torch.Tensor, layer: str | nn.Module | None = None) -> tuple[str, nn.Module]:
    """(name, module) of the Grad-CAM layer: ``layer`` if given, else ``cam_layer``, else found."""
    if isinstance(layer, nn.Module):
        for name, module in model.named_modules():
            if module is layer:
                return name, module
        raise ConfigError("the given layer module is not part of the model")
    name = layer if layer is not None else declared_cam_layer(model)
    if name is None:
        name = find_feature_layer(model, x)
    return name, module_by_name(model, name)


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


def upsample(maps: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear upsampling of (N,1,h,w) maps to (N,H,W), clamped at 0 (align_corners=False)."""
    if tuple(maps.shape[-2:]) != tuple(size):
        maps = nn.functional.interpolate(maps, size=size, mode="bilinear", align_corners=False)
    return maps[:, 0].clamp_min(0.0)


def feature_map_size(model: nn.Module, x: torch.Tensor, layer: str | nn.Module | None = None) -> tuple[int, int]:
    """(h, w) of the Grad-CAM layer's output (:func:`resolve_layer`), from one probe forward pass on ``x[:1]``."""
    name, module = resolve_layer(model, x, layer)
    sizes: list[tuple[int, int]] = []

    def factory(_name: str):  # type: ignore[no-untyped-def]
        return lambda _m, _i, out: sizes.append(tuple(out.shape[-2:]))

    with forward_hooks({name: module}, factory), torch.no_grad():
        model(x[:1])
    if not sizes:
        raise ModelError(f"layer {name!r} did not run in the forward pass")
    return sizes[-1]
