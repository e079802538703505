"""The attack API shared by every attack: mask semantics, bookkeeping, results.

Usage, as torchattacks users expect::

    atk = PGD(model, eps=0.1, steps=10)
    x_adv = atk(x, y)                                   # tensor
    result = atk.run(x, y, mask=background, target=t)   # AttackResult

Conventions (DESIGN.md): images are float in [0,1], (N,C,H,W). A mask is
broadcastable to x with values in [0,1]; the perturbation where the mask is 0 is
exactly zero, and a fractional mask scales each update *before* the norm step
(an L2 step then spends its whole budget inside the mask). Attacks run the model
in eval mode with parameter gradients off, and restore both afterwards.

Randomness is per sample: noise for sample ``i`` comes from a generator seeded
with ``(seed, sample_id[i])``, so a batch attacked together equals each image
attacked alone with the same ``sample_ids``.
"""

from __future__ import annotations

import copy
import functools
import inspect
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Any, ClassVar, final

import torch
from torch import nn

from ..errors import ConfigError, ShapeError, images_outside
from ..host_syncs import check_read, hold, holds
from ..models.hooks import frozen_eval
from ..models.outputs import check_finite_logits, check_logits, guarded_spec
from ..registry import Registry
from ..runtime import min_max_each, model_device, outside_unit_interval, sample_ids_or_range

__all__ = [
    "ATTACKS", "NORMS", "Attack", "AttackResult", "AttackSpec", "apply_mask", "enforce_constraints", "list_attacks",
    "make_attack", "margin", "perturbation_norms", "prepare_mask", "register_attack",
]

NORMS = ("linf", "l2", "l0", "ssim")


@dataclass
class AttackResult:
    """Outcome of an attack on a batch.

    Attributes:
        x_adv: (N,C,H,W) adversarial images in [0,1].
        success: (N,) bool; untargeted: prediction != label; targeted: prediction == target.
        clean_pred, adv_pred: (N,) int64 predictions on x and x_adv.
        labels: (N,) int64 true labels given to the attack.
        target: (N,) int64 target classes, or None for an untargeted attack.
        l0: (N,) number of pixel positions (H,W) changed in any channel.
        l2, linf: (N,) norms of the perturbation over all elements.
        queries: (N,) model evaluations spent on each image (a forward pass, or a
            forward+backward for a gradient, counts as one).
    """

    x_adv: torch.Tensor
    success: torch.Tensor
    clean_pred: torch.Tensor
    adv_pred: torch.Tensor
    labels: torch.Tensor
    target: torch.Tensor | None
    l0: torch.Tensor
    l2: torch.Tensor
    linf: torch.Tensor
    queries: torch.Tensor

    def __len__(self) -> int:
        return int(self.x_adv.shape[0])

    @property
    def success_rate(self) -> float:
        return float(self.success.float().mean()) if len(self) else float("nan")

    def to(self, device: torch.device | str) -> AttackResult:
        moved: dict[str, Any] = {f.name: getattr(self, f.name) for f in fields(self)}
        out: dict[str, Any] = {k: None if v is None else v.to(device) for k, v in moved.items()}
        return AttackResult(**out)

    @staticmethod
    def cat(results: Sequence[AttackResult]) -> AttackResult:
        """Concatenate results of consecutive batches."""
        if not results:
            raise ValueError("cannot concatenate an empty list of results")
        merged: dict[str, Any] = {}
        for f in fields(AttackResult):
            parts = [getattr(r, f.name) for r in results]
            merged[f.name] = None if any(p is None for p in parts) else torch.cat(parts)
        return AttackResult(**merged)


