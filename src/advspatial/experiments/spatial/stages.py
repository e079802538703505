"""The cached stages of the neutralization defence (METHODS.md §2), beside the measurement's
(:mod:`advspatial.experiments.measurement.stages`).

Three threat models, never mixed in one number:

1. **Non-adaptive**: the run's attacks, made on the undefended model, scored on the deployable defence (gradient
   RoA; per-class prior RoA, :func:`class_prior`), on its matched random control (``control_draws`` draws per
   image, keyed by the global image id), on the oracle (true delta) with its control inside RoA, and on the
   clean-restore diagnostic (:class:`DefenceColumns`, per attack batch); the sweep (:func:`sweep_batch`) does the
   same for every fraction and fill.
2. **Adaptive**, on the first ``adaptive_n`` images: the autoattack-style ensemble through the identity and the
   local gradient of the main defence (with ``--eval full`` every configuration the report shows), its control
   (EOT), the RoI-restricted attack and the transfer of its examples (:func:`adaptive_batch`); the same attack on
   the undefended model (:func:`undefended_batch`) and on the trivial input transforms (:func:`baseline_batch`).
3. **Convergence**: every reported component carries its own curve, on the same images with the same attack
   (:func:`advspatial.defence.convergence.convergence_curves`): iterations, restarts and eps for a deterministic
   component, EOT draws for a randomized one; with ``curve_below_budget`` (``--eval full``) also the left side
   (less effort than the budget) for the main defence and every randomized component, which the plot draws and
   no rule reads (:func:`advspatial.defence.convergence.read_curve` reads the budget and the points beyond). Each
   attack and its curves are one call
   (:func:`advspatial.defence.adaptive_evaluation.evaluate_adaptive`).

A component's per-image outcome is a :class:`~advspatial.defence.adaptive_evaluation.ComponentOutcome`; a batch's
are the records of :mod:`.records`, saved as dicts.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import torch

from ...defence.adaptive import Defence, Undefended, correct_share, roi_attack_mask
from ...defence.adaptive_evaluation import AdaptiveEvaluation, PerImageRecord, evaluate_adaptive
from ...defence.neutralize import ClassPriorVulnerability, NeutralizedModel
from ...defence.selection import select_regions
from ...defence.nonadaptive import evaluate_defence
from ...defence.transforms import TransformDefence
from ...maps import attack_map, importance_map
from ...models.hooks import frozen_eval
from ...stacked_runs import forward_stacked
from ...runtime import batch_slices, to_host
from ..context import train_images
from ..measurement.stages import Accuracy, Context, ExtraColumns
from ..stage import ATTACK, Stage
from .config import DefenceSetting, SpatialConfig
from .deployable import importance_and_gradient
from .prior import class_prior
from .records import (
    ADAPTIVE, BASELINES, UNDEFENDED, AdaptiveOutcomes, BaselineOutcome, SettingOutcome, UndefendedOutcome,
)

#: the measurement's context with the spatial experiment's settings
SpatialContext = Context[SpatialConfig]
#: the RoI-restricted comparison uses the ensemble's gradient attacks on both models alike; Square on the defended
#: model is its costliest part
ROI_COMPONENTS = ("apgd-ce", "apgd-dlr")

#: the per-channel mean of the training images (the ``mean`` fill)
DATASET_MEAN = Stage[torch.Tensor]("dataset-mean", per="run")
#: the non-adaptive defence columns of an attack's batch: ``DEFENCE.at(attack)``
DEFENCE = Stage[dict[str, torch.Tensor]]("defence")
#: the sweep's per-image correctness of a batch: ``{(adv|clean, fraction, fill): (defended, control draws)}``
SWEEP = Stage[dict[tuple[str, float, str], tuple[torch.Tensor, torch.Tensor]]]("sweep")


def importance_fn(ctx: SpatialContext) -> Callable[[torch.Tensor], torch.Tensor]:
    """The deployable RoI map: importance of the input's predicted class."""
    return lambda z: importance_map(ctx.importance, ctx.model, z, target="pred", batch_size=len(z) or 1)


def gradient_fn(ctx: SpatialContext) -> Callable[[torch.Tensor], torch.Tensor]:
    """The deployable RoA map: the input gradient (needs no clean image)."""
    return lambda z: attack_map("gradient", ctx.model, z).map


