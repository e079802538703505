"""The one hook module: the model frozen for an analysis, forward hooks, and the layer an analysis looks at.

- :func:`frozen_eval`: eval mode with parameter gradients off, both restored afterwards;
- :func:`forward_hooks`: forward hooks on named modules, always removed (also on an exception);
- :func:`resolve_layer` (with :func:`module_by_name`, :func:`declared_cam_layer`,
  :func:`find_feature_layer`): a layer given by name or module, else the model's
  declared ``cam_layer``, else the last module with a 4-D feature map.

The attacks, the maps and the regions' checks use these; recording the outputs of
many layers (``advspatial.analysis.hooks``) is the analyses' own.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import nn

from ..errors import ConfigError, ModelError


@contextlib.contextmanager
def frozen_eval(model: nn.Module) -> Iterator[nn.Module]:
    """Put ``model`` in eval mode with parameter gradients off; restore both afterwards."""
    modes = {m: m.training for m in model.modules()}
    flags = {p: p.requires_grad for p in model.parameters()}
    model.eval()
    for p in flags:
        p.requires_grad_(False)
    try:
        yield model
    finally:
        for m, mode in modes.items():
            m.training = mode
        for p, flag in flags.items():
            p.requires_grad_(flag)


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
