"""ROAD: RemOve And Debias (Rong et al., 2022), MoRF and LeRF curves and their symmetric difference.

"A Consistent and Efficient Evaluation Strategy for Attribution Methods" (ICML
2022) removes the top (MoRF, most relevant first) or the bottom (LeRF, least
relevant first) p% of an attribution map's pixels and measures the model on the
result. The removed pixels are replaced by the ``road`` fill
(:func:`advspatial.regions.imputation.noisy_linear_imputation`): each one the
weighted mean of its neighbours plus a little noise, so the fill draws no edge
along the mask and the mask's shape does not tell the model which class to
predict (the "class information leakage" that makes zero/blur deletion rank
maps inconsistently).

A faithful map gives a MoRF curve that falls fast and a LeRF curve that stays
high; :func:`road_symmetric` is their difference averaged over the percentages
(LeRF − MoRF, the area between the curves on the percentages' grid: the
symmetric relevance gain of Blücher et al., 2024), per image. Positive = the
map's top pixels matter more than its bottom pixels.

Definitions follow Quantus 0.6's ``quantus.ROAD`` (its MoRF accuracy equals
:func:`road_curves`' ``morf_correct`` averaged over images, tested to 1e-5):
k = ``int(H*W*p/100)`` pixels are removed at percentage p, the ``p`` are
independent (each starts from the clean image), accuracy is
``argmax(model(x_filled)) == y``. Unlike Quantus, tied map values are ordered
by per-image random numbers keyed by ``(seed, sample id)`` (never by position),
and the fill's noise is keyed the same way, so an image's curve is the same in
any batch; LeRF removes the last k pixels of the same order.

Cost: one model forward pass and one sparse solve per image per percentage and
curve. Measured on one CPU core (tiny CNN, so the solves dominate), the default 9
percentages x 2 curves: 28 ms per 32x32 RGB image (200 images: 5.7 s); 2.8 s per
224x224 image with scattered regions, 4.3 s with one contiguous blob (larger
connected regions cost more fill-in in the LU factorization).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ..errors import ConfigError, ShapeError
from ..models.hooks import frozen_eval
from ..runtime import model_device, per_sample_noise, sample_ids_or_range, stream_seed
from ..regions.checks import check_maps
from ..regions.imputation import noisy_linear_imputation

#: ROAD's grid of removed percentages (Rong et al., 2022, figures: 10% to 90% in steps of 10)
ROAD_PERCENTAGES: tuple[float, ...] = (10, 20, 30, 40, 50, 60, 70, 80, 90)
#: the ROAD fill's noise standard deviation (Rong et al.; Quantus' default)
ROAD_NOISE = 0.01
#: what :func:`road_curves` records per image besides correctness
SCORES = ("probability", "logit")

# seed streams (runtime.stream_seed): the pixel order's tie-break and the fill's noise are independent
_STREAM_TIES = 31
_STREAM_NOISE = 32


def pixel_order(maps: torch.Tensor, seed: int = 0, sample_ids: torch.Tensor | None = None) -> torch.Tensor:
    """(N, H*W) flat pixel indices of each map from the largest value to the smallest.

    Ties are ordered by uniform numbers drawn per image from ``(seed, sample_ids[i])``,
    never by position, so the order is the same in any batch.
    """
    check_maps(maps)
    n, h, w = maps.shape
    ids = sample_ids_or_range(n, sample_ids)
    tie = per_sample_noise((n, h * w), seed, ids, device=maps.device)
    by_tie = tie.argsort(dim=1, stable=True)
    values = maps.reshape(n, h * w).gather(1, by_tie)
    return by_tie.gather(1, values.argsort(dim=1, descending=True, stable=True))


def removal_count(height: int, width: int, percentage: float) -> int:
    """Pixels removed at ``percentage``: ``int(H*W*p/100)``, Quantus' rounding (down)."""
    return int(height * width * percentage / 100)


def order_region(order: torch.Tensor, height: int, width: int, percentage: float, most_relevant: bool) -> torch.Tensor:
    """(N,H,W) bool region of the first (MoRF) or last (LeRF) :func:`removal_count` pixels of ``order``."""
    n = order.shape[0]
    k = removal_count(height, width, percentage)
    picked = order[:, :k] if most_relevant else order[:, order.shape[1] - k:]
    region = torch.zeros(n, height * width, dtype=torch.bool, device=order.device)
    region.scatter_(1, picked, True)
    return region.reshape(n, height, width)


