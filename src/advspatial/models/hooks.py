"""The one hook module: the model frozen for an analysis, forward hooks, and the layer an analysis looks at.

- :func:`frozen_eval`: eval mode with parameter gradients off, both restored afterwards;
- :func:`forward_hooks`: forward hooks on named modules, always removed (also on an exception);
- :func:`hooked`, :func:`has_hooks`, :func:`has_forward_hooks`: whether a module carries hooks (or any global
  module hook is registered), so that a shortcut past its own call (a folded BatchNorm, a ReLU after its pooling,
  an incremental forward) is taken only where no hook would miss a call;
- :func:`resolve_layer` (with :func:`named_layer`, :func:`module_by_name`, :func:`declared_cam_layer`,
  :func:`find_feature_layer`): a layer given by name or module, else the model's
  declared ``cam_layer``, else the last module with a 4-D feature map;
- :func:`record_outputs` (with :func:`list_layers`, :func:`select_layers`): the outputs of many layers
  during forward passes, for the analyses.

Recording: layers are named as in ``model.named_modules()``. By default the recorder selects the layers an
analysis usually wants (:func:`list_layers`): every convolution, every activation module and every *block*
(a non-root module with children, e.g. an ``nn.Sequential`` or a ResNet basic block). Names may be exact
module names (any module, e.g. a ``Linear``) or ``fnmatch`` patterns (``"layer*.?"``), which are matched
against all module names::

    with record_outputs(model, ["block1", "block2.*"]) as rec:
        model(x)
    feats = rec.outputs            # {"block1": tensor, "block2.0": tensor, ...}

A module called more than once in one forward pass (a ReLU module reused, as in torchvision's ResNet
blocks) gets one entry per call: ``relu#0``, ``relu#1``, ... Modules called once keep their plain name.
Entries are kept in the order the calls *finished* (a block finishes after its children), which is the
forward order used as "depth" by :mod:`advspatial.analysis.propagation`.

TorchScript modules (scripted or traced) do not run Python forward hooks; :func:`record_outputs` raises
:class:`~advspatial.errors.ModelError` for them. A Python module that wraps a TorchScript submodule (e.g.
``Normalized``) can record its Python layers only; the TorchScript part is opaque.
"""

from __future__ import annotations

import contextlib
import fnmatch
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import torch
from torch import nn
from torch.nn.modules import module as torch_module

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
def forward_hooks(modules: Mapping[str, nn.Module],
                  hook_factory: Callable[[str], Callable[..., Any]]) -> Iterator[None]:
    """Register ``hook_factory(name)`` as a forward hook on each module; always removed."""
    handles = []
    try:
        for name, module in modules.items():
            handles.append(module.register_forward_hook(hook_factory(name)))
        yield
    finally:
        for handle in handles:
            handle.remove()


def has_forward_hooks(module: nn.Module) -> bool:
    """Whether ``module`` has forward or forward-pre hooks of its own: a forward that bypasses its call would miss
    them."""
    return bool(module._forward_hooks or module._forward_pre_hooks)


def has_hooks(module: nn.Module) -> bool:
    """Whether ``module`` has hooks of its own, forward or backward."""
    return has_forward_hooks(module) or bool(module._backward_hooks or module._backward_pre_hooks)


def hooked(*modules: nn.Module) -> bool:
    """Whether any of ``modules`` has a forward or backward hook, or any global module hook is registered: then
    what the hook sees must be the modules' own calls.

    Example::

        >>> conv = nn.Conv2d(1, 1, 1)
        >>> hooked(conv)
        False
        >>> handle = conv.register_forward_hook(lambda *args: None)
        >>> hooked(conv), has_forward_hooks(conv)
        (True, True)
        >>> handle.remove()
    """
    return any(has_hooks(m) for m in modules) or _global_hooks()


