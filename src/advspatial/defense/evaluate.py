"""Per-image evaluation of the neutralization defence with its controls (METHODS.md §2).

:func:`evaluate_defence` returns one prediction per image and setting, so an
experiment can write per-image rows and aggregate them any way it likes. A
defence helps only where it beats its control (same pixel count at random
positions); the upper bound shows what the region could give with a perfect
fill (the clean pixels put back).
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import torch
from torch import nn

from ..attacks.base import frozen_eval
from ..errors import ShapeError
from ..runtime import batch_slices, model_device
from .fills import check_region, put_back
from ..regions import random_region_like
from .neutralize import NeutralizedModel


@dataclass
class DefenceEvaluation:
    """Per-image results, each an (N,) tensor on the CPU (int64 classes or pixel counts).

    Columns (``pred_*`` are predicted classes; compare with ``label``):

    - ``label``: the true class.
    - ``pred_clean``: undefended model on the clean image x.
    - ``pred_adv``: undefended model on x_adv (the attack's own success).
    - ``pred_defended_adv``: deployable defence on x_adv (region from x_adv alone).
    - ``pred_random_adv``: control: as many pixels as that region, at random positions, on x_adv.
    - ``pred_upper_bound_adv``: diagnostic: the deployable region of x_adv with the
      clean pixels of x put back instead of the fill.
    - ``pred_defended_clean``: clean cost: deployable defence on x.
    - ``pred_random_clean``: control of the clean cost (random positions, same count).
    - ``n_region_adv``, ``n_region_clean``: pixels neutralized on x_adv and on x.
    - ``pred_oracle_adv``: oracle: the given region (from the true perturbation) filled on x_adv.
    - ``pred_oracle_random_adv``: its control: as many pixels at random positions
      inside the oracle RoA (anywhere when no RoA is given).
    - ``pred_oracle_upper_bound``: the oracle region with the clean pixels put back.
    - ``n_region_oracle``: pixels in the oracle region.

    The oracle columns are None when no oracle regions were given; the clean-cost
    columns are None with ``clean=False`` (they do not depend on the attack, so a
    caller evaluating several attacks computes them once).
    """

    label: torch.Tensor
    pred_clean: torch.Tensor
    pred_adv: torch.Tensor
    pred_defended_adv: torch.Tensor
    pred_random_adv: torch.Tensor
    pred_upper_bound_adv: torch.Tensor
    n_region_adv: torch.Tensor
    pred_defended_clean: torch.Tensor | None = None
    pred_random_clean: torch.Tensor | None = None
    n_region_clean: torch.Tensor | None = None
    pred_oracle_adv: torch.Tensor | None = None
    pred_oracle_random_adv: torch.Tensor | None = None
    pred_oracle_upper_bound: torch.Tensor | None = None
    n_region_oracle: torch.Tensor | None = None

    def __len__(self) -> int:
        return int(self.label.shape[0])

    def columns(self) -> dict[str, torch.Tensor]:
        """The columns that are present, by name."""
        return {f.name: getattr(self, f.name) for f in fields(self) if getattr(self, f.name) is not None}

    def rows(self) -> list[dict[str, int]]:
        """One dict per image (for per_image CSV rows)."""
        cols = {k: v.tolist() for k, v in self.columns().items()}
        return [{k: v[i] for k, v in cols.items()} for i in range(len(self))]

    def accuracies(self) -> dict[str, float]:
        """Accuracy (prediction == label) of every ``pred_*`` column."""
        return {k.removeprefix("pred_"): float((v == self.label).float().mean()) if len(self) else float("nan")
                for k, v in self.columns().items() if k.startswith("pred_")}


def _predict(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    return model(x).argmax(dim=1).cpu()


def evaluate_defence(
    model: nn.Module,
    defended: NeutralizedModel,
    x: torch.Tensor,
    y: torch.Tensor,
    x_adv: torch.Tensor,
    oracle_regions: torch.Tensor | None = None,
    oracle_roa: torch.Tensor | None = None,
    *,
    seed: int = 0,
    batch_size: int = 256,
    clean: bool = True,
) -> DefenceEvaluation:
    """Evaluate the defence on clean and adversarial images; see :class:`DefenceEvaluation`.

    ``model`` is the undefended classifier and ``defended`` the deployable
    defence (its mode is ignored: its maps, fraction and fill are used; the
    deployable region is computed on x_adv and on x). ``oracle_regions``
    (N,H,W) bool are neutralized regions computed with the true perturbation
    (e.g. ``select_regions(importance, attack_map(x, x_adv), ...)``) and
    ``oracle_roa`` their RoA, inside which the oracle's control is drawn. Random
    controls for image i are drawn from ``(seed, i)``, so results do not depend
    on ``batch_size``.
    """
    n = x.shape[0]
    if x_adv.shape != x.shape:
        raise ShapeError(f"x_adv {tuple(x_adv.shape)} must have the shape of x {tuple(x.shape)}")
    y = torch.as_tensor(y).long()
    if y.shape != (n,):
        raise ShapeError(f"labels must have shape ({n},), got {tuple(y.shape)}")
    oracle = oracle_regions is not None
    if oracle:
        oracle_regions = check_region(oracle_regions, x)
    if oracle_roa is not None:
        oracle_roa = check_region(oracle_roa, x)
    parts: dict[str, list[torch.Tensor]] = {}

    def add(name: str, value: torch.Tensor) -> None:
        parts.setdefault(name, []).append(value.cpu())

    device = model_device(model)
    with frozen_eval(model), frozen_eval(defended):
        for sl in batch_slices(n, batch_size):
            ids = torch.arange(sl.start, sl.stop)
            xb, ab = x[sl].to(device), x_adv[sl].to(device)
            with torch.no_grad():
                add("label", y[sl])
                add("pred_clean", _predict(model, xb))
                add("pred_adv", _predict(model, ab))
                for tag, images in (("adv", ab), ("clean", xb)) if clean else (("adv", ab),):
                    region = defended.select(images, sample_ids=ids).neutralized
                    control = random_region_like(region, seed, sample_ids=ids)
                    add(f"pred_defended_{tag}", _predict(defended.model, defended.fill_fn(images, region)))
                    add(f"pred_random_{tag}", _predict(defended.model, defended.fill_fn(images, control)))
                    add(f"n_region_{tag}", region.flatten(1).sum(1))
                    if tag == "adv":
                        add("pred_upper_bound_adv", _predict(defended.model, put_back(ab, region, xb)))
                if oracle:
                    region = oracle_regions[sl].to(device)
                    within = None if oracle_roa is None else oracle_roa[sl].to(device)
                    control = random_region_like(region, seed, within=within, sample_ids=ids)
                    add("pred_oracle_adv", _predict(defended.model, defended.fill_fn(ab, region)))
                    add("pred_oracle_random_adv", _predict(defended.model, defended.fill_fn(ab, control)))
                    add("pred_oracle_upper_bound", _predict(defended.model, put_back(ab, region, xb)))
                    add("n_region_oracle", region.flatten(1).sum(1))
    if n == 0:
        empty = torch.zeros(0, dtype=torch.long)
        names = [f.name for f in fields(DefenceEvaluation)
                 if (oracle or "oracle" not in f.name) and (clean or not f.name.endswith("_clean"))]
        return DefenceEvaluation(**{k: empty for k in names})
    return DefenceEvaluation(**{k: torch.cat(v) for k, v in parts.items()})
