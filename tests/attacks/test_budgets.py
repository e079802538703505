"""Budgets owned by the attacks: every registered attack takes the budget it declares, and a
build from a :class:`Budget` equals the experiments' former per-attack budget tables for the attacks they named."""

from __future__ import annotations

from dataclasses import fields
from typing import Any

import pytest
from helpers import GapNet
from torch import nn

from advspatial.attacks import Attack, Budget, attack_for_budget, list_attacks, make_attack
from advspatial.attacks.budgets import DATASET_BUDGETS, DATASET_EPS, budget_arguments

NAMES = sorted(list_attacks())
#: a budget with every field set, each to a value no attack has as its default
FULL = Budget(eps_linf=0.05, eps_l2=0.7, steps=3, cw_steps=4, cw_search_steps=2, onepixel_popsize=7,
              onepixel_steps=2)


@pytest.mark.parametrize("name", NAMES)
def test_every_registered_attack_declares_its_budget_itself(name):
    """A registered attack says which budgets it takes (possibly none), rather than inheriting the base's empty
    declaration by omission; the arguments it names exist and are not fixed by its registration."""
    spec = list_attacks()[name]
    declaring = next(c for c in spec.cls.__mro__ if "budget_params" in vars(c))
    assert declaring is not Attack, f"{spec.cls.__name__} declares no budget_params"
    budget_fields = {f.name for f in fields(Budget)}
    for arg, budget_field in spec.cls.budget_params.items():
        assert arg in spec.parameters(), (name, arg)
        assert budget_field in budget_fields, (name, budget_field)
    assert set(spec.cls.budget_fixed) <= set(spec.parameters())


@pytest.mark.parametrize("name", NAMES)
def test_every_registered_attack_uses_the_budget(name):
    attack = attack_for_budget(name, GapNet(), FULL, seed=3)
    assert attack.seed == 3
    for arg, budget_field in type(attack).budget_params.items():
        assert getattr(attack, arg) == getattr(FULL, budget_field), (name, arg)


@pytest.mark.parametrize("name", NAMES)
def test_an_empty_budget_keeps_the_class_defaults(name):
    assert attack_for_budget(name, GapNet(), Budget()).params() == make_attack(name, GapNet()).params()


def test_explicit_parameters_win_over_the_budget():
    attack = attack_for_budget("autoattack", GapNet(), FULL, n_restarts=1, steps=9)
    assert (attack.eps, attack.steps, attack.n_restarts) == (0.05, 9, 1)


def test_pgd_takes_the_auto_step_only_with_a_budget():
    assert attack_for_budget("pgd", GapNet(), Budget(eps_linf=0.1, steps=4)).alpha == pytest.approx(2.5 * 0.1 / 4)
    assert budget_arguments(list_attacks()["pgd"].cls, Budget(cw_steps=3)) == {}


def test_budget_from_settings_reads_the_named_fields():
    class Settings:
        eps, steps, block = 0.2, 7, 4

    budget = Budget.from_settings(Settings(), {"eps_linf": "eps", "steps": "steps", "pse_block": "block"})
    assert budget == Budget(eps_linf=0.2, steps=7)
    assert budget.given() == {"eps_linf": 0.2, "steps": 7}


def test_dataset_budgets_take_their_radii_from_the_table_by_norm():
    for preset, budget in DATASET_BUDGETS.items():
        assert (budget.eps_linf, budget.eps_l2) == (DATASET_EPS[preset]["linf"], DATASET_EPS[preset]["l2"])


# -- equal to the experiments' former tables --------------------------------------------------------------

def former_table(eps: float, steps: int, cw_steps: int, cw_search_steps: int, eps_l2: float | None = None,
                 popsize: int | None = None, maxiter: int | None = None) -> dict[str, dict[str, Any]]:
    """The per-attack budgets the experiments' own attack tables gave before budgets moved to the attacks."""
    linf = {"eps": eps, "alpha": "auto", "steps": steps}
    return {
        "fgsm": {"eps": eps}, "pgd": linf, "pgd-linf": linf, "bim": linf,
        "pgd-l2": {"eps": eps_l2, "alpha": "auto", "steps": steps},
        "cw-l2": {"steps": cw_steps, "binary_search_steps": cw_search_steps},
        "onepixel": {"popsize": popsize, "maxiter": maxiter}, "kpixel": {"popsize": popsize, "maxiter": maxiter},
    }


def spatial_table(config: Any) -> dict[str, dict[str, Any]]:
    """the maps experiment's old table: every attack above."""
    return former_table(config.eps_linf, config.steps, config.cw_steps, config.cw_search_steps, config.eps_l2,
                        config.onepixel_popsize, config.onepixel_steps)


def pse_table(config: Any) -> dict[str, dict[str, Any]]:
    """the pse experiment's old table: FGSM, PGD, BIM and CW-L2 (eps is pse's ``eps``)."""
    table = former_table(config.eps, config.steps, config.cw_steps, config.cw_search_steps)
    return {name: table[name] for name in ("fgsm", "pgd", "bim", "cw-l2")}


def configs() -> list[Any]:
    """(experiment, config, its former table) at the defaults and at the cifar10 and imagenet presets."""
    from advspatial.experiments.pse import PSEConfig
    from advspatial.experiments.spatial import SpatialConfig

    return [pytest.param(experiment, with_preset(cls, preset), table, id=f"{experiment}-{preset}")
            for preset in ("none", "cifar10", "imagenet")
            for experiment, cls, table in (("spatial", SpatialConfig, spatial_table), ("pse", PSEConfig, pse_table))]


def with_preset(cls: Any, preset: str) -> Any:
    """The config ``cls`` with the preset's budgets in its own fields."""
    from advspatial.experiments.presets import preset_values

    return cls(**preset_values(cls.PRESET_FIELDS, preset))


@pytest.mark.parametrize("experiment, config, table", configs())
def test_budget_builds_equal_the_former_tables(experiment, config, table):
    model: nn.Module = GapNet()
    budget = Budget.from_settings(config, config.PRESET_FIELDS)
    for name, params in table(config).items():
        former = make_attack(name, model, seed=config.seed, **params)
        now = attack_for_budget(name, model, budget, seed=config.seed)
        assert type(now) is type(former) and now.params() == former.params(), (experiment, name)
