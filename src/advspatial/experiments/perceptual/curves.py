"""Fooling rate vs SSIM curves and the per-image minimal distortion (METHODS §3): each attack at several
budgets on the calibration images (SSIM-ball: ``alpha``; PGD: ``eps``), cached as ``curve/...`` stages (the
main SSIM-ball budget and the PGD budgets the calibration tried are read from their own stages)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ...progress import progress_bar
from ..results import mean_of
from .calibration import Calibration, calibration_slices
from .config import PerceptualConfig
from .controls import minimal_distortion
from .stages import Context, attack_stage, clean_batch, pgd_attack, ssim_attack


@dataclass
class Curves:
    """Each attack at several budgets on the calibration images: per budget the mean SSIM and fooling rate,
    and per image (budgets x images) whether it was fooled (correct and attacked successfully) and its SSIM."""

    points: dict[str, list[dict[str, float]]]
    fooled: dict[str, torch.Tensor]
    ssims: dict[str, torch.Tensor]

    def minimal_distortion(self) -> dict[str, torch.Tensor]:
        """Per attack and image, the highest SSIM among the budgets that fool it (NaN: none does)."""
        return {name: minimal_distortion(self.fooled[name], self.ssims[name]) for name in self.points}


def curve_budgets(config: PerceptualConfig, calibration: Calibration) -> dict[str, list[float]]:
    """The budgets of each curve: SSIM-ball alphas (the main one included), PGD eps (the calibrated one,
    every budget the calibration tried, and multiples of the calibrated one capped at eps_max)."""
    eps = {calibration.eps, *(h[0] for h in calibration.history),
           *(min(f * calibration.eps, config.eps_max) for f in config.curve_eps_factors)}
    return {"ssim-ball": sorted({config.alpha, *config.curve_alphas}), "pgd": sorted(e for e in eps if e > 0)}


def curve_results(ctx: Context, name: str, budget: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(success, SSIM) of attack ``name`` at ``budget`` on the calibration images (cached stages; the main
    SSIM-ball budget and the PGD budgets the calibration tried are not recomputed)."""
    cfg = ctx.config

    def batch(b: int, sl: slice) -> tuple[torch.Tensor, torch.Tensor]:
        if name == "pgd":
            res = attack_stage(ctx, f"calibration/eps-{budget:.8f}/batch-{b:05d}",
                               pgd_attack(ctx.model, budget, cfg.steps, cfg.seed, cfg.loss), sl)
        elif budget == cfg.alpha:  # the main attack's stage: per-sample results, so a prefix of a batch is exact
            res = {k: v[: sl.stop - sl.start] for k, v in attack_stage(
                ctx, f"attack/ssim-ball/batch-{b:05d}", ssim_attack(ctx.model, cfg), ctx.slices[b]).items()}
        else:
            res = attack_stage(ctx, f"curve/ssim-ball/alpha-{budget:.6f}/batch-{b:05d}",
                               ssim_attack(ctx.model, cfg, budget), sl)
        return res["success"], res["ssim"]

    parts = ctx.each_batch(batch, slices=calibration_slices(ctx), desc=f"{name} at {budget:.4g}")
    return torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])


def curves_stage(ctx: Context, calibration: Calibration) -> Curves:
    """Fooling rate vs mean SSIM of both attacks over their budgets, on the calibration images."""
    cfg = ctx.config
    n_cal = min(cfg.calibration_n, len(ctx.data))
    pred = torch.cat([clean_batch(ctx, b)["pred"] for b in range(len(ctx.slices))])[:n_cal]  # stages of run_perceptual
    correct = pred == ctx.data.labels[:n_cal]
    points: dict[str, list[dict[str, float]]] = {}
    fooled: dict[str, torch.Tensor] = {}
    ssims: dict[str, torch.Tensor] = {}
    budgets = curve_budgets(cfg, calibration)
    with progress_bar(total=sum(len(v) for v in budgets.values()), desc="fooling rate vs SSIM curves",
                      disable=not cfg.progress, unit="budget") as bar:
        for name, values in budgets.items():
            rows_f, rows_s = [], []
            for budget in values:
                success, image_ssim = curve_results(ctx, name, budget)
                hit = correct & success
                rows_f.append(hit)
                rows_s.append(image_ssim)
                points.setdefault(name, []).append({
                    "budget": budget, "mean_ssim": float(image_ssim.double().mean()),
                    "fooling_rate": mean_of([float(h) for h, c in zip(hit, correct, strict=True) if c])})
                bar.update(1)
            fooled[name], ssims[name] = torch.stack(rows_f), torch.stack(rows_s)
    return Curves(points, fooled, ssims)
