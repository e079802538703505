"""The figures of the spatial experiment's neutralization defence, drawn at run time from the findings into the
run's ``figures/`` folder (the report shows a figure when its file is there): accuracy vs the neutralized fraction
(the non-adaptive sweep), the convergence panel of the adaptive attack, and clean accuracy vs adaptive robustness
beside trivial baselines.

Each ``plot_*`` function takes the findings' typed rows or plain numbers and an output path, writes a PNG and
returns the path; figures are drawn by the Agg canvas (pyplot is never touched).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path

from ...errors import ShapeError
from ...report.figures import new_figure, save_figure
from .config import SpatialConfig
from .findings import SpatialFindings, SweepCell


COLOURS = ["tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple", "tab:brown"]


def plot_defence_sweep(
    sweep: Mapping[tuple[str, float, str], SweepCell],
    fractions: Sequence[float],
    fills: Sequence[str],
    path: str | Path,
    *,
    undefended_adv: float,
    clean_accuracy: float,
    attack_name: str,
) -> Path:
    """Two panels: accuracy on adversarial and on clean images vs the neutralized fraction (non-adaptive).

    ``sweep`` keys are ``(adv|clean, fraction, fill)``; each cell's ``defended`` is a Wilson accuracy and its
    ``control`` the matched random control's mean and SD over the draws. Solid lines with Wilson bars are the
    defence, dashed lines its matched random control (band: ± SD over draws).
    """
    if not fractions or not fills:
        raise ShapeError("need at least one fraction and one fill")
    fig = new_figure(figsize=(11, 4.2), dpi=100)
    for col, (tag, title, reference) in enumerate((
        ("adv", f"On {attack_name} examples made on the undefended model", undefended_adv),
        ("clean", "On clean images (the clean cost)", clean_accuracy),
    )):
        ax = fig.add_subplot(1, 2, col + 1)
        for i, fill in enumerate(fills):
            colour = COLOURS[i % len(COLOURS)]
            cells = [sweep[tag, f, fill] for f in fractions]
            value = [c.defended.value for c in cells]
            err = [[v - c.defended.low for v, c in zip(value, cells, strict=True)],
                   [c.defended.high - v for v, c in zip(value, cells, strict=True)]]
            ax.errorbar(fractions, value, yerr=err, fmt="o-", color=colour, capsize=3, label=f"{fill}: RoA \\ RoI")
            mean = [c.control.mean for c in cells]
            sd = [c.control.sd for c in cells]
            ax.plot(fractions, mean, "x--", color=colour, alpha=0.7, label=f"{fill}: matched control")
            ax.fill_between(fractions, [m - s for m, s in zip(mean, sd, strict=True)],
                            [m + s for m, s in zip(mean, sd, strict=True)], color=colour, alpha=0.12)
        ax.axhline(reference, color="black", lw=1, ls=":", label="undefended")
        ax.set_xlabel("neutralized fraction (top fraction of the gradient map)")
        ax.set_ylabel("accuracy")
        ax.set_ylim(0, 1)
        ax.set_title(title, fontsize=10)
        ax.grid(alpha=0.3)
    fig.axes[0].legend(fontsize=7, loc="best")
    fig.suptitle("Neutralization defence, non-adaptive attacker (bars: Wilson 95% CI; bands: ± SD over control draws)",
                 fontsize=10)
    fig.tight_layout()
    return save_figure(fig, path)


def _curve(accuracies: Mapping[str, float], prefix: str) -> tuple[list[float], list[float]]:
    points = sorted((float(k.split("=", 1)[1]), v) for k, v in accuracies.items() if k.startswith(prefix + "="))
    return [p for p, _ in points], [v for _, v in points]


def plot_convergence(accuracies: Mapping[str, float], path: str | Path, *, budget_steps: int, budget_restarts: int,
                     eps: float, converged: bool, eot_curves: Mapping[str, Mapping[str, float]] | None = None,
                     budget_eot: int | None = None) -> Path:
    """Robust accuracy of the defence vs iterations, restarts and eps (the run's budget marked); with
    ``eot_curves`` (label -> ``{"eot=K": accuracy}``) a fourth panel: each randomized component vs EOT draws."""
    panels = 4 if eot_curves else 3
    fig = new_figure(figsize=(4 * panels, 3.6), dpi=100)
    for i, (prefix, xlabel, mark, log) in enumerate((
        ("steps", "APGD iterations", budget_steps, True),
        ("restarts", "restarts (budget iterations each)", budget_restarts, False),
        ("eps", "L-inf eps", eps, False),
    )):
        ax = fig.add_subplot(1, panels, i + 1)
        xs, ys = _curve(accuracies, prefix)
        ax.plot(xs, ys, "o-", color="tab:blue")
        ax.axvline(mark, color="grey", ls=":", lw=1, label="the run's budget")
        if log:
            ax.set_xscale("log")
        ax.set_xlabel(xlabel)
        ax.set_ylabel("robust accuracy")
        ax.set_ylim(0, max([0.05, *[y for y in ys if not math.isnan(y)]]) * 1.1)
        ax.grid(alpha=0.3)
    if eot_curves:
        ax = fig.add_subplot(1, panels, panels)
        top = 0.05
        for j, (label, curve) in enumerate(eot_curves.items()):
            xs, ys = _curve(curve, "eot")
            ax.plot(xs, ys, "o-", color=COLOURS[j % len(COLOURS)], label=label)
            top = max([top, *[y for y in ys if not math.isnan(y)]])
        if budget_eot:
            ax.axvline(budget_eot, color="grey", ls=":", lw=1)
        ax.set_xscale("log")
        ax.set_xlabel("EOT draws per gradient")
        ax.set_ylim(0, top * 1.1)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.axes[0].legend(fontsize=7)
    fig.suptitle("Convergence of the adaptive attack on the main defence: "
                 f"{'converged' if converged else 'NOT converged'}",
                 fontsize=10)
    fig.tight_layout()
    return save_figure(fig, path)


def plot_tradeoff(defences: Mapping[str, Mapping[str, float]],
                  baselines: Mapping[tuple[str, float], Mapping[str, float]],
                  path: str | Path, *, undefended_clean: float, undefended_robust: float) -> Path:
    """Clean accuracy (x) vs adaptive robust accuracy (y): every defence configuration and every trivial baseline.

    Both mappings are ``key -> {"clean": float, "robust": float}``: a defence's label, a baseline's
    ``(transform, strength)``; the baselines are joined into one line per transform.
    """
    fig = new_figure(figsize=(6.5, 5), dpi=100)
    ax = fig.add_subplot(1, 1, 1)
    ax.scatter([d["clean"] for d in defences.values()], [d["robust"] for d in defences.values()], marker="o",
               color="tab:blue", label="neutralization (each configuration attacked adaptively)", zorder=3)
    by_transform: dict[str, list[tuple[float, float]]] = {}
    for (transform, _), b in baselines.items():
        by_transform.setdefault(transform, []).append((b["clean"], b["robust"]))
    for i, (transform, points) in enumerate(sorted(by_transform.items())):
        points.sort()
        ax.plot([p[0] for p in points], [p[1] for p in points], "s--", color=COLOURS[(i + 1) % len(COLOURS)],
                label=f"baseline: {transform}")
    ax.scatter([undefended_clean], [undefended_robust], marker="*", s=150, color="black", label="undefended", zorder=4)
    ax.set_xlabel("clean accuracy")
    ax.set_ylabel("robust accuracy under the adaptive ensemble")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, max(0.1, *[d["robust"] for d in defences.values()],
                       *[b["robust"] for b in baselines.values()]) * 1.15)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    ax.set_title("Clean cost vs adaptive robustness: a defence is worth something only above the baselines", fontsize=9)
    fig.tight_layout()
    return save_figure(fig, path)


SWEEP, CONVERGENCE, TRADEOFF = "defence-sweep.png", "defence-convergence.png", "defence-tradeoff.png"


def draw_defence_figures(config: SpatialConfig, f: SpatialFindings, figures: Path) -> None:
    """The sweep, the convergence panel and the trade-off of a spatial run, into ``figures``."""
    ad = f.adaptive_part()
    plot_defence_sweep(f.sweep.cells, config.fractions, config.fills,
                       figures / SWEEP,
                       undefended_adv=f.attacks[config.defence_attack].defence.get("gradient:adv", math.nan),
                       clean_accuracy=f.clean_accuracy, attack_name=config.defence_attack)
    main = ad.main().measured().convergence
    eot_curves = {"main defence's control": main.control.accuracy,
                  **{f"baseline {t} {s:g}": b.convergence.accuracy for (t, s), b in ad.baselines.items()
                     if b.randomized}}
    plot_convergence(main.defended.accuracy, figures / CONVERGENCE, budget_steps=ad.budget.steps,
                     budget_restarts=ad.budget.restarts, eps=config.eps_linf, converged=main.defended.converged,
                     eot_curves=eot_curves, budget_eot=ad.budget.eot_iter)
    points = {row.label: {"clean": m.clean.value, "robust": m.adaptive_worst.value}
              for row in ad.settings.values() if (m := row.measures) is not None}
    baselines = {k: {"clean": b.clean.value, "robust": b.robust.value} for k, b in ad.baselines.items()
                 if not b.label}
    plot_tradeoff(points, baselines, figures / TRADEOFF, undefended_clean=ad.undefended.clean.value,
                  undefended_robust=ad.undefended.white_box.value)
