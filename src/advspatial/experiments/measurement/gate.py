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
from ...faithfulness.controls import control_maps, control_regions
from ...faithfulness.deletion import blurred_map, deletion_columns, gate_regions, restricted_attack_columns
from ...faithfulness.gate import (
    MIN_N, comparison_decisions, comparison_failures, control_cells,
    gini_sparseness, summarize_gate,
)
from ...faithfulness.mprt import randomization_checks
from ...faithfulness.randomization import model_randomization_check
from ...faithfulness.record import GateResult
from ...faithfulness.sanity import SKIPPABLE_CHECKS, randomization_passed
from ...faithfulness.sequential import InterimDecision, interim_decision, look_sizes
from ...maps import importance_map
from ...models.loading import state_checksum
from ...regions.references import REFERENCE_MAPS, LayoutSums, reference_maps
from ...passes import device_rows
from ...runtime import to_host
from ...statistics.outcomes import BEATS, FAITHFULNESS, UNDECIDED, decide
from ..context import ExperimentContext
from ..stage import Stage
from .config import GatedConfig, MeasurementConfig
from .stages import Context

#: the context a gate runs in: any experiment's whose settings include the gate's
GateContext = ExperimentContext[GatedConfig]

#: the gate of one explainer (``gate/[tag/]method``): its maps and its comparisons per batch, the model-randomization
#: checks once per run; per model (``gate/[tag/]control``, ``gate/[tag/]budget``): the positive control's maps per
#: batch and the restricted attack's budget once per run
GATE_MAPS = Stage[torch.Tensor]("gate")
CONTROL_MAPS = Stage[dict[str, torch.Tensor]]("gate")
#: the positive control's columns of one range of images at one fraction (``gate/[tag/]control/f0.2/images-0-50``):
#: shared by every explainer's gate of the model at that fraction
CONTROL_COLUMNS = Stage[dict[str, torch.Tensor]]("gate", per="run")
GATE_COLUMNS = Stage[dict[str, torch.Tensor]]("gate")
GATE_CHECK = Stage[Any]("gate", per="run")


@dataclass(frozen=True)
class GateChunk:
    """Images of the gate that lie in one of the run's batches and in one look: ``index`` numbers the chunk among
    the gate's (its stage key), ``batch`` is the run's batch it lies in, ``offset`` its first image's position there."""

    index: int
    batch: int
    offset: int
    images: slice


def look_chunks(looks: Sequence[int], slices: Sequence[slice]) -> list[list[GateChunk]]:
    """The gate's images cut at the looks' image counts and at the run's batches (``slices``, from image 0): one
    list of chunks per look, numbered in order."""
    out: list[list[GateChunk]] = []
    index, start = 0, 0
    for end in looks:
        chunks = []
        for b, sl in enumerate(slices):
            lo, hi = max(sl.start, start), min(sl.stop, end)
            if lo < hi:
                chunks.append(GateChunk(index, b, lo - sl.start, slice(lo, hi)))
                index += 1
        out.append(chunks)
        start = end
    return out


@dataclass
class _Plan:
    """One gate's fixed parts: its explainer and model, stage family, images, the restricted attack and budget."""

    method: str
    model: nn.Module
    family: list[str]
    label: str
    fraction: float
    stop: int
    slices: list[slice]
    budget: Budget
    attack: Any
    draws: int