def neutralized(ctx: SpatialContext, setting: DefenceSetting, prior: torch.Tensor | None,
                mode: str = "defend") -> NeutralizedModel:
    """The deployable defence of ``setting`` (or its randomized control with ``mode="random"``)."""
    cfg = ctx.config
    maps_fn = None
    if setting.vulnerability == "gradient":
        vulnerability = gradient_fn(ctx)
        # both maps, to the bit, from one forward pass: the defence computes them at every adaptive attack step
        maps_fn = partial(importance_and_gradient, ctx.importance, ctx.model)
    elif prior is not None:
        vulnerability = ClassPriorVulnerability(prior.to(ctx.device), ctx.model)
    else:  # the AttributeError that prior.to(...) raised
        raise AttributeError(f"defence setting {setting.label!r} needs the class prior, and there is none")
    return NeutralizedModel(ctx.model, importance_fn(ctx), vulnerability, setting.fraction, setting.fill, mode=mode,
                            seed=cfg.seed, fill_params=fill_params(ctx, setting.fill), control_match=cfg.control_match,
                            maps_fn=maps_fn)


def deployable_defences(ctx: SpatialContext, prior: torch.Tensor | None) -> dict[str, NeutralizedModel]:
    """The non-adaptive table's defences: ``gradient`` (main) and ``prior``."""
    cfg = ctx.config
    out = {"gradient": neutralized(ctx, DefenceSetting("main", cfg.fraction, cfg.fill), prior)}
    if prior is not None:
        out["prior"] = neutralized(ctx, DefenceSetting("prior", cfg.fraction, cfg.fill), prior)
    return out


def fill_params(ctx: SpatialContext, fill: str) -> dict[str, torch.Tensor | int]:
    """Extra parameters of a fill: the training-set mean for ``mean``, the sweep count for ``inpaint``."""
    if fill == "mean":
        return {"dataset_mean": dataset_mean(ctx)}
    if fill == "inpaint":
        return {"iterations": ctx.config.inpaint_iterations}
    return {}


def dataset_mean(ctx: SpatialContext) -> torch.Tensor:
    """Per-channel mean of the training images (first 10000), for the ``mean`` fill."""

    def compute() -> torch.Tensor:
        train = train_images(ctx.config, 10000, ctx.data.ids)
        total = torch.zeros(train.image_shape[0], dtype=torch.float64)
        for x, _, _ in train.batches(2000):
            total += x.double().sum(dim=(0, 2, 3))
        return (total / (len(train) * train.image_shape[1] * train.image_shape[2])).float()

    return DATASET_MEAN.get(ctx.rundir, compute).to(ctx.device)


def defence_columns(ctx: SpatialContext) -> DefenceColumns:
    """The non-adaptive defence's columns, made once the gates ran: the clean importance maps of every batch first,
    then the class prior and the deployable defences it feeds."""
    ctx.each_batch(lambda b, sl: ctx.importance_of(b), desc="clean: importance maps", then=lambda *_: None)
    prior = class_prior(ctx)
    return DefenceColumns(ctx, deployable_defences(ctx, prior), prior)


