"""The perceptual experiment's context and building blocks: the CAM method this run resolved, the two attacks
with the experiment's parameters, the SSIM map (RoA side) and its statistics against the CAM (RoI side), and
the cached per-batch stages every later stage reads (clean predictions and CAMs; an attack with its SSIMs)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ...analysis.ssim import ssim, ssim_map
from ...attacks import Attack, make_attack
from ...attacks.ssim_ball import window_ssim
from ...maps import importance_map
from ...regions import binarize, overlap_statistics
from ...rundir import RunDir
from ..context import ExperimentContext, prepare_context
from ..gate import resolve_importance
from .config import STATS, PerceptualConfig


@dataclass
class Context(ExperimentContext):
    """The shared context plus the CAM method this run resolved (``auto`` picks by head type) and why."""

    importance: str = ""
    importance_reason: str = ""

    @property
    def method(self) -> str:
        """The CAM method in use (the resolved one; the configured name when none was resolved)."""
        return self.importance or self.config.importance


def perceptual_context(config: PerceptualConfig, rundir: RunDir) -> Context:
    """The shared context with the CAM method resolved (``auto``: by the model's head type)."""
    base = prepare_context(config, rundir)
    probe, _, _ = base.batch(slice(0, 1))
    method, reason = resolve_importance(config.importance, base.model, probe)
    return base.derive(Context, importance=method, importance_reason=reason)


# -- building blocks (unit-tested on tiny models) -----------------------------------

def ssim_attack(model: nn.Module, config: PerceptualConfig, alpha: float | None = None) -> Attack:
    """The SSIM-ball attack with the experiment's parameters (``alpha``: another contrast-structure bound)."""
    return make_attack("ssim-ball", model, alpha=config.alpha if alpha is None else alpha, beta=config.beta,
                       luminance=config.luminance, alpha_l=config.alpha_l, steps=config.steps, loss=config.loss,
                       step_size=config.step_size, window=config.window_value(), rounds=config.rounds,
                       seed=config.seed)


def pgd_attack(model: nn.Module, eps: float, steps: int, seed: int, loss: str = "ce") -> Attack:
    """L-inf PGD with budget ``eps`` (> 0), step ``2.5·eps/steps`` (Madry et al.) and a seeded random start."""
    return make_attack("pgd", model, eps=eps, alpha="auto", steps=steps, seed=seed, loss=loss)


def ssim_distortion(x: torch.Tensor, x_adv: torch.Tensor) -> torch.Tensor:
    """The SSIM map ``1 − SSIM_local(x, x')``, (N,H,W) >= 0 (0 where nothing changed; channels averaged)."""
    return (1.0 - ssim_map(x, x_adv)).clamp_min(0.0)


def map_statistics(
    cam: torch.Tensor, distortion: torch.Tensor, fraction: float, seed: int, sample_ids: torch.Tensor,
) -> tuple[dict[str, torch.Tensor], torch.Tensor, torch.Tensor]:
    """Per-image statistics of the SSIM map vs the CAM: ({name: (N,)}, CAM region, SSIM-map region).

    Regions are the top ``fraction`` of each map (strictly positive pixels,
    seeded tie breaking); names are the keys of :data:`STATS`, plus the number of
    pixels tied at each cut.
    """
    cam_b = binarize(cam, fraction=fraction, seed=seed, sample_ids=sample_ids)
    dist_b = binarize(distortion, fraction=fraction, seed=seed + 1, sample_ids=sample_ids)
    stats = overlap_statistics(cam, distortion, cam_b.mask, dist_b.mask)
    cols = {name: stats[key].float() for name, key in STATS.items()}
    cols["tied_cam"] = cam_b.tied_at_cut
    cols["tied_ssim_map"] = dist_b.tied_at_cut
    return cols, cam_b.mask, dist_b.mask


def clean_batch(ctx: Context, b: int) -> dict[str, torch.Tensor]:
    """Clean predictions and the CAM of the true class on the clean images of batch b (cached)."""

    def compute() -> dict[str, torch.Tensor]:
        x, y, ids = ctx.batch(ctx.slices[b])
        with torch.no_grad():
            pred = ctx.model(x).argmax(1)
        cam = importance_map(ctx.method, ctx.model, x, target="true", y=y, batch_size=len(x), sample_ids=ids)
        return {"pred": pred.cpu(), "cam": cam.cpu()}

    return ctx.rundir.cached(f"clean/batch-{b:05d}", compute)


def attack_stage(ctx: Context, stage: str, attack: Attack, sl: slice) -> dict[str, torch.Tensor]:
    """Run ``attack`` on the images of ``sl``; keep what the rows need plus the SSIM per image (cached)."""

    def compute() -> dict[str, torch.Tensor]:
        x, y, ids = ctx.batch(sl)
        result = attack.run(x, y, sample_ids=ids)
        with torch.no_grad():
            values = ssim(x, result.x_adv)
            windowed = window_ssim(x, result.x_adv, ctx.config.window_value())
        out = {k: getattr(result, k) for k in ("x_adv", "success", "adv_pred", "l2", "linf")}
        return {**{k: v.cpu() for k, v in out.items()}, "ssim": values.cpu(), "ssim_window": windowed.cpu()}

    return ctx.rundir.cached(stage, compute)
