"""The figures of experiment ``propagation``, drawn at run time into the run's ``figures/`` folder (the report then
shows the ones that exist, :mod:`.report`): propagation per se, the attack minus its random controls, the mean
propagation maps with the attack pixels' density, one layer strip of examples per k, the depth curves and the
locality rates.

Each ``plot_*`` function takes tensors or plain numbers and an output path, writes a PNG and returns the path.
Figures are :class:`matplotlib.figure.Figure` objects drawn by the Agg canvas (pyplot is never touched).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ...errors import ShapeError
from ...report.figures import HEAT_CMAP, image_for_display, new_figure, save_figure, to_numpy
from ...statistics.claims import Claim
from ..findings import to_json
from .claims import PM_STATISTICS
from .findings import PropagationFindings
from .stages import Context, KSummary


#: one colour per k (matplotlib's tab10), cycled
K_COLOURS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf")


def strip_layers(shapes: Mapping[str, tuple[int, int]], max_layers: int) -> list[str]:
    """Layers for a strip: those with a spatial map (h*w > 1), at most ``max_layers`` evenly spaced in depth.

    The first and the last spatial layer are always kept; ``shapes`` is in forward (depth) order.
    """
    spatial = [name for name, (h, w) in shapes.items() if h * w > 1]
    if max_layers < 1:
        raise ShapeError(f"max_layers must be >= 1, got {max_layers}")
    if len(spatial) <= max_layers:
        return spatial
    if max_layers == 1:
        return [spatial[-1]]
    picks = np.linspace(0, len(spatial) - 1, max_layers).round().astype(int)
    return [spatial[i] for i in sorted(set(picks.tolist()))]


def _short(name: str, limit: int = 18) -> str:
    return name if len(name) <= limit else "…" + name[-(limit - 1):]


def plot_propagation_strip(
    images: torch.Tensor,
    maps: Mapping[str, torch.Tensor],
    path: str | Path,
    *,
    pixels: Sequence[torch.Tensor] | None = None,
    row_labels: Sequence[str] | None = None,
    title: str = "How far the perturbed pixels reach, layer by layer",
    first_column_title: str = "image (attacked pixels circled)",
    first_column_heat: bool = False,
    max_layers: int = 10,
    depth_of: Mapping[str, int] | None = None,
) -> Path:
    """One row per image: the image (attacked pixels circled), then PMmax of each layer, left to right.

    ``maps`` is ``{layer: (R,h,w)}`` in forward order. Layers without a spatial
    map are left out and at most ``max_layers`` are shown (evenly spaced in
    depth). Each column has its own colour scale shared by all rows (PM values
    differ by orders of magnitude between layers), with its colour bar below.
    ``pixels[i]`` is a (k,2) tensor of (row, col); ``first_column_heat`` shows
    the first column as a heat map (e.g. a density of pixel positions).
    """
    from matplotlib.patches import Circle

    if not isinstance(images, torch.Tensor) or images.ndim != 4 or images.shape[1] not in (1, 3):
        raise ShapeError(f"images must be (R,1|3,H,W), got {tuple(getattr(images, 'shape', ()))}")
    r = images.shape[0]
    if r == 0:
        raise ShapeError("need at least one image to plot")
    for name, m in maps.items():
        if m.ndim != 3 or m.shape[0] != r:
            raise ShapeError(f"map of layer {name!r} must be (R={r},h,w), got {tuple(m.shape)}")
    if pixels is not None and len(pixels) != r:
        raise ShapeError(f"pixels needs one (k,2) tensor per row: {r} rows, {len(pixels)} given")
    if row_labels is not None and len(row_labels) != r:
        raise ShapeError(f"row_labels needs {r} entries, got {len(row_labels)}")
    chosen = strip_layers({n: (int(m.shape[1]), int(m.shape[2])) for n, m in maps.items()}, max_layers)
    ncols = 1 + len(chosen)
    width, height = 1.55 * ncols + 0.9, 1.6 * r + 1.9
    fig = new_figure(figsize=(width, height), dpi=100)
    grid = fig.add_gridspec(r + 1, ncols, height_ratios=[1.0] * r + [0.07], hspace=0.25, wspace=0.12)
    for i in range(r):
        ax = fig.add_subplot(grid[i, 0])
        if first_column_heat:
            ax.imshow(to_numpy(images[i, 0]), cmap=HEAT_CMAP, vmin=0)
        else:
            img, cmap = image_for_display(images[i])
            ax.imshow(img, cmap=cmap, vmin=0, vmax=1)
        if pixels is not None:
            for row, col in pixels[i].tolist():
                ax.add_patch(Circle((col, row), radius=1.6, fill=False, edgecolor="#00e5ff", linewidth=1.4))
        ax.set_xticks([])
        ax.set_yticks([])
        if row_labels is not None:
            ax.set_ylabel(row_labels[i], fontsize=8)
        if i == 0:
            ax.set_title(first_column_title, fontsize=8)
    for j, name in enumerate(chosen, start=1):
        values = to_numpy(maps[name])
        finite = values[np.isfinite(values)]
        vmax = float(finite.max()) if finite.size and finite.max() > 0 else 1.0
        im = None
        for i in range(r):
            ax = fig.add_subplot(grid[i, j])
            im = ax.imshow(values[i], cmap=HEAT_CMAP, vmin=0, vmax=vmax, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                depth = f"depth {depth_of[name]}\n" if depth_of is not None else ""
                h, w = maps[name].shape[1:]
                ax.set_title(f"{depth}{_short(name)}\n{h}x{w}", fontsize=7)
        cax = fig.add_subplot(grid[r, j])
        assert im is not None  # r >= 1 rows were drawn
        bar = fig.colorbar(im, cax=cax, orientation="horizontal")
        bar.ax.tick_params(labelsize=6)
        bar.set_ticks([0, vmax], labels=["0", f"{vmax:.2g}"])
    fig.text(0.5, 0.2 / height, "PMmax = max over channels of |F(x') - F(x)| / max F(x); "
             "colour scale per layer (bar below each column)", ha="center", fontsize=8)
    fig.suptitle(title, fontsize=11, y=1 - 0.1 / height)
    fig.subplots_adjust(left=0.06, right=0.99, top=1 - 0.85 / height, bottom=0.75 / height)
    return save_figure(fig, path)


def _finite(values: Sequence[float]) -> np.ndarray:
    return np.array([v if v is not None else math.nan for v in values], dtype=float)


def plot_depth_curves(
    depth: Mapping[int, Sequence[Mapping[str, Any]]],
    path: str | Path,
    *,
    threshold: float = 0.1,
    title: str = "Propagation of k-pixel perturbations through the layers (successful attacks)",
) -> Path:
    """Mean PMmax, max PMmax and spread per layer (x: depth, forward order), one line per k.

    ``depth[k]`` is the list of per-layer dicts (``layer``, ``mean_pm_max``,
    ``max_pm_max``, ``spread``); a k with an empty list (no successful attack)
    is named in the legend as such.
    """
    if not depth:
        raise ShapeError("need the depth curve of at least one k")
    layers: list[str] = next((([d["layer"] for d in rows]) for rows in depth.values() if rows), [])
    label_inches = 0.06 * max((len(_short(n, 22)) for n in layers), default=4) + 0.55
    fig = new_figure(figsize=(max(7.0, 0.32 * len(layers) + 3.0), 7.5 + label_inches), dpi=100)
    axes = [fig.add_subplot(3, 1, i + 1) for i in range(3)]
    panels = (("mean_pm_max", "mean PMmax\n(over images, positions)", True),
              ("max_pm_max", "largest PMmax\n(any image, position)", True),
              ("spread", f"spread: share of positions\nwith PMmax > {threshold:g}", False))
    for n, (k, rows) in enumerate(depth.items()):
        colour = K_COLOURS[n % len(K_COLOURS)]
        if not rows:
            axes[0].plot([], [], color=colour, label=f"k = {k}: no successful attack")
            continue
        x = np.arange(len(rows))
        for ax, (key, _, _) in zip(axes, panels, strict=True):
            ax.plot(x, _finite([d[key] for d in rows]), marker="o", markersize=3, color=colour,
                    label=f"k = {k} ({'pixel' if k == 1 else 'pixels'})")
    for ax, (_, label, log) in zip(axes, panels, strict=True):
        ax.set_ylabel(label, fontsize=9)
        ax.grid(alpha=0.3)
        if log and any(np.asarray(line.get_ydata()).size and np.nanmax(np.asarray(line.get_ydata(), float)) > 0
                       for line in ax.get_lines()):
            ax.set_yscale("log")
        ax.set_xticks(np.arange(len(layers)))
        ax.set_xticklabels([] if ax is not axes[-1] else [_short(n, 22) for n in layers], rotation=90, fontsize=7)
    axes[2].set_ylim(-0.02, 1.02)
    axes[2].set_xlabel("layer, in forward order (depth 0 = first layer)", fontsize=9)
    axes[0].legend(fontsize=8, loc="best")
    fig.suptitle(title, fontsize=11)
    height = 7.5 + label_inches
    fig.subplots_adjust(left=1.3 / fig.get_figwidth(), right=0.98, top=1 - 0.5 / height,
                        bottom=label_inches / height, hspace=0.15)
    return save_figure(fig, path)


def plot_locality(
    locality: Mapping[int, Mapping[str, Mapping[str, float]]],
    radii: Sequence[int],
    path: str | Path,
    *,
    title: str = "Does the attack's colour still fool the model when moved? (successful attacks)",
) -> Path:
    """Success rate vs Chebyshev radius r (r = 0: the original placement) with Wilson 95% bars per k;
    the random-position control as a shaded band (its 95% interval) with a dashed line at its rate.

    ``locality[k]`` maps ``original``, ``r{radius}`` and ``random`` to dicts with
    ``rate``, ``ci_low``, ``ci_high`` and ``trials``.
    """
    if not locality:
        raise ShapeError("need the locality rows of at least one k")
    fig = new_figure(figsize=(7.5, 4.8), dpi=100)
    ax = fig.add_subplot(1, 1, 1)
    xs = np.array([0, *radii], dtype=float)
    width = 0.08 * (len(locality) - 1)
    for n, (k, table) in enumerate(locality.items()):
        colour = K_COLOURS[n % len(K_COLOURS)]
        keys = ["original", *(f"r{r}" for r in radii)]
        if not table["original"]["trials"]:
            ax.plot([], [], color=colour, label=f"k = {k}: no successful attack")
            continue
        rate = _finite([table[key]["rate"] for key in keys])
        low, high = _finite([table[key]["ci_low"] for key in keys]), _finite([table[key]["ci_high"] for key in keys])
        shift = -width / 2 + (width * n / (len(locality) - 1) if len(locality) > 1 else 0.0)
        ax.errorbar(xs + shift, rate, yerr=[rate - low, high - rate], color=colour, marker="o", capsize=3,
                    label=f"k = {k}: colours moved by r (n = {table['original']['trials']} attacks)")
        rnd = table["random"]
        if rnd["trials"]:
            ax.axhspan(rnd["ci_low"], rnd["ci_high"], color=colour, alpha=0.15)
            ax.axhline(rnd["rate"], color=colour, linestyle="--", linewidth=1,
                       label=f"k = {k}: same colours at random positions")
    ax.set_xticks(xs)
    ax.set_xticklabels(["0\n(original)", *(str(r) for r in radii)])
    ax.set_xlabel("Chebyshev distance r of the moved pixels from the attack's positions")
    ax.set_ylabel("share of placements that fool the model")
    ax.set_ylim(-0.02, 1.05)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="upper right")
    fig.text(0.5, 0.01, "bars and bands: Wilson 95% intervals", ha="center", fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.subplots_adjust(left=0.1, right=0.98, top=0.92, bottom=0.17)
    return save_figure(fig, path)


def plot_control_differences(
    differences: Mapping[int, Mapping[str, Sequence[Mapping[str, Any]]]],
    path: str | Path,
    *,
    title: str = "Attack minus a random pixel change of the same |Δ|, per layer (mean over images, 95% CI)",
) -> Path:
    """One panel per k: per layer (x: depth), the per-image paired difference of the peak PMmax, attack minus
    control, with its bootstrap CI over images; one line per control. 0 is marked: above it, the attack
    moves that layer more than a random change does.

    ``differences[k][control]`` is a list of dicts with ``layer``, ``mean``, ``low``, ``high`` (NaN allowed).
    """
    if not differences:
        raise ShapeError("need the differences of at least one k")
    ks = list(differences)
    layers: list[str] = next((list(d["layer"] for d in rows) for per in differences.values()
                              for rows in per.values() if rows), [])
    fig = new_figure(figsize=(max(7.0, 0.3 * len(layers) + 3.0), 2.6 * len(ks) + 1.6), dpi=100)
    for n, k in enumerate(ks):
        ax = fig.add_subplot(len(ks), 1, n + 1)
        for m, (label, rows) in enumerate(differences[k].items()):
            if not rows:
                continue
            x = np.arange(len(rows)) + (m - 0.5) * 0.15
            mean = _finite([d["mean"] for d in rows])
            low, high = _finite([d["low"] for d in rows]), _finite([d["high"] for d in rows])
            ax.errorbar(x, mean, yerr=[mean - low, high - mean], marker="o", markersize=3, capsize=2,
                        color=K_COLOURS[m % len(K_COLOURS)], label=label)
        ax.axhline(0, color="k", linewidth=0.8)
        ax.set_ylabel(f"k = {k}\nΔ peak PMmax", fontsize=9)
        ax.grid(alpha=0.3)
        ax.set_xticks(np.arange(len(layers)))
        ax.set_xticklabels([] if n < len(ks) - 1 else [_short(name, 22) for name in layers], rotation=90, fontsize=7)
        if ax.get_lines():
            ax.legend(fontsize=7, loc="best")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return save_figure(fig, path)


def plot_per_se(
    curves: Mapping[str, Sequence[Mapping[str, Any]]],
    fraction: float,
    path: str | Path,
    *,
    title: str = "Propagation per se: a random one-pixel change, per layer (mean over images, 95% CI)",
) -> Path:
    """Per layer, the ratio "peak |activation change| of a random one-pixel change / the layer's largest clean
    activation" against relative depth (0 = input, 1 = last recorded layer), one line with a CI band per curve
    (e.g. one model; several models share the axis); the claim's bar ``fraction`` is a dashed line.

    ``curves[label]`` is the list of per-layer dicts of ``metrics["per_se"]["layers"]`` (``relative_depth``,
    ``ratio``: ``mean``/``low``/``high``, NaN allowed); an empty list is named in the legend as such.
    """
    if not curves:
        raise ShapeError("need the per-layer ratios of at least one curve")
    fig = new_figure(figsize=(7.5, 4.6), dpi=100)
    ax = fig.add_subplot(1, 1, 1)
    for n, (label, rows) in enumerate(curves.items()):
        colour = K_COLOURS[n % len(K_COLOURS)]
        if not rows:
            ax.plot([], [], color=colour, label=f"{label}: no image")
            continue
        x = _finite([d["relative_depth"] for d in rows])
        mean = _finite([d["ratio"]["mean"] for d in rows])
        low, high = _finite([d["ratio"]["low"] for d in rows]), _finite([d["ratio"]["high"] for d in rows])
        ax.fill_between(x, low, high, color=colour, alpha=0.2, linewidth=0)
        ax.plot(x, mean, marker="o", markersize=3, color=colour, label=f"{label} ({len(rows)} layers)")
    ax.axhline(fraction, color="k", linestyle="--", linewidth=1, label=f"the claim's bar: {fraction:g}")
    ax.axhline(0, color="k", linewidth=0.6)
    ax.set_xlim(0, 1.02)
    ax.set_xlabel("relative depth: (layer index + 1) / number of recorded layers")
    ax.set_ylabel("peak |ΔF| / max F(x)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    fig.suptitle(title, fontsize=10)
    fig.subplots_adjust(left=0.11, right=0.98, top=0.9, bottom=0.13)
    return save_figure(fig, path)


PER_SE = "per-se.png"
CONTROL_DIFFERENCES = "control-differences.png"
MEAN_PROPAGATION = "mean-propagation.png"
DEPTH_CURVES = "depth-curves.png"
LOCALITY = "locality.png"


def strip_name(k: int | str) -> str:
    """The file of the layer strip of the examples of k."""
    return f"strip-k{k}.png"


def draw_figures(ctx: Context, summaries: Sequence[KSummary], findings: PropagationFindings) -> None:
    """Every figure the run has data for, into ``ctx.rundir.figures``."""
    cfg, folder = ctx.config, ctx.rundir.figures
    if findings.per_se.layers:
        plot_per_se({cfg.model: to_json(findings.per_se.layers)}, cfg.reach_fraction, folder / PER_SE)
    differences = peak_differences(findings.claims)
    if differences:
        plot_control_differences(differences, folder / CONTROL_DIFFERENCES)
    with_maps = [s for s in summaries if s.totals.count]
    if with_maps:
        draw_mean_propagation(ctx, with_maps, folder / MEAN_PROPAGATION)
    for s in with_maps:
        draw_examples(ctx, s, folder / strip_name(s.k))
    if any(m.depth for m in findings.k.values()):
        plot_depth_curves({int(k): to_json(m.depth) for k, m in findings.k.items()}, folder / DEPTH_CURVES,
                          threshold=cfg.threshold)
    if any(m.locality.original.trials for m in findings.k.values()):
        plot_locality({int(k): m.locality.as_dict() for k, m in findings.k.items()}, cfg.radii, folder / LOCALITY)


def peak_differences(claims: Sequence[Claim]) -> dict[int, dict[str, list[dict[str, Any]]]]:
    """Per k and control, per layer the attack's peak PMmax minus the control's (the claims' effects); empty when no
    claim has data."""
    peaks = [c for c in claims if c.statistic.startswith(PM_STATISTICS["peak"] + " @ ")]
    if not any(c.effect.n for c in peaks):
        return {}
    differences: dict[int, dict[str, list[dict[str, Any]]]] = {}
    for c in peaks:
        differences.setdefault(int(c.subject.split("-")[0]), {}).setdefault(c.null, []).append(
            {"layer": c.statistic.split(" @ ", 1)[1], "mean": c.effect.mean, "low": c.effect.low,
             "high": c.effect.high})
    return differences


def position_density(pixels: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """(1,H,W) share of attack pixels at each position, divided by its maximum (zeros when there are none)."""
    counts = torch.zeros(height * width)
    if pixels.numel():
        counts += torch.bincount((pixels[..., 0] * width + pixels[..., 1]).reshape(-1), minlength=height * width)
    return (counts / counts.max().clamp(min=1)).view(1, height, width)


def draw_mean_propagation(ctx: Context, with_maps: Sequence[KSummary], path: Path) -> None:
    """One row per k: where its attack pixels were, then the PMmax map of each layer averaged over its attacks."""
    _, h, w = ctx.data.image_shape
    layers = with_maps[0].totals.layers
    means = {name: torch.stack([s.totals.mean_maps()[name].pm_max for s in with_maps]) for name in layers}
    density = torch.stack([position_density(s.pixels, h, w) for s in with_maps])
    plot_propagation_strip(density, means, path, row_labels=[f"k = {s.k} (n = {s.totals.count})" for s in with_maps],
                           title="Average propagation map per layer over all successful attacks",
                           first_column_title="where the attack pixels\nwere (density)", first_column_heat=True,
                           max_layers=ctx.config.strip_layers, depth_of={n: i for i, n in enumerate(layers)})


def draw_examples(ctx: Context, summary: KSummary, path: Path) -> None:
    """The layer strip of the first successful attacks of one k (none drawn without examples)."""
    ex = summary.examples
    if ex is None:
        return
    names = ctx.data.class_names
    labels = [f"#{int(i)}: {names[int(y)]}\n-> {names[int(p)]}"
              for i, y, p in zip(ex.index, ex.labels, ex.adv_pred, strict=True)]
    plot_propagation_strip(ex.x_adv, ex.maps, path, pixels=list(ex.pixels), row_labels=labels,
                           title=f"{summary.k}-pixel attacks: how far the change reaches in each layer",
                           max_layers=ctx.config.strip_layers, depth_of={n: i for i, n in enumerate(ex.maps)})
