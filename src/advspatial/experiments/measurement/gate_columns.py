"""The faithfulness gate's comparisons, look by look, of several gates at once (METHODS.md §1).

A gate compares its map's top pixels with regions of the same size (:func:`~advspatial.faithfulness.deletion.
gate_regions`), deleting each and attacking inside each, on the correctly classified images among its first ones, in
looks (after 50, 100, 200, ... images) that stop once its verdict is decided (:mod:`~advspatial.faithfulness.
sequential`). A measurement gates the RoI's explainer at several fractions and a panel of explainers, all on the same
images of the same model: the chunk of images one look of each gate needs is the same, so :func:`compared_columns`
runs the gates' looks side by side and computes their regions of a chunk as one stack (one restricted attack over
every gate's regions × images, one round per step; one deletion round), instead of one gate after another.

Each gate keeps its own stage per chunk (``gate/[tag/]method/f{fraction}-n{n}-looks50/batch-NNNNN``), computed from
the same inputs as alone and reused from the model cache alike; the joint work's passes are shared among the stages
it computed in proportion to their regions (:meth:`~advspatial.passes.PassCount.shares`). Only the rounding of a
forward pass at another batch composition separates a gate's columns from those it gets alone.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from ...faithfulness.calibration import Budget
from ...faithfulness.controls import control_maps, control_regions
from ...faithfulness.deletion import ROI, blurred_map, deletion_columns, gate_regions, restricted_attack_columns
from ...faithfulness.gate import MIN_N, comparison_decisions, control_cells, gini_sparseness
from ...faithfulness.sequential import InterimDecision, interim_decision, look_sizes
from ...models.loading import state_checksum
from ...regions.references import REFERENCE_MAPS, LayoutSums, reference_maps
from ...rundir import RunDir
from ...runtime import to_host
from ...stacked_runs import gradient_call_rows
from ...statistics.outcomes import BEATS, FAITHFULNESS, UNDECIDED, decide
from ..context import ExperimentContext
from ..stage import Stage, computed_jointly
from .config import GatedConfig

#: the context a gate runs in: any experiment's whose settings include the gate's
GateContext = ExperimentContext[GatedConfig]

#: a gate's comparisons of one chunk of a look (``gate/[tag/]method/f0.2-n200-looks50/batch-00000``)
GATE_COLUMNS = Stage[dict[str, torch.Tensor]]("gate")
#: per model (``gate/[tag/]control/maps``): the positive control's maps per batch
CONTROL_MAPS = Stage[dict[str, torch.Tensor]]("gate")
#: the positive control's columns of one range of images at one fraction (``gate/[tag/]control/f0.2/images-0-50``):
#: shared by every explainer's gate of the model at that fraction
CONTROL_COLUMNS = Stage[dict[str, torch.Tensor]]("gate", per="run")
#: joins a gate's number to a region's name in a joint stack (``1|roi``); no region name holds it
_JOINT = "|"


@dataclass
class GatePlan:
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


@dataclass
class PreparedGate:
    """A gate ready for its comparisons: its plan, model tag, maps of batch b (``maps(b, slice)``) and the layout
    sums of every map it examines (the class- and dataset-layout references)."""

    plan: GatePlan
    tag: str
    maps: Callable[[int, slice], torch.Tensor]
    layouts: LayoutSums


@dataclass(frozen=True)
class GateChunk:
    """Images of the gate that lie in one of the run's batches and in one look: ``index`` numbers the chunk among
    the gate's (its stage key), ``batch`` is the run's batch it lies in, ``offset`` its first image's position there."""

    index: int
    batch: int
    offset: int
    images: slice

    @property
    def part(self) -> slice:
        """The chunk's images within its batch."""
        return slice(self.offset, self.offset + self.images.stop - self.images.start)


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
class Looked:
    """The gate's comparisons as far as they were computed: images planned and examined, the labels of the correct
    ones, and the decision that stopped them early (None: they ran to the last look)."""

    planned: int
    examined: int
    labels: torch.Tensor
    decision: InterimDecision | None


