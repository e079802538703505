"""The faithfulness gate as a stage every RoI-using experiment runs (METHODS.md §1).

An importance map is used as a Region of Importance (RoI) only after it has shown that it marks what *this model*
uses in *this image* (:mod:`advspatial.faithfulness.gate`): paired per image, deleting its top pixels and an L-inf
PGD confined to them must do more damage than the same through its shape at a random place and through as many
scattered pixels, and the map must change when the model's weights are destroyed. The same columns also say how it
compares with regions that need no model at all -- the class and dataset layout (cross-fitted mean maps of the
other images), a centre prior, the image's brightest pixels and its strongest edges -- a finding about the model
(specificity), not a veto. A positive control (:mod:`advspatial.faithfulness.controls`) is measured beside the map,
and the restricted attack's budget is calibrated per model so that it is not saturated
(:mod:`advspatial.faithfulness.calibration`).

The stage streams the experiment's batches twice (the layout maps need every image's map first; both passes cached
in the run directory, keyed by global sample ids, so ``--resume`` and the batch size do not change it) over the
correctly classified images among the first ``gate_n`` (every image of the run with ``gate_until_decided``): the maps
batch by batch, the comparisons look by look (``gate_sequential``, the default: after 50, 100, 200, ... images,
stopping once every row is decided, :mod:`advspatial.faithfulness.sequential`), then the randomization checks while
they can still change the verdict.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ...attacks import make_attack
from ...faithfulness.calibration import CALIBRATION_IMAGES, Budget, calibrate_budget
from ...faithfulness.gate import comparison_failures, summarize_gate
from ...faithfulness.mprt import randomization_checks
from ...faithfulness.randomization import model_randomization_check
from ...faithfulness.record import GateResult
from ...faithfulness.sanity import SKIPPABLE_CHECKS, randomization_passed
from ...maps import importance_map
from ...models.loading import state_checksum
from ...regions.references import LayoutSums
from ...stacked_runs import gradient_call_rows
from ..stage import Stage
from .config import MeasurementConfig
from .gate_columns import GateContext, GatePlan, Looked, PreparedGate, compared_columns, gate_control_maps
from .stages import Context

#: the gate of one explainer (``gate/[tag/]method``): its maps per batch, the model-randomization checks once per
#: run (its comparisons: :data:`~.gate_columns.GATE_COLUMNS`); per model (``gate/[tag/]budget``): the restricted
#: attack's budget once per run
GATE_MAPS = Stage[torch.Tensor]("gate")
GATE_CHECK = Stage[Any]("gate", per="run")
#: the randomization checks' stages of an explainer's gate (``gate/[tag/]method/randomization`` and ``.../mprt``), on
#: the first ``randomization_images`` images: an experiment's ``sized_by`` entry, so that its forecast prices them at
#: the run's own setting
RANDOMIZATION_CHECKS = {r"^gate/([^/]+/)?[^/]+/(randomization|mprt)$": "randomization_images"}


@dataclass(frozen=True)
class GateRequest:
    """One gate of :func:`gate_stages`: the arguments of :func:`gate_stage`."""

    method: str
    fraction: float
    eps: float
    target: str = "pred"
    importance_kw: dict[str, Any] | None = None
    maps: Callable[[int], torch.Tensor] | None = None
    model: nn.Module | None = None
    tag: str = ""
    n: int | None = None
    draws: int | None = None


def gate_stage(ctx: GateContext, method: str, fraction: float, eps: float, target: str = "pred",
               importance_kw: dict[str, Any] | None = None,
               maps: Callable[[int], torch.Tensor] | None = None,
               model: nn.Module | None = None, tag: str = "", n: int | None = None,
               draws: int | None = None) -> GateResult:
    """The gate of importance method ``method`` on this run's first ``n`` images (default ``gate_n``; every image
    with ``gate_until_decided``), its record naming ``method`` (cached per batch: :data:`GATE_MAPS`; per chunk of a
    look: :data:`~.gate_columns.GATE_COLUMNS`; the randomization checks once: :data:`GATE_CHECK`).

    ``maps(b)``, when given, returns the experiment's own (cached) map of batch b, so the gate judges exactly the
    map the experiment uses, without recomputing it. ``model`` (default ``ctx.model``) and ``tag`` let an
    experiment with several models gate the explainer on each. ``target``: ``pred`` or ``true`` class. ``eps``:
    the experiment's L-inf budget, which the restricted attack's calibrated budget does not exceed. ``draws``: the
    re-initializations of each randomization check (default ``randomization_draws``).
    """
    return gate_stages(ctx, [GateRequest(method, fraction, eps, target, importance_kw, maps, model, tag, n, draws)])[0]


def gate_stages(ctx: GateContext, requests: Sequence[GateRequest]) -> list[GateResult]:
    """The gates ``requests`` (each as :func:`gate_stage` gives it alone): every gate's maps, then their
    comparisons side by side, look by look, the same images' chunks of gates on the same model computed as one
    (:func:`~.gate_columns.compared_columns`), then each gate's randomization checks."""
    prepared = [_prepared(ctx, request) for request in requests]
    compared = compared_columns(ctx, prepared)
    return [_judged(ctx, gate.plan, request.target, request.importance_kw or {}, columns, looked)
            for request, gate, (columns, looked) in zip(requests, prepared, compared, strict=True)]


