"""The faithfulness gate as a stage every RoI-using experiment runs (METHODS.md §1).

An importance map is used as a Region of Importance (RoI) only after it has
shown that it marks what the model uses: deleting its top pixels must hurt
more than deleting a control region of as many pixels (two fills; by default
the RoI's own shape at a random place), and the experiment's own L-inf PGD
confined to it must do more damage than PGD confined to that control. The stage streams the experiment's batches (cached in
the run directory, keyed by global sample ids, so ``--resume`` and the batch
size do not change it) over the correctly classified images among the first
``gate_n``, and adds the cascading model-randomization check on a few images.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ..attacks import make_attack
from ..errors import ConfigError, unknown_name
from ..maps import default_importance_method, importance_map
from ..regions.claims import NOT_INTERPRETABLE_ROI
from ..regions.faithfulness import (
    CONTROLS,
    deletion_columns,
    model_randomization_check,
    restricted_attack_columns,
    summarize_gate,
)
from .context import ExperimentContext
from .settings import OPEN_UNIT_INTERVAL, ExperimentConfig, setting

GATE_FILLS = ("zero", "blur", "noise")


@dataclass
class GatedConfig(ExperimentConfig):
    """Settings of the faithfulness gate and of the verdict rules, shared by every experiment that uses an RoI."""

    gate_n: int = setting(500, "images (a prefix of the n) entering the faithfulness gate; correct ones count", low=1)
    gate_fills: list[str] = setting(["zero", "blur"], "deletion fills of the faithfulness gate (>= 2: zero, blur, noise)")
    gate_steps: int = setting(20, "PGD steps of the gate's restricted attack", low=1)
    gate_control: str = setting("shifted", "control region of the gate: shifted (the RoI's shape at a random place) "
                                           "or scattered (as many random pixels)")
    randomization_images: int = setting(16, "images of the cascading model-randomization check", low=1)
    randomization_steps: int = setting(12, "cascade steps of the randomization check at which maps are compared "
                                           "(evenly spaced; every layer is still randomized in order)", low=1)
    sesoi: float = setting(0.01, "smallest effect of interest: a CI inside +-sesoi counts as equivalent to the null",
                           low=0)
    significance: float = setting(0.05, "significance level after correction (Holm primary, BH secondary)",
                                  **OPEN_UNIT_INTERVAL)

    def validate(self) -> None:
        super().validate()
        if self.gate_control not in CONTROLS:
            raise unknown_name("gate control", self.gate_control, CONTROLS)
        for fill in self.gate_fills:
            if fill not in GATE_FILLS:
                raise unknown_name("gate fill", fill, GATE_FILLS)
        if len(set(self.gate_fills)) < 2:
            raise ConfigError("gate_fills needs at least two different fills (e.g. zero,blur)")


def resolve_importance(name: str, model: nn.Module, x: torch.Tensor) -> tuple[str, str]:
    """(method, why): ``auto`` picks by head type (:func:`advspatial.maps.default_importance_method`)."""
    if name == "auto":
        return default_importance_method(model, x)
    return name, "chosen in the config"


def gate_stage(ctx: ExperimentContext, method: str, fraction: float, eps: float, target: str = "pred",
               importance_kw: dict[str, Any] | None = None,
               maps: Callable[[int], torch.Tensor] | None = None,
               model: nn.Module | None = None, tag: str = "") -> dict[str, Any]:
    """The gate of importance method ``method`` on this run's images: ``GateResult.as_dict()`` plus
    ``method`` and ``randomization`` (cached per batch under ``gate/[tag/]method``).

    ``maps(b)``, when given, returns the experiment's own (cached) map of batch b,
    so the gate judges exactly the map the experiment uses, without recomputing it.
    ``model`` (default ``ctx.model``) and ``tag`` let an experiment with several
    models gate the explainer on each. ``target``: ``pred`` or ``true`` class.
    """
    cfg = ctx.config
    model = ctx.model if model is None else model
    key = f"gate/{tag + '/' if tag else ''}{method}"
    attack = make_attack("pgd", model, eps=eps, alpha="auto", steps=cfg.gate_steps,
                         seed=cfg.seed)
    kw = importance_kw or {}
    columns: dict[str, list[torch.Tensor]] = {}
    labels = []
    stop = min(cfg.gate_n, len(ctx.data))
    slices = [slice(sl.start, min(sl.stop, stop)) for sl in ctx.slices if sl.start < stop]

    def compute(b: int, sl: slice) -> dict[str, torch.Tensor]:
        def importance(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            if maps is not None:
                return maps(b)[: len(x)]
            return importance_map(method, model, x, target=target, y=y, batch_size=len(x), **kw)

        return ctx.rundir.cached(f"{key}/f{fraction}-{cfg.gate_control}/batch-{b:05d}",  # type: ignore[return-value]
                                 lambda: _gate_batch(ctx, model, fraction, attack, importance, sl))

    def keep(b: int, sl: slice, cols: dict[str, torch.Tensor]) -> None:
        kept = cols["clean:correct"].bool()
        for name, value in cols.items():
            columns.setdefault(name, []).append(value[kept])
        labels.append(ctx.data.labels[sl][kept])

    ctx.each_batch(compute, desc=f"faithfulness gate: {tag + ' ' if tag else ''}{method}", slices=slices, then=keep)
    merged = {k: torch.cat(v) for k, v in columns.items()}
    result = summarize_gate(merged, torch.cat(labels), seed=cfg.seed, class_names=list(ctx.data.class_names),
                            fraction=fraction)
    out = result.as_dict()
    out["method"] = method
    out["randomization"] = ctx.rundir.cached(f"{key}/randomization",
                                             lambda: _randomization(ctx, model, method, target, kw))
    return out


def _gate_batch(ctx: ExperimentContext, model: nn.Module, fraction: float, attack: Any,
                importance: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], sl: slice) -> dict[str, torch.Tensor]:
    x, y, ids = ctx.batch(sl)
    imp = importance(x, y).to(ctx.device)
    cfg = ctx.config
    cols = deletion_columns(model, x, y, imp, fraction=fraction, fills=tuple(cfg.gate_fills), seed=cfg.seed,
                            sample_ids=ids, control=cfg.gate_control)
    cols.update(restricted_attack_columns(model, x, y, imp, attack, fraction=fraction, seed=cfg.seed,
                                          sample_ids=ids, control=cfg.gate_control))
    return {k: v.cpu() for k, v in cols.items()}


def _randomization(ctx: ExperimentContext, model: nn.Module, method: str, target: str,
                   kw: dict[str, Any]) -> list[dict[str, Any]]:
    x, y, _ = ctx.batch(slice(0, min(ctx.config.randomization_images, len(ctx.data))))
    if target == "pred":  # the class explained stays the trained model's, as in Adebayo et al.
        with torch.no_grad():
            y = model(x).argmax(1)
    return model_randomization_check(
        model, x, lambda m, z: importance_map(method, m, z, target=y, batch_size=len(z), **kw),
        seed=ctx.config.seed, max_steps=ctx.config.randomization_steps)


def control_text(control: str) -> str:
    """The gate's control region in words."""
    return "the same region shape at a random place" if control == "shifted" else "as many random pixels"


def gate_rule(cfg: GatedConfig, images: int, fraction: float, eps: float, map_name: str = "the map") -> str:
    """The gate's rule in one paragraph, naming the configured control (one wording for every report)."""
    return (f"Gate: on the correctly classified images among the first {images}, deleting the top {fraction:.0%} of "
            f"{map_name} ({', '.join(cfg.gate_fills)} fills) must lower the true-class logit more than deleting "
            f"{control_text(cfg.gate_control)} (gate_control={cfg.gate_control}), and L-inf PGD (eps {eps:g}, "
            f"{cfg.gate_steps} steps) confined to the region must lower the margin more than PGD confined to the "
            "control region; each paired per image, 95% bootstrap CI above 0, n >= 30. Positive Δ = the map's "
            "region matters more than the control.")


def roi_label(gate: dict[str, Any]) -> str:
    """'' when the gate passed, else the label every RoI-dependent result of the run carries."""
    return "" if gate.get("passed") else NOT_INTERPRETABLE_ROI