@dataclass
class DefenceColumns:
    """The non-adaptive defence's per-image columns of every attack batch
    (:class:`~advspatial.experiments.measurement.stages.BatchColumns`), with the class prior its defences use;
    ``draws[attack][column]`` keeps each random control's per-draw correctness (B, draws) per batch."""

    ctx: SpatialContext
    defences: dict[str, NeutralizedModel]
    prior: torch.Tensor | None = None
    draws: dict[str, dict[str, list[torch.Tensor]]] = field(
        default_factory=lambda: defaultdict(lambda: defaultdict(list)))

    def compute(self, name: str, b: int, sl: slice, x_adv: torch.Tensor, amap: torch.Tensor) -> dict[str, torch.Tensor]:
        """The defence columns of attack ``name`` on batch b (cached); controls are (B, draws) predictions. The
        clean-cost columns do not depend on the attack: only the first attack's rows carry them."""
        ctx, cfg = self.ctx, self.ctx.config

        def columns() -> dict[str, torch.Tensor]:
            x, y, ids = ctx.batch(sl)
            roi = ctx.importance_of(b)[: sl.stop - sl.start].to(ctx.device)
            oracle = select_regions(roi, amap.to(ctx.device), cfg.fraction, seed=cfg.seed, sample_ids=ids)
            out: dict[str, torch.Tensor] = {}
            for tag, defended in self.defences.items():
                ev = evaluate_defence(ctx.model, defended, x, y, x_adv.to(ctx.device),
                                      oracle.neutralized if tag == "gradient" else None,
                                      oracle.roa if tag == "gradient" else None, sample_ids=ids,
                                      draws=cfg.control_draws, batch_size=len(x), clean=name == cfg.attacks[0])
                for col, values in ev.columns().items():
                    if col.startswith("pred_") or col.startswith("n_region"):
                        out[f"{tag}:{col}"] = values
            return out

        return DEFENCE.at(name).get(ctx.rundir, columns, b)

    def columns(self, name: str, value: dict[str, torch.Tensor], labels: torch.Tensor) -> ExtraColumns:
        """The row columns of one batch: a control's (B, draws) predictions become its share of correct draws
        (``tag:correct_X``); each prediction column (``tag:pred_X``) and each control's share is the accuracy
        ``tag:X``."""
        rows, accuracies = {}, {}
        for key, values in value.items():
            if values.ndim == 2:
                hits = (values == labels[:, None]).float()
                self.draws[name][key].append(hits)
                rows[key.replace(":pred_", ":correct_")] = hits.mean(1)
                accuracies[key.replace(":pred_", ":")] = Accuracy(key.replace(":pred_", ":correct_"), predicted=False)
            else:
                rows[key] = values
                if ":pred_" in key:
                    accuracies[key.replace(":pred_", ":")] = Accuracy(key, predicted=True)
        return ExtraColumns(rows, accuracies)


SweepColumns = dict[tuple[str, float, str], tuple[torch.Tensor, torch.Tensor]]


def sweep_batch(ctx: SpatialContext, b: int, sl: slice, x_adv: torch.Tensor) -> SweepColumns:
    """Per-image correctness for every (adv|clean, fraction, fill): defended (B,), and its control's draws
    (B, draws)."""

    def compute() -> SweepColumns:
        x, y, ids = ctx.batch(sl)
        cells = [cell for tag, images in (("adv", x_adv.to(ctx.device)), ("clean", x))
                 for cell in _sweep_cells(ctx, tag, images, ids)]
        filled = (fill(images, region) for _, fill, images, regions in cells for region in regions)
        with torch.no_grad():
            logits = iter(forward_stacked(ctx.model, filled))
            correct = {key: torch.stack([(next(logits).argmax(1) == y).float() for _ in regions], dim=1)
                       for key, _, _, regions in cells}
        on_host = to_host({str(i): c for i, c in enumerate(correct.values())})
        return {key: (on_host[str(i)][:, 0].contiguous(), on_host[str(i)][:, 1:].contiguous())
                for i, key in enumerate(correct)}

    return SWEEP.get(ctx.rundir, compute, b)


SweepCell = tuple[tuple[str, float, str], Callable[[torch.Tensor, torch.Tensor], torch.Tensor], torch.Tensor,
                  list[torch.Tensor]]


def _sweep_cells(ctx: SpatialContext, tag: str, images: torch.Tensor, ids: torch.Tensor) -> list[SweepCell]:
    """The sweep's cells on one set of images (``tag``: adv or clean): per (fraction, fill) the key, the fill, the
    images and the regions to fill, the neutralized region first and then its control's draws. The regions are
    chosen here (the maps need the model's gradients); the filled images all go to the model as one round."""
    cfg = ctx.config
    imp, vul = importance_fn(ctx)(images), gradient_fn(ctx)(images)
    cells: list[SweepCell] = []
    for fraction in cfg.fractions:
        selection = select_regions(imp, vul, fraction, seed=cfg.seed, sample_ids=ids)
        controls: list[torch.Tensor] = []
        for fill in cfg.fills:
            defended = neutralized(ctx, DefenceSetting("sweep", fraction, fill), None)
            if not controls or cfg.control_match == "change":  # only the fill-change strata depend on the fill
                controls = [defended.control_region(images, selection, d, ids) for d in range(cfg.control_draws)]
            cells.append(((tag, fraction, fill), defended.fill_fn, images, [selection.neutralized, *controls]))
    return cells


