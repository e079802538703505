"""Unit level of the promotion–suppression analysis (METHODS.md §5).

A *unit* is a channel of a layer's output (dimension 1: (N,C,H,W) feature maps or
(N,C) vectors). This module measures how much an adversarial perturbation moves
each unit, ranks units by that change, and tests masking the most sensitive
units as a defence (forward hook that zeroes them), against masking the same
number of random units.

Hooks are registered only inside context managers and are removed on exit,
exceptions included.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from ..errors import ConfigError, ModelError, ShapeError
from ..models.hooks import frozen_eval, named_layer
from ..runtime import batch_slices, make_generator, model_device

Layer = str | nn.Module
RANK_BY = ("mean_abs", "relative", "signed", "abs_signed")


@dataclass
class UnitChange:
    """Per-unit activation change between clean and adversarial inputs.

    Attributes (all (U,)):
        mean_abs: mean over images and positions of ``|A(x') − A(x)|``.
        signed_mean: mean of ``A(x') − A(x)`` (> 0: the attack excites the unit).
        clean_mean_abs: mean of ``|A(x)|``, the unit's usual scale.
    """

    mean_abs: torch.Tensor
    signed_mean: torch.Tensor
    clean_mean_abs: torch.Tensor

    @property
    def relative(self) -> torch.Tensor:
        """``mean_abs / clean_mean_abs`` (0 where the unit is silent on clean images)."""
        scale = self.clean_mean_abs
        return torch.where(scale > 0, self.mean_abs / scale.clamp_min(1e-30), torch.zeros_like(scale))

    def __len__(self) -> int:
        return int(self.mean_abs.numel())


@contextlib.contextmanager
def capture(model: nn.Module, layer: Layer) -> Iterator[list[torch.Tensor]]:
    """Collect the layer's outputs (detached) in a list while inside the block."""
    outputs: list[torch.Tensor] = []

    def hook(_module: nn.Module, _inputs: object, output: object) -> None:
        outputs.append(_as_tensor(output).detach().clone())  # clone: a later in-place op may overwrite it

    handle = named_layer(model, layer)[1].register_forward_hook(hook)
    try:
        yield outputs
    finally:
        handle.remove()


@contextlib.contextmanager
def mask_units(model: nn.Module, layer: Layer, units: Sequence[int] | torch.Tensor) -> Iterator[nn.Module]:
    """Zero the given channels of ``layer``'s output in every forward pass inside the block.

    The output is replaced out of place (gradients flow through the kept channels);
    the hook is removed on exit and on exceptions. An empty ``units`` changes nothing.
    """
    units = torch.as_tensor(units, dtype=torch.long).flatten()

    def hook(_module: nn.Module, _inputs: object, output: object) -> torch.Tensor:
        out = _as_tensor(output)
        if units.numel() and (units.min() < 0 or units.max() >= out.shape[1]):
            raise ConfigError(f"units must lie in 0..{out.shape[1] - 1} for this layer, got {units.tolist()}")
        keep = torch.ones(out.shape[1], dtype=out.dtype, device=out.device)
        keep[units.to(out.device)] = 0
        return out * keep.view(1, -1, *([1] * (out.ndim - 2)))

    handle = named_layer(model, layer)[1].register_forward_hook(hook)
    try:
        yield model
    finally:
        handle.remove()


def unit_activation_change(
    model: nn.Module, layer: Layer, x: torch.Tensor, x_adv: torch.Tensor, batch_size: int = 128
) -> UnitChange:
    """Per-unit change of ``layer``'s activation from ``x`` to ``x_adv`` (streams over batches)."""
    if x.shape != x_adv.shape or x.ndim < 2:
        raise ShapeError(f"x and x_adv must have the same (N,...) shape, got {tuple(x.shape)} and {tuple(x_adv.shape)}")
    device = model_device(model)
    sums: dict[str, torch.Tensor] = {}
    count = 0
    with frozen_eval(model), torch.no_grad(), capture(model, layer) as outs:
        for sl in batch_slices(x.shape[0], batch_size):
            model(x[sl].to(device))
            model(x_adv[sl].to(device))
            clean, adv = outs.pop(0).double(), outs.pop(0).double()
            diff = adv - clean
            dims = [0, *range(2, clean.ndim)]
            for key, value in (("abs", diff.abs()), ("signed", diff), ("clean", clean.abs())):
                sums[key] = sums.get(key, 0) + value.sum(dims)
            count += clean.numel() // clean.shape[1]
    if count == 0:
        raise ShapeError("x is empty: need at least one image")
    return UnitChange(
        mean_abs=(sums["abs"] / count).float(),
        signed_mean=(sums["signed"] / count).float(),
        clean_mean_abs=(sums["clean"] / count).float(),
    )


def rank_sensitive_units(change: UnitChange, by: str = "mean_abs") -> torch.Tensor:
    """Unit indices, most sensitive first (ties: lower index first).

    ``by``: ``mean_abs`` (default), ``relative`` (mean_abs / clean scale),
    ``signed`` (most excited first), ``abs_signed`` (|signed mean|).
    """
    scores = {
        "mean_abs": lambda: change.mean_abs,
        "relative": lambda: change.relative,
        "signed": lambda: change.signed_mean,
        "abs_signed": lambda: change.signed_mean.abs(),
    }
    if by not in scores:
        raise ConfigError(f"unknown ranking {by!r}; valid: {', '.join(RANK_BY)}")
    return torch.sort(scores[by](), descending=True, stable=True).indices


@dataclass
class MaskingCurve:
    """Accuracy as the top-k sensitive units are masked, with a random-units control.

    Attributes:
        ks: (K,) numbers of masked units.
        clean_acc, robust_acc: (K,) accuracy on x and on the fixed x_adv, top-k masked.
        random_clean_acc, random_robust_acc: (K,) the same, averaged over ``n_random``
            draws of k units chosen uniformly from all units.
        random_clean_all, random_robust_all: (n_random,K) the individual draws.
    """

    ks: torch.Tensor
    clean_acc: torch.Tensor
    robust_acc: torch.Tensor
    random_clean_acc: torch.Tensor
    random_robust_acc: torch.Tensor
    random_clean_all: torch.Tensor
    random_robust_all: torch.Tensor

    def rows(self) -> list[dict[str, float]]:
        """One dict per k, for tables and CSV."""
        return [
            {
                "k": int(k), "clean_acc": float(c), "robust_acc": float(r),
                "random_clean_acc": float(rc), "random_robust_acc": float(rr),
            }
            for k, c, r, rc, rr in zip(self.ks, self.clean_acc, self.robust_acc, self.random_clean_acc,
                                       self.random_robust_acc, strict=True)
        ]


def masking_curve(
    model: nn.Module,
    layer: Layer,
    ranked_units: Sequence[int] | torch.Tensor,
    x: torch.Tensor,
    y: torch.Tensor,
    x_adv: torch.Tensor,
    ks: Sequence[int] | None = None,
    *,
    n_random: int = 5,
    seed: int = 0,
    batch_size: int = 256,
) -> MaskingCurve:
    """Clean and robust accuracy as more top-sensitive units are masked.

    ``ranked_units`` is the ranking (e.g. :func:`rank_sensitive_units`); for each k in
    ``ks`` (default 0, 1, 2, 4, ... then all ranked units) the first k are
    zeroed with :func:`mask_units`. Control: k units drawn uniformly at random from
    all U units, ``n_random`` seeded draws per k.

    Caveat — non-adaptive: robust accuracy is measured on the *fixed* ``x_adv``
    crafted against the unmasked model. An attacker who knows the mask can attack
    the masked model directly, so these numbers are an upper bound on the
    defence's worth, not a robustness claim.
    """
    if x.shape != x_adv.shape or y.shape != (x.shape[0],):
        raise ShapeError(f"need x, x_adv (N,...) of one shape and y (N,); got {tuple(x.shape)}, {tuple(x_adv.shape)}, "
                         f"{tuple(y.shape)}")
    if n_random < 0:
        raise ConfigError(f"n_random={n_random} is out of range; valid: >= 0")
    ranked = torch.as_tensor(ranked_units, dtype=torch.long).flatten()
    num_units = _num_units(model, layer, x[:1])
    if ranked.numel() and (ranked.min() < 0 or ranked.max() >= num_units):
        raise ConfigError(f"ranked_units must lie in 0..{num_units - 1}")
    ks_t = _default_ks(ranked.numel()) if ks is None else torch.as_tensor(list(ks), dtype=torch.long)
    if ks_t.numel() and (ks_t.min() < 0 or ks_t.max() > ranked.numel()):
        raise ConfigError(f"ks must lie in 0..{ranked.numel()} (the number of ranked units), got {ks_t.tolist()}")

    def accuracies(units: torch.Tensor) -> tuple[float, float]:
        with mask_units(model, layer, units):
            return _accuracy(model, x, y, batch_size), _accuracy(model, x_adv, y, batch_size)

    top = torch.tensor([accuracies(ranked[: int(k)]) for k in ks_t], dtype=torch.float64).reshape(-1, 2)
    gen = make_generator(seed)
    rand = torch.tensor(
        [[accuracies(torch.randperm(num_units, generator=gen)[: int(k)]) for k in ks_t] for _ in range(n_random)],
        dtype=torch.float64,
    ).reshape(n_random, len(ks_t), 2)
    return MaskingCurve(
        ks=ks_t, clean_acc=top[:, 0], robust_acc=top[:, 1],
        random_clean_acc=rand[..., 0].mean(0) if n_random else torch.full((len(ks_t),), torch.nan,
                                                                          dtype=torch.float64),
        random_robust_acc=rand[..., 1].mean(0) if n_random else torch.full((len(ks_t),), torch.nan,
                                                                           dtype=torch.float64),
        random_clean_all=rand[..., 0], random_robust_all=rand[..., 1],
    )


# ----------------------------------------------------------------------------- internals


def _as_tensor(output: object) -> torch.Tensor:
    if not isinstance(output, torch.Tensor) or output.ndim < 2:
        raise ModelError("the chosen layer must output one tensor of shape (N,C,...); pick another layer")
    return output


def _num_units(model: nn.Module, layer: Layer, probe: torch.Tensor) -> int:
    with frozen_eval(model), torch.no_grad(), capture(model, layer) as outs:
        model(probe.to(model_device(model)))
    if not outs:
        raise ConfigError("the chosen layer was not used in the model's forward pass")
    return int(outs[0].shape[1])


def _default_ks(num_units: int) -> torch.Tensor:
    ks = [0]
    k = 1
    while k < num_units:
        ks.append(k)
        k *= 2
    if num_units:
        ks.append(num_units)
    return torch.tensor(ks, dtype=torch.long)


def _accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int) -> float:
    device = model_device(model)
    correct = 0
    with frozen_eval(model), torch.no_grad():
        for sl in batch_slices(x.shape[0], batch_size):
            correct += int((model(x[sl].to(device)).argmax(1).cpu() == y[sl].cpu()).sum())
    return correct / max(x.shape[0], 1)
