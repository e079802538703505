"""The attack maps' registry: the map record, registering a map, and running one by name.

A map module of this package holds one attack map: its batch function, decorated with :func:`register_attack_map`,
and its public function (``contribution(model, x, x_adv)``), written beside it with its own signature and docstring
and imported by name into :mod:`advspatial.maps`. The registry maps the map's name to both: :func:`attack_map` runs
the batch function by name (``attack_map="contribution"`` in a config), ``advspatial list maps`` shows the first
line of its docstring, and :func:`attack_functions` hands out the public functions.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ...registry import Registry, first_doc_line
from ...runtime import model_device
from .._common import check_options


@dataclass
class AttackMap:
    """An attack map and its diagnostics.

    Attributes:
        map: (N,H,W) float >= 0.
        method: the map kind (``magnitude``, ``contribution``, ``gradient``).
        labels: (N,) classes used (margin label for ``contribution``,
            prediction for ``gradient``); None for ``magnitude``.
        margin_clean, margin_adv: (N,) m(x) and m(x') (``contribution`` only).
        completeness_error: (N,) |sum_p delta_p int dm - (m(x') - m(x))| / |m(x') - m(x)|
            after refinement (``contribution`` only; NaN where m(x') == m(x)).
        steps_used: (N,) int64 quadrature points of each image's final integral
            (``contribution`` only).
        flagged: (N,) bool, True where the completeness error is still above the
            tolerance at ``max_steps`` (``contribution`` only; never where it is NaN).
    """

    map: torch.Tensor
    method: str
    labels: torch.Tensor | None = None
    margin_clean: torch.Tensor | None = None
    margin_adv: torch.Tensor | None = None
    completeness_error: torch.Tensor | None = None
    steps_used: torch.Tensor | None = None
    flagged: torch.Tensor | None = None


Kind = Callable[..., AttackMap]


@dataclass(frozen=True)
class AttackMapMethod:
    """One registered attack map: its registry name, its batch function and its public function (if any).

    ``fn(model, x, x_adv, y, **options) -> AttackMap`` computes the map; ``function`` (``contribution(model, x,
    x_adv)``) is the name :mod:`advspatial.maps` imports.
    """

    name: str
    fn: Kind
    function: Callable[..., AttackMap] | None = None

    @property
    def description(self) -> str:
        """The map's ``advspatial list maps`` line: the first line of its batch function's docstring."""
        return first_doc_line(self.fn)

    @property
    def module(self) -> str:
        """The module that defines the map (one per map in this package)."""
        return self.fn.__module__


#: every attack map by name (``advspatial list maps`` iterates it); a map documents itself
ATTACK_MAPS: Registry[AttackMapMethod] = Registry("attack map")
list_attack_maps = ATTACK_MAPS.names
"""The names :func:`attack_map` accepts, sorted."""
describe_attack_maps = ATTACK_MAPS.descriptions
"""Each name with the first line of its function's docstring (``advspatial list maps``)."""


def register_attack_map(name: str, *, function: Callable[..., AttackMap] | None = None) -> Callable[[Kind], Kind]:
    """Decorator adding an attack map: one function, the first line of its docstring its description.

    The function is ``fn(model, x, x_adv, y, **options) -> AttackMap`` (inputs on
    the model's device; ``x_adv`` and ``y`` may be None); its keyword options
    (with defaults) become :func:`attack_map`'s. A taken name is an error.
    ``function`` is the map's public function, defined beside it (``contribution(model, x, x_adv)``: :func:`attack_map`
    with ``name`` fixed, documented with a runnable example); the maps of this package are imported by that name
    into :mod:`advspatial.maps`.
    """

    def register(fn: Kind) -> Kind:
        ATTACK_MAPS.register(name, AttackMapMethod(name, fn, function))
        return fn

    return register


def attack_functions() -> dict[str, Callable[..., AttackMap]]:
    """``{map name: its public function}`` for every registered attack map that has one, sorted by name.

    Examples:
        >>> from advspatial.maps.attack import attack_functions
        >>> attack_functions()["contribution"].__name__
        'contribution'
    """
    return {name: spec.function for name, spec in ATTACK_MAPS.items().items() if spec.function is not None}


def attack_map(name: str, model: nn.Module | None, x: torch.Tensor, x_adv: torch.Tensor | None = None,
               y: torch.Tensor | None = None, **kw: Any) -> AttackMap:
    """Compute attack map ``name`` for clean images ``x`` and adversarial ``x_adv``.

    ``magnitude`` and ``contribution`` need ``x_adv``; ``gradient`` uses
    ``x_adv`` when given, else ``x``. ``model`` may be None for a map that does not
    use it (``magnitude``). Unknown names or parameters raise
    :class:`~advspatial.errors.ConfigError`.

    Examples:
        >>> import torch
        >>> _ = torch.manual_seed(0)
        >>> from torch import nn
        >>> model = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),  # any nn.Module
        ...                       nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),  # taking images
        ...                       nn.Flatten(), nn.Linear(16 * 7 * 7, 10)).eval()  # in [0,1]; untrained here
        >>> images = torch.rand(12, 1, 28, 28)            # (N,C,H,W) in [0,1]
        >>> labels = model(images).argmax(1)              # (N,) labels: here the model's own predictions
        >>> from advspatial.attacks import FGSM
        >>> from advspatial.maps import attack_map
        >>> x_adv = FGSM(model, eps=8 / 255)(images, labels)
        >>> attack_map("contribution", model, images, x_adv=x_adv, y=labels).map.shape
        torch.Size([12, 28, 28])
    """
    fn = ATTACK_MAPS.get(name).fn
    check_options(ATTACK_MAPS.kind, name, fn, kw, ("model", "x", "x_adv", "y"))
    if model is not None and isinstance(x, torch.Tensor):
        device = model_device(model)
        x = x.to(device)
        x_adv = None if x_adv is None else torch.as_tensor(x_adv).to(device)
        y = None if y is None else torch.as_tensor(y).to(device)
    return fn(model, x, x_adv, y, **kw)
