"""Propagation maps: how far a (one-pixel) perturbation spreads through the layers.

METHODS.md §6. For a layer l with output ``F_l`` and an adversarial image x':

    D_l     = |F_l(x') - F_l(x)|                 (N, C, h, w)
    PMmax_l = max_c D_l / s_l(x)                 (N, h, w)
    PMavg_l = mean_c D_l / s_l(x)                (N, h, w)

with the per-image scale ``s_l(x) = max F_l(x)`` (over all channels and
positions), so 1.0 means "as large as the largest original activation".

Choices (documented, see also the docstrings):

- If ``max F_l(x) <= 0`` (a layer whose outputs are all non-positive, e.g. a
  conv before its ReLU on a dark image), the scale is ``max |F_l(x)|``; if that
  is 0 too (the layer is all zero on x), the map is left unnormalized (scale 1).
  The scale used is returned as :attr:`PropagationMap.scale`.
- Layers with 2-D outputs (N, D) (linear layers, logits) are treated as
  (N, D, 1, 1): their maps are (N, 1, 1). A vision transformer's token layers
  (N, T, D) are read on the patch grid, (N, D, h, w), class and register tokens
  dropped (:meth:`~advspatial.models.tokens.TokenLayout.patch_grid`). Outputs of
  any other rank, and non-tensor outputs (tuples), are skipped.
- Depth is the order in which layers finish in the forward pass (a block comes
  after its children), as recorded by :mod:`advspatial.models.hooks`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
from advspatial.models.hooks import record_outputs
from advspatial.models.tokens import TokenLayout, token_layout
from torch import nn

from ..errors import ConfigError, ModelError, ShapeError, unknown_name
from ..host_syncs import host_copies
from ..models.hooks import frozen_eval
from ..runtime import batch_slices, model_device, sample_ids_or_range, stream_seed


@dataclass
class PropagationMap:
    """Propagation maps of one layer for N images.

    Attributes:
        pm_max: (N,h,w) channel-max of |F(x') - F(x)| divided by ``scale``.
        pm_avg: (N,h,w) channel-mean of |F(x') - F(x)| divided by ``scale``.
        scale: (N,) the divisor used: max F(x), or max |F(x)| when that is <= 0, or 1 when F(x) == 0.
    """

    pm_max: torch.Tensor
    pm_avg: torch.Tensor
    scale: torch.Tensor


@dataclass
class MeanPropagation:
    """Propagation maps of one layer averaged over successful attacks: (h,w) maps and the count used."""

    pm_max: torch.Tensor
    pm_avg: torch.Tensor
    count: int


@dataclass(frozen=True)
class DepthRow:
    """Summary of one layer's propagation maps (one row of the depth table)."""

    depth: int
    layer: str
    height: int
    width: int
    mean_pm_max: float
    max_pm_max: float
    mean_pm_avg: float
    max_pm_avg: float
    spread: float


def _as_4d(feature: object, layout: TokenLayout | None = None) -> torch.Tensor | None:
    """(N,C,h,w) view of a layer output; 2-D (N,D) becomes (N,D,1,1), a transformer's tokens (N,T,D) their patch
    grid (N,D,h,w); anything else None (skipped)."""
    if not isinstance(feature, torch.Tensor) or not feature.is_floating_point():
        return None
    if feature.ndim == 4:
        return feature
    if feature.ndim == 3 and layout is not None and feature.shape[1] == layout.tokens:
        return layout.patch_grid(feature)
    if feature.ndim == 2:
        return feature[:, :, None, None]
    return None


def layer_scale(clean: torch.Tensor) -> torch.Tensor:
    """Per-image divisor (N,): max of F(x); max |F(x)| where that is <= 0; 1 where F(x) is all zero."""
    flat = clean.flatten(1)
    top = flat.amax(dim=1)
    absolute = flat.abs().amax(dim=1)
    scale = torch.where(top > 0, top, absolute)
    return torch.where(scale > 0, scale, torch.ones_like(scale))


def _maps_of(clean: torch.Tensor, adv: torch.Tensor) -> PropagationMap:
    diff = (adv - clean).abs()
    scale = layer_scale(clean)
    denom = scale[:, None, None]
    return PropagationMap(diff.amax(dim=1) / denom, diff.mean(dim=1) / denom, scale)


def _check_pair(x: torch.Tensor, x_adv: torch.Tensor) -> None:
    if not isinstance(x, torch.Tensor) or x.ndim != 4:
        raise ShapeError(f"images must be a (N,C,H,W) tensor, got {getattr(x, 'shape', type(x))}")
    if not isinstance(x_adv, torch.Tensor) or x_adv.shape != x.shape:
        raise ShapeError(
            f"x_adv must have the shape of x {tuple(x.shape)}, got {tuple(getattr(x_adv, 'shape', ()))}"
        )


def propagation_maps(
    model: nn.Module,
    x: torch.Tensor,
    x_adv: torch.Tensor,
    layers: str | Sequence[str] | None = None,
    batch_size: int = 64,
) -> dict[str, PropagationMap]:
    """Propagation maps of every selected layer, keyed by layer name in forward order.

    ``layers`` as in :func:`advspatial.models.hooks.select_layers` (default:
    all conv, activation and block modules). x and x_adv are run in chunks of
    ``batch_size`` (one forward each per chunk) with the model frozen in eval
    mode; results are on the CPU. See the module docstring for the choices on
    the scale and on non-4-D outputs.
    """
    _check_pair(x, x_adv)
    device = model_device(model)
    layout = token_layout(model, x[:1].to(device))
    parts: dict[str, list[PropagationMap]] = {}
    with frozen_eval(model), torch.no_grad(), record_outputs(model, layers) as rec:
        for chunk in batch_slices(x.shape[0], batch_size):
            model(x[chunk].to(device))
            clean = rec.outputs
            model(x_adv[chunk].to(device))
            adv = rec.outputs
            if list(clean) != list(adv):
                raise ModelError("the model ran different layers on x and x_adv; propagation maps need the same path")
            chunk_maps: dict[str, PropagationMap] = {}
            for name, feature in clean.items():
                f_clean, f_adv = _as_4d(feature, layout), _as_4d(adv[name], layout)
                if f_clean is not None and f_adv is not None:
                    chunk_maps[name] = _maps_of(f_clean, f_adv)
            # every layer's maps to the host in one read, not three a layer
            copies = iter(host_copies([t for pm in chunk_maps.values() for t in (pm.pm_max, pm.pm_avg, pm.scale)]))
            for name in chunk_maps:
                parts.setdefault(name, []).append(PropagationMap(next(copies), next(copies), next(copies)))
    return {
        name: PropagationMap(*(torch.cat([getattr(p, f) for p in pms]) for f in ("pm_max", "pm_avg", "scale")))
        for name, pms in parts.items()
    }


def _success_mask(success: torch.Tensor | None, n: int) -> torch.Tensor:
    if success is None:
        return torch.ones(n, dtype=torch.bool)
    success = torch.as_tensor(success).cpu().bool()
    if success.shape != (n,):
        raise ShapeError(f"success must have shape ({n},), got {tuple(success.shape)}")
    return success


def average_propagation(
    pms: Mapping[str, PropagationMap], success: torch.Tensor | None = None
) -> dict[str, MeanPropagation]:
    """Mean propagation map per layer over the images where ``success`` is True (all when None).

    With no successful attack the maps are NaN and ``count`` is 0.
    """
    result: dict[str, MeanPropagation] = {}
    for name, pm in pms.items():
        keep = _success_mask(success, pm.pm_max.shape[0])
        result[name] = MeanPropagation(pm.pm_max[keep].mean(dim=0), pm.pm_avg[keep].mean(dim=0), int(keep.sum()))
    return result


def depth_summary(
    pms: Mapping[str, PropagationMap], threshold: float = 0.1, success: torch.Tensor | None = None
) -> list[DepthRow]:
    """One row per layer (depth = forward order): mean and max of PMmax and PMavg, and the spread.

    ``spread`` is the fraction of positions (over all kept images and all h*w
    positions) where PMmax > ``threshold``. Only images where ``success`` is
    True are used (all when None); with none, the statistics are NaN.
    """
    if threshold < 0:
        raise ConfigError(f"threshold={threshold!r} is out of range; valid: >= 0")
    rows = []
    for depth, (name, pm) in enumerate(pms.items()):
        keep = _success_mask(success, pm.pm_max.shape[0])
        pm_max, pm_avg = pm.pm_max[keep], pm.pm_avg[keep]
        empty = pm_max.numel() == 0
        nan = float("nan")
        rows.append(DepthRow(
            depth=depth,
            layer=name,
            height=int(pm.pm_max.shape[1]),
            width=int(pm.pm_max.shape[2]),
            mean_pm_max=nan if empty else float(pm_max.mean()),
            max_pm_max=nan if empty else float(pm_max.max()),
            mean_pm_avg=nan if empty else float(pm_avg.mean()),
            max_pm_avg=nan if empty else float(pm_avg.max()),
            spread=nan if empty else float((pm_max > threshold).float().mean()),
        ))
    return rows


# -- the control: a random, non-adversarial pixel change of the same size --------------------------

#: the two controls of a k-pixel change (METHODS §6): a random position, or the attack's position with a random colour
CONTROL_MODES = ("position", "colour")

#: random streams of the controls (combined with the run's seed and each image's global sample id)
CONTROL_STREAMS = {"position": 0x9A01, "colour": 0x9A02}

#: candidate (position, direction) draws per pixel before a control is declared unavailable
CONTROL_CANDIDATES = 256

#: slack on the [0, 1] box when checking that a control colour is a valid pixel value (float rounding)
_BOX_SLACK = 1e-6


def stream_generator(seed: int, stream: int, sample_id: int) -> torch.Generator:
    """The CPU generator of one image in one random stream, keyed by (seed, stream, global sample id).

    The same keying as :func:`advspatial.runtime.per_sample_noise` under
    :func:`advspatial.regions.controls.stream_seed`: an image's draws never
    depend on the batch, the order of the images or the other images.
    """
    return torch.Generator().manual_seed((stream_seed(seed, stream) * 1_000_003 + int(sample_id)) % (2**63 - 1))


@dataclass
class PixelChange:
    """Control images and what was changed.

    Attributes:
        x: (N,C,H,W) the clean images with the control change written in (the clean image where unavailable).
        pixels: (N,k,2) positions of the changed pixels (unused slots repeat the first one, as
            :func:`advspatial.experiments.propagation.pixel_changes.perturbed_pixels` fills them).
        colours: (N,k,C) their new colours.
        magnitude: (N,k) |Δ| of each slot (L2 over channels), equal to the attack's pixel's |Δ|.
        available: (N,) bool: every changed pixel of the attack got a control of the same |Δ|.
    """

    x: torch.Tensor
    pixels: torch.Tensor
    colours: torch.Tensor
    magnitude: torch.Tensor
    available: torch.Tensor


def _unique_changes(
    x: torch.Tensor, pixels: torch.Tensor, colours: torch.Tensor,
) -> list[tuple[int, int, float, torch.Tensor]]:
    """(row, col, |Δ|, Δ) of one image's distinct changed pixels (|Δ| > 0), largest |Δ| first (ties: row-major)."""
    seen: dict[tuple[int, int], torch.Tensor] = {}
    for (r, c), colour in zip(pixels.tolist(), colours, strict=True):
        if (r, c) not in seen:
            seen[(r, c)] = (colour - x[:, r, c]).double()
    changes = [(r, c, float(d.norm()), d) for (r, c), d in seen.items() if float(d.norm()) > 0]
    return sorted(changes, key=lambda t: (-t[2], t[0], t[1]))


def random_pixel_change(
    x: torch.Tensor, pixels: torch.Tensor, colours: torch.Tensor, mode: str, seed: int = 0,
    sample_ids: torch.Tensor | None = None, candidates: int = CONTROL_CANDIDATES,
) -> PixelChange:
    """A random, non-adversarial change of as many pixels as the attack changed, each of the same |Δ|.

    For every distinct changed pixel j of image i (|Δ_j| = L2 norm over channels
    of its colour minus the clean colour), the control writes ``x + |Δ_j| u`` at
    position q, with u a uniformly random unit direction in colour space (a
    random sign for grey images) and, by ``mode``:

    - ``position``: q uniformly random over the image (distinct from the
      control's other pixels; it may hit an attack position by chance, 1/HW);
    - ``colour``: q = the attack's own position (a random colour of the same |Δ|).
      A grey image has only two values at distance |Δ| from a pixel, and one is
      the attack's own: there the control is the mirrored change x - Δ (no
      randomness), unavailable when x - Δ leaves [0, 1]. With C >= 2 channels
      a random direction coincides with the attack's with probability 0.

    Pixels are processed largest |Δ| first; for each, ``candidates`` draws of
    (q, u) are made and the first whose colour lies in [0,1]^C is kept. Where
    none fits (e.g. a grey pixel moved from 0 to 1 has no other colour at
    |Δ| = 1 at the same place), the image's control is *unavailable*: its
    ``available`` is False, its image is left clean, and it is left out of
    every paired comparison (and counted). The draws of image i come from
    :func:`stream_generator` (seed, the mode's stream, ``sample_ids[i]``), so
    a control never depends on the batch; and a "successful" change that is
    itself this control (same seed and id) gets itself back as its control.
    """
    if mode not in CONTROL_MODES:
        raise unknown_name("control mode", mode, CONTROL_MODES)
    if not isinstance(x, torch.Tensor) or x.ndim != 4:
        raise ShapeError(f"images must be a (N,C,H,W) tensor, got {getattr(x, 'shape', type(x))}")
    n, c, h, w = x.shape
    pixels = torch.as_tensor(pixels).cpu().long()
    colours = torch.as_tensor(colours).cpu().to(x.dtype)
    if pixels.ndim != 3 or pixels.shape[0] != n or pixels.shape[2] != 2 or colours.shape != (n, pixels.shape[1], c):
        raise ShapeError(f"pixels must be (N,k,2) and colours (N,k,C) with N={n}, C={c}; got "
                         f"{tuple(pixels.shape)} and {tuple(colours.shape)}")
    ids = sample_ids_or_range(n, sample_ids)
    k = pixels.shape[1]
    x = x.detach().cpu()
    out = x.clone()
    out_pixels = pixels.clone()
    out_colours = x.new_zeros(n, k, c)
    magnitude = torch.zeros(n, k, dtype=torch.float64)
    available = torch.ones(n, dtype=torch.bool)
    for i in range(n):
        gen = stream_generator(seed, CONTROL_STREAMS[mode], int(ids[i]))
        changes = _unique_changes(x[i], pixels[i], colours[i])
        used: set[int] = set()
        chosen: list[tuple[int, torch.Tensor, float]] = []
        for r, col, m, delta in changes:
            flat = torch.randint(0, h * w, (candidates,), generator=gen)
            u = torch.randn(candidates, c, generator=gen, dtype=torch.float64)
            u = u / u.norm(dim=1, keepdim=True).clamp(min=1e-12)
            if mode == "colour":
                flat = torch.full_like(flat, r * w + col)
                if c == 1:  # grey: the only non-adversarial value at this |Δ| is the mirrored one
                    u = -torch.sign(delta).expand(candidates, 1)
            base = x[i].flatten(1)[:, flat].T.double()  # (T, C)
            value = base + m * u
            ok = ((value >= -_BOX_SLACK) & (value <= 1 + _BOX_SLACK)).all(dim=1)
            ok &= torch.tensor([int(f) not in used for f in flat.tolist()])
            hits = ok.nonzero().flatten()
            if hits.numel() == 0:
                available[i] = False
                break
            t = int(hits[0])
            used.add(int(flat[t]))
            chosen.append((int(flat[t]), value[t].clamp(0, 1).to(x.dtype), m))
        if not available[i] or not chosen:
            available[i] = available[i] and bool(chosen)
            continue
        for j in range(k):
            f, colour, m = chosen[j if j < len(chosen) else 0]
            out[i, :, f // w, f % w] = colour
            out_pixels[i, j] = torch.tensor([f // w, f % w])
            out_colours[i, j] = colour
            magnitude[i, j] = m
    return PixelChange(out, out_pixels, out_colours, magnitude, available)


#: per-image, per-layer summaries of PMmax (the paired statistics of the control comparison)
IMAGE_STATISTICS = ("peak", "mean", "spread")


def per_image_layer_stats(pms: Mapping[str, PropagationMap], threshold: float) -> dict[str, torch.Tensor]:
    """(N, L) per image and layer (forward order): ``peak`` (largest PMmax), ``mean`` PMmax and ``spread``.

    ``spread`` is the share of the layer's positions where PMmax > ``threshold``.
    """
    if threshold < 0:
        raise ConfigError(f"threshold={threshold!r} is out of range; valid: >= 0")
    if not pms:
        return {s: torch.zeros(0, 0, dtype=torch.float64) for s in IMAGE_STATISTICS}
    flat = [pm.pm_max.flatten(1).double() for pm in pms.values()]
    return {"peak": torch.stack([f.amax(dim=1) for f in flat], dim=1),
            "mean": torch.stack([f.mean(dim=1) for f in flat], dim=1),
            "spread": torch.stack([(f > threshold).double().mean(dim=1) for f in flat], dim=1)}


# -- propagation per se: a random one-pixel change, no attack involved -------------------------------

#: the random stream of the random one-pixel changes of the propagation-per-se claim
RANDOM_PIXEL_STREAM = 0x9A03


def random_corner_pixels(
    x: torch.Tensor, draws: int, seed: int = 0, sample_ids: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``draws`` random one-pixel changes per image: positions (N,D,2) (row, col) and colours (N,D,C).

    Each draw is a uniformly random position and a uniformly random corner of the colour cube [0,1]^C
    (one of 2^C: black, white, the primaries...), the colours a one-pixel attack's search ends on most
    often, chosen without looking at the model. A corner may equal the pixel's own colour (|Δ| = 0): that
    is part of a random draw, not dropped. Draws of image i come from :func:`stream_generator` (seed,
    :data:`RANDOM_PIXEL_STREAM`, ``sample_ids[i]``), so they depend on neither the batch nor the other images.
    """
    if not isinstance(x, torch.Tensor) or x.ndim != 4:
        raise ShapeError(f"images must be a (N,C,H,W) tensor, got {getattr(x, 'shape', type(x))}")
    if draws < 1:
        raise ConfigError(f"draws={draws!r} is out of range; valid: >= 1")
    n, c, h, w = x.shape
    ids = sample_ids_or_range(n, sample_ids)
    pixels = torch.zeros(n, draws, 2, dtype=torch.long)
    colours = torch.zeros(n, draws, c, dtype=x.dtype)
    for i in range(n):
        gen = stream_generator(seed, RANDOM_PIXEL_STREAM, int(ids[i]))
        flat = torch.randint(0, h * w, (draws,), generator=gen)
        pixels[i] = torch.stack((flat // w, flat % w), dim=-1)
        colours[i] = torch.randint(0, 2, (draws, c), generator=gen).to(x.dtype)
    return pixels, colours


def random_pixel_reach(
    model: nn.Module, x: torch.Tensor, layers: str | Sequence[str] | None = None, draws: int = 1, seed: int = 0,
    sample_ids: torch.Tensor | None = None, batch_size: int = 64,
) -> tuple[list[str], torch.Tensor]:
    """How far a random one-pixel change reaches: the layer names (forward order) and (N, L) per image and layer
    the peak PMmax -- max over channels and positions of |F(x') - F(x)| / max F(x) -- averaged over ``draws``
    changes of :func:`random_corner_pixels`.

    The peak PMmax is the ratio "largest activation change / the layer's largest clean activation" of
    METHODS §6 (:func:`layer_scale` for the scale). It rests on no attack, so it measures whether a pixel
    change propagates to a layer at all (the attack's own reach is selected for its effect on the logits).
    """
    pixels, colours = random_corner_pixels(x, draws, seed, sample_ids)
    x = x.detach().cpu()
    rows = torch.arange(x.shape[0])
    total: torch.Tensor | None = None
    names: list[str] = []
    for d in range(draws):
        changed = x.clone()
        changed[rows, :, pixels[:, d, 0], pixels[:, d, 1]] = colours[:, d]
        pms = propagation_maps(model, x, changed, layers, batch_size=batch_size)
        names = list(pms)
        peak = per_image_layer_stats(pms, 0.0)["peak"]
        total = peak if total is None else total + peak
    assert total is not None
    return names, total / draws
