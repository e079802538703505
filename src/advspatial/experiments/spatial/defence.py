"""The neutralization defence of the spatial experiment, and its non-adaptive evaluation (METHODS.md §2).

Three threat models, never mixed in one number:

1. **Non-adaptive** (this module): the run's attacks, made on the undefended model, scored on the
   deployable defence (gradient RoA; per-class prior RoA, :func:`class_prior`), on its
   composition-matched random control (``control_draws`` draws per image, keyed by the global image id),
   on the oracle (true delta) with its control inside RoA, and on the clean-restore diagnostic
   (:func:`defence_batch`). The sweep (:func:`sweep_batch`) does the same for every fraction and fill.
2. **Adaptive** (:mod:`.adaptive`): the autoattack-style ensemble through the identity and the local
   gradient of every configuration the report shows, beside the undefended model, the RoI-restricted
   attack, transfer, and the trivial input transforms.
3. **Convergence** (:mod:`.adaptive`): robust accuracy of the main defence vs iterations, restarts and
   eps, and the fixed rule that calls its number converged.

:mod:`.defence_verdicts` turns the per-image outcomes into paired comparisons and verdicts.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, cast

import torch

from ...defense.evaluate import evaluate_defence
from ...defense.neutralize import ClassPriorVulnerability, NeutralizedModel, select_regions
from ...maps import attack_map
from ...regions import MapAccumulator
from ...runtime import batch_slices
from ..context import train_images
from .attack_stage import attack_batch, build_attack
from .config import contribution_kw
from .context import Context, gradient_fn, importance_fn, roi_batch


@dataclass(frozen=True)
class DefenceSetting:
    """One configuration the report shows: its key, its RoA source, fraction and fill."""

    key: str
    vulnerability: str  # "gradient" or "prior"
    fraction: float
    fill: str

    @property
    def label(self) -> str:
        return f"{self.vulnerability} RoA, fraction {self.fraction:g}, {self.fill} fill"


def settings(ctx: Context, with_prior: bool) -> list[DefenceSetting]:
    """The main defence, its class-prior variant, then every other (fraction, fill) cell of the sweep."""
    cfg = ctx.config
    out = [DefenceSetting("main", "gradient", cfg.fraction, cfg.fill)]
    if with_prior:
        out.append(DefenceSetting("prior", "prior", cfg.fraction, cfg.fill))
    out += [DefenceSetting(f"sweep|{f:g}|{fill}", "gradient", f, fill) for f in cfg.fractions for fill in cfg.fills
            if (f, fill) != (cfg.fraction, cfg.fill)]
    return out


def neutralized(ctx: Context, setting: DefenceSetting, prior: torch.Tensor | None,
                mode: str = "defend") -> NeutralizedModel:
    """The deployable defence of ``setting`` (or its randomized control with ``mode="random"``)."""
    cfg = ctx.config
    if setting.vulnerability == "gradient":
        vulnerability = gradient_fn(ctx)
    elif prior is not None:
        vulnerability = ClassPriorVulnerability(prior.to(ctx.device), ctx.model)
    else:  # the AttributeError that prior.to(...) raised
        raise AttributeError(f"defence setting {setting.key!r} needs the class prior, and there is none")
    return NeutralizedModel(ctx.model, importance_fn(ctx), vulnerability, setting.fraction, setting.fill, mode=mode,
                            seed=cfg.seed, fill_params=fill_params(ctx, setting.fill), control_match=cfg.control_match)


def deployable_defences(ctx: Context, prior: torch.Tensor | None) -> dict[str, NeutralizedModel]:
    """The non-adaptive table's defences: ``gradient`` (main) and ``prior``."""
    cfg = ctx.config
    out = {"gradient": neutralized(ctx, DefenceSetting("main", "gradient", cfg.fraction, cfg.fill), prior)}
    if prior is not None:
        out["prior"] = neutralized(ctx, DefenceSetting("prior", "prior", cfg.fraction, cfg.fill), prior)
    return out


def fill_params(ctx: Context, fill: str) -> dict[str, Any]:
    """Extra parameters of a fill: the training-set mean for ``mean``, the sweep count for ``inpaint``."""
    if fill == "mean":
        return {"dataset_mean": dataset_mean(ctx)}
    if fill == "inpaint":
        return {"iterations": ctx.config.inpaint_iterations}
    return {}


def dataset_mean(ctx: Context) -> torch.Tensor:
    """Per-channel mean of the training images (first 10000), for the ``mean`` fill."""

    def compute() -> torch.Tensor:
        train = train_images(ctx.config, 10000, ctx.data.ids)
        total = torch.zeros(train.image_shape[0], dtype=torch.float64)
        for x, _, _ in train.batches(2000):
            total += x.double().sum(dim=(0, 2, 3))
        return (total / (len(train) * train.image_shape[1] * train.image_shape[2])).float()

    return ctx.rundir.cached("dataset-mean", compute).to(ctx.device)