def _prepared(ctx: GateContext, request: GateRequest) -> PreparedGate:
    """A gate's plan, and its maps of every image it may examine (with their layout sums)."""
    cfg, r = ctx.config, request
    model = ctx.model if r.model is None else r.model
    kw = r.importance_kw or {}
    stop = len(ctx.data) if cfg.gate_until_decided else min(cfg.gate_n if r.n is None else r.n, len(ctx.data))
    slices = [slice(sl.start, min(sl.stop, stop)) for sl in ctx.slices if sl.start < stop]
    budget = _budget(ctx, model, r.eps, r.tag, slices)
    plan = GatePlan(r.method, model, [r.tag, r.method] if r.tag else [r.method],
                    f"{r.tag + ' ' if r.tag else ''}{r.method}", r.fraction, stop, slices, budget,
                    make_attack("pgd", model, eps=budget.eps, alpha="auto", steps=cfg.gate_steps, seed=cfg.seed),
                    cfg.randomization_draws if r.draws is None else r.draws)

    def batch_maps(b: int, sl: slice) -> torch.Tensor:
        if r.maps is not None:
            return r.maps(b)[: sl.stop - sl.start]
        x, y, _ = ctx.batch(sl)
        return GATE_MAPS.at(*plan.family, "maps").get(ctx.rundir, lambda: importance_map(
            r.method, model, x, target=r.target, y=y, batch_size=len(x), **kw).cpu(), b)

    def both_maps(b: int, sl: slice) -> torch.Tensor:  # every stage read at the top level: resumed runs count them
        if cfg.gate_control:
            gate_control_maps(ctx, model, r.tag, b)
        return batch_maps(b, sl)

    layouts = LayoutSums()
    ctx.each_batch(both_maps, desc=f"faithfulness gate: {plan.label} maps", slices=slices,
                   then=lambda b, sl, imp: layouts.add(imp, ctx.data.labels[sl]))
    return PreparedGate(plan, r.tag, batch_maps, layouts)