@dataclass
class _Comparing:
    """One gate's comparisons in progress: its looks, the look it is at, the columns of its correct images so far."""

    ctx: GateContext
    gate: PreparedGate
    looks: tuple[int, ...]
    look: int = 0
    done: bool = False
    examined: int = 0
    decision: InterimDecision | None = None
    parts: dict[str, list[torch.Tensor]] = field(default_factory=dict)
    labels: list[torch.Tensor] = field(default_factory=list)

    @functools.cached_property
    def chunks(self) -> list[list[GateChunk]]:
        return look_chunks(self.looks, self.gate.plan.slices)

    @functools.cached_property
    def stage(self) -> Stage[dict[str, torch.Tensor]]:
        plan = self.gate.plan
        return GATE_COLUMNS.at(*plan.family, f"f{plan.fraction}-n{plan.stop}-"
                               + (f"looks{self.looks[0]}" if len(self.looks) > 1 else "compared"))

    def inputs(self, chunk: GateChunk) -> dict[str, Any]:
        """Everything a chunk's columns read besides the model's weights (the model cache's key)."""
        plan, cfg = self.gate.plan, self.ctx.config
        x, y, ids = self.ctx.batch(chunk.images)
        return {"model": state_checksum(plan.model), "method": plan.method, "x": x, "classes": y, "ids": ids,
                "maps": self.gate.maps(chunk.batch, plan.slices[chunk.batch])[chunk.part],
                "layouts": vars(self.gate.layouts), "fraction": plan.fraction, "seed": cfg.seed,
                "fills": list(cfg.gate_fills), "budget": plan.budget.as_dict(), "attack": plan.attack.params(),
                "batch_size": cfg.batch_size}

    def control_stage(self, chunk: GateChunk) -> Stage[dict[str, torch.Tensor]]:
        """The positive control's stage of the chunk's images at the gate's fraction."""
        tag = self.gate.tag
        return CONTROL_COLUMNS.at(*([tag] if tag else []), "control", f"f{self.gate.plan.fraction}",
                                  f"images-{chunk.images.start}-{chunk.images.stop}")

    def keep(self, chunk: GateChunk, cols: dict[str, torch.Tensor]) -> None:
        kept = cols["clean:correct"].bool()
        for name, value in cols.items():
            self.parts.setdefault(name, []).append(value[kept])
        self.labels.append(self.ctx.data.labels[chunk.images][kept])

    def next_look(self) -> None:
        """After a look: done at the last look or at an interim decision, else on to the next look."""
        self.examined = self.looks[self.look]
        if self.look == len(self.looks) - 1:
            self.done = True
            return
        cfg = self.ctx.config
        self.decision = _interim(self.parts, self.labels, cfg.seed, cfg.equivalence_margin)
        self.done = self.decision is not None
        self.look += 1

    def result(self) -> tuple[dict[str, torch.Tensor], Looked]:
        labels = torch.cat(self.labels) if self.labels else torch.zeros(0, dtype=torch.long)
        return ({name: torch.cat(v) for name, v in self.parts.items()},
                Looked(self.gate.plan.stop, self.examined, labels, self.decision))


@dataclass
class _Unit:
    """The chunks of the same images that gates on the same model and budget need at one look: computed as one."""

    images: slice
    members: list[tuple[_Comparing, GateChunk]]


def compared_columns(ctx: GateContext, gates: Sequence[PreparedGate]) -> list[tuple[dict[str, torch.Tensor], Looked]]:
    """Each gate's comparison columns on its correctly classified images and how far its looks went: look by look
    (one look at its last image without ``gate_sequential``), a gate stopping at the first interim look that decides
    it, the gates still looking going on side by side; the same images' chunks of gates on the same model and budget
    computed as one (:func:`_joint_columns`)."""
    cfg = ctx.config
    states = [_Comparing(ctx, gate, tuple(look_sizes(gate.plan.stop)) if cfg.gate_sequential
                         else (gate.plan.stop,)) for gate in gates]
    while active := [s for s in states if not s.done]:
        units = _units(active)
        labels = ", ".join(dict.fromkeys(s.gate.plan.label for s in active))
        looks = {s.look for s in active if len(s.looks) > 1}
        ctx.each_batch(lambda _, unit: _unit_columns(ctx, unit), slices=units,
                       desc=f"faithfulness gate: {labels}" + (f", look {min(looks) + 1}" if looks else ""),
                       then=lambda _, unit, cols: [s.keep(chunk, c) for (s, chunk), c in zip(unit.members, cols,
                                                                                             strict=True)])
        for state in active:
            state.next_look()
    return [s.result() for s in states]