def class_prior(ctx: Context) -> torch.Tensor:
    """(K,H,W) mean attack map per predicted adversarial class, on training images (METHODS §2).

    Indexed by the class predicted on the *attacked* training image, because at
    deployment the defence only sees the (possibly adversarial) input.
    """
    cfg = ctx.config
    if ctx.rundir.has_stage("prior"):
        return cast(torch.Tensor, ctx.rundir.load_stage("prior"))  # the stage this function saves
    train = train_images(cfg, cfg.prior_n, ctx.data.ids)
    attack = build_attack(cfg.defence_attack, ctx.model, cfg)
    kw = contribution_kw(cfg) if cfg.attack_map == "contribution" else {}

    def batch_sums(b: int, sl: slice) -> tuple[torch.Tensor, torch.Tensor]:
        """(per-class sums of the attack maps, per-class counts) of training batch b (cached)."""

        def compute() -> tuple[torch.Tensor, torch.Tensor]:
            x, y = train.images(sl).to(ctx.device), train.labels[sl].to(ctx.device)
            result = attack.run(x, y, sample_ids=train.ids[sl] + 10_000_000)
            amap = attack_map(cfg.attack_map, ctx.model, x, result.x_adv, y, **kw).map
            acc = MapAccumulator(train.num_classes, train.image_shape[1:])
            acc.update(amap.cpu(), result.adv_pred.cpu())
            return acc.sums, acc.counts

        return ctx.rundir.cached(f"prior-parts/batch-{b:05d}", compute)

    total = MapAccumulator(train.num_classes, train.image_shape[1:])
    for sums, counts in ctx.each_batch(batch_sums, desc="prior (training images)",
                                       slices=list(batch_slices(len(train), cfg.batch_size))):
        total.sums += sums
        total.counts += counts
    prior = torch.nan_to_num(total.means(), nan=0.0)
    ctx.rundir.save_stage("prior", prior)
    return prior


def defence_batch(ctx: Context, name: str, b: int, sl: slice, x_adv: torch.Tensor, amap: torch.Tensor,
                  defences: dict[str, NeutralizedModel]) -> dict[str, torch.Tensor]:
    """Per-image defence columns of one attack and batch (cached); controls are (B, draws) predictions.

    The clean-cost columns do not depend on the attack: only the first attack's rows carry them.
    """
    cfg = ctx.config
    with_clean = name == cfg.attacks[0]

    def compute() -> dict[str, torch.Tensor]:
        x, y, ids = ctx.batch(sl)
        roi = roi_batch(ctx, b)["importance"][: sl.stop - sl.start].to(ctx.device)
        oracle = select_regions(roi, amap.to(ctx.device), cfg.fraction, seed=cfg.seed, sample_ids=ids)
        out: dict[str, torch.Tensor] = {}
        for tag, defended in defences.items():
            ev = evaluate_defence(ctx.model, defended, x, y, x_adv.to(ctx.device),
                                  oracle.neutralized if tag == "gradient" else None,
                                  oracle.roa if tag == "gradient" else None,
                                  sample_ids=ids, draws=cfg.control_draws, batch_size=len(x), clean=with_clean)
            for col, values in ev.columns().items():
                if col.startswith("pred_") or col.startswith("n_region"):
                    out[f"{tag}:{col}"] = values
        return out

    return ctx.rundir.cached(f"defence/{name}/batch-{b:05d}", compute)


def split_columns(columns: dict[str, torch.Tensor], labels: torch.Tensor) -> tuple[dict[str, torch.Tensor],
                                                                                     dict[str, torch.Tensor]]:
    """(per-image row columns, per-draw correctness (B, draws)): a control becomes its share of correct draws."""
    rows, draws = {}, {}
    for key, values in columns.items():
        if values.ndim == 2:
            hits = (values == labels[:, None]).float()
            draws[key] = hits
            rows[key.replace(":pred_", ":correct_")] = hits.mean(1)
        else:
            rows[key] = values
    return rows, draws


def sweep_batch(ctx: Context, b: int, sl: slice, x_adv: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per-image correctness for every (fraction, fill): defended, and its control's draws (B, draws)."""
    cfg = ctx.config

    def compute() -> dict[str, torch.Tensor]:
        x, y, ids = ctx.batch(sl)
        out: dict[str, torch.Tensor] = {}
        for tag, images in (("adv", x_adv.to(ctx.device)), ("clean", x)):
            imp, vul = importance_fn(ctx)(images), gradient_fn(ctx)(images)
            for fraction in cfg.fractions:
                selection = select_regions(imp, vul, fraction, seed=cfg.seed, sample_ids=ids)
                controls: list[torch.Tensor] = []
                for fill in cfg.fills:
                    defended = neutralized(ctx, DefenceSetting("", "gradient", fraction, fill), None)
                    if not controls or cfg.control_match == "change":  # only the fill-change strata depend on the fill
                        controls = [defended.control_region(images, selection, d, ids)
                                    for d in range(cfg.control_draws)]
                    with torch.no_grad():
                        out[f"{tag}|{fraction:g}|{fill}|defended"] = correct_of(
                            ctx, defended.fill_fn(images, selection.neutralized), y)
                        out[f"{tag}|{fraction:g}|{fill}|control"] = torch.stack([
                            correct_of(ctx, defended.fill_fn(images, control), y) for control in controls], dim=1)
        return out

    return ctx.rundir.cached(f"sweep/batch-{b:05d}", compute)


def correct_of(ctx: Context, images: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return (ctx.model(images).argmax(1) == y).float().cpu()


def aggregate_sweep(ctx: Context) -> dict[str, torch.Tensor]:
    """Per-image sweep columns over all n images (concatenated over batches)."""
    cfg = ctx.config
    attack = build_attack(cfg.defence_attack, ctx.model, cfg)

    def compute(b: int, sl: slice) -> dict[str, torch.Tensor]:
        return sweep_batch(ctx, b, sl, attack_batch(ctx, cfg.defence_attack, attack, b, sl).x_adv)

    return ctx.each_batch_columns(compute, desc="defence sweep (non-adaptive)")

