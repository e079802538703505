"""The one check of a model's output, for every command: logits (N, classes), floating, finite, with a gradient
where the caller needs one.

:func:`check_logits` checks one output; :func:`guard_outputs` makes a model check every output it returns from
then on (a forward hook on the model itself, so layer names, weights and checksums are unchanged), so a model
that starts returning NaN after the first image, returns twice the batch, or computes its logits under
``torch.no_grad()`` is a one-line :class:`ModelError` naming the model, wherever it is called: evaluation,
attacks, maps, every experiment. ``experiments.context.check_model_fits_data`` installs it.
"""

from __future__ import annotations

import weakref
from typing import TYPE_CHECKING

import torch
from torch import nn

from ..errors import ModelError
from ..host_syncs import check_read, hold, holds

if TYPE_CHECKING:
    from torch.utils.hooks import RemovableHandle


def check_logits(logits: object, spec: str, batch: int | None = None, classes: int | None = None,
                 needs_grad: bool = False, finite: bool = True) -> torch.Tensor:
    """``logits`` when they are a floating (batch, classes) tensor of finite values (with an autograd graph when
    ``needs_grad``); else a one-line :class:`ModelError` naming the model ``spec`` and what is valid.
    ``finite=False`` leaves out the finiteness check, the one that reads the host (the caller checks it later)."""
    name = f"model {spec!r}" if spec else "the model"
    if not isinstance(logits, torch.Tensor):
        raise ModelError(f"{name} returned {type(logits).__name__}; valid: a tensor of logits (N, classes)")
    shape = tuple(logits.shape)
    if logits.ndim != 2 or (batch is not None and shape[0] != batch):
        wanted = "logits (N, classes)" + (f" with N = {batch}, the batch size" if batch is not None else "")
        raise ModelError(f"{name} returned logits of shape {shape} for a batch of {batch}; valid: {wanted}")
    if classes is not None and shape[1] != classes:
        raise ModelError(f"{name} returned {shape[1]} logits per image, {classes} before; valid: the same number "
                         "of classes for every batch")
    if not logits.is_floating_point():
        raise ModelError(f"{name} returned {logits.dtype} logits; valid: floating-point logits (float32, ...)")
    if needs_grad and not logits.requires_grad:
        raise ModelError(f"{name} returned logits without a gradient (computed under torch.no_grad(), detached, or "
                         "not from the input); attacks and gradient maps need logits differentiable in the input")
    if not finite:
        return logits
    finite_values = torch.isfinite(logits.detach())
    if not bool(finite_values.all()):
        rows = (~finite_values.all(1)).nonzero().flatten().tolist()
        shown = ", ".join(map(str, rows[:5])) + (" ..." if len(rows) > 5 else "")
        raise ModelError(f"{name} returned non-finite logits (NaN or inf) for {len(rows)} of {shape[0]} images "
                         f"of a batch (rows {shown}); check its weights and its forward")
    return logits


def check_finite_logits(spec: str, *logits: torch.Tensor) -> None:
    """Every one of ``logits`` finite, read back in one host read; else :func:`check_logits`' one-line error for
    the first that is not (its rows named)."""
    if not logits:
        return
    if holds(logits[0]):  # on a device inside a stage: counted there, read at the stage's end
        name = f"model {spec!r}" if spec else "the model"
        bad_rows = torch.stack([(~torch.isfinite(t.detach())).any(1).sum() for t in logits]).sum()
        hold(f"finite logits of {name}", bad_rows, sum(len(t) for t in logits),
             lambda bad, images: ModelError(f"{name} returned non-finite logits (NaN or inf) for {bad} of the "
                                            f"{images} images this stage's attacks evaluated; check its weights "
                                            "and its forward"))
        return
    with check_read():
        flags = torch.stack([torch.isfinite(t.detach()).all() for t in logits]).tolist()
    for t, finite in zip(logits, flags, strict=True):
        if not finite:
            check_logits(t, spec)


class OutputGuard:
    """A forward hook running :func:`check_logits` on every output of the model it is registered on.

    On a device inside a stage the finiteness check, the one that reads the host, waits for the end of the stage
    (:func:`~advspatial.host_syncs.hold`): the guard counts the non-finite images on the device and the stage's end
    reads the count, with every other check held in the stage, so the device does not wait between calls; a stage
    with one fails before its value is kept, in one line. Elsewhere (a CPU, outside a stage) every output is checked
    at once. The shape, dtype and gradient checks read nothing and stay at every call.

    The incremental one-pixel evaluation (:mod:`advspatial.models.patch`) recognizes it as no change to what the model
    computes (it still refuses a model with any other forward hook).
    """

    def __init__(self, spec: str, classes: int | None) -> None:
        self.spec, self.classes = spec, classes
        self.name = f"model {spec!r}" if spec else "the model"

    def __call__(self, module: nn.Module, args: tuple[object, ...], output: object) -> None:
        x = args[0] if args and isinstance(args[0], torch.Tensor) else None
        needs_grad = x is not None and x.requires_grad and torch.is_grad_enabled()
        batch = None if x is None else int(x.shape[0])
        if isinstance(output, torch.Tensor) and holds(output):
            logits = check_logits(output, self.spec, batch, self.classes, needs_grad, finite=False)
            hold(f"outputs of {self.name}", (~torch.isfinite(logits.detach()).all(1)).sum(), len(logits), self.error)
            return
        with check_read():  # inside a stage a device holds this read to the stage's end: not a wait per call
            check_logits(output, self.spec, batch, self.classes, needs_grad)

    def error(self, bad: int, images: int) -> ModelError:
        """The one-line error of ``bad`` non-finite outputs among a stage's ``images``."""
        return ModelError(f"{self.name} returned non-finite logits (NaN or inf) for {bad} of the {images} images of "
                          "this stage's calls; check its weights and its forward")


_GUARDS: weakref.WeakKeyDictionary[nn.Module, RemovableHandle] = weakref.WeakKeyDictionary()


def guard_outputs(model: nn.Module, spec: str, classes: int | None = None) -> nn.Module:
    """Make ``model`` check every output from now on (:class:`OutputGuard`), once (a second call replaces the
    first); a TorchScript model takes no hooks and is returned unguarded. Returns ``model``."""
    if isinstance(model, torch.jit.ScriptModule):
        return model
    old = _GUARDS.pop(model, None)
    if old is not None:
        old.remove()
    _GUARDS[model] = model.register_forward_hook(OutputGuard(spec, classes))
    return model


def guarded_spec(model: nn.Module) -> str:
    """The spec a model's :class:`OutputGuard` names ('' without one), for messages about its outputs."""
    hooks = getattr(model, "_forward_hooks", {})
    return next((hook.spec for hook in hooks.values() if isinstance(hook, OutputGuard)), "")


def has_only_guards(hooks: dict[int, object]) -> bool:
    """True when a module's forward hooks are all :class:`OutputGuard` (none is the same)."""
    return all(isinstance(hook, OutputGuard) for hook in hooks.values())