@dataclass(frozen=True)
class RoadCurves:
    """Per-image MoRF and LeRF curves of one set of maps.

    ``*_correct`` (N,P) bool: the prediction after the removal is the label;
    ``*_score`` (N,P): the label's ``score`` (softmax ``probability`` or ``logit``).
    Column j belongs to ``percentages[j]``.
    """

    percentages: tuple[float, ...]
    morf_correct: torch.Tensor
    lerf_correct: torch.Tensor
    morf_score: torch.Tensor
    lerf_score: torch.Tensor
    score: str

    def accuracy(self, curve: str = "morf") -> torch.Tensor:
        """(P,) accuracy over images after each removal (``curve``: ``morf`` or ``lerf``); Quantus' ROAD value."""
        return self._pick(curve, "correct").double().mean(0)

    def symmetric(self, on: str = "correct") -> torch.Tensor:
        """(N,) :func:`road_symmetric` of these curves."""
        return road_symmetric(self, on)

    def as_dict(self) -> dict[str, Any]:
        """Plain numbers: the percentages, mean accuracy and score per curve, the mean symmetric scores."""
        return {
            "percentages": list(self.percentages), "score": self.score, "n": int(self.morf_correct.shape[0]),
            "morf_accuracy": self.accuracy("morf").tolist(), "lerf_accuracy": self.accuracy("lerf").tolist(),
            "morf_score": self.morf_score.double().mean(0).tolist(),
            "lerf_score": self.lerf_score.double().mean(0).tolist(),
            "symmetric_accuracy": float(self.symmetric("correct").double().mean()),
            "symmetric_score": float(self.symmetric("score").double().mean()),
        }

    def _pick(self, curve: str, what: str) -> torch.Tensor:
        if curve not in ("morf", "lerf"):
            raise ConfigError(f"curve {curve!r} unknown; valid: lerf, morf")
        if what not in ("correct", "score"):
            raise ConfigError(f"on={what!r} unknown; valid: correct, score")
        return getattr(self, f"{curve}_{what}")


def road_symmetric(curves: RoadCurves, on: str = "correct") -> torch.Tensor:
    """(N,) per image: the mean over the percentages of LeRF − MoRF (``on`` ``correct`` or ``score``).

    In [-1, 1] for correctness. 0 for a map that orders pixels no better than at
    random; positive when removing the map's top pixels hurts the model more
    than removing its bottom pixels.
    """
    lerf = curves._pick("lerf", on).double()
    morf = curves._pick("morf", on).double()
    return (lerf - morf).mean(1) if lerf.shape[1] else lerf.new_full((lerf.shape[0],), float("nan"))


def _check_percentages(percentages: Sequence[float]) -> tuple[float, ...]:
    values = tuple(float(p) for p in percentages)
    if not values or any(not 0 <= p <= 100 for p in values):
        raise ConfigError(f"percentages={list(percentages)!r} are out of range; valid: one or more values in [0, 100]")
    return values


def road_curve(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, maps: torch.Tensor,
    percentages: Sequence[float] = ROAD_PERCENTAGES, *, most_relevant: bool = True, noise: float = ROAD_NOISE,
    seed: int = 0, sample_ids: torch.Tensor | None = None, score: str = "probability",
) -> tuple[torch.Tensor, torch.Tensor]:
    """One ROAD curve: ((N,P) correct, (N,P) label score) after imputing the top (MoRF) or bottom (LeRF) p%.

    ``maps`` (N,H,W) rank the pixels (:func:`pixel_order`); each percentage
    imputes its pixels in the clean images with the ``road`` fill (``noise``
    standard deviation) and runs ``model`` once, in eval mode without gradients.
    """
    pct = _check_percentages(percentages)
    if score not in SCORES:
        raise ConfigError(f"score={score!r} unknown; valid: {', '.join(SCORES)}")
    check_maps(maps)
    n, _, h, w = x.shape
    if tuple(maps.shape) != (n, h, w):
        raise ShapeError(f"maps must have shape {(n, h, w)} (N,H,W) for images {tuple(x.shape)}, "
                         f"got {tuple(maps.shape)}")
    ids = sample_ids_or_range(n, sample_ids)
    device = model_device(model)
    x, y = x.detach().to(device), torch.as_tensor(y).to(device).long()
    order = pixel_order(maps.detach().to(device), stream_seed(seed, _STREAM_TIES), ids)
    correct, scores = [], []
    with frozen_eval(model), torch.no_grad():
        for p in pct:
            region = order_region(order, h, w, p, most_relevant)
            filled = noisy_linear_imputation(x, region, noise, stream_seed(seed, _STREAM_NOISE), ids)
            logits = model(filled)
            values = logits.softmax(1) if score == "probability" else logits
            correct.append(logits.argmax(1) == y)
            scores.append(values.gather(1, y[:, None]).squeeze(1).float())
    return torch.stack(correct, 1).cpu(), torch.stack(scores, 1).cpu()


def road_curves(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, maps: torch.Tensor,
    percentages: Sequence[float] = ROAD_PERCENTAGES, *, noise: float = ROAD_NOISE, seed: int = 0,
    sample_ids: torch.Tensor | None = None, score: str = "probability",
) -> RoadCurves:
    """MoRF and LeRF :func:`road_curve` of ``maps`` on images ``x`` (N,C,H,W) with labels ``y``.

    Both curves use the same pixel order and the same fill noise per image (common
    random numbers), so their difference (:func:`road_symmetric`) compares the two
    ends of the order rather than two noise draws.
    """
    kw: dict[str, Any] = dict(noise=noise, seed=seed, sample_ids=sample_ids, score=score)
    morf = road_curve(model, x, y, maps, percentages, most_relevant=True, **kw)
    lerf = road_curve(model, x, y, maps, percentages, most_relevant=False, **kw)
    return RoadCurves(_check_percentages(percentages), morf[0], lerf[0], morf[1], lerf[1], score)


__all__ = [
    "ROAD_NOISE", "ROAD_PERCENTAGES", "RoadCurves", "SCORES", "order_region", "pixel_order", "removal_count",
    "road_curve", "road_curves", "road_symmetric",
]