def gate_stage(ctx: GateContext, method: str, fraction: float, eps: float, target: str = "pred",
               importance_kw: dict[str, Any] | None = None,
               maps: Callable[[int], torch.Tensor] | None = None,
               model: nn.Module | None = None, tag: str = "", n: int | None = None,
               draws: int | None = None) -> GateResult:
    """The gate of importance method ``method`` on this run's first ``n`` images (default ``gate_n``; every image
    with ``gate_until_decided``), its record naming ``method`` (cached per batch: :data:`GATE_MAPS`; per chunk of a
    look: :data:`GATE_COLUMNS`; the randomization checks once: :data:`GATE_CHECK`).

    ``maps(b)``, when given, returns the experiment's own (cached) map of batch b, so the gate judges exactly the
    map the experiment uses, without recomputing it. ``model`` (default ``ctx.model``) and ``tag`` let an
    experiment with several models gate the explainer on each. ``target``: ``pred`` or ``true`` class. ``eps``:
    the experiment's L-inf budget, which the restricted attack's calibrated budget does not exceed. ``draws``: the
    re-initializations of each randomization check (default ``randomization_draws``).
    """
    cfg = ctx.config
    model = ctx.model if model is None else model
    kw = importance_kw or {}
    stop = len(ctx.data) if cfg.gate_until_decided else min(cfg.gate_n if n is None else n, len(ctx.data))
    slices = [slice(sl.start, min(sl.stop, stop)) for sl in ctx.slices if sl.start < stop]
    budget = _budget(ctx, model, eps, tag, slices)
    plan = _Plan(method, model, [tag, method] if tag else [method], f"{tag + ' ' if tag else ''}{method}", fraction,
                 stop, slices, budget, make_attack("pgd", model, eps=budget.eps, alpha="auto", steps=cfg.gate_steps,
                                                   seed=cfg.seed),
                 cfg.randomization_draws if draws is None else draws)

    def batch_maps(b: int, sl: slice) -> torch.Tensor:
        if maps is not None:
            return maps(b)[: sl.stop - sl.start]
        x, y, _ = ctx.batch(sl)
        return GATE_MAPS.at(*plan.family, "maps").get(ctx.rundir, lambda: importance_map(
            method, model, x, target=target, y=y, batch_size=len(x), **kw).cpu(), b)

    def both_maps(b: int, sl: slice) -> torch.Tensor:  # every stage read at the top level: resumed runs count them
        if cfg.gate_control:
            _control_maps(ctx, model, tag, b)
        return batch_maps(b, sl)

    layouts = LayoutSums()
    ctx.each_batch(both_maps, desc=f"faithfulness gate: {plan.label} maps", slices=slices,
                   then=lambda b, sl, imp: layouts.add(imp, ctx.data.labels[sl]))
    columns, looked = _compared_columns(ctx, plan, tag, batch_maps, layouts)
    return _judged(ctx, plan, target, kw, columns, looked)


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
                                max_images=device_rows(cfg.batch_size, x)).as_dict()

    key = GATE_CHECK.at(*([tag] if tag else []), "budget", float(eps))
    return Budget.from_dict(key.get_model_work(ctx.rundir, inputs, compute))


@dataclass
class _Looked:
    """The gate's comparisons as far as they were computed: images planned and examined, the labels of the correct
    ones, and the decision that stopped them early (None: they ran to the last look)."""

    planned: int
    examined: int
    labels: torch.Tensor
    decision: InterimDecision | None


