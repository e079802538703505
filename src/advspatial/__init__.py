"""advspatial: where adversarial perturbations act, compared with where the classifier looks.

``advspatial.run(experiment, model=..., data=...)`` runs an experiment from Python;
``advspatial.analyze(model, clean, adv)`` measures examples made elsewhere; ``advspatial.study(models, ...)``
compares several models on the same images. The
packages hold the parts: ``attacks``, ``maps``, ``regions``, ``statistics``, ``faithfulness``, ``defence``, ``data``,
``models``, ``experiments``, ``studies``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

__all__ = ["RunResult", "__version__", "analyze", "run", "study"]

if TYPE_CHECKING:
    from .api import RunResult, analyze, run, study


def __getattr__(name: str) -> Any:
    """``run``, ``analyze``, ``study`` and ``RunResult`` on first use, so ``import advspatial`` stays light."""
    if name in ("run", "analyze", "study", "RunResult"):
        from . import api

        return getattr(api, name)
    raise AttributeError(f"module 'advspatial' has no attribute {name!r}")
