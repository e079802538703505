"""The faithfulness gate: is an importance map a Region of Importance (RoI) for *this* model?

An importance map (Grad-CAM, saliency, ...) is only a picture until it is shown
to pick the pixels the model uses. Grad-CAM on a flatten/FC head, for example,
averages the gradient over positions and so throws away the position-specific
weights of the head; any channel active at a position lights that position up,
and on a BatchNorm net the empty background carries such activations. Its "RoI"
can then be a corner of black background (METHODS.md section 1, review P0-1).
Every RoI-dependent claim therefore passes this gate first. A map is an RoI
when, paired per image:

1. **deletion**: filling its top-``fraction`` pixels (the RoI, built by the
   shared rule :func:`advspatial.regions.top_fraction_mask`) lowers the
   true-class logit more than filling a control region of the same number of
   pixels -- for every fill used (>= 2, to limit the out-of-distribution
   artefacts of any one fill, as ROAD argues); and
2. **restricted attack**: the experiment's own attack (L-inf PGD) confined to
   the RoI lowers the true-label margin ``z_y - max_{j!=y} z_j`` more than the
   same attack confined to a random region of the same size -- the RoI is the
   more vulnerable region, which is the notion an adversarial toolkit needs.

Effects are per-image paired differences with a bootstrap 95% CI over images
(:func:`advspatial.regions.inference.bootstrap_mean_ci`) and a two-sided
Wilcoxon p (:func:`~advspatial.regions.inference.paired_p`), overall and per
class. The gate passes when every deletion-fill logit effect and the attack
margin effect have their whole CI above 0.

Fills (:data:`DELETION_FILLS`; parameters through ``fill_params={fill: {...}}``):

- ``zero``: 0 (Fashion-MNIST's background);
- ``mean``: a per-channel dataset mean (needs ``{"mean": {"dataset_mean": (m,)}}``);
- ``blur``: a Gaussian blur of the image (``sigma``, default 1 pixel);
- ``inpaint``: diffusion inpainting from the pixels around the region;
- ``noise``: additive Gaussian noise, ``x + sigma*eps`` clipped to [0, 1]
  (``sigma`` default 0.3), ``eps`` drawn per image from (seed, sample id) --
  the same noise for the RoI and the random region of an image.

The first four are :mod:`advspatial.regions.fills`. The random region of an
image is its **control** (:func:`control_region`), with exactly as many pixels
as the RoI (the RoI can be smaller than ``fraction`` when the map has fewer
positive pixels) and drawn from a generator keyed by (seed, sample id), so an
image gets the same control in any batch:

- ``shifted`` (default): the RoI's own shape moved by a random cyclic shift. A
  contiguous RoI is compared with a contiguous region elsewhere. Deleting
  scattered pixels creates far more edges, which on natural images alone hurts
  the model more than deleting any blob (a CIFAR-10 ResNet-20's Grad-CAM RoI
  looked *less* important than scattered pixels with the zero fill, and clearly
  more important than the shifted RoI);
- ``scattered``: as many pixels at uniformly random positions (the pixel-flipping
  baseline; it may overlap the RoI).

Streaming: :func:`deletion_columns` and :func:`restricted_attack_columns` work
on one batch and return per-image columns (``dict`` of (N,) CPU tensors),
which an experiment caches per batch under global sample ids and concatenates
(:func:`concat_columns`) before :func:`summarize_gate`. Pass the global
``sample_ids`` of the batch, or the random regions depend on the batching.

Beside the gate, :func:`model_randomization_check` runs the cascading model
parameter randomization test (Adebayo et al., 2018): a map that does not
change when the model's weights are destroyed cannot explain the model.
Passing it is necessary, not sufficient (P0-1: Grad-CAM passes it and still
fails the gate). :func:`deletion_curve` gives true-class scores after deleting
growing top fractions (the pixel-flipping curve; it matches
``quantus.PixelFlipping`` for one-channel images, see the tests).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from ..attacks.base import margin
from ..models.hooks import forward_hooks, frozen_eval
from ..errors import ConfigError, ShapeError, check_range, unknown_name
from ..runtime import model_device, per_sample_noise, sample_ids_or_range, stream_seed
from .fills import list_fills, make_fill
from ._checks import _check_maps
from .binarization import top_fraction_mask
from .controls import random_region_like, shifted_region_like
from .overlap import iou, pearson, spearman
from .inference import Estimate, bootstrap_mean_ci, paired_p

#: the ``noise`` fill's default standard deviation (in [0,1] intensity units)
NOISE_SIGMA = 0.3

#: the fills :func:`deletion_columns` accepts
DELETION_FILLS = tuple(sorted({*list_fills(), "noise"}))

#: default minimum number of images for a verdict (METHODS.md: n < 30 is "insufficient data")
MIN_N = 30

# seed streams: the RoI tie-break uses ``seed`` itself (top_fraction_mask); the
# random region and the noise fill draw from derived seeds so the three are independent
_STREAM_NOISE_FILL = 2


# -- inputs -------------------------------------------------------------------------

def _check_inputs(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor | Sequence[int], importance: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor, torch.device]:
    if not isinstance(x, torch.Tensor) or x.ndim != 4 or not x.is_floating_point():
        raise ShapeError(f"images must be a float (N,C,H,W) tensor, got {getattr(x, 'shape', type(x))}")
    _check_maps(importance, "importance")
    n, _, h, w = x.shape
    if tuple(importance.shape) != (n, h, w):
        raise ShapeError(f"importance must have shape {(n, h, w)} for images {tuple(x.shape)}, "
                         f"got {tuple(importance.shape)}")
    device = model_device(model)
    y = torch.as_tensor(y, device=device).long()
    if y.shape != (n,):
        raise ShapeError(f"labels must have shape ({n},), got {tuple(y.shape)}")
    return x.detach().to(device), y, device


def _logits(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(x)


def _true(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return logits.gather(1, y[:, None]).squeeze(1)


def _col(t: torch.Tensor) -> torch.Tensor:
    return t.detach().cpu()


# -- regions ------------------------------------------------------------------------

def roi_mask(
    importance: torch.Tensor, fraction: float = 0.2, seed: int = 0, sample_ids: torch.Tensor | None = None,
) -> torch.Tensor:
    """(N,H,W) bool RoI: the shared top-``fraction`` rule (positive pixels only, seeded ties)."""
    return top_fraction_mask(importance, fraction, seed, sample_ids).mask


#: control regions of the gate: ``shifted`` (default; the RoI's own shape at a random place) or ``scattered``
CONTROLS = ("shifted", "scattered")


def control_region(roi: torch.Tensor, control: str = "shifted", seed: int = 0,
                   sample_ids: torch.Tensor | Sequence[int] | None = None) -> torch.Tensor:
    """(N,H,W) bool control of the same pixel count as ``roi``: shifted (shape kept) or scattered pixels.

    The shifted control is the default because deleting scattered pixels creates
    many edges: on natural images that alone hurts the model more than deleting
    any contiguous region, so a scattered control rejects every coherent
    explainer (measured on a CIFAR-10 ResNet-20: Grad-CAM's zero-fill deletion
    effect -2.5 against scattered pixels, +5.6 against the shifted RoI).
    """
    ids = sample_ids_or_range(roi.shape[0], sample_ids)
    if control == "shifted":
        return shifted_region_like(roi, seed, sample_ids=ids)
    if control == "scattered":
        return random_region_like(roi, seed, sample_ids=ids)
    raise unknown_name("gate control", control, CONTROLS)


# -- fills --------------------------------------------------------------------------

FillFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def _make_deletion_fill(
    name: str, params: Mapping[str, Any], x: torch.Tensor, seed: int, ids: torch.Tensor,
) -> FillFn:
    """``(x, region) -> filled x`` for one batch (the noise fill binds the batch's per-image noise)."""
    if name == "noise":
        unknown = set(params) - {"sigma"}
        if unknown:
            raise ConfigError(f"fill 'noise' has no parameter(s) {sorted(unknown)}; valid: ['sigma']")
        sigma = float(params.get("sigma", NOISE_SIGMA))
        check_range("sigma", sigma, 0.0, None)
        eps = per_sample_noise(x.shape, stream_seed(seed, _STREAM_NOISE_FILL), ids, "normal", x.device, x.dtype)
        noisy = (x + sigma * eps).clamp(0.0, 1.0)

        def noise_fill(images: torch.Tensor, region: torch.Tensor) -> torch.Tensor:
            return torch.where(region.to(images.device)[:, None], noisy, images)

        return noise_fill
    if name not in DELETION_FILLS:
        raise unknown_name("deletion fill", name, DELETION_FILLS)
    return make_fill(name, **params)


def _fill_params(fills: Sequence[str], fill_params: Mapping[str, Mapping[str, Any]] | None) -> dict[str, dict]:
    for f in fills:
        if f not in DELETION_FILLS:
            raise unknown_name("deletion fill", f, DELETION_FILLS)
    if len(set(fills)) != len(fills):
        raise ConfigError(f"fills must not repeat, got {list(fills)}")
    params = dict(fill_params or {})
    for key in params:
        if key not in DELETION_FILLS:
            raise unknown_name("fill in fill_params", key, DELETION_FILLS)
    return {f: dict(params.get(f, {})) for f in fills}


# -- per-batch columns ----------------------------------------------------------------

def deletion_columns(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    importance: torch.Tensor,
    fraction: float = 0.2,
    fills: Sequence[str] = ("zero", "blur"),
    seed: int = 0,
    sample_ids: torch.Tensor | Sequence[int] | None = None,
    fill_params: Mapping[str, Mapping[str, Any]] | None = None,
    control: str = "shifted",
) -> dict[str, torch.Tensor]:
    """Deletion check on one batch: per-image columns, each an (N,) CPU tensor.

    The "random" region is the ``control`` (:func:`control_region`): by default
    the RoI's own shape at a random place.

    For each fill ``f``: ``deletion:f:drop_roi`` / ``drop_random`` = true-class
    logit of the clean image minus that after filling the RoI / the random
    region (positive = the score fell), ``deletion:f:correct_roi`` /
    ``correct_random`` = 1.0 when the filled image is still classified as
    ``y``. Also ``clean:logit``, ``clean:correct`` and ``roi:pixels`` (the RoI's
    pixel count; the random region has the same). One forward pass per
    (fill, region), model in eval mode, no gradients.
    """
    x, y, _ = _check_inputs(model, x, y, importance)
    params = _fill_params(fills, fill_params)
    ids = sample_ids_or_range(x.shape[0], sample_ids)
    roi = roi_mask(importance, fraction, seed, ids).to(x.device)
    rnd = control_region(roi, control, seed, ids).to(x.device)
    cols: dict[str, torch.Tensor] = {}
    with frozen_eval(model):
        clean = _logits(model, x)
        clean_true = _true(clean, y)
        cols["clean:logit"] = _col(clean_true)
        cols["clean:correct"] = _col((clean.argmax(1) == y).float())
        cols["roi:pixels"] = _col(roi.flatten(1).sum(1))
        for name in fills:
            fill_fn = _make_deletion_fill(name, params[name], x, seed, ids)
            for tag, region in (("roi", roi), ("random", rnd)):
                logits = _logits(model, fill_fn(x, region))
                cols[f"deletion:{name}:drop_{tag}"] = _col(clean_true - _true(logits, y))
                cols[f"deletion:{name}:correct_{tag}"] = _col((logits.argmax(1) == y).float())
    return cols


def restricted_attack_columns(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    importance: torch.Tensor,
    attack: Any,
    fraction: float = 0.2,
    seed: int = 0,
    sample_ids: torch.Tensor | Sequence[int] | None = None,
    control: str = "shifted",
) -> dict[str, torch.Tensor]:
    """Attack check on one batch: ``attack`` confined to the RoI vs to its control region of equal size.

    The random region is the ``control`` (:func:`control_region`), as in
    :func:`deletion_columns`.

    ``attack`` is the experiment's attack (anything with ``run(x, y, mask=,
    sample_ids=)`` returning a result with ``x_adv``; its perturbation outside
    the mask must be zero, as every :mod:`advspatial.attacks` attack's is).
    Columns (N,) CPU: ``attack:margin_clean``, ``attack:margin_roi`` /
    ``attack:margin_random`` = the true-label margin ``z_y - max_{j!=y} z_j`` of
    the attacked image, ``attack:correct_roi`` / ``attack:correct_random`` =
    1.0 when it is still classified as ``y``, and ``roi:pixels``.
    """
    x, y, _ = _check_inputs(model, x, y, importance)
    ids = sample_ids_or_range(x.shape[0], sample_ids)
    roi = roi_mask(importance, fraction, seed, ids).to(x.device)
    rnd = control_region(roi, control, seed, ids).to(x.device)
    cols: dict[str, torch.Tensor] = {"roi:pixels": _col(roi.flatten(1).sum(1))}
    results = {tag: attack.run(x, y, mask=region.to(x.dtype), sample_ids=ids) for tag, region in
               (("roi", roi), ("random", rnd))}
    with frozen_eval(model):
        cols["attack:margin_clean"] = _col(margin(_logits(model, x), y))
        for tag, result in results.items():
            logits = _logits(model, result.x_adv.to(x.device))
            cols[f"attack:margin_{tag}"] = _col(margin(logits, y))
            cols[f"attack:correct_{tag}"] = _col((logits.argmax(1) == y).float())
    return cols


def concat_columns(batches: Sequence[Mapping[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """Concatenate per-batch column dicts (same keys in every batch) in order."""
    if not batches:
        return {}
    keys = list(batches[0])
    for b in batches[1:]:
        if set(b) != set(keys):
            raise ConfigError(f"column sets differ between batches: {sorted(keys)} vs {sorted(b)}")
    return {k: torch.cat([torch.as_tensor(b[k]).cpu() for b in batches]) for k in keys}


def deletion_curve(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    importance: torch.Tensor,
    fractions: Sequence[float],
    fill: str = "zero",
    *,
    score: str = "logit",
    seed: int = 0,
    sample_ids: torch.Tensor | Sequence[int] | None = None,
    fill_params: Mapping[str, Any] | None = None,
) -> torch.Tensor:
    """(N, len(fractions)) true-class score after filling the top-``f`` RoI, for each ``f``.

    ``score`` is ``logit`` or ``probability`` (softmax). Each point deletes the
    RoI of that fraction from the *clean* image (with distinct map values the
    RoIs are nested, so this equals cumulative pixel flipping); the noise fill
    uses the same noise for every fraction. No point at fraction 0.
    """
    if score not in ("logit", "probability"):
        raise unknown_name("score", score, ("logit", "probability"))
    x, y, _ = _check_inputs(model, x, y, importance)
    ids = sample_ids_or_range(x.shape[0], sample_ids)
    fill_fn = _make_deletion_fill(fill, dict(fill_params or {}), x, seed, ids)
    out = []
    with frozen_eval(model):
        for f in fractions:
            region = roi_mask(importance, float(f), seed, ids).to(x.device)
            logits = _logits(model, fill_fn(x, region))
            scores = logits if score == "logit" else logits.softmax(1)
            out.append(_true(scores, y))
    if not out:
        return torch.empty(x.shape[0], 0)
    return _col(torch.stack(out, 1))


# -- summary ------------------------------------------------------------------------

@dataclass(frozen=True)
class PairedEffect:
    """Mean of per-image paired differences with its bootstrap CI and two-sided Wilcoxon p."""

    estimate: Estimate
    p: float

    def above_zero(self) -> bool:
        """The whole CI lies strictly above 0 (the direction that supports the RoI)."""
        return self.estimate.n > 0 and self.estimate.low > 0

    def as_dict(self) -> dict[str, Any]:
        return {**self.estimate.as_dict(), "p": float(self.p)}


def paired_effect(differences: torch.Tensor, seed: int = 0) -> PairedEffect:
    """:class:`PairedEffect` of per-image differences (NaN left out)."""
    return PairedEffect(bootstrap_mean_ci(differences, seed), paired_p(differences))


@dataclass
class GateResult:
    """The faithfulness gate's verdict and its numbers.

    Attributes:
        passed: every deletion fill's logit effect and the attack margin effect
            have a 95% CI above 0, with at least ``min_fills`` fills, an
            attack check and ``n >= min_n`` images.
        reason: "passed", or the failed checks separated by "; ".
        fraction: the nominal RoI fraction (None if not given).
        n: number of images.
        deletion: {fill: {"logit": effect of drop_roi - drop_random,
            "accuracy": effect of correct_random - correct_roi}}.
        attack: {"margin": effect of margin_random - margin_roi,
            "accuracy": effect of correct_random - correct_roi} (empty without attack columns).
        means: the raw means behind the effects ({"deletion": {fill: {...}}, "attack": {...}, "roi_pixels": m}).
        per_class: {class name: {"n", "deletion", "attack"}} with the same effects.
        randomization: the :func:`model_randomization_check` rows, if given.
    """

    passed: bool
    reason: str
    fraction: float | None
    n: int
    deletion: dict[str, dict[str, PairedEffect]]
    attack: dict[str, PairedEffect]
    means: dict[str, Any] = field(default_factory=dict)
    per_class: dict[str, dict[str, Any]] = field(default_factory=dict)
    randomization: list[dict[str, Any]] | None = None

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready (floats, NaN allowed)."""
        out: dict[str, Any] = {
            "passed": bool(self.passed), "reason": self.reason,
            "fraction": None if self.fraction is None else float(self.fraction), "n": int(self.n),
            "deletion": _effects_dict(self.deletion), "attack": _effects_dict(self.attack),
            "means": self.means,
            "per_class": {name: {"n": c["n"], "deletion": _effects_dict(c["deletion"]),
                                 "attack": _effects_dict(c["attack"])} for name, c in self.per_class.items()},
        }
        if self.randomization is not None:
            out["randomization"] = [dict(row) for row in self.randomization]
        return out


def _effects_dict(d: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v.as_dict() if isinstance(v, PairedEffect) else _effects_dict(v) for k, v in d.items()}


def _fills_in(columns: Mapping[str, torch.Tensor]) -> list[str]:
    found = []
    for key in columns:
        parts = key.split(":")
        if len(parts) == 3 and parts[0] == "deletion" and parts[2] == "drop_roi" and parts[1] not in found:
            found.append(parts[1])
    return found


def _has_attack(columns: Mapping[str, torch.Tensor]) -> bool:
    return all(f"attack:{k}" in columns for k in ("margin_roi", "margin_random", "correct_roi", "correct_random"))


def _effects(cols: Mapping[str, torch.Tensor], fills: Sequence[str], seed: int
             ) -> tuple[dict[str, dict[str, PairedEffect]], dict[str, PairedEffect]]:
    deletion = {}
    for f in fills:
        c = {k: cols[f"deletion:{f}:{k}"].double() for k in ("drop_roi", "drop_random", "correct_roi", "correct_random")}
        deletion[f] = {"logit": paired_effect(c["drop_roi"] - c["drop_random"], seed),
                       "accuracy": paired_effect(c["correct_random"] - c["correct_roi"], seed)}
    attack = {}
    if _has_attack(cols):
        a = {k: cols[f"attack:{k}"].double() for k in ("margin_roi", "margin_random", "correct_roi", "correct_random")}
        attack = {"margin": paired_effect(a["margin_random"] - a["margin_roi"], seed),
                  "accuracy": paired_effect(a["correct_random"] - a["correct_roi"], seed)}
    return deletion, attack


def _nanmean(t: torch.Tensor) -> float:
    return float(t.double().nanmean()) if t.numel() else math.nan


def _fmt(e: PairedEffect) -> str:
    return f"{e.estimate.mean:+.4g} [{e.estimate.low:+.4g}, {e.estimate.high:+.4g}]"


def summarize_gate(
    columns: Mapping[str, torch.Tensor],
    labels: torch.Tensor | Sequence[int],
    seed: int = 0,
    class_names: Sequence[str] | Mapping[int, str] | None = None,
    min_n: int = MIN_N,
    *,
    fraction: float | None = None,
    min_fills: int = 2,
    randomization: list[dict[str, Any]] | None = None,
) -> GateResult:
    """The gate's verdict from concatenated columns (:func:`deletion_columns`, :func:`restricted_attack_columns`).

    Effects (positive = the RoI matters more than a random region): deletion
    logit ``drop_roi - drop_random`` and accuracy ``correct_random -
    correct_roi`` per fill; attack margin ``margin_random - margin_roi`` and
    accuracy ``correct_random - correct_roi``; each with a bootstrap 95% CI
    (``seed``) and a two-sided paired Wilcoxon p, overall and per class
    (``labels``; named by ``class_names`` if given). ``passed`` needs: ``n >=
    min_n``, at least ``min_fills`` deletion fills each with its logit-effect CI
    above 0, and attack columns whose margin-effect CI lies above 0.
    """
    check_range("min_n", min_n, 1)
    check_range("min_fills", min_fills, 1)
    labels = torch.as_tensor(labels).cpu().long().reshape(-1)
    n = int(labels.shape[0])
    for key, col in columns.items():
        if tuple(torch.as_tensor(col).shape) != (n,):
            raise ShapeError(f"column {key!r} has shape {tuple(torch.as_tensor(col).shape)}; labels have ({n},)")
    cols = {k: torch.as_tensor(v).cpu() for k, v in columns.items()}
    fills = _fills_in(cols)
    deletion, attack = _effects(cols, fills, seed)

    failed = []
    if n < min_n:
        failed.append(f"insufficient data: n={n} < {min_n}")
    if len(fills) < min_fills:
        failed.append(f"deletion: {len(fills)} fill(s) {fills}, need >= {min_fills}")
    for f in fills:
        e = deletion[f]["logit"]
        if not e.above_zero():
            failed.append(f"deletion:{f} logit effect {_fmt(e)} not above 0")
    if not attack:
        failed.append("attack: no restricted-attack columns")
    elif not attack["margin"].above_zero():
        failed.append(f"attack margin effect {_fmt(attack['margin'])} not above 0")

    means: dict[str, Any] = {
        "roi_pixels": _nanmean(cols["roi:pixels"]) if "roi:pixels" in cols else math.nan,
        "deletion": {f: {k: _nanmean(cols[f"deletion:{f}:{k}"])
                         for k in ("drop_roi", "drop_random", "correct_roi", "correct_random")} for f in fills},
        "attack": ({k: _nanmean(cols[f"attack:{k}"]) for k in
                    ("margin_clean", "margin_roi", "margin_random", "correct_roi", "correct_random")
                    if f"attack:{k}" in cols} if attack else {}),
    }

    per_class: dict[str, dict[str, Any]] = {}
    for c in torch.unique(labels).tolist():
        keep = labels == c
        sub = {k: v[keep] for k, v in cols.items()}
        d, a = _effects(sub, fills, seed)
        name = str(class_names[c]) if class_names is not None else str(c)
        per_class[name] = {"n": int(keep.sum()), "deletion": d, "attack": a}

    return GateResult(
        passed=not failed, reason="passed" if not failed else "; ".join(failed), fraction=fraction, n=n,
        deletion=deletion, attack=attack, means=means, per_class=per_class, randomization=randomization,
    )


# -- model randomization -------------------------------------------------------------

def parameterized_layers(model: nn.Module, x: torch.Tensor) -> list[tuple[str, nn.Module]]:
    """Modules that own parameters, in the order of their first call in a forward pass on ``x``.

    Modules that are never called are left out. ``model`` is run once, without
    gradients; its state is not changed (it should be in eval mode).
    """
    order: list[str] = []
    owners = {name: m for name, m in model.named_modules() if any(True for _ in m.parameters(recurse=False))}

    def factory(name: str):  # type: ignore[no-untyped-def]
        return lambda *_: None if name in order else order.append(name)

    with forward_hooks(owners, factory), torch.no_grad():
        model(x)
    return [(name, owners[name]) for name in order]


def _reinitialize(module: nn.Module, gen: torch.Generator) -> None:
    """Re-draw every parameter of ``module`` (not of its children) from ``gen``.

    Weights with >= 2 dims and the biases beside them: U(-1/sqrt(fan_in),
    1/sqrt(fan_in)), PyTorch's default range for Linear/Conv; 1-dim parameters
    of a layer without such a weight (norm-layer scale and shift): U(-1, 1).
    Buffers (BatchNorm running statistics) are kept.
    """
    params = dict(module.named_parameters(recurse=False))
    weights = [p for p in params.values() if p.ndim >= 2]
    fan_in = weights[0][0].numel() if weights else None
    with torch.no_grad():
        for _, p in sorted(params.items()):
            if p.ndim >= 2:
                bound = 1.0 / math.sqrt(max(1, p[0].numel()))
            elif fan_in is not None:
                bound = 1.0 / math.sqrt(max(1, fan_in))
            else:
                bound = 1.0
            draw = torch.empty(p.shape, dtype=torch.float64).uniform_(-bound, bound, generator=gen)
            p.copy_(draw.to(p.dtype))


def evaluation_steps(layers: int, max_steps: int | None) -> set[int]:
    """Steps (1-based) of the cascade after which maps are compared: all, or ``max_steps`` evenly spaced."""
    if max_steps is None or layers <= max_steps:
        return set(range(1, layers + 1))
    if max_steps == 1:
        return {layers}
    return {1 + round(i * (layers - 1) / (max_steps - 1)) for i in range(max_steps)}


def model_randomization_check(
    model: nn.Module,
    x: torch.Tensor,
    importance: Callable[[nn.Module, torch.Tensor], torch.Tensor],
    seed: int = 0,
    max_layers: int | None = None,
    fraction: float = 0.2,
    max_steps: int | None = None,
) -> list[dict[str, Any]]:
    """Cascading model-parameter randomization (Adebayo et al., 2018), on a small subset of images.

    A deep copy of ``model`` (in eval mode; the caller's model is never touched)
    has its parameterized layers (:func:`parameterized_layers`) re-initialized
    from the output backwards, one more per step and cumulatively, from a
    ``torch.Generator`` seeded with ``seed`` (:func:`_reinitialize` gives the
    ranges). After each step ``importance(randomized_model, x)`` -> (N,H,W) is
    compared per image with the map of the unchanged copy. Each step costs one
    map computation on ``x``, so pass a few dozen images, not a test set.

    Returns one row per step: ``step`` (1 = output layer only), ``layer``,
    ``spearman`` (mean rank correlation of the maps), ``pearson`` (mean linear
    correlation), ``top_iou`` (mean IoU of the top-``fraction`` regions, the
    RoIs), ``n`` (images where the correlation is defined) and
    ``n_undefined`` (a constant map, e.g. an all-zero Grad-CAM). A faithful map
    loses its similarity as layers are randomized.

    ``max_steps`` bounds the cost on deep networks (a ResNet-20 has 40
    parameterized layers, EfficientNet-Lite0 about 100): the cascade still
    randomizes every layer in order, but maps are compared only after
    ``max_steps`` evenly spaced steps (always the first and the last), so a row's
    ``layer`` is the deepest layer randomized so far.
    """
    if max_layers is not None:
        check_range("max_layers", max_layers, 1)
    if max_steps is not None:
        check_range("max_steps", max_steps, 1)
    net = copy.deepcopy(model).eval()
    x = x.detach().to(model_device(net))
    n = x.shape[0]
    ids = torch.arange(n)

    def compute() -> torch.Tensor:
        maps = importance(net, x).detach().float()
        _check_maps(maps, "importance maps")
        if maps.shape[0] != n:
            raise ShapeError(f"importance returned {maps.shape[0]} maps for {n} images")
        return maps

    original = compute()
    roi0 = top_fraction_mask(original, fraction, seed, ids).mask
    layers = parameterized_layers(net, x[:1])[::-1]
    if max_layers is not None:
        layers = layers[: int(max_layers)]
    gen = torch.Generator().manual_seed(int(seed))
    compared = evaluation_steps(len(layers), max_steps)
    rows = []
    for step, (name, module) in enumerate(layers, start=1):
        _reinitialize(module, gen)
        if step not in compared:
            continue
        maps = compute()
        rho = spearman(original, maps)
        roi = top_fraction_mask(maps, fraction, seed, ids).mask
        rows.append({
            "step": step, "layer": name,
            "spearman": _nanmean(rho), "pearson": _nanmean(pearson(original, maps)),
            "top_iou": _nanmean(iou(roi0, roi)),
            "n": int(torch.isfinite(rho).sum()), "n_undefined": int((~torch.isfinite(rho)).sum()),
        })
    return rows
