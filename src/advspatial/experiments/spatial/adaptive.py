"""The adaptive evaluation of the neutralization defence (METHODS.md §2): the autoattack-style ensemble
through the identity and the local gradient of every configuration the report shows (main, prior, every
sweep cell) and of its randomized control (EOT), on the first ``adaptive_n`` images, beside the same
ensemble on the undefended model (:func:`undefended_batch`); the RoI-restricted attack and the transfer
numbers, labelled as transfer; the trivial input transforms under the same attack (:func:`baseline_batch`);
and the convergence curves of the main defence (:func:`convergence_stage`)."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import torch

from ...attacks.base import frozen_eval
from ...defense.adaptive import (
    AdaptiveBudget, CurveGrid, attack_defence, attack_undefended, convergence_curves, convergence_rule, correct_share,
    roi_mask,
)
from ...defense.transforms import TransformDefence
from ...runtime import batch_slices
from .context import Context, importance_fn
from .defence import DefenceSetting, correct_of, neutralized, settings


#: the RoI-restricted comparison (a diagnostic of where the defence leaves room, not a robustness number) uses
#: the ensemble's gradient attacks on both models alike; Square on the defended model is its costliest part
ROI_COMPONENTS = ("apgd-ce", "apgd-dlr")


def budget_of(ctx: Context) -> AdaptiveBudget:
    cfg = ctx.config
    return AdaptiveBudget(steps=cfg.adaptive_steps, restarts=cfg.adaptive_restarts, queries=cfg.adaptive_queries,
                          eot_iter=cfg.eot_iter, draws=cfg.control_draws, eot_early_stop=cfg.eot_early_stop)


def adaptive_slices(ctx: Context) -> list[slice]:
    """Batches of the first ``adaptive_n`` images (all n with ``--eval full``)."""
    return list(batch_slices(min(len(ctx.data), ctx.config.adaptive_n), ctx.config.batch_size))


def adaptive_batch(ctx: Context, setting: DefenceSetting, b: int, sl: slice,
                   prior: torch.Tensor | None) -> dict[str, torch.Tensor]:
    """Adaptive per-image outcomes of one configuration and batch (cached).

    ``defended:{identity,local,worst}``, ``control:worst`` (share of fresh
    draws), ``clean:defended``; for the main defence also the RoI-restricted
    attack (``roi:*``) and the transfer of its examples to the undefended model.
    """
    cfg = ctx.config

    def compute() -> dict[str, torch.Tensor]:
        x, y, ids = ctx.batch(sl)
        budget = budget_of(ctx)
        defended = neutralized(ctx, setting, prior)
        control = neutralized(ctx, setting, prior, mode="random")
        with frozen_eval(ctx.model):
            own = attack_defence(defended, x, y, cfg.eps_linf, budget, sample_ids=ids, seed=cfg.seed)
            out = {f"defended:{k}": v for k, v in own.correct.items()}
            out["control:worst"] = attack_defence(control, x, y, cfg.eps_linf, budget, sample_ids=ids,
                                                  seed=cfg.seed).correct["worst"]
            with torch.no_grad():
                out["clean:defended"] = correct_share(defended, x, y, 1, ids)
            if setting.key == "main":
                with torch.no_grad():
                    out["transfer:undefended"] = correct_of(ctx, own.x_adv, y)
                mask = roi_mask(x, importance_fn(ctx), cfg.fraction, seed=cfg.seed, sample_ids=ids)
                roi = attack_defence(defended, x, y, cfg.eps_linf, budget, sample_ids=ids, seed=cfg.seed, mask=mask,
                                     components=ROI_COMPONENTS)
                out.update({f"roi:defended:{k}": v for k, v in roi.correct.items()})
                with torch.no_grad():
                    out["roi:transfer:undefended"] = correct_of(ctx, roi.x_adv, y)
        return out

    return ctx.rundir.cached(f"adaptive/{safe(setting.key)}/batch-{b:05d}", compute)  # type: ignore[return-value]


def safe(key: str) -> str:
    return key.replace("|", "_")


def undefended_batch(ctx: Context, b: int, sl: slice, prior: torch.Tensor | None) -> dict[str, torch.Tensor]:
    """The white-box references on the undefended model (same ensemble, same budget), and the non-adaptive transfer."""
    cfg = ctx.config

    def compute() -> dict[str, torch.Tensor]:
        x, y, ids = ctx.batch(sl)
        budget = budget_of(ctx)
        with frozen_eval(ctx.model):
            white = attack_undefended(ctx.model, x, y, cfg.eps_linf, budget, sample_ids=ids, seed=cfg.seed)
            mask = roi_mask(x, importance_fn(ctx), cfg.fraction, seed=cfg.seed, sample_ids=ids)
            roi = attack_undefended(ctx.model, x, y, cfg.eps_linf, budget, sample_ids=ids, seed=cfg.seed, mask=mask,
                                    components=ROI_COMPONENTS)
            main = neutralized(ctx, DefenceSetting("main", "gradient", cfg.fraction, cfg.fill), prior)
            with torch.no_grad():
                return {"clean": correct_of(ctx, x, y), "white-box": white.correct["white-box"],
                        "roi:white-box": roi.correct["white-box"],
                        "transfer:defended": correct_share(main, white.x_adv, y, 1, ids),
                        "roi:transfer:defended": correct_share(main, roi.x_adv, y, 1, ids)}

    return ctx.rundir.cached(f"adaptive/undefended/batch-{b:05d}", compute)  # type: ignore[return-value]


def baseline_batch(ctx: Context, transform: str, strength: float, b: int, sl: slice) -> dict[str, torch.Tensor]:
    """A trivial input transform under the same adaptive attack: clean and robust correctness (cached)."""
    cfg = ctx.config

    def compute() -> dict[str, torch.Tensor]:
        x, y, ids = ctx.batch(sl)
        defence = TransformDefence(ctx.model, transform, strength, seed=cfg.seed)
        with frozen_eval(ctx.model):
            outcome = attack_defence(defence, x, y, cfg.eps_linf, budget_of(ctx), sample_ids=ids, seed=cfg.seed)
            with torch.no_grad():
                clean = correct_share(defence, x, y, cfg.control_draws, ids)
        return {"clean": clean, "robust": outcome.correct["worst"]}

    return ctx.rundir.cached(f"baselines/{transform}-{strength:g}/batch-{b:05d}", compute)  # type: ignore[return-value]


def baseline_grid(ctx: Context) -> list[tuple[str, float]]:
    cfg = ctx.config
    grid = {"blur": cfg.blur_sigmas, "noise": cfg.noise_sds, "jpeg": cfg.jpeg_qualities}
    return [(t, float(s)) for t in cfg.baselines for s in grid[t]]


def adaptive_stage(ctx: Context, prior: torch.Tensor | None) -> dict[str, dict[str, torch.Tensor]]:
    """Every adaptive outcome, per image over the adaptive images: ``{setting key | 'undefended' | 'baseline|t|s': columns}``.

    Each (configuration, batch) pair is one unit of work, so the processes of a torchrun launch share the
    configurations even when the adaptive images fit in one batch."""
    slices = adaptive_slices(ctx)
    jobs: list[tuple[str, Any]] = [("undefended", lambda b, sl: undefended_batch(ctx, b, sl, prior))]
    jobs += [(s.key, lambda b, sl, s=s: adaptive_batch(ctx, s, b, sl, prior)) for s in settings(ctx, prior is not None)]
    jobs += [(f"baseline|{t}|{s:g}", lambda b, sl, t=t, s=s: baseline_batch(ctx, t, s, b, sl)) for t, s in baseline_grid(ctx)]
    parts: dict[str, dict[str, list[torch.Tensor]]] = {key: defaultdict(list) for key, _ in jobs}
    work = [(key, job, b, sl) for key, job in jobs for b, sl in enumerate(slices)]

    def collect(_: int, item: tuple[str, Any, int, slice], columns: dict[str, torch.Tensor]) -> None:
        for col, values in columns.items():
            parts[item[0]][col].append(values)

    ctx.each_batch(lambda _, item: item[1](item[2], item[3]), desc="adaptive attacks (ensemble, 2 gradients, EOT)",
                   slices=work, then=collect)
    return {key: {k: torch.cat(v) for k, v in columns.items()} for key, columns in parts.items()}


# -- convergence ---------------------------------------------------------------------------------

def curve_grid(ctx: Context) -> CurveGrid:
    cfg = ctx.config
    return CurveGrid(tuple(cfg.convergence_steps), tuple(cfg.convergence_restarts), tuple(cfg.convergence_eps))


def convergence_stage(ctx: Context, prior: torch.Tensor | None) -> dict[str, Any]:
    """Robust accuracy of the main defence vs iterations, restarts and eps; the convergence rule's verdict."""
    cfg = ctx.config
    n = min(len(ctx.data), cfg.convergence_n)
    budget, grid = budget_of(ctx), curve_grid(ctx)
    main = DefenceSetting("main", "gradient", cfg.fraction, cfg.fill)

    def compute(b: int, sl: slice) -> dict[str, torch.Tensor]:
        def curves() -> dict[str, torch.Tensor]:
            x, y, ids = ctx.batch(sl)
            with frozen_eval(ctx.model):
                return convergence_curves(neutralized(ctx, main, prior), x, y, cfg.eps_linf, budget, grid,
                                          sample_ids=ids, seed=cfg.seed)

        return ctx.rundir.cached(f"convergence/batch-{b:05d}", curves)  # type: ignore[return-value]

    columns = ctx.each_batch_columns(compute, desc="convergence curves (main defence)",
                                     slices=list(batch_slices(n, cfg.batch_size)))
    accuracies = {k: float(v.mean()) for k, v in columns.items()}
    return {"accuracy": accuracies, **convergence_rule(accuracies, n, budget, grid, cfg.eps_linf)}

