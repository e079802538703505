"""The adaptive evaluation of the neutralization defence (METHODS.md §2), on the first ``adaptive_n`` images:

- the main defence through the identity and the local gradient, its randomized control (EOT at full strength,
  through ``eot_gradients``),
  the RoI-restricted attack on it (no curve: the harm claim needs only the undefended one's) and the transfer of
  its examples (:func:`adaptive_batch`);
- the same attack on the undefended model, whole image and RoI-restricted (:func:`undefended_batch`);
- the trivial input transforms under the same attack (:func:`baseline_batch`);
- with ``--eval full`` (``sweep_adaptive``) also the class-prior variant and every sweep cell; by default they are
  "not evaluated adaptively".

Every reported component carries its own convergence curve, measured on the same images with the same attack
(:func:`advspatial.defense.convergence.convergence_curves`): iterations, restarts and eps for a deterministic
component, EOT draws for a randomized one. The left side of the curve (less effort than the budget) is measured for
the main defence (the plot) and for every randomized component (its EOT curve from 1 draw)."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from typing import Any

import torch

from ...attacks.base import frozen_eval
from ...defense.adaptive import AdaptiveBudget, AdaptiveOutcome, Undefended, attack_defence, correct_share, roi_mask
from ...defense.convergence import CurveGrid, convergence_curves
from ...defense.transforms import TransformDefence
from ...runtime import batch_slices
from .context import Context, importance_fn
from .defence import DefenceSetting, correct_of, neutralized, settings

#: the RoI-restricted comparison uses the ensemble's gradient attacks on both models alike; Square on the defended
#: model is its costliest part
ROI_COMPONENTS = ("apgd-ce", "apgd-dlr")


def budget_of(ctx: Context) -> AdaptiveBudget:
    cfg = ctx.config
    return AdaptiveBudget(steps=cfg.adaptive_steps, restarts=cfg.adaptive_restarts, queries=cfg.adaptive_queries,
                          eot_iter=cfg.eot_iter, draws=cfg.control_draws, eot_early_stop=cfg.eot_early_stop,
                          eot_restarts=cfg.eot_restarts, eot_gradients=tuple(cfg.eot_gradients))


def curve_grid(ctx: Context) -> CurveGrid:
    cfg = ctx.config
    return CurveGrid(tuple(cfg.convergence_steps), tuple(cfg.convergence_restarts), tuple(cfg.convergence_eps),
                     tuple(cfg.convergence_eot))


def adaptive_slices(ctx: Context) -> list[slice]:
    """Batches of the first ``adaptive_n`` images (all n with ``--eval full``)."""
    return list(batch_slices(min(len(ctx.data), ctx.config.adaptive_n), ctx.config.batch_size))


def attacked(ctx: Context, defence: Any, name: str, x: torch.Tensor, y: torch.Tensor, ids: torch.Tensor,
             mask: torch.Tensor | None = None, components: tuple[str, ...] | None = None,
             left_side: bool = False, curve: bool = True) -> tuple[AdaptiveOutcome, dict[str, torch.Tensor]]:
    """The adaptive attack on ``defence`` at the run's budget, and its columns ``name:worst`` (and per gradient)
    with its convergence curve ``curve:name:*`` (``curve=False``: a number no verdict needs converged, see
    :data:`.defence_verdicts.HARM_RULE`)."""
    cfg = ctx.config
    budget = budget_of(ctx)
    common: dict[str, Any] = {"sample_ids": ids, "seed": cfg.seed, "mask": mask}  # gradients: gradients_of's
    outcome = attack_defence(defence, x, y, cfg.eps_linf, budget, components=components, **common)
    out = {f"{name}:{k}": v for k, v in outcome.correct.items()}
    if curve:
        curves = convergence_curves(defence, x, y, cfg.eps_linf, budget, curve_grid(ctx), reported=outcome,
                                    left_side=left_side, **common)
        out.update({f"curve:{name}:{k}": v for k, v in curves.items()})
    return outcome, out


def adaptive_batch(ctx: Context, setting: DefenceSetting, b: int, sl: slice,
                   prior: torch.Tensor | None) -> dict[str, torch.Tensor]:
    """Adaptive per-image outcomes of one configuration and batch (cached).

    ``defended:{identity,local,worst}``, ``control:worst`` (share of fresh draws), ``clean:defended``, and each
    one's ``curve:*`` columns; for the main defence also the RoI-restricted attack (``roi:defended:*``) and the
    transfer of its examples to the undefended model.
    """
    cfg = ctx.config

    def compute() -> dict[str, torch.Tensor]:
        x, y, ids = ctx.batch(sl)
        defended = neutralized(ctx, setting, prior)
        control = neutralized(ctx, setting, prior, mode="random")
        main = setting.key == "main"
        with frozen_eval(ctx.model):
            own, out = attacked(ctx, defended, "defended", x, y, ids, left_side=main)
            out.update(attacked(ctx, control, "control", x, y, ids, left_side=main)[1])
            with torch.no_grad():
                out["clean:defended"] = correct_share(defended, x, y, 1, ids)
            if main:
                with torch.no_grad():
                    out["transfer:undefended"] = correct_of(ctx, own.x_adv, y)
                mask = roi_mask(x, importance_fn(ctx), cfg.fraction, seed=cfg.seed, sample_ids=ids)
                # no curve: a weaker attack on the defended model can only understate the harm claim
                roi, columns = attacked(ctx, defended, "roi:defended", x, y, ids, mask=mask, components=ROI_COMPONENTS,
                                        curve=False)
                out.update(columns)
                with torch.no_grad():
                    out["roi:transfer:undefended"] = correct_of(ctx, roi.x_adv, y)
        return out

    return ctx.rundir.cached(f"adaptive/{safe(setting.key)}/batch-{b:05d}", compute)


def safe(key: str) -> str:
    return key.replace("|", "_")


def undefended_batch(ctx: Context, b: int, sl: slice, prior: torch.Tensor | None) -> dict[str, torch.Tensor]:
    """The white-box references on the undefended model (same attack, same budget, each with its convergence
    curve), and the non-adaptive transfer."""
    cfg = ctx.config

    def compute() -> dict[str, torch.Tensor]:
        x, y, ids = ctx.batch(sl)
        plain = Undefended(ctx.model)
        with frozen_eval(ctx.model):
            white, out = attacked(ctx, plain, "white-box", x, y, ids)
            mask = roi_mask(x, importance_fn(ctx), cfg.fraction, seed=cfg.seed, sample_ids=ids)
            roi, columns = attacked(ctx, plain, "roi:white-box", x, y, ids, mask=mask, components=ROI_COMPONENTS)
            out.update(columns)
            main = neutralized(ctx, DefenceSetting("main", "gradient", cfg.fraction, cfg.fill), prior)
            with torch.no_grad():
                out.update({"clean": correct_of(ctx, x, y), "white-box": white.correct["worst"],
                            "roi:white-box": roi.correct["worst"],
                            "transfer:defended": correct_share(main, white.x_adv, y, 1, ids),
                            "roi:transfer:defended": correct_share(main, roi.x_adv, y, 1, ids)})
            return out

    return ctx.rundir.cached(f"adaptive/undefended/batch-{b:05d}", compute)


def baseline_batch(ctx: Context, transform: str, strength: float, b: int, sl: slice) -> dict[str, torch.Tensor]:
    """A trivial input transform under the same adaptive attack: clean and robust correctness, with its
    convergence curve (cached)."""
    cfg = ctx.config

    def compute() -> dict[str, torch.Tensor]:
        x, y, ids = ctx.batch(sl)
        defence = TransformDefence(ctx.model, transform, strength, seed=cfg.seed)
        with frozen_eval(ctx.model):
            # a randomized baseline gets its whole EOT curve (1 -> 4 -> 20 -> 50), as the control does
            outcome, out = attacked(ctx, defence, "baseline", x, y, ids, left_side=defence.randomized)
            with torch.no_grad():
                out["clean"] = correct_share(defence, x, y, cfg.control_draws, ids)
        out["robust"] = outcome.correct["worst"]
        return out

    return ctx.rundir.cached(f"baselines/{transform}-{strength:g}/batch-{b:05d}", compute)


def baseline_grid(ctx: Context) -> list[tuple[str, float]]:
    cfg = ctx.config
    grid = {"blur": cfg.blur_sigmas, "noise": cfg.noise_sds, "jpeg": cfg.jpeg_qualities}
    return [(t, float(s)) for t in cfg.baselines for s in grid[t]]


def adaptive_jobs(ctx: Context, prior: torch.Tensor | None) -> list[tuple[str, Callable[[int, slice], Any]]]:
    """(key, job(b, sl)) of everything attacked adaptively: the undefended model, the configurations evaluated
    adaptively (:func:`adaptive_settings`) and the baselines."""

    def setting_job(s: DefenceSetting) -> Callable[[int, slice], Any]:
        return lambda b, sl: adaptive_batch(ctx, s, b, sl, prior)

    def baseline_job(t: str, s: float) -> Callable[[int, slice], Any]:
        return lambda b, sl: baseline_batch(ctx, t, s, b, sl)

    jobs: list[tuple[str, Callable[[int, slice], Any]]] = [
        ("undefended", lambda b, sl: undefended_batch(ctx, b, sl, prior))]
    jobs += [(s.key, setting_job(s)) for s in adaptive_settings(ctx, prior)]
    jobs += [(f"baseline|{t}|{s:g}", baseline_job(t, s)) for t, s in baseline_grid(ctx)]
    return jobs


def adaptive_settings(ctx: Context, prior: torch.Tensor | None) -> list[DefenceSetting]:
    """The configurations attacked adaptively: the main defence; with ``sweep_adaptive`` (``--eval full``) every
    configuration the report shows."""
    every = settings(ctx, prior is not None)
    return every if ctx.config.sweep_adaptive else [s for s in every if s.key == "main"]


def adaptive_stage(ctx: Context, prior: torch.Tensor | None) -> dict[str, dict[str, torch.Tensor]]:
    """Every adaptive outcome, per image over the adaptive images:
    ``{setting key | 'undefended' | 'baseline|t|s': columns}``.

    Each (configuration, batch) pair is one unit of work, so the processes of a torchrun launch share the
    configurations even when the adaptive images fit in one batch."""
    slices = adaptive_slices(ctx)
    jobs = adaptive_jobs(ctx, prior)
    parts: dict[str, dict[str, list[torch.Tensor]]] = {key: defaultdict(list) for key, _ in jobs}
    work = [(key, job, b, sl) for key, job in jobs for b, sl in enumerate(slices)]

    def collect(_: int, item: tuple[str, Any, int, slice], columns: dict[str, torch.Tensor]) -> None:
        for col, values in columns.items():
            parts[item[0]][col].append(values)

    ctx.each_batch(lambda _, item: item[1](item[2], item[3]),
                   desc="adaptive attacks (ensemble; EOT on the randomized ones) with their convergence curves",
                   slices=work, then=collect)
    return {key: {k: torch.cat(v) for k, v in columns.items()} for key, columns in parts.items()}