def _budget(ctx: GateContext, model: nn.Module, eps: float, tag: str, slices: list[slice]) -> Budget:
    """The restricted attack's budget for ``model``: calibrated once per run on the first
    :data:`~advspatial.faithfulness.calibration.CALIBRATION_IMAGES` correctly classified images of the gate
    (``gate_calibration``), else ``eps`` itself."""
    cfg = ctx.config
    if not cfg.gate_calibration:
        return Budget(float(eps), float(eps), False, float("nan"), 0)

    @functools.cache
    def images() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        xs, ys, ids = [], [], []
        for sl in slices:
            x, y, i = ctx.batch(sl)
            with torch.no_grad():
                keep = (model(x).argmax(1) == y.to(x.device)).cpu()
            xs.append(x[keep.to(x.device)])
            ys.append(y[keep.to(y.device)])
            ids.append(i[keep.to(i.device)])
            if sum(len(v) for v in ys) >= CALIBRATION_IMAGES:
                break
        x, y, i = (torch.cat(v)[:CALIBRATION_IMAGES] for v in (xs, ys, ids))
        return x, y, i

    def inputs() -> dict[str, Any]:
        x, y, i = images()
        return {"model": state_checksum(model), "x": x, "classes": y, "ids": i, "eps": float(eps),
                "steps": cfg.gate_steps, "seed": cfg.seed, "batch_size": cfg.batch_size}

    def compute() -> dict[str, Any]:
        x, y, i = images()
        return calibrate_budget(model, x, y, i, eps, cfg.gate_steps, cfg.seed,
                                max_images=gradient_call_rows(cfg.batch_size, x, model)).as_dict()

    key = GATE_CHECK.at(*([tag] if tag else []), "budget", float(eps))
    return Budget.from_dict(key.get_model_work(ctx.rundir, inputs, compute))


def _judged(ctx: GateContext, plan: GatePlan, target: str, kw: dict[str, Any], columns: dict[str, torch.Tensor],
            looked: Looked) -> GateResult:
    """The gate's record: the randomization checks (with ``gate_sequential`` only while they can change the
    verdict, except in a smoke test, which exercises every stage), then
    :func:`~advspatial.faithfulness.gate.summarize_gate`, with how the verdict was reached."""
    cfg = ctx.config
    sequential = cfg.gate_sequential and not cfg.smoke_test  # a smoke test (--quick) runs every check
    randomization = mprt = None
    skipped: list[str] = []
    if sequential and comparison_failures(columns, looked.labels, cfg.seed, margin=cfg.equivalence_margin):
        skipped = list(SKIPPABLE_CHECKS)
    else:
        with ctx.rundir.passes.counting_copies():  # the checks' randomized copies of the model are passes too
            randomization = _check(ctx, plan, target, kw, "randomization",
                                   lambda images: _randomization(ctx, plan, images, kw))
            if sequential and randomization_passed(randomization) is False:
                skipped = ["mprt"]
            else:
                mprt = _check(ctx, plan, target, kw, "mprt", lambda images: _mprt(ctx, plan, images, kw))
    result = summarize_gate(columns, looked.labels, seed=cfg.seed, class_names=list(ctx.data.class_names),
                            fraction=plan.fraction, randomization=randomization, mprt=mprt, skipped=skipped,
                            margin=cfg.equivalence_margin, restricted_attack=plan.budget.as_dict())
    result.method = plan.method
    result.images_planned, result.images_examined = looked.planned, looked.examined
    if looked.decision is not None:
        how = "failed" if looked.decision.verdict == "fails" else "decided"
        result.stopped = f"comparisons {how}: {looked.decision.reason}"
    return result


