"""Attack maps: where the perturbation acts (the Region of Attack side), one module per map.

Three kinds (METHODS.md section 1), each an (N,H,W) float map >= 0:

- ``magnitude`` (:mod:`~advspatial.maps.attack.magnitude`): ||delta_{:,h,w}||_2 over channels, where the
  perturbation is, whatever it does.
- ``contribution`` (default, :mod:`~advspatial.maps.attack.contribution`): each pixel's share of the margin change,
  by integrated gradients of the margin along the straight path x -> x_adv, refined per image until complete.
- ``gradient`` (:mod:`~advspatial.maps.attack.gradient`): |grad_x CE(z(x~), y^)| summed over channels at the input
  x~ alone, y^ its prediction: needs no clean image, so a deployed defence can compute it.

:func:`attack_map` runs a map by name and returns an :class:`AttackMap`: the map plus, for ``contribution``, the
per-image diagnostics (completeness error, quadrature points used, flag).

Layout: each public module of this package defines one map: its batch function, registered with
:func:`register_attack_map` (its registry entry and its ``advspatial list maps`` line), and its public function
(``contribution(model, x, x_adv)``), which :mod:`advspatial.maps` imports by name; ``_registry.py`` holds the
registry and the :class:`AttackMap` record. Adding a map is one new module here, its name on the import line below
and its public function's import in :mod:`advspatial.maps`.
"""

from __future__ import annotations

from . import contribution, gradient, magnitude  # noqa: F401  (each module registers its map)
from ._registry import (
    ATTACK_MAPS, AttackMap, AttackMapMethod, attack_functions, attack_map, describe_attack_maps, list_attack_maps,
    register_attack_map,
)
from .contribution import contribution_map
from .gradient import gradient_map
from .magnitude import magnitude_map

__all__ = ["ATTACK_MAPS", "AttackMap", "AttackMapMethod", "attack_functions", "attack_map", "contribution_map",
           "describe_attack_maps", "gradient_map", "list_attack_maps", "magnitude_map", "register_attack_map"]
