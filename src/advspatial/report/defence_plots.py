"""Figures of the neutralization defence: the sweep over the neutralized fraction per fill."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from matplotlib.figure import Figure

from ..errors import ShapeError
from .figures import save_figure


def plot_defence_sweep(
    sweep: Mapping[str, float],
    fractions: Sequence[float],
    fills: Sequence[str],
    path: str | Path,
    *,
    undefended_adv: float,
    clean_accuracy: float,
    attack_name: str,
) -> Path:
    """Two panels: accuracy on adversarial images and on clean images vs the neutralized fraction.

    ``sweep`` keys are ``"{adv|clean}|{fraction}|{fill}|{defended|random}"``. Solid
    lines are the defence, dashed lines its random-region control of equal size:
    the defence helps only where the solid line lies above the dashed one.
    """
    if not fractions or not fills:
        raise ShapeError("need at least one fraction and one fill")
    fig = Figure(figsize=(11, 4.2), dpi=100)
    colours = ["tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple", "tab:brown"]
    for col, (tag, title, reference, ref_label) in enumerate((
        ("adv", f"On {attack_name} examples (higher = defence helps)", undefended_adv, "undefended"),
        ("clean", "On clean images (the clean cost)", clean_accuracy, "undefended"),
    )):
        ax = fig.add_subplot(1, 2, col + 1)
        for i, fill in enumerate(fills):
            colour = colours[i % len(colours)]
            defended = [sweep[f"{tag}|{f}|{fill}|defended"] for f in fractions]
            random = [sweep[f"{tag}|{f}|{fill}|random"] for f in fractions]
            ax.plot(fractions, defended, "o-", color=colour, label=f"{fill}: RoA \\ RoI neutralized")
            ax.plot(fractions, random, "x--", color=colour, alpha=0.7, label=f"{fill}: random pixels (control)")
        ax.axhline(reference, color="black", lw=1, ls=":", label=ref_label)
        ax.set_xlabel("neutralized fraction (top fraction of the gradient map)")
        ax.set_ylabel("accuracy")
        ax.set_ylim(0, 1)
        ax.set_title(title, fontsize=10)
        ax.grid(alpha=0.3)
    fig.axes[0].legend(fontsize=7, loc="best")
    fig.suptitle("Neutralization defence (deployable: RoA from the input gradient, RoI from Grad-CAM)", fontsize=11)
    fig.tight_layout()
    return save_figure(fig, path)
