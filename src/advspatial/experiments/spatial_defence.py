"""The defence stages of the spatial experiment: the neutralization defence evaluated to today's standard.

Three threat models, never mixed in one number (METHODS.md §2):

1. **Non-adaptive** (:func:`defence_columns`): the run's attacks, made on the
   undefended model, scored on the deployable defence (gradient RoA; per-class
   prior RoA), on its composition-matched random control (``control_draws``
   draws per image, keyed by the global image id), on the oracle (true delta)
   with its control inside RoA, and on the clean-restore diagnostic. The sweep
   (:func:`sweep_batch`) does the same for every fraction and fill.
2. **Adaptive** (:func:`adaptive_batch`): the autoattack-style ensemble through
   the identity and the local gradient of every configuration the report shows
   (main, prior, every sweep cell) and of its randomized control (EOT), on the
   first ``adaptive_n`` images, beside the same ensemble on the undefended
   model (:func:`undefended_batch`); the RoI-restricted attack and the transfer
   numbers, labelled as transfer. The trivial input transforms get the same
   attack (:func:`baseline_batch`), for the clean-cost vs robustness plot.
3. **Convergence** (:func:`convergence_stage`): robust accuracy of the main
   defence vs iterations, restarts and eps, and the fixed rule that calls its
   number converged.

:func:`defence_verdicts` turns the per-image outcomes into paired comparisons
(Wilson CIs, McNemar / sign-flip p, bootstrap CI of Δ accuracy), corrects them
(Holm) and gives every configuration a verdict by one fixed rule
(:data:`DEFENCE_RULE`).
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from ..attacks.base import frozen_eval
from ..defense.adaptive import (
    AdaptiveBudget, CurveGrid, attack_defence, attack_undefended, convergence_curves, convergence_rule, correct_share,
    roi_mask,
)
from ..defense.evaluate import evaluate_defence
from ..defense.neutralize import ClassPriorVulnerability, NeutralizedModel, select_regions
from ..defense.transforms import TransformDefence
from ..maps import attack_map
from ..regions import MapAccumulator
from ..regions.inference import accuracy, holm, paired_accuracy
from ..runtime import batch_slices
from .base import train_images

if TYPE_CHECKING:
    from .spatial import Context

#: the fixed rule behind every defence verdict (printed in the report)
DEFENCE_RULE = ("A configuration 'helps' only when, under the converged adaptive attack, (1) its accuracy minus its "
                "random control's (attacked the same way, with EOT) has a 95% CI above 0 and a Holm-adjusted p below "
                "the significance level, and (2) its accuracy minus the undefended model's white-box accuracy (same "
                "attack, same budget) does too. Otherwise it 'does not help'; it is 'worse than undefended' when "
                "that CI lies below 0 with an adjusted p below the level, and 'worse than its control' likewise, "
                "but only when the control was attacked at full strength (no EOT early stop: a weaker attack on "
                "the control can make a defence look worse, never better).")

#: the RoI-restricted comparison (a diagnostic of where the defence leaves room, not a robustness number) uses
#: the ensemble's gradient attacks on both models alike; Square on the defended model is its costliest part
ROI_COMPONENTS = ("apgd-ce", "apgd-dlr")

VERDICT_WORDS = ("helps", "does not help", "worse than its control", "worse than undefended",
                 "not converged", "not interpretable", "insufficient data")


# -- the defences ------------------------------------------------------------------------------

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


def settings(ctx: "Context", with_prior: bool) -> list[DefenceSetting]:
    """The main defence, its class-prior variant, then every other (fraction, fill) cell of the sweep."""
    cfg = ctx.config
    out = [DefenceSetting("main", "gradient", cfg.fraction, cfg.fill)]
    if with_prior:
        out.append(DefenceSetting("prior", "prior", cfg.fraction, cfg.fill))
    if cfg.sweep_adaptive:
        out += [DefenceSetting(f"sweep|{f:g}|{fill}", "gradient", f, fill) for f in cfg.fractions for fill in cfg.fills
                if (f, fill) != (cfg.fraction, cfg.fill)]
    return out


def neutralized(ctx: "Context", setting: DefenceSetting, prior: torch.Tensor | None, mode: str = "defend") -> NeutralizedModel:
    """The deployable defence of ``setting`` (or its randomized control with ``mode="random"``)."""
    from .spatial import gradient_fn, importance_fn

    cfg = ctx.config
    vulnerability = gradient_fn(ctx) if setting.vulnerability == "gradient" else \
        ClassPriorVulnerability(prior.to(ctx.device), ctx.model)  # type: ignore[union-attr]
    return NeutralizedModel(ctx.model, importance_fn(ctx), vulnerability, setting.fraction, setting.fill, mode=mode,
                            seed=cfg.seed, fill_params=fill_params(ctx, setting.fill), control_match=cfg.control_match)


def deployable_defences(ctx: "Context", prior: torch.Tensor | None) -> dict[str, NeutralizedModel]:
    """The non-adaptive table's defences: ``gradient`` (main) and ``prior``."""
    cfg = ctx.config
    out = {"gradient": neutralized(ctx, DefenceSetting("main", "gradient", cfg.fraction, cfg.fill), prior)}
    if prior is not None:
        out["prior"] = neutralized(ctx, DefenceSetting("prior", "prior", cfg.fraction, cfg.fill), prior)
    return out


