"""AutoAttack-style ensemble (Croce & Hein, 2020): the worst case per image over several attacks.

The components run in order, each only on the images no earlier component (and
not the clean image itself) has fooled; an image keeps the first adversarial
found for it. Default L-inf components: APGD-CE, APGD-DLR, Square (AutoAttack's
"standard" version has APGD-T and FAB-T in the middle; add ``"apgdt"`` to
``components`` for the former). The robust accuracy of the ensemble is therefore
at most that of each component alone with the same parameters and seed (with
per-sample seeding, a component's result on an image does not depend on which
other images it is run with).

Parameters reach the components that accept them: ``eps``, ``seed``, ``steps``
(APGD), ``n_queries`` (Square), ``eot_iter``; ``n_restarts`` goes to the
untargeted APGD components only; APGD-T diversifies over target classes instead
and Square runs one restart, as in AutoAttack.

Randomized models (``eot_iter > 1``), as AutoAttack's ``rand`` version: gradient
components average ``eot_iter`` gradients and run with ``early_stop=False`` (one
fooled forward pass is no proof), and components that cannot average (Square)
are skipped (:attr:`skipped_components`). Which images count as fooled, on the
clean image and after each component, is still decided by one forward pass, so
evaluate a randomized defence's final ``x_adv`` more than once.

After :meth:`perturb` (hence after ``__call__`` / ``run``):

* ``last_clean_success``: (N,) bool, adversarial without any perturbation;
* ``last_breakdown``: ``{component: (N,) bool}`` in run order, the images *first*
  fooled by that component (disjoint; clean successes are in none), so the
  robust accuracy after the first k components is
  ``1 - mean(clean | b_1 | ... | b_k)`` (:meth:`robust_accuracy_curve`).

Images no component fooled get the first component's output (for APGD, its
highest-loss point), inside the budget. ``queries`` sums the components' queries
plus one forward pass on ``x`` and one per component to check its output.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from ..errors import ConfigError, check_range, unknown_name
from .apgd import APGD
from .apgd_targeted import APGDT
from .base import Attack, enforce_constraints, list_attacks, make_attack, register_attack
from .gradients import is_adversarial
from .square import Square

DEFAULT_LINF = ("apgd-ce", "apgd-dlr", "square")
DEFAULT_L2 = ("apgd-l2", "apgd-l2-dlr", "square-l2")


@register_attack("autoattack", "AutoAttack-style L-inf ensemble: APGD-CE, APGD-DLR, Square, worst case per image")
class AutoAttack(Attack):
    """Worst case per image over ``components`` (registered attack names) in the L-inf ball.

    Args:
        model: classifier on [0,1] images returning logits.
        eps: radius of the ball shared by every component.
        steps: APGD steps per run, >= 1.
        n_restarts: restarts of the untargeted APGD components, >= 1.
        n_queries: Square's queries, >= 1.
        components: registered attack names, run in this order; each must have an
            ``eps`` budget in this norm. Duplicates are not allowed.
        eot_iter: gradients averaged per step (randomized models); > 1 skips Square.
        seed: seed of every component.
        eot_early_stop: with ``eot_iter > 1``, still stop an image once *every*
            one of a step's ``eot_iter`` passes is fooled (much cheaper when
            most images fall; the final examples must still be scored on fresh
            draws). Default False: AutoAttack's ``rand`` behaviour.

    Examples:
        >>> import torch
        >>> _ = torch.manual_seed(0)
        >>> from torch import nn
        >>> model = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),  # any nn.Module
        ...                       nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),  # taking images
        ...                       nn.Flatten(), nn.Linear(16 * 7 * 7, 10)).eval()  # in [0,1]; untrained here
        >>> images = torch.rand(12, 1, 28, 28)            # (N,C,H,W) in [0,1]
        >>> labels = model(images).argmax(1)              # (N,) labels: here the model's own predictions
        >>> from advspatial.attacks import AutoAttack
        >>> attack = AutoAttack(model, eps=8 / 255, steps=5, n_restarts=1, n_queries=50)
        >>> x_adv = attack(images, labels)                 # per image the worst case over APGD-CE, APGD-DLR, Square
        >>> bool((x_adv - images).abs().max() <= 8 / 255 + 1e-6)
        True
    """

    name = "autoattack"
    norm = "linf"
    budget_params = {"eps": "eps_linf", "steps": "steps"}
    eps_max: float | None = 1.0

    def __init__(
        self, model: nn.Module, eps: float = 8 / 255, steps: int = 100, n_restarts: int = 5,
        n_queries: int = 5000, components: Sequence[str] = DEFAULT_LINF, eot_iter: int = 1, seed: int = 0,
        eot_early_stop: bool = False,
    ) -> None:
        super().__init__(model, seed)
        self.eot_early_stop = bool(eot_early_stop)
        check_range("eps", eps, 0.0, self.eps_max)
        check_range("steps", steps, 1, None)
        check_range("n_restarts", n_restarts, 1, None)
        check_range("n_queries", n_queries, 1, None)
        check_range("eot_iter", eot_iter, 1, None)
        self.eps, self.steps, self.n_restarts = float(eps), int(steps), int(n_restarts)
        self.n_queries, self.eot_iter = int(n_queries), int(eot_iter)
        self.components = self._check_components(components)
        self.attacks: dict[str, Attack] = {}
        self.skipped_components: tuple[str, ...] = ()
        for name in self.components:
            if self.eot_iter > 1 and "eot_iter" not in list_attacks()[name].parameters():
                self.skipped_components += (name,)
            else:
                self.attacks[name] = make_attack(name, model, **self._component_params(name))
        if not self.attacks:
            raise ConfigError(f"with eot_iter={self.eot_iter} none of {list(self.components)} can run "
                              "(they cannot average gradients); add a gradient attack such as apgd-ce")
        self.last_breakdown: dict[str, torch.Tensor] = {}
        self.last_clean_success: torch.Tensor | None = None

    def on(self, model: nn.Module) -> AutoAttack:
        """The same ensemble on ``model``, each component moved with it."""
        twin = super().on(model)
        assert isinstance(twin, AutoAttack)
        twin.attacks = {name: attack.on(model) for name, attack in self.attacks.items()}
        return twin

    @property
    def active_components(self) -> tuple[str, ...]:
        """The components that run, in order (``components`` minus ``skipped_components``)."""
        return tuple(self.attacks)

    def _check_components(self, components: Sequence[str]) -> tuple[str, ...]:
        """The component names (a sequence of names, or one string of comma-separated names as ``--param``
        gives it), checked; anything else is a one-line :class:`ConfigError`."""
        if isinstance(components, str):
            names = tuple(part.strip() for part in components.split(",") if part.strip())
        elif isinstance(components, Sequence) and all(isinstance(c, str) for c in components):
            names = tuple(components)
        else:
            raise ConfigError(f"components={components!r} is not valid; valid: registered attack names, e.g. "
                              f"{','.join(DEFAULT_LINF)}")
        if not names:
            raise ConfigError("components must name at least one attack")
        if len(set(names)) != len(names):
            raise ConfigError(f"components must not repeat a name; got {list(names)}")
        registry = list_attacks()
        for name in names:
            if name not in registry:
                raise unknown_name("component attack", name, registry)
            spec = registry[name]
            nested = issubclass(spec.cls, AutoAttack)
            if nested or spec.cls.norm != self.norm or "eps" not in spec.parameters():
                budgeted = sorted(k for k, s in registry.items() if s.cls.norm == self.norm
                                  and "eps" in s.parameters() and not issubclass(s.cls, AutoAttack))
                what = "an ensemble (ensembles do not nest)" if nested else f"not an eps-bounded {self.norm} attack"
                raise ConfigError(f"component {name!r} is {what}; valid: {', '.join(budgeted)}")
        return names

    def _component_params(self, name: str) -> dict[str, object]:
        """The ensemble's parameters that component ``name`` accepts (see the module docstring)."""
        spec = list_attacks()[name]
        accepted = spec.parameters()
        wanted: dict[str, object] = {"eps": self.eps, "seed": self.seed, "steps": self.steps,
                                     "n_queries": self.n_queries}
        if issubclass(spec.cls, APGD) and not issubclass(spec.cls, APGDT):
            wanted["n_restarts"] = self.n_restarts
        elif issubclass(spec.cls, (APGDT, Square)):
            wanted["n_restarts"] = 1
        if self.eot_iter > 1:
            wanted.update(eot_iter=self.eot_iter, early_stop=self.eot_early_stop)
        return {k: v for k, v in wanted.items() if k in accepted}

    def perturb(
        self, x: torch.Tensor, y: torch.Tensor, mask: torch.Tensor | None,
        target: torch.Tensor | None, sample_ids: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if target is not None:
            untargetable = [n for n, a in self.attacks.items() if not a.supports_targeted]
            if untargetable:
                raise ConfigError(f"component(s) {untargetable} have no targeted mode; drop them for a targeted run")
        queries = torch.ones(x.shape[0], dtype=torch.long, device=x.device)
        with torch.no_grad():
            fooled = is_adversarial(self.model(x), y, target)
        self.last_clean_success = fooled.clone()
        x_adv, breakdown = x.clone(), {}
        for k, (name, attack) in enumerate(self.attacks.items()):
            hit = torch.zeros_like(fooled)
            rows = (~fooled).nonzero().flatten()
            if rows.numel():
                out, adv, q = self._attack_rows(attack, x, y, mask, target, sample_ids, rows)
                queries[rows] += q + 1
                keep = adv if k > 0 else torch.ones_like(adv)
                x_adv[rows[keep]] = out[keep]
                hit[rows[adv]] = True
                fooled |= hit
            breakdown[name] = hit
        self.last_breakdown = breakdown
        return x_adv, queries

    def _attack_rows(
        self, attack: Attack, x: torch.Tensor, y: torch.Tensor, mask: torch.Tensor | None,
        target: torch.Tensor | None, sample_ids: torch.Tensor, rows: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(x_adv, adversarial, queries) of one component on the images ``rows``."""
        xs, ys = x[rows], y[rows]
        ms = None if mask is None else mask[rows]
        ts = None if target is None else target[rows]
        out, q = attack.perturb(xs, ys, ms, ts, sample_ids[rows.cpu()])
        out = enforce_constraints(xs, out.detach(), ms)
        with torch.no_grad():
            adv = is_adversarial(self.model(out), ys, ts)
        return out, adv, q

    def robust_accuracy_curve(self) -> dict[str, float]:
        """``{"clean": accuracy, component: robust accuracy after it, ...}`` of the last batch."""
        if self.last_clean_success is None:
            raise ConfigError("robust_accuracy_curve needs a batch: call the attack first")
        fooled = self.last_clean_success.clone()
        curve = {"clean": 1.0 - float(fooled.float().mean())}
        for name, hit in self.last_breakdown.items():
            fooled |= hit
            curve[name] = 1.0 - float(fooled.float().mean())
        return curve


@register_attack("autoattack-l2", "AutoAttack-style ensemble in the L2 ball: APGD-CE, APGD-DLR, Square L2")
class AutoAttackL2(AutoAttack):
    """The ensemble in the L2 ball (same arguments as :class:`AutoAttack`; eps >= 0 is an L2 radius).

    Examples:
        >>> import torch
        >>> _ = torch.manual_seed(0)
        >>> from torch import nn
        >>> model = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),  # any nn.Module
        ...                       nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),  # taking images
        ...                       nn.Flatten(), nn.Linear(16 * 7 * 7, 10)).eval()  # in [0,1]; untrained here
        >>> images = torch.rand(12, 1, 28, 28)            # (N,C,H,W) in [0,1]
        >>> labels = model(images).argmax(1)              # (N,) labels: here the model's own predictions
        >>> from advspatial.attacks import AutoAttackL2
        >>> x_adv = AutoAttackL2(model, eps=1.0, steps=5, n_restarts=1, n_queries=50)(images, labels)
        >>> bool((x_adv - images).flatten(1).norm(dim=1).max() <= 1.0 + 1e-4)
        True
    """

    name = "autoattack-l2"
    norm = "l2"
    budget_params = {"eps": "eps_l2", "steps": "steps"}
    eps_max = None

    def __init__(
        self, model: nn.Module, eps: float = 0.5, steps: int = 100, n_restarts: int = 5,
        n_queries: int = 5000, components: Sequence[str] = DEFAULT_L2, eot_iter: int = 1, seed: int = 0,
        eot_early_stop: bool = False,
    ) -> None:
        super().__init__(model, eps, steps, n_restarts, n_queries, components, eot_iter, seed, eot_early_stop)


__all__ = ["AutoAttack", "AutoAttackL2", "DEFAULT_L2", "DEFAULT_LINF"]
