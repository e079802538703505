"""Per-image evaluation of the neutralization defence against a fixed attack, with its controls (METHODS.md §2).

:func:`evaluate_defence` scores images an attack already made (a *non-adaptive*
attacker: it did not know the defence) and returns one prediction per image
and setting, so an experiment can write per-image rows and pair them in tests.

The control is what makes a defence number mean something: as many pixels as
the neutralized region, drawn at random from the pixels the defence may touch
(outside the RoI) and matched on composition (see
:meth:`NeutralizedModel.control_region`), ``draws`` times per image, each draw
keyed by the image's *global* id so that no result depends on the batching.
The clean-restore diagnostic (the region's clean pixels put back instead of
the fill) shows what the region holds; it is not a bound on anything.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, fields
from functools import partial

import torch
from torch import nn

from ..errors import ShapeError, check_range
from ..models.hooks import frozen_eval
from ..regions.checks import check_region
from ..regions.controls import random_regions_like
from ..regions.fills import put_back
from ..stacked_runs import forward_stacked
from ..runtime import batch_slices, model_device, sample_ids_or_range, to_host
from .neutralize import NeutralizedModel


@dataclass
class DefenceEvaluation:
    """Per-image results on the CPU: int64 classes or pixel counts; ``*_control_*`` are (N, draws).

    Columns (``pred_*`` are predicted classes; compare with ``label``):

    - ``label``: the true class.
    - ``pred_clean``: undefended model on the clean image x.
    - ``pred_adv``: undefended model on x_adv (the attack's own success).
    - ``pred_defended_adv``: deployable defence on x_adv (region from x_adv alone).
    - ``pred_control_adv``: its control, one column per draw.
    - ``pred_clean_restore_adv``: diagnostic: the deployable region of x_adv
      with the clean pixels of x put back instead of the fill.
    - ``pred_defended_clean``, ``pred_control_clean``: the clean cost and its control.
    - ``n_region_adv``, ``n_region_clean``: pixels neutralized on x_adv and on x.
    - ``pred_oracle_adv``: oracle: the given region (from the true perturbation) filled on x_adv.
    - ``pred_oracle_control_adv``: its control: as many pixels drawn inside the
      oracle RoA (anywhere when no RoA is given), matched likewise, per draw.
    - ``pred_oracle_clean_restore``: the oracle region with the clean pixels put back.
    - ``n_region_oracle``: pixels in the oracle region.

    The oracle columns are None when no oracle regions were given; the clean-cost
    columns are None with ``clean=False``.
    """

    label: torch.Tensor
    pred_clean: torch.Tensor
    pred_adv: torch.Tensor
    pred_defended_adv: torch.Tensor
    pred_control_adv: torch.Tensor
    pred_clean_restore_adv: torch.Tensor
    n_region_adv: torch.Tensor
    pred_defended_clean: torch.Tensor | None = None
    pred_control_clean: torch.Tensor | None = None
    n_region_clean: torch.Tensor | None = None
    pred_oracle_adv: torch.Tensor | None = None
    pred_oracle_control_adv: torch.Tensor | None = None
    pred_oracle_clean_restore: torch.Tensor | None = None
    n_region_oracle: torch.Tensor | None = None

    def __len__(self) -> int:
        return int(self.label.shape[0])

    def columns(self) -> dict[str, torch.Tensor]:
        """The columns that are present, by name."""
        return {f.name: getattr(self, f.name) for f in fields(self) if getattr(self, f.name) is not None}

    def correct(self, name: str) -> torch.Tensor:
        """(N,) float: 1/0 per image for a single prediction, the share of correct draws for a control."""
        pred = self.columns()[name]
        hits = pred == (self.label[:, None] if pred.ndim == 2 else self.label)
        return hits.float().mean(1) if pred.ndim == 2 else hits.float()

    def rows(self) -> list[dict[str, float]]:
        """One dict per image (for per_image CSV rows); a control becomes its share of correct draws."""
        cols = {k: (self.correct(k) if v.ndim == 2 else v).tolist() for k, v in self.columns().items()}
        return [{k: v[i] for k, v in cols.items()} for i in range(len(self))]

    def accuracies(self) -> dict[str, float]:
        """Accuracy of every ``pred_*`` column (a control: the mean over its draws)."""
        return {k.removeprefix("pred_"): float(self.correct(k).mean()) if len(self) else float("nan")
                for k in self.columns() if k.startswith("pred_")}


def evaluate_defence(
    model: nn.Module,
    defended: NeutralizedModel,
    x: torch.Tensor,
    y: torch.Tensor,
    x_adv: torch.Tensor,
    oracle_regions: torch.Tensor | None = None,
    oracle_roa: torch.Tensor | None = None,
    *,
    sample_ids: torch.Tensor | None = None,
    draws: int = 10,
    batch_size: int = 256,
    clean: bool = True,
) -> DefenceEvaluation:
    """Evaluate the defence on clean and adversarial images; see :class:`DefenceEvaluation`.

    ``model`` is the undefended classifier and ``defended`` the deployable
    defence (its mode is ignored: its maps, fraction, fill, seed and control
    matching are used; the deployable region is computed on x_adv and on x).
    ``oracle_regions`` (N,H,W) bool are neutralized regions computed with the
    true perturbation and ``oracle_roa`` their RoA, inside which the oracle's
    control is drawn. Control draw d of image i depends only on
    ``(defended.seed, d, sample_ids[i])`` (default ids ``0..N-1``): pass the
    images' global ids, and results do not depend on ``batch_size``.
    """
    n = x.shape[0]
    check_range("draws", draws, 1)
    if x_adv.shape != x.shape:
        raise ShapeError(f"x_adv {tuple(x_adv.shape)} must have the shape of x {tuple(x.shape)}")
    y = torch.as_tensor(y).long()
    if y.shape != (n,):
        raise ShapeError(f"labels must have shape ({n},), got {tuple(y.shape)}")
    ids_all = sample_ids_or_range(n, sample_ids)
    oracle = oracle_regions is not None
    if oracle_regions is not None:
        oracle_regions = check_region(oracle_regions, x)
    if oracle_roa is not None:
        oracle_roa = check_region(oracle_roa, x)
    parts: dict[str, list[torch.Tensor]] = {}
    device = model_device(model)
    with frozen_eval(model), frozen_eval(defended), torch.no_grad():
        for sl in batch_slices(n, batch_size):
            xb, ab = x[sl].to(device), x_adv[sl].to(device)
            batch = _batch_columns(model, defended, xb, ab, ids_all[sl], draws, clean,
                                   None if oracle_regions is None else oracle_regions[sl].to(device),
                                   None if oracle_roa is None else oracle_roa[sl].to(device))
            parts.setdefault("label", []).append(y[sl].cpu())
            for name, value in to_host(batch).items():
                parts.setdefault(name, []).append(value)
    if n == 0:
        return _empty(oracle, clean, draws)
    return DefenceEvaluation(**{k: torch.cat(v) for k, v in parts.items()})


#: a column's images: one batch (a (B,) prediction column) or a list of draws (a (B, draws) column)
_Images = Callable[[], torch.Tensor] | list[Callable[[], torch.Tensor]]


def _batch_columns(model: nn.Module, defended: NeutralizedModel, xb: torch.Tensor, ab: torch.Tensor,
                   ids: torch.Tensor, draws: int, clean: bool, oracle: torch.Tensor | None,
                   oracle_roa: torch.Tensor | None) -> dict[str, torch.Tensor]:
    """One batch's columns, on the device. The regions are chosen first (the deployable selection needs the
    model's maps); then every filled image goes to the classifier as one round
    (:func:`~advspatial.stacked_runs.forward_stacked`), the undefended predictions as another."""
    images: dict[str, _Images] = {}
    counts: dict[str, torch.Tensor] = {}
    for tag, x in (("adv", ab), ("clean", xb)) if clean else (("adv", ab),):
        selection = defended.select(x, sample_ids=ids)
        region = selection.neutralized
        images[f"pred_defended_{tag}"] = partial(defended.fill_fn, x, region)
        images[f"pred_control_{tag}"] = [partial(defended.fill_fn, x, c)
                                         for c in defended.control_regions(x, selection, range(draws), ids)]
        counts[f"n_region_{tag}"] = region.flatten(1).sum(1)
        if tag == "adv":
            images["pred_clean_restore_adv"] = partial(put_back, ab, region, xb)
    if oracle is not None:
        strata = defended.strata(ab, oracle)
        images["pred_oracle_adv"] = partial(defended.fill_fn, ab, oracle)
        images["pred_oracle_control_adv"] = [
            partial(defended.fill_fn, ab, c) for c in random_regions_like(
                oracle, defended.seed, within=oracle_roa, strata=strata, draws=range(draws), sample_ids=ids)]
        images["pred_oracle_clean_restore"] = partial(put_back, ab, oracle, xb)
        counts["n_region_oracle"] = oracle.flatten(1).sum(1)
    pred_clean, pred_adv = (p.argmax(1) for p in forward_stacked(model, iter((xb, ab))))
    makers = [m for v in images.values() for m in (v if isinstance(v, list) else [v])]
    preds = iter([p.argmax(1) for p in forward_stacked(defended.model, (make() for make in makers))])
    out = {"pred_clean": pred_clean, "pred_adv": pred_adv}
    for name, v in images.items():
        out[name] = torch.stack([next(preds) for _ in v], dim=1) if isinstance(v, list) else next(preds)
    return {**out, **counts}


def _empty(oracle: bool, clean: bool, draws: int) -> DefenceEvaluation:
    names = [f.name for f in fields(DefenceEvaluation)
             if (oracle or "oracle" not in f.name) and (clean or not f.name.endswith("_clean"))]
    return DefenceEvaluation(**{k: torch.zeros((0, draws) if "_control_" in k else 0, dtype=torch.long)
                                for k in names})
