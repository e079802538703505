"""Everything a user can name is registered: every attack class and every experiment the package defines.

An attack or experiment that is defined but not registered cannot be run from the CLI, is missing from
``advspatial list`` and escapes the registry-driven contract tests (tests/attacks/test_contract.py, the
experiment contract tests), so its definition alone must fail here.
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import sys
import types

import pytest

import advspatial.attacks
import advspatial.experiments
from advspatial.attacks import list_attacks
from advspatial.attacks.base import Attack
from advspatial.experiments import experiments
from advspatial.experiments.settings import ExperimentConfig


def modules_of(package) -> list[str]:  # type: ignore[no-untyped-def]
    """Every module of ``package``, subpackages included, imported."""
    names = [info.name for info in pkgutil.walk_packages(package.__path__, package.__name__ + ".")]
    for name in names:
        importlib.import_module(name)
    return names


def defined_in(module_names: list[str], base: type) -> dict[str, type]:
    """Concrete subclasses of ``base`` defined (not imported) in the given modules, by qualified name."""
    found = {}
    for name in module_names:
        for _, value in inspect.getmembers(importlib.import_module(name), inspect.isclass):
            if issubclass(value, base) and value is not base and value.__module__ == name \
                    and not inspect.isabstract(value):
                found[f"{name}.{value.__qualname__}"] = value
    return found


def test_every_attack_class_is_registered() -> None:
    registered = {spec.cls for spec in list_attacks().values()}
    classes = defined_in(modules_of(advspatial.attacks), Attack)
    assert classes, "no attack classes found: the search is broken"
    missing = sorted(name for name, cls in classes.items() if cls not in registered)
    assert not missing, f"attack classes defined but not registered (register_attack): {missing}"


def test_every_experiment_config_is_registered() -> None:
    registered = {exp.config_cls for exp in experiments().values()}
    configs = defined_in(modules_of(advspatial.experiments), ExperimentConfig)
    assert configs, "no experiment configs found: the search is broken"
    # a config that other configs extend holds shared settings (the gate's, the measurement's), not an experiment
    bases = {base for cls in configs.values() for base in cls.__mro__[1:]}
    missing = sorted(name for name, cls in configs.items() if cls not in registered and cls not in bases)
    assert not missing, f"experiment configs defined but not registered (register_experiment): {missing}"


@pytest.mark.parametrize("base", [Attack, ExperimentConfig])
def test_the_search_finds_an_unregistered_class(base: type, monkeypatch: pytest.MonkeyPatch) -> None:
    """The check above can fail: a class made on the spot, in a module of its own, is found and is unregistered."""
    module = types.ModuleType("advspatial_fake_module")
    cls = type("Unregistered", (base,), {"__module__": module.__name__})
    module.Unregistered = cls  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, module.__name__, module)
    assert list(defined_in([module.__name__], base).values()) == [cls]