def _randomization_images(ctx: GateContext, model: nn.Module, target: str
                          ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(x, classes, sample ids) of the randomization checks: the first ``randomization_images`` images; with
    ``target == "pred"`` the class explained stays the trained model's, as in Adebayo et al."""
    x, y, ids = ctx.batch(slice(0, min(ctx.config.randomization_images, len(ctx.data))))
    if target == "pred":
        with torch.no_grad():
            y = model(x).argmax(1)
    return x, y, ids


def _check(ctx: GateContext, plan: GatePlan, target: str, kw: dict[str, Any], name: str,
           check: Callable[[tuple[torch.Tensor, torch.Tensor, torch.Tensor]], Any]) -> Any:
    """Randomization check ``name`` of the plan's explainer on :func:`_randomization_images`, run by ``check``;
    reused from the model cache when an earlier run checked the same explainer on the same model, images and
    settings (:mod:`advspatial.model_work`)."""
    cfg = ctx.config
    images = functools.cache(lambda: _randomization_images(ctx, plan.model, target))

    def inputs() -> dict[str, Any]:
        x, y, ids = images()
        return {"model": state_checksum(plan.model), "method": plan.method, "explainer": kw, "x": x, "classes": y,
                "ids": ids, "seed": cfg.seed, "draws": plan.draws, "steps": cfg.randomization_steps,
                "samples": cfg.randomization_samples, "batch_size": cfg.batch_size,
                **({"curve_draws": cfg.randomization_curve_draws} if name == "randomization" else {})}

    return GATE_CHECK.at(*plan.family, name).get_model_work(ctx.rundir, inputs, lambda: check(images()))


def _randomization(ctx: GateContext, plan: GatePlan, images: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
                   kw: dict[str, Any]) -> list[dict[str, Any]]:
    """The cascading model-randomization check of the explainer (its rows), over the plan's draws."""
    x, y, _ = images
    cfg = ctx.config
    method = plan.method
    return model_randomization_check(
        plan.model, x, lambda m, z: importance_map(method, m, z, target=y, batch_size=cfg.batch_size, **kw),
        seed=cfg.seed, max_steps=cfg.randomization_steps, draws=plan.draws,
        curve_draws=cfg.randomization_curve_draws, progress=cfg.progress)


def _mprt(ctx: GateContext, plan: GatePlan, images: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
          kw: dict[str, Any]) -> dict[str, Any]:
    """Smooth and efficient MPRT of the explainer on the randomization check's images (``as_dict``), over the
    plan's draws."""
    x, y, ids = images
    cfg = ctx.config
    method = plan.method
    return randomization_checks(
        plan.model, x, y, lambda m, z, t: importance_map(method, m, z, target=t, batch_size=cfg.batch_size, **kw),
        seed=cfg.seed, sample_ids=ids, samples=cfg.randomization_samples, draws=plan.draws,
        progress=cfg.progress).as_dict()


# -- the gates of a measurement ------------------------------------------------------------------------------------

def run_gates(ctx: Context[MeasurementConfig]) -> dict[str, GateResult]:
    """The faithfulness gate of the RoI's explainer (on ``gate_n`` images) and of every panel explainer, on the
    run's own maps; and of the RoI's explainer at every other panel fraction, each at its own fraction
    (:func:`fraction_key`); the panel's other explainers on ``panel_gate_n`` images and
    ``panel_randomization_draws`` re-initializations: their comparisons side by side (:func:`gate_stages`)."""
    cfg = ctx.config

    def panel_maps(m: str) -> Callable[[int], torch.Tensor]:
        return lambda b: ctx.panel_maps(m, b)

    def roi(m: str) -> bool:
        return m == ctx.importance

    requests = {m: GateRequest(m, cfg.fraction, cfg.eps_linf, maps=panel_maps(m),
                               n=cfg.gate_n if roi(m) else cfg.panel_gate_n,
                               draws=cfg.randomization_draws if roi(m) else cfg.panel_randomization_draws)
                for m in ctx.panel}
    for fraction in cfg.panel_fractions:
        if fraction != cfg.fraction:
            requests[fraction_key(ctx.importance, fraction)] = GateRequest(
                ctx.importance, fraction, cfg.eps_linf, maps=ctx.importance_of, n=cfg.panel_gate_n)
    return dict(zip(requests, gate_stages(ctx, list(requests.values())), strict=True))


def fraction_key(method: str, fraction: float) -> str:
    """The name of an explainer's gate at a panel fraction other than the run's ("hirescam @ top 10%")."""
    return f"{method} @ top {fraction:.0%}"
