"""The importance methods' registry: a method's definition, registering one, and running one by name.

A map module of this package holds one method: its function on one batch, decorated with
:func:`register_importance_method`, and its public function (``gradcam(model, x)``), written beside it with its own
signature and docstring and imported by name into :mod:`advspatial.maps`. The registry maps the method's name to
both: :func:`importance_map` runs the batch function by name (``importance="gradcam"`` in a config),
``advspatial list maps`` shows the first line of its docstring, and :func:`importance_functions` hands out the
public functions.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ...registry import Registry, first_doc_line
from ...runtime import batch_slices, model_device, sample_ids_or_range
from .._common import Target, check_images, check_options, resolve_target
from ..heads import default_importance_method

Method = Callable[..., torch.Tensor]


@dataclass(frozen=True)
class ImportanceMethod:
    """One registered importance method: its registry name, its batch function and its public function (if any).

    ``fn(model, x, classes, **options) -> (N,H,W) >= 0`` computes the map of one batch; ``function``
    (``gradcam(model, x, target="pred", y=None, **options)``) is :func:`importance_map` with the method fixed, the
    name :mod:`advspatial.maps` imports.
    """

    name: str
    fn: Method
    function: Callable[..., torch.Tensor] | None = None

    @property
    def description(self) -> str:
        """The method's ``advspatial list maps`` line: the first line of its function's docstring."""
        return first_doc_line(self.fn)

    @property
    def module(self) -> str:
        """The module that defines the method (one per method in this package)."""
        return self.fn.__module__


#: every importance method by name (``advspatial list maps`` iterates it); a method documents itself
IMPORTANCE_METHODS: Registry[ImportanceMethod] = Registry("importance method")
list_importance_methods = IMPORTANCE_METHODS.names
"""The names :func:`importance_map` accepts, sorted."""
describe_importance_methods = IMPORTANCE_METHODS.descriptions
"""Each name with the first line of its function's docstring (``advspatial list maps``)."""


def register_importance_method(name: str, *, function: Callable[..., torch.Tensor] | None = None
                               ) -> Callable[[Method], Method]:
    """Decorator adding an importance method: one function, the first line of its docstring its description.

    The function is ``fn(model, x, classes, **options) -> (N,H,W) >= 0`` for one
    batch of images on the model's device and their (N,) int64 classes; its
    keyword options (with defaults) become :func:`importance_map`'s. A function
    that draws noise takes ``sample_ids`` (the (N,) global ids of the images, on
    the CPU) and keys its noise by them (:func:`advspatial.runtime.sample_generator`),
    so that a batch equals its images alone. Run the model under
    :func:`~advspatial.models.hooks.frozen_eval`. A taken name is an error.

    ``function`` is the method's public function, defined beside it (``gradcam(model, x, target="pred", y=None,
    **options)``: :func:`importance_map` with ``name`` fixed, documented with a runnable example); the methods of
    this package are imported by that name into :mod:`advspatial.maps`.
    """

    def register(fn: Method) -> Method:
        IMPORTANCE_METHODS.register(name, ImportanceMethod(name, fn, function))
        return fn

    return register


def method_function(name: str) -> Method:
    """The function of registered method ``name`` (``fn(model, x, classes, **options)``); the one-line
    'unknown importance method' error listing the valid names."""
    return IMPORTANCE_METHODS.get(name).fn


def importance_functions() -> dict[str, Callable[..., torch.Tensor]]:
    """``{method name: its public function}`` for every registered method that has one, sorted by name.

    Examples:
        >>> from advspatial.maps.importance import importance_functions
        >>> importance_functions()["gradcam++"].__name__
        'gradcam_pp'
    """
    return {name: spec.function for name, spec in IMPORTANCE_METHODS.items().items() if spec.function is not None}


def importance_map(
    name: str,
    model: nn.Module,
    x: torch.Tensor,
    target: Target = "pred",
    y: torch.Tensor | None = None,
    batch_size: int = 64,
    sample_ids: torch.Tensor | None = None,
    **kw: Any,
) -> torch.Tensor:
    """(N,H,W) importance map >= 0 of method ``name`` for the ``target`` class of each image.

    Images are processed ``batch_size`` at a time; extra keyword arguments go to
    the method (see each ``*_map`` function). ``sample_ids`` (N,) are the images'
    global ids (default: their positions 0..N-1); a method that draws noise
    (``smoothgrad``) keys each image's noise by its id, so an image's map is the
    same in any batch. Unknown names or parameters raise
    :class:`~advspatial.errors.ConfigError` listing the valid ones.

    Examples:
        >>> import torch
        >>> _ = torch.manual_seed(0)
        >>> from torch import nn
        >>> model = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),  # any nn.Module
        ...                       nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),  # taking images
        ...                       nn.Flatten(), nn.Linear(16 * 7 * 7, 10)).eval()  # in [0,1]; untrained here
        >>> images = torch.rand(12, 1, 28, 28)            # (N,C,H,W) in [0,1]
        >>> from advspatial.maps import importance_map
        >>> importance_map("gradcam", model, images).shape   # any name of advspatial list maps
        torch.Size([12, 28, 28])
    """
    fn = method_function(name)
    check_options(IMPORTANCE_METHODS.kind, name, fn, kw, ("model", "x", "classes", "sample_ids"))
    check_images(x)
    ids = sample_ids_or_range(x.shape[0], sample_ids)
    x = x.detach().to(model_device(model))
    if name == "auto" and x.shape[0]:
        # resolved once for the whole call (the head is a property of the model, not of the batch)
        fn = method_function(default_importance_method(model, x[:batch_size], layer=kw.get("layer"))[0])
    keyed = "sample_ids" in inspect.signature(fn).parameters
    classes = resolve_target(model, x, target, y)
    parts = [fn(model, x[s], classes[s], **({"sample_ids": ids[s]} if keyed else {}), **kw)
             for s in batch_slices(x.shape[0], batch_size)]
    if not parts:
        return x.new_zeros((0, *x.shape[2:]))
    return torch.cat(parts)
