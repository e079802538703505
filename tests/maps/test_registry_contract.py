"""One importance method, one module: the definition is the only place a method is written, the rest derives from it.

Every registered method lives in a module of its own in ``advspatial.maps.importance`` (the modules with a
leading underscore hold what several methods share and register none); its shortcut in ``advspatial.maps`` is the
function its definition makes; and a method defined in one new file is registered, listed, described and run by
``importance_map`` with no other edit.
"""

from __future__ import annotations

import pkgutil
import sys
import textwrap
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from helpers import GapNet

import advspatial.maps
import advspatial.maps.importance as importance_package
from advspatial.errors import ConfigError
from advspatial.maps import describe_importance_methods, importance_map, list_importance_methods
from advspatial.maps.importance import IMPORTANCE_METHODS, ImportanceMethod, importance_functions

PACKAGE = importance_package.__name__
#: the names ``advspatial.maps`` exports beside the importance methods' shortcuts
NOT_SHORTCUTS = {"AttackMap", "Maps", "attack_map", "compute_maps", "contribution", "gradient", "magnitude",
                 "describe_attack_maps", "describe_importance_methods", "importance_map", "list_attack_maps",
                 "list_importance_methods", "register_attack_map", "register_importance_method"}


def map_modules() -> list[str]:
    """The package's map modules: each of its modules without a leading underscore."""
    return [f"{PACKAGE}.{info.name}" for info in pkgutil.iter_modules(importance_package.__path__)
            if not info.name.startswith("_")]


def placement_problems(definitions: list[ImportanceMethod], modules: list[str]) -> list[str]:
    """What breaks 'one registered method per map module': a method defined outside the package's map modules,
    a module defining two methods, a map module registering none (a file the package does not import)."""
    problems = []
    for spec in definitions:
        package, _, leaf = spec.module.rpartition(".")
        if package != PACKAGE or leaf.startswith("_"):
            problems.append(f"{spec.name!r} is defined in {spec.module}, not in a map module of {PACKAGE}")
    count = Counter(spec.module for spec in definitions)
    problems += [f"{module} defines {n} methods" for module, n in sorted(count.items()) if n > 1]
    problems += [f"{module} registers no method" for module in modules if module not in count]
    return problems


def test_every_registered_method_has_a_module_of_its_own() -> None:
    definitions = list(IMPORTANCE_METHODS.items().values())
    assert len(map_modules()) >= 14, "the map modules are not found: the search is broken"
    assert placement_problems(definitions, map_modules()) == []
    assert len(definitions) == len(map_modules())


def _method(module: str) -> ImportanceMethod:
    def fn(model: object, x: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
        """A method for the placement check."""
        return x

    fn.__module__ = module
    return ImportanceMethod(module.rpartition(".")[2], fn)


def test_the_placement_check_finds_each_kind_of_problem() -> None:
    definitions = [_method(f"{PACKAGE}.gradcam"), _method(f"{PACKAGE}.gradcam"), _method("somewhere.else"),
                   _method(f"{PACKAGE}._registry"), _method(f"{PACKAGE}.saliency")]
    problems = placement_problems(definitions, [f"{PACKAGE}.saliency", f"{PACKAGE}.forgotten"])
    assert problems == [
        f"'else' is defined in somewhere.else, not in a map module of {PACKAGE}",
        f"'_registry' is defined in {PACKAGE}._registry, not in a map module of {PACKAGE}",
        f"{PACKAGE}.gradcam defines 2 methods",
        f"{PACKAGE}.forgotten registers no method",
    ]


def test_each_shortcut_is_the_function_its_definition_makes() -> None:
    shortcuts = importance_functions()
    assert set(list_importance_methods()) - set(shortcuts) == {"auto"}, "only the pseudo-method has no shortcut"
    for name, fn in shortcuts.items():
        assert IMPORTANCE_METHODS.get(name).function is fn, name
        assert getattr(advspatial.maps, fn.__name__) is fn, f"advspatial.maps.{fn.__name__} is not {name}'s"
        assert fn.__module__ == "advspatial.maps" and "\nExamples:\n" in (fn.__doc__ or ""), name
    exported = advspatial.maps.__all__
    assert len(exported) == len(set(exported)), "a name is exported twice"
    assert set(exported) - NOT_SHORTCUTS == {fn.__name__ for fn in shortcuts.values()}


@pytest.fixture
def registry_restored() -> Iterator[None]:
    """The importance registry and the imported modules as they were before the test."""
    registered, modules = dict(IMPORTANCE_METHODS.live), set(sys.modules)
    yield
    IMPORTANCE_METHODS.live.clear()
    IMPORTANCE_METHODS.live.update(registered)
    for name in set(sys.modules) - modules:
        del sys.modules[name]


NEW_METHOD = '''
    import torch

    from advspatial.maps import register_importance_method


    @register_importance_method("test-brightness", shortcut="test_brightness", doc="Brightness (test shortcut).")
    def brightness_map(model, x, classes, scale: float = 1.0) -> torch.Tensor:
        """Brightness (test method): the channel sum of each image, times ``scale``."""
        return scale * x.sum(dim=1)
'''


def test_a_method_defined_in_one_file_is_registered_listed_and_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, registry_restored: None
) -> None:
    from advspatial.cli.listing import registries

    (tmp_path / "brightness_method.py").write_text(textwrap.dedent(NEW_METHOD))
    monkeypatch.syspath_prepend(str(tmp_path))
    assert "test-brightness" not in list_importance_methods()
    __import__("brightness_method")
    description = "Brightness (test method): the channel sum of each image, times ``scale``."
    assert "test-brightness" in list_importance_methods()
    assert describe_importance_methods()["test-brightness"] == description
    assert registries()["maps"]()["importance:test-brightness"] == description  # advspatial list maps
    assert IMPORTANCE_METHODS.get("test-brightness").module == "brightness_method"
    x = torch.rand(3, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    model = GapNet().eval()
    assert torch.equal(importance_map("test-brightness", model, x), x.sum(dim=1))
    assert torch.equal(importance_map("test-brightness", model, x, scale=2.0, batch_size=2), 2.0 * x.sum(dim=1))
    with pytest.raises(ConfigError, match=r"'test-brightness' has no parameter\(s\) \['bogus'\]; valid: \['scale'\]"):
        importance_map("test-brightness", model, x, bogus=1)
    shortcut = importance_functions()["test-brightness"]
    assert shortcut.__name__ == "test_brightness" and shortcut.__doc__ == "Brightness (test shortcut)."
    assert torch.equal(shortcut(model, x, scale=2.0), 2.0 * x.sum(dim=1))
