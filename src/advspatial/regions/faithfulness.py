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
- ``blur``: a Gaussian blur of the image (``sigma``; default one pixel per 32
  pixels of the shorter side, at least 1: 1 on 28-32 pixel images, 7 at 224,
  :func:`~advspatial.regions.deletion.deletion_blur_sigma`; a fixed 1-pixel blur
  deletes nothing at 224 pixels);
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

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from ..errors import ShapeError, check_range
from .deletion import (
    CONTROLS, DELETION_FILLS, NOISE_SIGMA, _make_deletion_fill, concat_columns, control_region, deletion_columns,
    deletion_curve, random_region_like, restricted_attack_columns, roi_mask,
)
from .inference import Estimate, bootstrap_mean_ci, paired_p
from .randomization import _nanmean, evaluation_steps, model_randomization_check, parameterized_layers

#: the measurements live in ``deletion.py``, the randomization test in ``randomization.py``; named here too
__all__ = [
    "CONTROLS", "DELETION_FILLS", "MIN_N", "NOISE_SIGMA", "GateResult", "PairedEffect", "concat_columns",
    "control_region", "deletion_columns", "deletion_curve", "evaluation_steps", "model_randomization_check",
    "paired_effect", "parameterized_layers", "random_region_like", "restricted_attack_columns", "roi_mask",
    "summarize_gate",
    "_make_deletion_fill",  # private, named here for the tests that build a fill alone
]

#: default minimum number of images for a verdict (METHODS.md: n < 30 is "insufficient data")
MIN_N = 30

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