def perturbation_norms(delta: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-image (L0 over pixel positions, L2, L-inf) of ``delta`` (N,C,H,W)."""
    flat = delta.flatten(1)
    l0 = (delta != 0).any(dim=1).flatten(1).sum(1)
    return l0, flat.norm(p=2, dim=1), flat.abs().amax(dim=1) if flat.shape[1] else flat.sum(1)


#: the one-line errors of values outside [0, 1]
IMAGES_OUTSIDE = images_outside()
MASK_OUTSIDE = "mask values must lie in [0, 1]"


def _outside(error: str, _offending: int, _checked: int) -> ConfigError:
    return ConfigError(error)


def check_unit_ranges(x: torch.Tensor | None, mask: torch.Tensor | None) -> None:
    """Images and a mask (on one device; either may be None) in [0, 1], checked in one host read
    (:func:`~advspatial.runtime.min_max_each`); the images' error first."""
    named = [(t, error) for t, error in ((x, IMAGES_OUTSIDE), (mask, MASK_OUTSIDE)) if t is not None and t.numel()]
    if named and holds(named[0][0]):  # on a device inside a stage: read at the stage's end, with the same error
        for t, error in named:
            hold(error, outside_unit_interval(t), 1, functools.partial(_outside, error))
        return
    with check_read():
        ranges = min_max_each([t for t, _ in named])
    for (low, high), (_, error) in zip(ranges, named, strict=True):
        if low < 0 or high > 1:
            raise ConfigError(error)


def prepare_mask(mask: torch.Tensor | None, x: torch.Tensor, check_values: bool = True) -> torch.Tensor | None:
    """Validate a mask and broadcast it to x's shape (float on x's device), or None.

    Accepts (H,W), (N,H,W) (expanded over channels), or anything broadcastable
    to (N,C,H,W); values must lie in [0,1] (``check_values=False``: the caller checks them, with the images', in
    one read: :func:`check_unit_ranges`).
    """
    if mask is None:
        return None
    mask = torch.as_tensor(mask, device=x.device)
    if mask.dtype == torch.bool:
        mask = mask.to(x.dtype)
    mask = mask.to(x.dtype)
    if mask.ndim == 3 and mask.shape[0] == x.shape[0] and mask.shape[1:] == x.shape[2:]:
        mask = mask.unsqueeze(1)
    try:
        mask = torch.broadcast_to(mask, x.shape)
    except RuntimeError as exc:
        raise ShapeError(f"mask of shape {tuple(mask.shape)} does not broadcast to images {tuple(x.shape)}") from exc
    if check_values:
        check_unit_ranges(None, mask)
    return mask


def apply_mask(delta: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """``delta * mask`` (identity without a mask)."""
    return delta if mask is None else delta * mask


def enforce_constraints(x: torch.Tensor, x_adv: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Clamp to [0,1] and make the perturbation exactly 0 where the mask is 0."""
    x_adv = x_adv.clamp(0.0, 1.0)
    if mask is not None:
        x_adv = torch.where(mask == 0, x, x_adv)
    return x_adv


def keyed_ids(model: nn.Module, sample_ids: torch.Tensor | None) -> dict[str, torch.Tensor]:
    """The keyword that passes the rows' sample ids (on the host) to a model that keys its random draws by them (a
    randomized defence sets ``keys_draws_by_id``), else none: each image's draws then follow its id, not its row,
    so an attack's examples do not depend on the images attacked with it or on the rows an early stop removed."""
    return {"sample_ids": sample_ids} if sample_ids is not None and getattr(model, "keys_draws_by_id", False) else {}


def call_keyed(model: nn.Module, x: torch.Tensor, sample_ids: torch.Tensor | None) -> torch.Tensor:
    """``model(x)``, with the rows' sample ids where the model keys its draws by them (:func:`keyed_ids`)."""
    return model(x, **keyed_ids(model, sample_ids))


def draws_keyed(model: nn.Module, x: torch.Tensor, draws: int, sample_ids: torch.Tensor | None) -> torch.Tensor:
    """A randomized model's ``forward_draws(x, draws)`` (its next ``draws`` passes in one call), with the rows'
    sample ids where it keys its draws by them (:func:`keyed_ids`)."""
    return model.forward_draws(x, draws, **keyed_ids(model, sample_ids))  # type: ignore[operator]


def margin(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """``z_y - max_{j != y} z_j`` per row (positive while the label still wins)."""
    true = logits.gather(1, labels[:, None]).squeeze(1)
    others = logits.scatter(1, labels[:, None], float("-inf"))
    return true - others.amax(dim=1)


class Attack:
    """Base class. Subclasses implement :meth:`perturb` and validate their parameters.

    ``perturb(x, y, mask, target, sample_ids)`` returns ``(x_adv, queries)``
    where ``queries`` is an (N,) int64 count of model evaluations per image.
    The base class validates inputs, runs the model frozen in eval mode,
    enforces the box and the mask, and computes predictions and norms.

    :meth:`__call__` and :meth:`run` are final (a subclass that defines either is refused when it is
    defined): every attack keeps the same rules (validation, the box, the mask, success judged on a full
    forward pass). A subclass overrides only the step, :meth:`perturb`, and the hooks :meth:`_clean_logits`,
    :meth:`_adversarial_logits` and :meth:`_release`.
    """

    name: ClassVar[str] = "attack"
    norm: ClassVar[str] = "linf"
    supports_targeted: ClassVar[bool] = True
    #: constructor argument -> the :class:`~advspatial.attacks.budgets.Budget` field that feeds it when an
    #: experiment builds the attack from its budgets (``attacks.budgets.attack_for_budget``); empty: none does
    budget_params: ClassVar[Mapping[str, str]] = {}
    #: constructor arguments a build from budgets sets to fixed values (PGD's ``alpha="auto"``: the step
    #: follows the budget's eps and steps)
    budget_fixed: ClassVar[Mapping[str, Any]] = {}

    def __init__(self, model: nn.Module, seed: int = 0) -> None:
        self.model = model
        self.seed = int(seed)

    def on(self, model: nn.Module) -> Attack:
        """The same attack, every parameter kept, on ``model`` (a shallow copy): e.g. on the model called in chunks
        (:class:`~advspatial.stacked_runs.RowChunks`), whose outputs are the model's."""
        twin = copy.copy(self)
        twin.model = model
        return twin

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        overridden = sorted({"__call__", "run"} & set(vars(cls)))
        if overridden:
            raise TypeError(f"{cls.__name__} defines {' and '.join(overridden)}: Attack.__call__ and Attack.run are "
                            "final; override perturb (the step) or the hooks _clean_logits, _adversarial_logits, "
                            "_release")

    # -- public API -------------------------------------------------------------
    @final
    def __call__(self, x: torch.Tensor, y: torch.Tensor, *, mask: torch.Tensor | None = None,
                 target: torch.Tensor | None = None, sample_ids: torch.Tensor | None = None) -> torch.Tensor:
        """The adversarial images alone: :meth:`run`'s ``x_adv`` without its two extra model evaluations."""
        x, y, target, mask_full, ids = self._prepare(x, y, mask, target, sample_ids)
        try:
            with frozen_eval(self.model):
                return self._constrained_perturb(x, y, mask_full, target, ids)[0]
        finally:
            self._release()

    @final
    def run(self, x: torch.Tensor, y: torch.Tensor, *, mask: torch.Tensor | None = None,
            target: torch.Tensor | None = None, sample_ids: torch.Tensor | None = None) -> AttackResult:
        """Attack ``x`` (labels ``y``); targeted when ``target`` is given."""
        x, y, target, mask_full, ids = self._prepare(x, y, mask, target, sample_ids)
        try:
            with frozen_eval(self.model):
                spec = guarded_spec(self.model)
                with torch.no_grad():  # checked here too: an attack may compute them without calling the model
                    clean_logits = check_logits(self._clean_logits(x), spec, len(x), finite=False)
                x_adv, queries = self._constrained_perturb(x, y, mask_full, target, ids)
                with torch.no_grad():
                    adv_logits = check_logits(self._adversarial_logits(x_adv), spec, len(x), finite=False)
                    check_finite_logits(spec, clean_logits, adv_logits)  # both in one read, the clean ones' error first
                clean_pred, adv_pred = clean_logits.argmax(1), adv_logits.argmax(1)
        finally:
            self._release()
        success = adv_pred == target if target is not None else adv_pred != y
        l0, l2, linf = perturbation_norms(x_adv - x)
        return AttackResult(x_adv, success, clean_pred, adv_pred, y, target, l0, l2, linf, queries + 1)

    def perturb(
        self, x: torch.Tensor, y: torch.Tensor, mask: torch.Tensor | None,
        target: torch.Tensor | None, sample_ids: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    def _clean_logits(self, x: torch.Tensor) -> torch.Tensor:
        """The model's logits on the clean images, for :meth:`run`'s clean predictions.

        An attack that computes them anyway (bit for bit the model's) may override
        this to save the pass; called in eval mode under ``no_grad``, before :meth:`perturb`.
        """
        return self.model(x)

    def _adversarial_logits(self, x_adv: torch.Tensor) -> torch.Tensor:
        """The model's logits on the returned images, for :meth:`run`'s success verdict.

        A full forward pass, independent of how the attack evaluated its candidates; an
        attack may override it only with a pass equal to ``model(x_adv)`` bit for bit.
        """
        return self.model(x_adv)

    def _release(self) -> None:
        """Drop what the attack kept for one call (e.g. an evaluator built for the clean pass and reused by
        :meth:`perturb`); called when :meth:`run` or :meth:`__call__` ends, also on an error. Nothing by default."""

    # -- helpers ----------------------------------------------------------------
    def _constrained_perturb(
        self, x: torch.Tensor, y: torch.Tensor, mask: torch.Tensor | None,
        target: torch.Tensor | None, sample_ids: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """:meth:`perturb`'s ``(x_adv, queries)`` with x_adv detached, in the box and exact outside the mask."""
        x_adv, queries = self.perturb(x, y, mask, target, sample_ids)
        return enforce_constraints(x, x_adv.detach(), mask), queries

    def _prepare(
        self, x: torch.Tensor, y: torch.Tensor, mask: torch.Tensor | None,
        target: torch.Tensor | None, sample_ids: torch.Tensor | None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, torch.Tensor | None, torch.Tensor]:
        """Validated ``(x, y, target, mask broadcast to x, sample_ids on the CPU)``."""
        x, y, target = self._validate(x, y, target)
        mask_full = prepare_mask(mask, x, check_values=False)
        check_unit_ranges(x, mask_full)  # the images' and the mask's values in one read
        return x, y, target, mask_full, sample_ids_or_range(x.shape[0], sample_ids)

    def _validate(
        self, x: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        if not isinstance(x, torch.Tensor) or x.ndim != 4:
            raise ShapeError(f"images must be a (N,C,H,W) tensor, got {getattr(x, 'shape', type(x))}")
        if not x.is_floating_point():
            raise ShapeError(f"images must be floating point in [0,1], got dtype {x.dtype}")
        device = model_device(self.model)
        x = x.detach().to(device)
        y = torch.as_tensor(y, device=device).long()
        if y.shape != (x.shape[0],):
            raise ShapeError(f"labels must have shape ({x.shape[0]},), got {tuple(y.shape)}")
        if target is not None:
            if not self.supports_targeted:
                raise ConfigError(f"attack {self.name!r} has no targeted mode")
            target = torch.as_tensor(target, device=device).long()
            if target.shape != (x.shape[0],):
                raise ShapeError(f"target must have shape ({x.shape[0]},), got {tuple(target.shape)}")
        return x, y, target

    def params(self) -> dict[str, Any]:
        """The constructor parameters of this attack with their current values."""
        sig = inspect.signature(type(self).__init__)
        return {k: getattr(self, k) for k in sig.parameters if k not in ("self", "model") and hasattr(self, k)}

    def __repr__(self) -> str:
        inner = ", ".join(f"{k}={v!r}" for k, v in self.params().items())
        return f"{type(self).__name__}({inner})"


# -- registry ------------------------------------------------------------------

@dataclass(frozen=True)
class AttackSpec:
    name: str
    cls: type[Attack]
    fixed: dict[str, Any]
    description: str

    def parameters(self) -> dict[str, inspect.Parameter]:
        """Typed, defaulted constructor parameters a user can set (fixed ones excluded)."""
        sig = inspect.signature(self.cls.__init__)
        return {k: p for k, p in sig.parameters.items() if k not in ("self", "model") and k not in self.fixed}


#: every registered attack (``advspatial list attacks`` iterates it)
ATTACKS: Registry[AttackSpec] = Registry("attack")
_REGISTRY = ATTACKS.live  # the former name of its storage, which tests patch


def register_attack(name: str, description: str, **fixed: Any) -> Callable[[type[Attack]], type[Attack]]:
    """Register an attack class under ``name`` with some constructor arguments fixed (a taken name is an error)."""

    def wrap(cls: type[Attack]) -> type[Attack]:
        ATTACKS.register(name, AttackSpec(name, cls, dict(fixed), description))
        return cls

    return wrap


def list_attacks() -> dict[str, AttackSpec]:
    return ATTACKS.items()


def make_attack(name: str, model: nn.Module, **params: Any) -> Attack:
    """Build a registered attack; unknown parameter names raise :class:`ConfigError`."""
    spec = ATTACKS.get(name)
    allowed = spec.parameters()
    unknown = set(params) - set(allowed)
    if unknown:
        raise ConfigError(f"attack {name!r} has no parameter(s) {sorted(unknown)}; valid: {sorted(allowed)}")
    return spec.cls(model, **spec.fixed, **params)
