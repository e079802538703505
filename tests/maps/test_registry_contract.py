"""One map, one module: each map is written in its own module, with its public function beside it.

Every registered importance method lives in a module of its own in ``advspatial.maps.importance``, every attack map
in one of ``advspatial.maps.attack`` (the modules with a leading underscore hold what several maps share and register
none). Each registered map names its public function, and that very function is the one ``advspatial.maps`` imports
by name (statically: mypy, IDEs and the API reference see it), documented, with the map's numbers. A method defined
in one new file is registered, listed, described and run by ``importance_map`` with no other edit.
"""

from __future__ import annotations

import ast
import inspect
import pkgutil
import sys
import textwrap
from collections import Counter
from collections.abc import Iterator, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import torch
from helpers import GapNet
from vit_helpers import tiny_vit

import advspatial.maps
import advspatial.maps.attack as attack_package
import advspatial.maps.importance as importance_package
from advspatial.errors import ConfigError
from advspatial.maps import attack_map, describe_importance_methods, importance_map, list_importance_methods
from advspatial.maps.attack import ATTACK_MAPS, AttackMapMethod, attack_functions
from advspatial.maps.importance import IMPORTANCE_METHODS, ImportanceMethod, importance_functions

PACKAGE = importance_package.__name__
#: the registered importance methods that explain vision transformers only
TRANSFORMER_METHODS = ("token-gradcam", "token-hirescam", "rollout", "chefer")


def map_modules(package: ModuleType = importance_package) -> list[str]:
    """The package's map modules: each of its modules without a leading underscore."""
    return [f"{package.__name__}.{info.name}" for info in pkgutil.iter_modules(package.__path__)
            if not info.name.startswith("_")]


def placement_problems(definitions: Sequence[ImportanceMethod | AttackMapMethod], modules: list[str],
                       package: str = PACKAGE) -> list[str]:
    """What breaks 'one registered method per map module': a method defined outside the package's map modules,
    a module defining two methods, a map module registering none (a file the package does not import)."""
    problems = []
    for spec in definitions:
        parent, _, leaf = spec.module.rpartition(".")
        if parent != package or leaf.startswith("_"):
            problems.append(f"{spec.name!r} is defined in {spec.module}, not in a map module of {package}")
    count = Counter(spec.module for spec in definitions)
    problems += [f"{module} defines {n} methods" for module, n in sorted(count.items()) if n > 1]
    problems += [f"{module} registers no method" for module in modules if module not in count]
    return problems


def test_every_registered_method_has_a_module_of_its_own() -> None:
    definitions = list(IMPORTANCE_METHODS.items().values())
    assert len(map_modules()) >= 14, "the map modules are not found: the search is broken"
    assert placement_problems(definitions, map_modules()) == []
    assert len(definitions) == len(map_modules())


def test_every_attack_map_has_a_module_of_its_own() -> None:
    definitions = list(ATTACK_MAPS.items().values())
    modules = map_modules(attack_package)
    assert len(modules) >= 3, "the attack map modules are not found: the search is broken"
    assert placement_problems(definitions, modules, attack_package.__name__) == []
    assert len(definitions) == len(modules)


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


def registered_functions() -> dict[str, tuple[str, Any, Any]]:
    """``{registry name: (kind, batch function, public function)}`` of every importance method and attack map."""
    found = {name: ("importance", spec.fn, spec.function) for name, spec in IMPORTANCE_METHODS.items().items()}
    return {**found, **{name: ("attack", spec.fn, spec.function) for name, spec in ATTACK_MAPS.items().items()}}


def test_each_registered_map_is_a_public_function_of_advspatial_maps() -> None:
    """The registry entry of each map is the module-level function ``advspatial.maps`` exports under its name,
    documented, defined beside the map's batch function ("auto", a choice among the methods, has none)."""
    registered = registered_functions()
    assert {name for name, (_, _, fn) in registered.items() if fn is None} == {"auto"}
    for name, (_, batch, fn) in registered.items():
        if fn is None:
            continue
        assert getattr(advspatial.maps, fn.__name__) is fn, f"advspatial.maps.{fn.__name__} is not {name}'s"
        assert fn.__name__ in advspatial.maps.__all__, name
        assert (fn.__doc__ or "").strip() and "\nExamples:\n" in inspect.getdoc(fn), f"{name}: no documented example"
        assert fn.__qualname__ == fn.__name__ and fn.__module__ == batch.__module__, f"{name}: not beside its map"
        assert getattr(sys.modules[fn.__module__], fn.__name__) is fn, f"{name}: not a module-level function"
    assert importance_functions() == {n: fn for n, (kind, _, fn) in registered.items() if kind == "importance" and fn}
    assert attack_functions() == {n: fn for n, (kind, _, fn) in registered.items() if kind == "attack" and fn}


def test_advspatial_maps_names_every_public_name_statically() -> None:
    """``advspatial.maps`` binds each exported name with an import or a definition and lists them in a literal
    ``__all__``: what a reader, mypy or the API reference sees is what the package exports."""
    tree = ast.parse(Path(advspatial.maps.__file__).read_text())
    bound = {alias.asname or alias.name for node in tree.body if isinstance(node, ast.ImportFrom)
             for alias in node.names}
    bound |= {node.name for node in tree.body if isinstance(node, ast.FunctionDef | ast.ClassDef)}
    (listing,) = [node.value for node in tree.body if isinstance(node, ast.Assign)
                  and any(isinstance(t, ast.Name) and t.id == "__all__" for t in node.targets)]
    exported = ast.literal_eval(listing)
    assert exported == advspatial.maps.__all__ and len(exported) == len(set(exported)), "__all__ is built at run time"
    assert set(exported) <= bound, f"exported but not bound statically: {sorted(set(exported) - bound)}"
    assert "globals" not in Path(advspatial.maps.__file__).read_text()


def test_the_public_functions_give_the_registry_maps_to_the_bit() -> None:
    """Each public function equals the registry's map by name (``importance_map``/``attack_map``), bit for bit."""
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(2, 3, 16, 16, generator=gen)
    x_adv = (x + 0.05 * torch.randn(x.shape, generator=gen)).clamp(0, 1)
    cnn, vit = GapNet().eval(), tiny_vit()
    for name, fn in importance_functions().items():
        model = vit if name in TRANSFORMER_METHODS else cnn
        options = {"samples": 2} if name == "smoothgrad" else {"steps": 4} if name == "ig" else {}
        assert torch.equal(fn(model, x, **options), importance_map(name, model, x, **options)), name
    public = attack_functions()
    assert torch.equal(public["magnitude"](x, x_adv).map, attack_map("magnitude", None, x, x_adv).map)
    assert torch.equal(public["gradient"](cnn, x_adv).map, attack_map("gradient", cnn, x_adv).map)
    ours, theirs = public["contribution"](cnn, x, x_adv, steps=4), attack_map("contribution", cnn, x, x_adv, steps=4)
    assert torch.equal(ours.map, theirs.map)
    torch.testing.assert_close(ours.completeness_error, theirs.completeness_error, rtol=0, atol=0, equal_nan=True)


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

    from advspatial.maps import importance_map, register_importance_method


    def test_brightness(model, x, target="pred", y=None, **options) -> torch.Tensor:
        """Brightness (test function)."""
        return importance_map("test-brightness", model, x, target=target, y=y, **options)


    @register_importance_method("test-brightness", function=test_brightness)
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
    function = importance_functions()["test-brightness"]
    assert function.__name__ == "test_brightness" and function.__doc__ == "Brightness (test function)."
    assert torch.equal(function(model, x, scale=2.0), 2.0 * x.sum(dim=1))