def _compared_columns(ctx: GateContext, plan: _Plan, tag: str,
                      batch_maps: Callable[[int, slice], torch.Tensor], layouts: LayoutSums
                      ) -> tuple[dict[str, torch.Tensor], _Looked]:
    """The comparisons' columns on the correctly classified images, look by look (one look at ``plan.stop``
    without ``gate_sequential``), stopping at the first interim look that decides the gate."""
    cfg = ctx.config
    looks = look_sizes(plan.stop) if cfg.gate_sequential else (plan.stop,)
    stage = GATE_COLUMNS.at(*plan.family, f"f{plan.fraction}-n{plan.stop}-"
                            + (f"looks{looks[0]}" if len(looks) > 1 else "compared"))
    control_columns = CONTROL_COLUMNS.at(*([tag] if tag else []), "control", f"f{plan.fraction}")
    parts: dict[str, list[torch.Tensor]] = {}
    labels: list[torch.Tensor] = []

    def compute(_: int, chunk: GateChunk) -> dict[str, torch.Tensor]:
        part = slice(chunk.offset, chunk.offset + chunk.images.stop - chunk.images.start)

        def control() -> dict[str, torch.Tensor]:
            maps = {k: v[part] for k, v in _control_maps(ctx, plan.model, tag, chunk.batch).items()}
            return _control_columns(ctx, plan, maps, chunk.images)

        def columns() -> dict[str, torch.Tensor]:
            imp = batch_maps(chunk.batch, plan.slices[chunk.batch])[part]
            return _gate_batch(ctx, plan, imp, layouts, chunk.images)

        def inputs() -> dict[str, Any]:
            x, y, ids = ctx.batch(chunk.images)
            return {"model": state_checksum(plan.model), "method": plan.method, "x": x, "classes": y, "ids": ids,
                    "maps": batch_maps(chunk.batch, plan.slices[chunk.batch])[part], "layouts": vars(layouts),
                    "fraction": plan.fraction, "seed": cfg.seed, "fills": list(cfg.gate_fills),
                    "budget": plan.budget.as_dict(), "attack": plan.attack.params(), "batch_size": cfg.batch_size}
        # not nested in the chunk's stage, so that a resumed run that reads the chunk back counts its passes too
        own = control_columns.at(f"images-{chunk.images.start}-{chunk.images.stop}").get(
            ctx.rundir, control) if cfg.gate_control else {}
        return {**stage.get_model_work(ctx.rundir, inputs, columns, chunk.index), **own}

    def keep(_: int, chunk: GateChunk, cols: dict[str, torch.Tensor]) -> None:
        kept = cols["clean:correct"].bool()
        for name, value in cols.items():
            parts.setdefault(name, []).append(value[kept])
        labels.append(ctx.data.labels[chunk.images][kept])

    examined, decision = 0, None
    for k, chunks in enumerate(look_chunks(looks, plan.slices)):
        ctx.each_batch(compute, desc=f"faithfulness gate: {plan.label}" + (
            f", look {k + 1}" if len(looks) > 1 else ""), slices=chunks, then=keep)
        examined = looks[k]
        if k == len(looks) - 1:
            break
        decision = _interim(parts, labels, cfg.seed, cfg.equivalence_margin)
        if decision is not None:
            break
    merged = {name: torch.cat(v) for name, v in parts.items()}
    return merged, _Looked(plan.stop, examined, torch.cat(labels) if labels else torch.zeros(0, dtype=torch.long),
                           decision)


def _interim(parts: dict[str, list[torch.Tensor]], labels: list[torch.Tensor], seed: int, margin: float
             ) -> InterimDecision | None:
    """The decision of an interim look, or None: look again (a "decided" that the fixed rule on the images so far
    does not confirm, every faithfulness cell beating and no row undecided, counts as undecided)."""
    merged = {name: torch.cat(v) for name, v in parts.items()}
    cells = comparison_decisions(merged, margin)
    decision = interim_decision(cells, int(sum(len(y) for y in labels)), MIN_N,
                                controls=control_cells(merged, margin))
    if decision.verdict == "fails":
        return decision
    if decision.verdict == "decided" and all(
            (o := decide(d, rule, m, seed).outcome) != UNDECIDED and (rule != FAITHFULNESS or o == BEATS)
            for row in cells.values() for d, m, rule in row.values()):
        return decision
    return None


def _judged(ctx: GateContext, plan: _Plan, target: str, kw: dict[str, Any], columns: dict[str, torch.Tensor],
            looked: _Looked) -> GateResult:
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


def _gate_batch(ctx: GateContext, plan: _Plan, imp: torch.Tensor, layouts: LayoutSums, sl: slice
                ) -> dict[str, torch.Tensor]:
    """One batch's gate columns: every region of :func:`gate_regions` deleted and attacked, and the complexity."""
    x, y, ids = ctx.batch(sl)
    imp = imp.to(ctx.device)
    cfg = ctx.config
    class_layout, dataset_layout = layouts.leave_one_out(imp, ctx.data.labels[sl])
    refs = reference_maps(x, {"class-layout": class_layout, "dataset-layout": dataset_layout}, REFERENCE_MAPS)
    regions = gate_regions(imp, plan.fraction, cfg.seed, ids, references=refs)
    fills = tuple(cfg.gate_fills)
    cols = deletion_columns(plan.model, x, y, regions, fills=fills, seed=cfg.seed, sample_ids=ids)
    # a pass holds at most a batch of images on a CPU, as everywhere in a run (the regions x images stack is ~9
    # batches); a GPU takes the stack in calls of its own size
    cols.update(restricted_attack_columns(plan.model, x, y, regions, plan.attack, sample_ids=ids,
                                          max_images=device_rows(cfg.batch_size, x)))
    # the deletion and attack columns come back on the host; the map's two complexities join them in one read
    cols.update(to_host({"complexity:map": gini_sparseness(imp),
                         "complexity:blurred": gini_sparseness(blurred_map(imp))}))
    return cols