def _units(active: Sequence[_Comparing]) -> list[_Unit]:
    """The active gates' chunks of their current look, grouped by images, model and restricted-attack budget."""
    units: dict[tuple[int, int, int, float], _Unit] = {}
    for state in active:
        for chunk in state.chunks[state.look]:
            plan = state.gate.plan
            key = (chunk.images.start, chunk.images.stop, id(plan.model), plan.budget.eps)
            units.setdefault(key, _Unit(chunk.images, [])).members.append((state, chunk))
    return [units[k] for k in sorted(units)]


def _unit_columns(ctx: GateContext, unit: _Unit) -> list[dict[str, torch.Tensor]]:
    """Each member's columns of the unit: read back where saved (in the run or the model cache), the others
    computed as one (:func:`_joint_columns`) and saved each in its own stage with its share of the passes."""
    found: dict[int, dict[str, torch.Tensor]] = {}
    for k, (state, chunk) in enumerate(unit.members):
        value = state.stage.stored(ctx.rundir, functools.partial(state.inputs, chunk), chunk.index)
        if value is not None:
            found[k] = value
    pending = [k for k in range(len(unit.members)) if k not in found]
    names = [state.stage.key(chunk.index) for state, chunk in unit.members]

    def save(k: int, charged: Callable[[], dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
        state, chunk = unit.members[k]
        return state.stage.get_model_work(ctx.rundir, functools.partial(state.inputs, chunk), charged, chunk.index)

    again = _with_lost_company(ctx.rundir, names, {names[k] for k in pending})
    joint = [k for k, name in enumerate(names) if name in again]
    found.update(computed_jointly(ctx.rundir, joint, lambda: _joint_columns(
        ctx, [unit.members[k] for k in joint], unit.images), save, wanted=pending, names=names.__getitem__))
    controls = _unit_controls(ctx, unit)
    return [{**found[k], **controls[k]} for k in range(len(unit.members))]


def _with_lost_company(rundir: RunDir, names: Sequence[str], pending: Collection[str]) -> list[str]:
    """The stages of ``names`` to compute: the ``pending`` ones and the saved ones this run computed together with
    one of them (a run stopped while saving a joint computation's stages), computed again beside them but not saved
    again, so that each lost stage takes the share of the passes the joint computation gave it and a resumed run
    counts what a run in one go does. A stage read from the model cache, or computed without a lost one, is not."""
    if not pending:
        return []
    return [name for name in names if name in pending or set(pending) & set(rundir.computed_with(name))]


def _unit_controls(ctx: GateContext, unit: _Unit) -> list[dict[str, torch.Tensor]]:
    """Each member's positive-control columns (none without ``gate_control``): one stage per fraction and images,
    shared by the model's gates at that fraction and read at the top level, so that a resumed run that reads the
    chunk back counts their passes too; those not saved yet computed as one deletion round."""
    if not ctx.config.gate_control:
        return [{} for _ in unit.members]
    stages: dict[str, tuple[Stage[dict[str, torch.Tensor]], _Comparing, GateChunk]] = {}
    for state, chunk in unit.members:
        stage = state.control_stage(chunk)
        stages.setdefault(stage.key(), (stage, state, chunk))
    values = {key: stage.get(ctx.rundir, _saved_already) for key, (stage, _, _) in stages.items()
              if stage.exists(ctx.rundir)}  # read back through get: their passes count
    pending = [key for key in stages if key not in values]
    joint = _with_lost_company(ctx.rundir, list(stages), pending)
    values.update(computed_jointly(
        ctx.rundir, joint, lambda: _joint_controls(ctx, [stages[key][1:] for key in joint], unit.images),
        lambda key, charged: stages[key][0].get(ctx.rundir, charged), wanted=pending, names=str))
    return [values[state.control_stage(chunk).key()] for state, chunk in unit.members]


def _saved_already() -> dict[str, torch.Tensor]:
    raise RuntimeError("a saved stage was to be computed again")


def _joint_columns(ctx: GateContext, members: Sequence[tuple[_Comparing, GateChunk]], images: slice
                   ) -> tuple[list[dict[str, torch.Tensor]], list[int]]:
    """The members' comparison columns of ``images`` as one stack: every member's regions
    (:func:`~advspatial.faithfulness.deletion.gate_regions`) deleted in one round and attacked as one run, the
    columns split back per member (and the map's complexities); with the members' region counts."""
    x, y, ids = ctx.batch(images)
    cfg = ctx.config
    merged: dict[str, torch.Tensor] = {}
    own: list[tuple[torch.Tensor, dict[str, torch.Tensor]]] = []
    for k, (state, chunk) in enumerate(members):
        plan = state.gate.plan
        imp = state.gate.maps(chunk.batch, plan.slices[chunk.batch])[chunk.part].to(ctx.device)
        class_layout, dataset_layout = state.gate.layouts.leave_one_out(imp, ctx.data.labels[images])
        refs = reference_maps(x, {"class-layout": class_layout, "dataset-layout": dataset_layout}, REFERENCE_MAPS)
        regions = gate_regions(imp, plan.fraction, cfg.seed, ids, references=refs)
        merged.update(_tagged(k, regions))
        own.append((imp, regions))
    plan = members[0][0].gate.plan
    cols = deletion_columns(plan.model, x, y, merged, fills=tuple(cfg.gate_fills), seed=cfg.seed, sample_ids=ids)
    # a pass holds at most a batch of images on a CPU, as everywhere in a run (the stack is ~9 batches per gate);
    # a GPU takes the stack in calls of its own size
    cols.update(restricted_attack_columns(plan.model, x, y, merged, plan.attack, sample_ids=ids,
                                          max_images=gradient_call_rows(cfg.batch_size, x, plan.model)))
    shared = {name: value for name, value in cols.items() if _JOINT not in name}
    out = []
    for k, (imp, regions) in enumerate(own):
        gate_cols = {**shared, **_member_columns(cols, k)}
        # the RoI's pixel count and the map's two complexities join them in one read
        gate_cols.update(to_host({"roi:pixels": regions[ROI].flatten(1).sum(1),
                                  "complexity:map": gini_sparseness(imp),
                                  "complexity:blurred": gini_sparseness(blurred_map(imp))}))
        out.append(gate_cols)
    return out, [len(regions) for _, regions in own]


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


def gate_control_maps(ctx: GateContext, model: nn.Module, tag: str, b: int) -> dict[str, torch.Tensor]:
    """The positive control's maps of the run's whole batch ``b`` (cached; shared by every gate of the model; reused
    from the model cache by a later run on the same model and images)."""
    x, y, ids = ctx.batch(ctx.slices[b])
    return CONTROL_MAPS.at(*([tag] if tag else []), "control", "maps").get_model_work(
        ctx.rundir, lambda: {"model": state_checksum(model), "x": x, "classes": y, "ids": ids, "seed": ctx.config.seed},
        lambda: {k: v.cpu() for k, v in control_maps(model, x, y, ctx.config.seed, ids).items()},
        b)


def _joint_controls(ctx: GateContext, members: Sequence[tuple[_Comparing, GateChunk]], images: slice
                    ) -> tuple[list[dict[str, torch.Tensor]], list[int]]:
    """The positive control's columns of ``images`` at each member's fraction, as one deletion round: the
    occlusion control's region and its shape elsewhere and scattered, deleted; with the members' region counts."""
    x, y, ids = ctx.batch(images)
    cfg = ctx.config
    merged: dict[str, torch.Tensor] = {}
    counts = []
    for k, (state, chunk) in enumerate(members):
        plan = state.gate.plan
        maps = {name: v[chunk.part].to(ctx.device)
                for name, v in gate_control_maps(ctx, plan.model, state.gate.tag, chunk.batch).items()}
        regions = control_regions(maps, plan.fraction, cfg.seed, ids)["deletion"]
        merged.update(_tagged(k, regions))
        counts.append(len(regions))
    model = members[0][0].gate.plan.model
    cols = deletion_columns(model, x, y, merged, fills=tuple(cfg.gate_fills), seed=cfg.seed, sample_ids=ids)
    out = [{name: v for name, v in _member_columns(cols, k).items() if name.split(":")[-1].startswith("control-")}
           for k in range(len(members))]  # the control regions' columns only (on the host already)
    return out, counts


def _tagged(k: int, regions: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Member ``k``'s regions named apart in a joint stack (``1|roi``)."""
    return {f"{k}{_JOINT}{name}": region for name, region in regions.items()}


def _member_columns(cols: dict[str, torch.Tensor], k: int) -> dict[str, torch.Tensor]:
    """The columns of member ``k``'s regions (:func:`_tagged`) under the regions' own names."""
    mark = f":{k}{_JOINT}"
    return {name.replace(mark, ":"): v for name, v in cols.items() if mark in name}
