"""The faithfulness gate as a stage every RoI-using experiment runs (METHODS.md §1).

An importance map is used as a Region of Importance (RoI) only after it has
shown that it marks what *this model* uses in *this image*: paired per image,
deleting its top pixels and the experiment's own L-inf PGD confined to them must
do more damage than the same through regions of equal size that need no model --
its shape at a random place, as many scattered pixels, the class and dataset
layout (cross-fitted mean maps of the other images), a centre prior, the
image's brightest pixels and its strongest edges -- and the map must change when
the model's weights are destroyed (:mod:`advspatial.faithfulness.gate`). The
stage streams the experiment's batches twice (the layout maps need every image's
map first; both passes cached in the run directory, keyed by global sample ids,
so ``--resume`` and the batch size do not change it) over the correctly
classified images among the first ``gate_n``: the maps batch by batch, the
comparisons look by look (``gate_sequential``, the default: after 50, 100,
200, ... images, stopping once the verdict is decided,
:mod:`advspatial.faithfulness.sequential`), then the randomization checks while
the gate can still pass.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ..attacks import make_attack
from ..errors import ConfigError, unknown_name
from ..maps.heads import default_importance_method
from ..maps import importance_map
from ..statistics.claims import NOT_INTERPRETABLE_ROI
from ..faithfulness.deletion import blurred_map
from ..faithfulness.gate import (
    EDGE_FREE_FILLS, MIN_N, SKIPPABLE_CHECKS, comparison_differences, comparison_failures, gini_sparseness,
    randomization_passed, summarize_gate,
)
from ..faithfulness.record import GateResult
from ..faithfulness.deletion import deletion_columns, gate_regions, restricted_attack_columns
from ..faithfulness.randomization import model_randomization_check
from ..faithfulness.mprt import randomization_checks
from ..faithfulness.sequential import InterimDecision, interim_decision, look_sizes
from ..regions.references import REFERENCE_MAPS, LayoutSums, reference_maps
from .context import ExperimentContext
from .stage import Stage
from .settings import OPEN_UNIT_INTERVAL, ExperimentConfig, setting

GATE_FILLS = ("zero", "blur", "road", "noise", "inpaint")


@dataclass
class GatedConfig(ExperimentConfig):
    """Settings of the faithfulness gate and of the verdict rules, shared by every experiment that uses an RoI."""

    gate_n: int = setting(500, "images (a prefix of the n) entering the faithfulness gate of the RoI's explainer; "
                               "correct ones count", low=1)
    panel_gate_n: int = setting(200, "images (a prefix of the n) entering the gates of the explainer panel (the "
                                     "other explainers, and the RoI's explainer at the panel's other fractions)",
                                low=1)
    gate_fills: list[str] = setting(["road", "blur"], "deletion fills of the faithfulness gate (>= 2 of road, blur, "
                                                      "inpaint, zero, noise; one that creates no edges: road, blur "
                                                      "or inpaint; the default's measurement: docs/methods.md)")
    gate_steps: int = setting(10, "PGD steps of the gate's restricted attack (a damage comparison between regions "
                                  "of equal size, not a robustness figure)", low=1)
    randomization_images: int = setting(16, "images of the cascading model-randomization check", low=1)
    randomization_samples: int = setting(20, "noisy copies per image of smooth MPRT (the randomization check's "
                                             "denoising; Quantus' default is 50)", low=1)
    randomization_steps: int = setting(12, "cascade steps of the randomization check at which maps are compared "
                                           "(evenly spaced; every layer is still randomized in order)", low=1)
    sesoi: float = setting(0.01, "scale of the smallest effects of interest (0.01: the documented default per "
                                 "statistic; a CI inside +-SESOI is equivalent to the null, a significant effect "
                                 "below it negligible)",
                           low=0)
    significance: float = setting(0.05, "significance level after correction (Holm primary, BH secondary)",
                                  **OPEN_UNIT_INTERVAL)
    gate_sequential: bool = setting(True, "stop a gate's work once its verdict is decided: its comparisons in looks "
                                          "at 50, 100, 200, ... images (Haybittle-Peto bound |z| >= 3.29), the "
                                          "randomization checks only while it can still pass (a smoke test, "
                                          "--quick, runs them all); --no-gate-sequential runs every check on every "
                                          "image")

    def validate(self) -> None:
        super().validate()
        for fill in self.gate_fills:
            if fill not in GATE_FILLS:
                raise unknown_name("gate fill", fill, GATE_FILLS)
        if len(set(self.gate_fills)) < 2:
            raise ConfigError("gate_fills needs at least two different fills (e.g. road,blur)")
        if not set(self.gate_fills) & set(EDGE_FREE_FILLS):
            raise ConfigError(f"gate_fills needs a fill that creates no edges ({', '.join(EDGE_FREE_FILLS)}) to judge "
                              f"the scattered control; got {self.gate_fills}")


def resolve_importance(name: str, model: nn.Module, x: torch.Tensor) -> tuple[str, str]:
    """(method, why): ``auto`` picks by head type (:func:`advspatial.maps.default_importance_method`)."""
    if name == "auto":
        return default_importance_method(model, x)
    return name, "chosen in the config"


#: the gate of one explainer (``gate/[tag/]method``): its maps and its comparisons per batch, the model-randomization
#: checks once per run
GATE_MAPS = Stage[torch.Tensor]("gate")
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


def gate_stage(ctx: ExperimentContext, method: str, fraction: float, eps: float, target: str = "pred",
               importance_kw: dict[str, Any] | None = None,
               maps: Callable[[int], torch.Tensor] | None = None,
               model: nn.Module | None = None, tag: str = "", n: int | None = None) -> GateResult:
    """The gate of importance method ``method`` on this run's first ``n`` images (default ``gate_n``), its record
    naming ``method`` (cached per batch: :data:`GATE_MAPS`; per chunk of a look: :data:`GATE_COLUMNS`; the
    randomization checks once: :data:`GATE_CHECK`).

    ``maps(b)``, when given, returns the experiment's own (cached) map of batch b,
    so the gate judges exactly the map the experiment uses, without recomputing it.
    ``model`` (default ``ctx.model``) and ``tag`` let an experiment with several
    models gate the explainer on each. ``target``: ``pred`` or ``true`` class.
    With ``gate_sequential`` the comparisons are computed look by look and stop once decided, and the
    randomization checks run only while the gate can still pass (:mod:`advspatial.faithfulness.sequential`).
    """
    cfg = ctx.config
    model = ctx.model if model is None else model
    family = [tag, method] if tag else [method]
    label = f"{tag + ' ' if tag else ''}{method}"
    kw = importance_kw or {}
    stop = min(cfg.gate_n if n is None else n, len(ctx.data))
    slices = [slice(sl.start, min(sl.stop, stop)) for sl in ctx.slices if sl.start < stop]

    def batch_maps(b: int, sl: slice) -> torch.Tensor:
        if maps is not None:
            return maps(b)[: sl.stop - sl.start]
        x, y, _ = ctx.batch(sl)
        return GATE_MAPS.at(*family, "maps").get(ctx.rundir, lambda: importance_map(
            method, model, x, target=target, y=y, batch_size=len(x), **kw).cpu(), b)

    layouts = LayoutSums()
    ctx.each_batch(batch_maps, desc=f"faithfulness gate: {label} maps", slices=slices,
                   then=lambda b, sl, imp: layouts.add(imp, ctx.data.labels[sl]))
    columns, looked = _compared_columns(ctx, model, method, fraction, eps, family, label, stop, slices, batch_maps,
                                        layouts)
    return _judged(ctx, model, method, target, kw, family, fraction, columns, looked)


@dataclass
class _Looked:
    """The gate's comparisons as far as they were computed: images planned and examined, the labels of the correct
    ones, and the decision that stopped them early (None: they ran to the last look)."""

    planned: int
    examined: int
    labels: torch.Tensor
    decision: InterimDecision | None


def _compared_columns(ctx: ExperimentContext, model: nn.Module, method: str, fraction: float, eps: float,
                      family: list[str], label: str, stop: int, slices: list[slice],
                      batch_maps: Callable[[int, slice], torch.Tensor], layouts: LayoutSums
                      ) -> tuple[dict[str, torch.Tensor], _Looked]:
    """The comparisons' columns on the correctly classified images, look by look (one look at ``stop`` without
    ``gate_sequential``), stopping at the first interim look that decides the gate."""
    cfg = ctx.config
    attack = make_attack("pgd", model, eps=eps, alpha="auto", steps=cfg.gate_steps, seed=cfg.seed)
    looks = look_sizes(stop) if cfg.gate_sequential else (stop,)
    stage = GATE_COLUMNS.at(*family, f"f{fraction}-n{stop}-" + (f"looks{looks[0]}" if len(looks) > 1 else "compared"))
    parts: dict[str, list[torch.Tensor]] = {}
    labels: list[torch.Tensor] = []

    def compute(_: int, chunk: GateChunk) -> dict[str, torch.Tensor]:
        def columns() -> dict[str, torch.Tensor]:
            imp = batch_maps(chunk.batch, slices[chunk.batch])
            width = chunk.images.stop - chunk.images.start
            return _gate_batch(ctx, model, fraction, attack, imp[chunk.offset: chunk.offset + width], layouts,
                               chunk.images)
        return stage.get(ctx.rundir, columns, chunk.index)

    def keep(_: int, chunk: GateChunk, cols: dict[str, torch.Tensor]) -> None:
        kept = cols["clean:correct"].bool()
        for name, value in cols.items():
            parts.setdefault(name, []).append(value[kept])
        labels.append(ctx.data.labels[chunk.images][kept])

    examined, decision = 0, None
    for k, chunks in enumerate(look_chunks(looks, slices)):
        ctx.each_batch(compute, desc=f"faithfulness gate: {label}" + (f", look {k + 1}" if len(looks) > 1 else ""),
                       slices=chunks, then=keep)
        examined = looks[k]
        if k == len(looks) - 1:
            break
        decision = _interim(parts, labels, cfg.seed)
        if decision is not None:
            break
    merged = {name: torch.cat(v) for name, v in parts.items()}
    return merged, _Looked(stop, examined, torch.cat(labels) if labels else torch.zeros(0, dtype=torch.long),
                           decision)


def _interim(parts: dict[str, list[torch.Tensor]], labels: list[torch.Tensor], seed: int) -> InterimDecision | None:
    """The decision of an interim look, or None: look again (a "passes" the fixed rule does not confirm at this
    look counts as undecided)."""
    merged = {name: torch.cat(v) for name, v in parts.items()}
    decision = interim_decision(comparison_differences(merged), int(sum(len(y) for y in labels)), MIN_N)
    if decision.verdict == "fails":
        return decision
    if decision.verdict == "passes" and not comparison_failures(merged, torch.cat(labels), seed):
        return decision
    return None


def _judged(ctx: ExperimentContext, model: nn.Module, method: str, target: str, kw: dict[str, Any],
            family: list[str], fraction: float, columns: dict[str, torch.Tensor], looked: _Looked) -> GateResult:
    """The gate's record: the randomization checks (with ``gate_sequential`` only while the gate can still pass,
    except in a smoke test, which exercises every stage), then :func:`~advspatial.faithfulness.gate.summarize_gate`,
    with how the verdict was reached."""
    cfg = ctx.config
    sequential = cfg.gate_sequential and not cfg.smoke_test  # a smoke test (--quick) runs every check
    randomization = mprt = None
    skipped: list[str] = []
    if sequential and comparison_failures(columns, looked.labels, cfg.seed):
        skipped = list(SKIPPABLE_CHECKS)
    else:
        with ctx.rundir.passes.counting_copies():  # the checks' randomized copies of the model are passes too
            randomization = GATE_CHECK.at(*family, "randomization").get(
                ctx.rundir, lambda: _randomization(ctx, model, method, target, kw))
            if sequential and randomization_passed(randomization) is False:
                skipped = ["mprt"]
            else:
                mprt = GATE_CHECK.at(*family, "mprt").get(ctx.rundir, lambda: _mprt(ctx, model, method, target, kw))
    decision = looked.decision
    failed_early = decision is not None and decision.verdict == "fails"
    result = summarize_gate(columns, looked.labels, seed=cfg.seed, class_names=list(ctx.data.class_names),
                            fraction=fraction, randomization=randomization, mprt=mprt, skipped=skipped,
                            decisive=decision.comparisons if decision is not None and failed_early else ())
    result.method = method
    result.images_planned, result.images_examined = looked.planned, looked.examined
    if decision is not None:
        result.stopped = f"comparisons {'failed' if failed_early else 'passed'}: {decision.reason}"
    return result


def _gate_batch(ctx: ExperimentContext, model: nn.Module, fraction: float, attack: Any, imp: torch.Tensor,
                layouts: LayoutSums, sl: slice) -> dict[str, torch.Tensor]:
    """One batch's gate columns: every region of :func:`gate_regions` deleted and attacked, and the complexity."""
    x, y, ids = ctx.batch(sl)
    imp = imp.to(ctx.device)
    cfg = ctx.config
    class_layout, dataset_layout = layouts.leave_one_out(imp, ctx.data.labels[sl])
    refs = reference_maps(x, {"class-layout": class_layout, "dataset-layout": dataset_layout}, REFERENCE_MAPS)
    regions = gate_regions(imp, fraction, cfg.seed, ids, references=refs)
    cols = deletion_columns(model, x, y, regions, fills=tuple(cfg.gate_fills), seed=cfg.seed, sample_ids=ids)
    # a pass holds at most a batch of images, as everywhere in a run (the regions x images stack is ~9 batches)
    cols.update(restricted_attack_columns(model, x, y, regions, attack, sample_ids=ids, max_images=cfg.batch_size))
    cols["complexity:map"] = gini_sparseness(imp)
    cols["complexity:blurred"] = gini_sparseness(blurred_map(imp))
    return {k: v.cpu() for k, v in cols.items()}