def fill_params(ctx: "Context", fill: str) -> dict[str, Any]:
    """Extra parameters of a fill: the training-set mean for ``mean``, the sweep count for ``inpaint``."""
    if fill == "mean":
        return {"dataset_mean": dataset_mean(ctx)}
    if fill == "inpaint":
        return {"iterations": ctx.config.inpaint_iterations}
    return {}


def dataset_mean(ctx: "Context") -> torch.Tensor:
    """Per-channel mean of the training images (first 10000), for the ``mean`` fill."""

    def compute() -> torch.Tensor:
        train = train_images(ctx.config, 10000, ctx.data.ids)
        total = torch.zeros(train.image_shape[0], dtype=torch.float64)
        for x, _, _ in train.batches(2000):
            total += x.double().sum(dim=(0, 2, 3))
        return (total / (len(train) * train.image_shape[1] * train.image_shape[2])).float()

    return ctx.rundir.cached("dataset-mean", compute).to(ctx.device)  # type: ignore[union-attr]


def class_prior(ctx: "Context") -> torch.Tensor:
    """(K,H,W) mean attack map per predicted adversarial class, on training images (METHODS §2).

    Indexed by the class predicted on the *attacked* training image, because at
    deployment the defence only sees the (possibly adversarial) input.
    """
    from .spatial import build_attack, contribution_kw

    cfg = ctx.config
    if ctx.rundir.has_stage("prior"):
        return ctx.rundir.load_stage("prior")  # type: ignore[return-value]
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

        return ctx.rundir.cached(f"prior-parts/batch-{b:05d}", compute)  # type: ignore[return-value]

    total = MapAccumulator(train.num_classes, train.image_shape[1:])
    for sums, counts in ctx.each_batch(batch_sums, desc="prior (training images)",
                                       slices=list(batch_slices(len(train), cfg.batch_size))):
        total.sums += sums
        total.counts += counts
    prior = torch.nan_to_num(total.means(), nan=0.0)
    ctx.rundir.save_stage("prior", prior)
    return prior


# -- 1. non-adaptive ---------------------------------------------------------------------------

def defence_batch(ctx: "Context", name: str, b: int, sl: slice, x_adv: torch.Tensor, amap: torch.Tensor,
                  defences: dict[str, NeutralizedModel]) -> dict[str, torch.Tensor]:
    """Per-image defence columns of one attack and batch (cached); controls are (B, draws) predictions.

    The clean-cost columns do not depend on the attack: only the first attack's rows carry them.
    """
    from .spatial import roi_batch

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

    return ctx.rundir.cached(f"defence/{name}/batch-{b:05d}", compute)  # type: ignore[return-value]


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