def correct_of(ctx: SpatialContext, images: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return (ctx.model(images).argmax(1) == y).float().cpu()


def aggregate_sweep(ctx: SpatialContext) -> SweepColumns:
    """The sweep's per-image columns over all n images (concatenated over batches)."""
    cfg = ctx.config
    attack = cfg.budgeted_attack(cfg.defence_attack, ctx.model)
    parts: dict[tuple[str, float, str], list[tuple[torch.Tensor, torch.Tensor]]] = defaultdict(list)

    def compute(b: int, sl: slice) -> SweepColumns:
        return sweep_batch(ctx, b, sl, ctx.attack(ATTACK.at(cfg.defence_attack), attack, b, sl).x_adv)

    def collect(b: int, sl: slice, cells: SweepColumns) -> None:
        for key, value in cells.items():
            parts[key].append(value)

    ctx.each_batch(compute, desc="defence sweep (non-adaptive)", then=collect)
    return {key: (torch.cat([d for d, _ in v]), torch.cat([c for _, c in v])) for key, v in parts.items()}


# -- the adaptive evaluation ------------------------------------------------------------------------------------

def attacked(ctx: SpatialContext, defence: Defence, x: torch.Tensor, y: torch.Tensor, ids: torch.Tensor,
             mask: torch.Tensor | None = None, components: tuple[str, ...] | None = None,
             left_side: bool = False, curve: bool = True, per_gradient: bool = True) -> AdaptiveEvaluation:
    """The adaptive attack on ``defence`` at the run's budget with its convergence curves
    (:func:`~advspatial.defence.adaptive_evaluation.evaluate_adaptive`; ``curve=False``: a number no verdict needs
    converged, see :data:`.claims.HARM_RULE`; ``per_gradient=False``: the worst case only, where the report shows
    no gradient's own number)."""
    return evaluate_adaptive(defence, x, y, ctx.config.adaptive_plan(), sample_ids=ids, seed=ctx.config.seed,
                             mask=mask, components=components, left_side=left_side, curve=curve,
                             per_gradient=per_gradient)


def adaptive_batch(ctx: SpatialContext, setting: DefenceSetting, b: int, sl: slice,
                   prior: torch.Tensor | None) -> SettingOutcome:
    """Adaptive per-image outcomes of one configuration and batch (cached, :class:`SettingOutcome`)."""
    cfg = ctx.config

    def compute() -> SettingOutcome:
        x, y, ids = ctx.batch(sl)
        defended = neutralized(ctx, setting, prior)
        control = neutralized(ctx, setting, prior, mode="random")
        main = setting.role == "main"
        left_side = main and cfg.curve_below_budget
        with frozen_eval(ctx.model):
            own = attacked(ctx, defended, x, y, ids, left_side=left_side)
            controlled = attacked(ctx, control, x, y, ids, left_side=left_side)
            with torch.no_grad():
                clean = correct_share(defended, x, y, 1, ids)
            if not main:
                return SettingOutcome(own.component, controlled.component, clean)
            with torch.no_grad():
                transfer = correct_of(ctx, own.x_adv, y)
            mask = roi_attack_mask(x, importance_fn(ctx), cfg.fraction, seed=cfg.seed, sample_ids=ids)
            # no curve: a weaker attack on the defended model can only understate the harm claim
            roi = attacked(ctx, defended, x, y, ids, mask=mask, components=ROI_COMPONENTS, curve=False,
                           per_gradient=False)
            with torch.no_grad():
                roi_transfer = correct_of(ctx, roi.x_adv, y)
        return SettingOutcome(own.component, controlled.component, clean, transfer, roi.component, roi_transfer)

    return ADAPTIVE.at(*setting.parts).get(ctx.rundir, compute, b)


def undefended_batch(ctx: SpatialContext, b: int, sl: slice, prior: torch.Tensor | None) -> UndefendedOutcome:
    """The white-box references on the undefended model (same attack, same budget, each with its convergence
    curve; cached, :class:`UndefendedOutcome`)."""
    cfg = ctx.config

    def compute() -> UndefendedOutcome:
        x, y, ids = ctx.batch(sl)
        plain = Undefended(ctx.model)
        with frozen_eval(ctx.model):
            white = attacked(ctx, plain, x, y, ids)
            mask = roi_attack_mask(x, importance_fn(ctx), cfg.fraction, seed=cfg.seed, sample_ids=ids)
            roi = attacked(ctx, plain, x, y, ids, mask=mask, components=ROI_COMPONENTS)
            main = neutralized(ctx, DefenceSetting("main", cfg.fraction, cfg.fill), prior)
            with torch.no_grad():
                return UndefendedOutcome(white.component, roi.component, correct_of(ctx, x, y),
                                         correct_share(main, white.x_adv, y, 1, ids),
                                         correct_share(main, roi.x_adv, y, 1, ids))

    return UNDEFENDED.get(ctx.rundir, compute, b)


def baseline_batch(ctx: SpatialContext, transform: str, strength: float, b: int, sl: slice) -> BaselineOutcome:
    """A trivial input transform under the same adaptive attack, with its convergence curve, and its clean
    correctness (cached, :class:`BaselineOutcome`)."""
    cfg = ctx.config

    def compute() -> BaselineOutcome:
        x, y, ids = ctx.batch(sl)
        defence = TransformDefence(ctx.model, transform, strength, seed=cfg.seed)
        with frozen_eval(ctx.model):
            # with curve_below_budget a randomized baseline gets its whole EOT curve (1 -> 4 -> 20 -> 50), as the
            # control does
            attack = attacked(ctx, defence, x, y, ids, left_side=defence.randomized and cfg.curve_below_budget,
                              per_gradient=False)
            with torch.no_grad():
                return BaselineOutcome(attack.component, correct_share(defence, x, y, cfg.control_draws, ids))

    return BASELINES.at(transform, strength).get(ctx.rundir, compute, b)


def adaptive_settings(ctx: SpatialContext, prior: torch.Tensor | None) -> list[DefenceSetting]:
    """The configurations attacked adaptively: the main defence; with ``sweep_adaptive`` (``--eval full``) every
    configuration the report shows."""
    every = ctx.config.defence_settings(prior is not None)
    return every if ctx.config.sweep_adaptive else [s for s in every if s.role == "main"]


JobKey = str | DefenceSetting | tuple[str, float]


def adaptive_stage(ctx: SpatialContext, prior: torch.Tensor | None) -> AdaptiveOutcomes:
    """Every adaptive outcome (:class:`AdaptiveOutcomes`). Each (job, batch) pair is one unit of work, so the
    processes of a torchrun launch share the configurations even when the adaptive images fit in one batch."""
    cfg = ctx.config
    slices = list(batch_slices(min(len(ctx.data), cfg.adaptive_n), cfg.batch_size))
    jobs: list[tuple[JobKey, Callable[[int, slice], PerImageRecord]]] = [
        ("undefended", lambda b, sl: undefended_batch(ctx, b, sl, prior))]
    jobs += [(s, setting_job(ctx, s, prior)) for s in adaptive_settings(ctx, prior)]
    jobs += [((t, s), baseline_job(ctx, t, s)) for t, s in cfg.baseline_grid()]
    parts: dict[JobKey, list[PerImageRecord]] = {key: [] for key, _ in jobs}
    work = [(key, job, b, sl) for key, job in jobs for b, sl in enumerate(slices)]
    ctx.each_batch(lambda _, item: item[1](item[2], item[3]),
                   desc="adaptive attacks (ensemble; EOT on the randomized ones) with their convergence curves",
                   slices=work, then=lambda _, item, value: parts[item[0]].append(value))
    joined = {key: type(values[0]).concatenated(values) for key, values in parts.items()}
    undefended = joined.pop("undefended")
    assert isinstance(undefended, UndefendedOutcome)
    return AdaptiveOutcomes(undefended,
                            {k: v for k, v in joined.items() if isinstance(k, DefenceSetting)
                             and isinstance(v, SettingOutcome)},
                            {k: v for k, v in joined.items() if isinstance(k, tuple)
                             and isinstance(v, BaselineOutcome)})


def setting_job(ctx: SpatialContext, setting: DefenceSetting,
                prior: torch.Tensor | None) -> Callable[[int, slice], Any]:
    return lambda b, sl: adaptive_batch(ctx, setting, b, sl, prior)


def baseline_job(ctx: SpatialContext, transform: str, strength: float) -> Callable[[int, slice], Any]:
    return lambda b, sl: baseline_batch(ctx, transform, strength, b, sl)