def _control_maps(ctx: GateContext, model: nn.Module, tag: str, b: int) -> dict[str, torch.Tensor]:
    """The positive control's maps of the run's whole batch ``b`` (cached; shared by every gate of the model; reused
    from the model cache by a later run on the same model and images)."""
    x, y, ids = ctx.batch(ctx.slices[b])
    return CONTROL_MAPS.at(*([tag] if tag else []), "control", "maps").get_model_work(
        ctx.rundir, lambda: {"model": state_checksum(model), "x": x, "classes": y, "ids": ids, "seed": ctx.config.seed},
        lambda: {k: v.cpu() for k, v in control_maps(model, x, y, ctx.config.seed, ids).items()},
        b)


def _control_columns(ctx: GateContext, plan: _Plan, maps: dict[str, torch.Tensor], sl: slice
                     ) -> dict[str, torch.Tensor]:
    """The positive control's columns of the images ``sl`` (its maps ``maps``): the occlusion control's region and
    its shape elsewhere and scattered, deleted."""
    x, y, ids = ctx.batch(sl)
    cfg = ctx.config
    own = control_regions({k: v.to(ctx.device) for k, v in maps.items()}, plan.fraction, cfg.seed, ids)
    cols = deletion_columns(plan.model, x, y, own["deletion"], fills=tuple(cfg.gate_fills), seed=cfg.seed,
                            sample_ids=ids)
    return {k: v for k, v in cols.items() if k.split(":")[-1].startswith("control-")}  # on the host already


def _randomization_images(ctx: GateContext, model: nn.Module, target: str
                          ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(x, classes, sample ids) of the randomization checks: the first ``randomization_images`` images; with
    ``target == "pred"`` the class explained stays the trained model's, as in Adebayo et al."""
    x, y, ids = ctx.batch(slice(0, min(ctx.config.randomization_images, len(ctx.data))))
    if target == "pred":
        with torch.no_grad():
            y = model(x).argmax(1)
    return x, y, ids


def _check(ctx: GateContext, plan: _Plan, target: str, kw: dict[str, Any], name: str,
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
                "samples": cfg.randomization_samples, "batch_size": cfg.batch_size}

    return GATE_CHECK.at(*plan.family, name).get_model_work(ctx.rundir, inputs, lambda: check(images()))


def _randomization(ctx: GateContext, plan: _Plan, images: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
                   kw: dict[str, Any]) -> list[dict[str, Any]]:
    """The cascading model-randomization check of the explainer (its rows), over the plan's draws."""
    x, y, _ = images
    cfg = ctx.config
    method = plan.method
    return model_randomization_check(
        plan.model, x, lambda m, z: importance_map(method, m, z, target=y, batch_size=cfg.batch_size, **kw),
        seed=cfg.seed, max_steps=cfg.randomization_steps, draws=plan.draws, progress=cfg.progress)


def _mprt(ctx: GateContext, plan: _Plan, images: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
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
    ``panel_randomization_draws`` re-initializations."""
    cfg = ctx.config

    def panel_maps(m: str) -> Callable[[int], torch.Tensor]:
        return lambda b: ctx.panel_maps(m, b)

    def roi(m: str) -> bool:
        return m == ctx.importance

    gates = {m: gate_stage(ctx, m, cfg.fraction, cfg.eps_linf, maps=panel_maps(m),
                           n=cfg.gate_n if roi(m) else cfg.panel_gate_n,
                           draws=cfg.randomization_draws if roi(m) else cfg.panel_randomization_draws)
             for m in ctx.panel}
    for fraction in cfg.panel_fractions:
        if fraction != cfg.fraction:
            gates[fraction_key(ctx.importance, fraction)] = gate_stage(
                ctx, ctx.importance, fraction, cfg.eps_linf, maps=ctx.importance_of,
                n=cfg.panel_gate_n)
    return gates


def fraction_key(method: str, fraction: float) -> str:
    """The name of an explainer's gate at a panel fraction other than the run's ("hirescam @ top 10%")."""
    return f"{method} @ top {fraction:.0%}"