def _global_hooks() -> bool:
    return bool(torch_module._global_forward_hooks or torch_module._global_forward_pre_hooks
                or torch_module._global_backward_hooks or torch_module._global_backward_pre_hooks)


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
    functionally (``F.relu``) is invisible to hooks; name the layer then. A vision
    transformer (its last 4-D map is the patch embedding, whose tokens (N, T, D) the
    blocks carry on) is a one-line :class:`ModelError` naming the token explainers.
    """
    order: list[str] = []
    grids: set[int] = set()  # h*w of every 4-D map so far
    tokens: list[str] = []  # layers whose output is a token sequence over one of those grids

    def factory(name: str) -> Callable[..., None]:
        def hook(_module: nn.Module, _inputs: object, output: object) -> None:
            if isinstance(output, torch.Tensor) and output.ndim == 4 and output.shape[2] * output.shape[3] > 1:
                order.append(name)
                grids.add(output.shape[2] * output.shape[3])
            elif isinstance(output, torch.Tensor) and output.ndim == 3 and \
                    any(0 <= output.shape[1] - g <= 16 for g in grids):
                tokens.append(name)

        return hook

    with forward_hooks({name: m for name, m in model.named_modules() if name}, factory), torch.no_grad():
        model(x[:1])
    if tokens:
        raise ModelError(f"the model carries token sequences ({tokens[0]!r}...): a vision transformer, which has no "
                         "last convolutional feature map to read; use token-gradcam or token-hirescam (or importance "
                         "'auto'), or name the layer")
    if not order:
        raise ModelError("found no layer with a 4-D feature map of spatial size > 1; name the layer explicitly")
    return order[-1]


def named_layer(model: nn.Module, layer: str | nn.Module) -> tuple[str, nn.Module]:
    """(name, module) of a layer of ``model`` given by its dotted name or as the module itself."""
    if isinstance(layer, nn.Module):
        for name, module in model.named_modules():
            if module is layer:
                return name, module
        raise ConfigError("the given layer module is not part of the model")
    return layer, module_by_name(model, layer)


def resolve_layer(model: nn.Module, x: torch.Tensor, layer: str | nn.Module | None = None) -> tuple[str, nn.Module]:
    """(name, module) of the Grad-CAM layer: ``layer`` if given, else ``cam_layer``, else found."""
    if layer is None:
        layer = declared_cam_layer(model) or find_feature_layer(model, x)
    return named_layer(model, layer)


# -- recording the outputs of many layers ------------------------------------------------------------

# Modules of torch.nn.modules.activation that are not elementwise activations.
_NOT_ACTIVATIONS = {"MultiheadAttention", "Softmax", "Softmin", "LogSoftmax", "Softmax2d"}


def _is_activation(module: nn.Module) -> bool:
    cls = type(module)
    return cls.__module__ == "torch.nn.modules.activation" and cls.__name__ not in _NOT_ACTIVATIONS


def _is_script(module: nn.Module) -> bool:
    return isinstance(module, torch.jit.ScriptModule)


def _python_modules(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """Named non-root modules that can take Python hooks (not inside TorchScript), pre-order."""
    found: list[tuple[str, nn.Module]] = []

    def walk(prefix: str, module: nn.Module) -> None:
        for name, child in module.named_children():
            full = f"{prefix}.{name}" if prefix else name
            if _is_script(child):
                continue
            found.append((full, child))
            walk(full, child)

    walk("", model)
    return found


def _is_default_layer(module: nn.Module) -> bool:
    """Convolutions, activations and blocks (modules with children)."""
    has_children = next(iter(module.children()), None) is not None
    return isinstance(module, nn.modules.conv._ConvNd) or _is_activation(module) or has_children


def _check_hookable(model: nn.Module) -> None:
    if _is_script(model):
        raise ModelError(
            "TorchScript models do not support forward hooks on their layers; load the weights into the "
            "Python architecture instead (advspatial.models.load_state_dict_model)"
        )


def list_layers(model: nn.Module, example: torch.Tensor | None = None) -> list[str]:
    """Names of the model's conv, activation and block modules.

    Without ``example`` the names come in registration order
    (``named_modules``). With an example input, the model is run once and the
    names come in forward order, as the recorder will key them (with ``#k``
    suffixes for modules called more than once); that run is in eval mode and
    leaves the model's mode and BatchNorm statistics as they were.
    """
    _check_hookable(model)
    names = [name for name, module in _python_modules(model) if _is_default_layer(module)]
    if example is None:
        return names
    with frozen_eval(model), torch.no_grad(), record_outputs(model, names) as rec:
        model(example)  # in eval mode: listing must not update BatchNorm statistics
    return list(rec.outputs)


def select_layers(model: nn.Module, layers: str | Sequence[str] | None = None) -> list[str]:
    """Resolve ``layers`` (None, a name, or names / fnmatch patterns) to module names, registration order.

    Raises :class:`ConfigError` listing the valid names when a name matches no module.
    """
    _check_hookable(model)
    modules = _python_modules(model)
    if layers is None:
        chosen = [name for name, module in modules if _is_default_layer(module)]
        if not chosen:
            raise ModelError("the model has no conv, activation or block module that can be hooked")
        return chosen
    if isinstance(layers, str):
        layers = [layers]
    all_names = [name for name, _ in modules]
    wanted: set[str] = set()
    for pattern in layers:
        matches = [n for n in all_names if n == pattern or fnmatch.fnmatchcase(n, pattern)]
        if not matches:
            valid = ", ".join(all_names) if all_names else "(none)"
            raise ConfigError(f"layer {pattern!r} matches no module of the model; valid: {valid}")
        wanted.update(matches)
    return [n for n in all_names if n in wanted]


def _detach(value: Any, clone: bool) -> Any:
    """Detach (and clone) tensors inside an output, so later in-place ops cannot change the record."""
    if isinstance(value, torch.Tensor):
        value = value.detach()
        return value.clone() if clone else value
    if isinstance(value, (tuple, list)):
        return type(value)(_detach(v, clone) for v in value)
    return value


class OutputRecorder:
    """Holds the outputs of the selected layers for the most recent forward pass of the model.

    Attributes:
        layers: the selected module names (registration order).
    """

    def __init__(self, layers: list[str], detach: bool, clone: bool) -> None:
        self.layers = layers
        self.detach = detach
        self.clone = clone
        self._calls: list[tuple[str, Any]] = []

    def clear(self) -> None:
        """Forget what was recorded (a new forward pass of the model also does this)."""
        self._calls = []

    def _record(self, name: str, output: Any) -> None:
        if self.detach:
            output = _detach(output, self.clone)
        elif self.clone and isinstance(output, torch.Tensor):
            output = output.clone()
        self._calls.append((name, output))

    @property
    def outputs(self) -> dict[str, Any]:
        """``{name: output}`` in call-completion order; ``name#k`` for the k-th call of a repeated module."""
        counts: dict[str, int] = {}
        for name, _ in self._calls:
            counts[name] = counts.get(name, 0) + 1
        seen: dict[str, int] = {}
        result: dict[str, Any] = {}
        for name, output in self._calls:
            if counts[name] > 1:
                key = f"{name}#{seen.get(name, 0)}"
                seen[name] = seen.get(name, 0) + 1
            else:
                key = name
            result[key] = output
        return result