def _randomization_images(ctx: ExperimentContext, model: nn.Module, target: str
                          ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(x, classes, sample ids) of the randomization checks: the first ``randomization_images`` images; with
    ``target == "pred"`` the class explained stays the trained model's, as in Adebayo et al."""
    x, y, ids = ctx.batch(slice(0, min(ctx.config.randomization_images, len(ctx.data))))
    if target == "pred":
        with torch.no_grad():
            y = model(x).argmax(1)
    return x, y, ids


def _randomization(ctx: ExperimentContext, model: nn.Module, method: str, target: str,
                   kw: dict[str, Any]) -> list[dict[str, Any]]:
    """The cascading model-randomization check of the explainer (its rows)."""
    x, y, _ = _randomization_images(ctx, model, target)
    return model_randomization_check(
        model, x, lambda m, z: importance_map(method, m, z, target=y, batch_size=len(z), **kw),
        seed=ctx.config.seed, max_steps=ctx.config.randomization_steps)


def _mprt(ctx: ExperimentContext, model: nn.Module, method: str, target: str,
          kw: dict[str, Any]) -> dict[str, Any]:
    """Smooth and efficient MPRT of the explainer on the randomization check's images (``as_dict``)."""
    x, y, ids = _randomization_images(ctx, model, target)
    return randomization_checks(
        model, x, y, lambda m, z, t: importance_map(method, m, z, target=t, batch_size=len(z), **kw),
        seed=ctx.config.seed, sample_ids=ids, samples=ctx.config.randomization_samples).as_dict()


def gate_rule(cfg: GatedConfig, images: int, fraction: float, eps: float, map_name: str = "the map") -> str:
    """The gate's rule in one paragraph (one wording for every report)."""
    return (f"Gate: on the correctly classified images among the first {images}, the top {fraction:.0%} of "
            f"{map_name} must do more damage than regions of the same size that need no model: its shape at a random "
            "place (location), as many random pixels (scatter, judged with fills that create no edges), the "
            "top pixels of the mean map of the other images of the class (class layout) and of all classes "
            "(dataset layout), a centred disc, the image's brightest pixels (intensity) and its strongest Sobel "
            f"edges. Damage is measured twice: deleting the region ({', '.join(cfg.gate_fills)} fills) must lower "
            f"the true-class logit more, and L-inf PGD (eps {eps:g}, {cfg.gate_steps} steps) confined to the "
            "region must lower the margin more; each paired per image, 95% bootstrap CI above 0, n >= 30. The map "
            "must also change when the model's weights are destroyed (cascading randomization: |Spearman| with "
            "the trained model's map below 0.5 after every layer is re-initialized; smooth MPRT: the denoised maps' "
            "Spearman with the fully randomized model's below 0.5; efficient MPRT: the maps' complexity changes by "
            "more than 5% under full randomization, in either direction). It passes only if it beats "
            "all of them (an intersection-union test). Positive Δ = the map's region matters more.")


def roi_label(gate: GateResult) -> str:
    """'' when the gate passed, else the label every RoI-dependent result of the run carries, naming what the RoI
    did not beat ("not interpretable: the RoI is no better than the class layout, image edges")."""
    if gate.passed:
        return ""
    missed = gate.not_beaten(randomization=False)
    randomization = gate.comparisons.get("randomization")
    few = "insufficient data" in gate.reason
    parts = ([f"too few images to judge the RoI (n={gate.n})"] if few else []) + (
        [f"the RoI is no better than {', '.join(missed)}"] if missed else []) + (
        [f"the RoI fails the randomization check: {'; '.join(randomization.failing() or ['not checked'])}"]
        if randomization is not None and not randomization.beats and not randomization.skipped else [])
    return "not interpretable: " + "; ".join(parts) if parts else NOT_INTERPRETABLE_ROI


@dataclass
class Roi:
    """The explainer whose maps give a run its Region of Importance: the method, why it was chosen, whether its maps
    passed the faithfulness gate, and how every RoI-dependent result reads (``interpretable``, else :func:`roi_label`).
    """

    method: str
    why: str
    faithful: bool
    interpretation: str

    @classmethod
    def judged(cls, method: str, why: str, gate: GateResult) -> Roi:
        """The RoI of ``method`` (chosen because ``why``) as its ``gate`` (:func:`gate_stage`) judged it."""
        return cls(method, why, gate.passed, roi_label(gate) or "interpretable")