def sweep_batch(ctx: "Context", b: int, sl: slice, x_adv: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per-image correctness for every (fraction, fill): defended, and its control's draws (B, draws)."""
    from .spatial import gradient_fn, importance_fn

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
                        controls = [defended.control_region(images, selection, d, ids) for d in range(cfg.control_draws)]
                    with torch.no_grad():
                        out[f"{tag}|{fraction:g}|{fill}|defended"] = correct_of(
                            ctx, defended.fill_fn(images, selection.neutralized), y)
                        out[f"{tag}|{fraction:g}|{fill}|control"] = torch.stack([
                            correct_of(ctx, defended.fill_fn(images, control), y) for control in controls], dim=1)
        return out

    return ctx.rundir.cached(f"sweep/batch-{b:05d}", compute)  # type: ignore[return-value]


def correct_of(ctx: "Context", images: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return (ctx.model(images).argmax(1) == y).float().cpu()


def aggregate_sweep(ctx: "Context") -> dict[str, torch.Tensor]:
    """Per-image sweep columns over all n images (concatenated over batches)."""
    from .spatial import attack_batch, build_attack

    cfg = ctx.config
    attack = build_attack(cfg.defence_attack, ctx.model, cfg)

    def compute(b: int, sl: slice) -> dict[str, torch.Tensor]:
        return sweep_batch(ctx, b, sl, attack_batch(ctx, cfg.defence_attack, attack, b, sl).x_adv)

    return ctx.each_batch_columns(compute, desc="defence sweep (non-adaptive)")


# -- 2. adaptive -------------------------------------------------------------------------------

def budget_of(ctx: "Context") -> AdaptiveBudget:
    cfg = ctx.config
    return AdaptiveBudget(steps=cfg.adaptive_steps, restarts=cfg.adaptive_restarts, queries=cfg.adaptive_queries,
                          eot_iter=cfg.eot_iter, draws=cfg.control_draws, eot_early_stop=cfg.eot_early_stop)


def adaptive_slices(ctx: "Context") -> list[slice]:
    """Batches of the first ``adaptive_n`` images (all n with ``--eval full``)."""
    return list(batch_slices(min(len(ctx.data), ctx.config.adaptive_n), ctx.config.batch_size))


def adaptive_batch(ctx: "Context", setting: DefenceSetting, b: int, sl: slice,
                   prior: torch.Tensor | None) -> dict[str, torch.Tensor]:
    """Adaptive per-image outcomes of one configuration and batch (cached).

    ``defended:{identity,local,worst}``, ``control:worst`` (share of fresh
    draws), ``clean:defended``; for the main defence also the RoI-restricted
    attack (``roi:*``) and the transfer of its examples to the undefended model.
    """
    from .spatial import importance_fn

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


def undefended_batch(ctx: "Context", b: int, sl: slice, prior: torch.Tensor | None) -> dict[str, torch.Tensor]:
    """The white-box references on the undefended model (same ensemble, same budget), and the non-adaptive transfer."""
    from .spatial import importance_fn

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


def baseline_batch(ctx: "Context", transform: str, strength: float, b: int, sl: slice) -> dict[str, torch.Tensor]:
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


def baseline_grid(ctx: "Context") -> list[tuple[str, float]]:
    cfg = ctx.config
    grid = {"blur": cfg.blur_sigmas, "noise": cfg.noise_sds, "jpeg": cfg.jpeg_qualities}
    return [(t, float(s)) for t in cfg.baselines for s in grid[t]]


def adaptive_stage(ctx: "Context", prior: torch.Tensor | None) -> dict[str, dict[str, torch.Tensor]]:
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


# -- 3. convergence ----------------------------------------------------------------------------

def curve_grid(ctx: "Context") -> CurveGrid:
    cfg = ctx.config
    return CurveGrid(tuple(cfg.convergence_steps), tuple(cfg.convergence_restarts), tuple(cfg.convergence_eps))


def convergence_stage(ctx: "Context", prior: torch.Tensor | None) -> dict[str, Any]:
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


# -- verdicts ----------------------------------------------------------------------------------

def summarize_adaptive(ctx: "Context", outcomes: dict[str, dict[str, torch.Tensor]], convergence: dict[str, Any],
                       roi_faithful: bool, with_prior: bool) -> dict[str, Any]:
    """Accuracies with Wilson CIs, paired comparisons, Holm across configurations, and one verdict each."""
    cfg = ctx.config
    undefended = outcomes["undefended"]
    rows: dict[str, dict[str, Any]] = {}
    for s in settings(ctx, with_prior):
        o = outcomes[s.key]
        rows[s.key] = {
            "label": s.label, "fraction": s.fraction, "fill": s.fill, "vulnerability": s.vulnerability,
            "clean": accuracy(o["clean:defended"]).as_dict(),
            **{f"adaptive:{g}": accuracy(o[f"defended:{g}"]).as_dict() for g in ("identity", "local", "worst")},
            "control": share_summary(o["control:worst"]),
            "vs_control": paired_accuracy(o["defended:worst"], o["control:worst"], seed=cfg.seed).as_dict(),
            "vs_undefended": paired_accuracy(o["defended:worst"], undefended["white-box"], seed=cfg.seed).as_dict(),
            "converged": convergence["converged"] if s.key == "main" else None,
            "control_full_strength": not cfg.eot_early_stop,
        }
    adjust_family(rows)
    for key, row in rows.items():
        row["verdict"] = defence_verdict(row, roi_faithful, cfg.significance)
    main = outcomes["main"]
    return {
        "images": int(undefended["clean"].numel()),
        "budget": budget_of(ctx).as_dict(),
        "rule": DEFENCE_RULE,
        "undefended": {"clean": accuracy(undefended["clean"]).as_dict(),
                       "white-box": accuracy(undefended["white-box"]).as_dict(),
                       "roi:white-box": accuracy(undefended["roi:white-box"]).as_dict()},
        "settings": rows,
        "roi_restricted": {
            "defended (white-box, worst gradient)": accuracy(main["roi:defended:worst"]).as_dict(),
            "undefended (white-box)": accuracy(undefended["roi:white-box"]).as_dict(),
            "transfer: made on the defence, scored undefended": accuracy(main["roi:transfer:undefended"]).as_dict(),
            "transfer: made on the undefended model, scored defended": accuracy(undefended["roi:transfer:defended"]).as_dict(),
            "defended vs undefended": paired_accuracy(main["roi:defended:worst"], undefended["roi:white-box"],
                                                      seed=cfg.seed).as_dict(),
        },
        "transfer": {
            "made on the defence, scored undefended": accuracy(main["transfer:undefended"]).as_dict(),
            "made on the undefended model, scored defended": accuracy(undefended["transfer:defended"]).as_dict(),
        },
        "baselines": {key.removeprefix("baseline|"): {"clean": share_summary(o["clean"]), "robust": share_summary(o["robust"])}
                      for key, o in outcomes.items() if key.startswith("baseline|")},
        "convergence": convergence,
    }


def share_summary(shares: torch.Tensor) -> dict[str, Any]:
    """Mean of per-image shares (a randomized defence over its draws); Wilson CI when they are all 0/1."""
    v = shares.double()
    if bool(((v == 0) | (v == 1)).all()):
        return accuracy(v).as_dict()
    from ..regions.inference import bootstrap_mean_ci

    est = bootstrap_mean_ci(v)
    return {"value": est.mean, "low": est.low, "high": est.high, "k": math.nan, "n": est.n}


def adjust_family(rows: dict[str, dict[str, Any]]) -> None:
    """Holm across every row's two comparisons (vs control, vs undefended): one family per table."""
    entries = [(key, which) for key in rows for which in ("vs_control", "vs_undefended")]
    adjusted = holm(np.array([rows[k][w]["p"] for k, w in entries], dtype=float)) if entries else []
    for (key, which), p_adj in zip(entries, adjusted):
        rows[key][which]["p_adjusted"] = float(p_adj)


def defence_verdict(row: dict[str, Any], roi_faithful: bool, alpha: float, min_n: int = 30) -> str:
    """One of :data:`VERDICT_WORDS` by :data:`DEFENCE_RULE`."""
    if not roi_faithful:
        return "not interpretable"
    if row["vs_control"]["delta"]["n"] < min_n:
        return "insufficient data"

    def above(c: dict[str, Any]) -> bool:
        return c["delta"]["low"] > 0 and c.get("p_adjusted", math.nan) < alpha

    def below(c: dict[str, Any]) -> bool:
        return c["delta"]["high"] < 0 and c.get("p_adjusted", math.nan) < alpha

    if below(row["vs_undefended"]):
        return "worse than undefended"
    if below(row["vs_control"]) and row.get("control_full_strength", True):
        return "worse than its control"
    if above(row["vs_control"]) and above(row["vs_undefended"]):
        return "helps" if row["converged"] else "not converged"
    return "does not help"


def nonadaptive_comparisons(rows: list[dict[str, Any]], attacks: list[str], seed: int) -> dict[str, Any]:
    """Per attack and deployable defence: defended vs its control and vs undefended, paired; Holm over the family."""
    out: dict[str, Any] = {}
    for name in attacks:
        group = [r for r in rows if r["attack"] == name]
        for tag in ("gradient", "prior"):
            if not group or f"{tag}:pred_defended_adv" not in group[0]:
                continue
            defended = [float(r[f"{tag}:pred_defended_adv"] == r["label"]) for r in group]
            control = [r[f"{tag}:correct_control_adv"] for r in group]
            undefended = [float(r["adv_pred"] == r["label"]) for r in group]
            out[f"{name}|{tag}"] = {"vs_control": paired_accuracy(defended, control, seed=seed).as_dict(),
                                    "vs_undefended": paired_accuracy(defended, undefended, seed=seed).as_dict()}
    adjust_family(out)
    return out


def spread(hits: torch.Tensor) -> dict[str, float]:
    """(N, draws) correctness of a control: accuracy of each draw over the images, as mean and SD across draws."""
    per_draw = hits.mean(0)
    return {"mean": float(per_draw.mean()), "sd": float(per_draw.std(unbiased=True)) if per_draw.numel() > 1 else 0.0,
            "draws": int(per_draw.numel())}


def draw_spread(draws: dict[str, list[torch.Tensor]]) -> dict[str, dict[str, float]]:
    """:func:`spread` of every control column, its batches concatenated."""
    return {key: spread(torch.cat(parts)) for key, parts in draws.items()}


def sweep_summary(ctx: "Context", sweep: dict[str, torch.Tensor]) -> dict[str, Any]:
    """Per (adv|clean, fraction, fill): defended accuracy (Wilson), control mean ± SD over draws, paired Δ."""
    cfg = ctx.config
    out: dict[str, Any] = {}
    for tag in ("adv", "clean"):
        for f in cfg.fractions:
            for fill in cfg.fills:
                key = f"{tag}|{f:g}|{fill}"
                defended, control = sweep[f"{key}|defended"], sweep[f"{key}|control"]
                out[key] = {"defended": accuracy(defended).as_dict(), "control": spread(control),
                            "vs_control": paired_accuracy(defended, control.mean(1), seed=cfg.seed).as_dict()}
    return out