@contextlib.contextmanager
def record_outputs(
    model: nn.Module,
    layers: str | Sequence[str] | None = None,
    *,
    detach: bool = True,
    clone: bool = True,
) -> Iterator[OutputRecorder]:
    """Hook the selected layers of ``model``; yield an :class:`OutputRecorder`.

    Each forward pass of ``model`` itself starts a fresh record, so
    ``rec.outputs`` after ``model(x)`` holds that pass only. ``detach`` drops
    the autograd graph (set False to take gradients through recorded outputs);
    ``clone`` copies each output so that a later in-place operation
    (``ReLU(inplace=True)``, ``out += identity``) cannot alter it. All hooks are
    removed on exit, also when the body raises.
    """
    names = select_layers(model, layers)
    modules = dict(_python_modules(model))
    recorder = OutputRecorder(names, detach, clone)
    handles = [model.register_forward_pre_hook(lambda _m, _i: recorder.clear())]
    try:
        for name in names:
            handles.append(modules[name].register_forward_hook(_make_hook(recorder, name)))
        yield recorder
    finally:
        for handle in handles:
            handle.remove()


def _make_hook(recorder: OutputRecorder, name: str):
    def hook(_module: nn.Module, _inputs: Any, output: Any) -> None:
        recorder._record(name, output)

    return hook
