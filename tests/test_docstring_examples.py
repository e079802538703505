"""Every public entry point shows how it is called, and that example runs.

The entry points a researcher calls (``advspatial.run``, ``analyze``, ``study``, every attack class, every importance
and attack map function, the faithfulness gate, the defence's adaptive evaluation) carry an ``Examples:`` section in
their docstring. Each section is run here as a doctest exactly as a reader would paste it into a fresh interpreter:
in an empty namespace, so it imports and builds what it uses (a model, a handful of images) in its own lines, in a
temporary directory. A new attack class is found through ``advspatial.attacks.__all__`` and a new map through the
maps' registries, so it must bring its example.
"""

from __future__ import annotations

import doctest
import importlib
import inspect
from pathlib import Path
from typing import Any

import pytest

#: the entry points besides every attack class and every map function (found below), as "module:name"
ENTRY_POINTS = ["advspatial.api:run", "advspatial.api:analyze", "advspatial.api:study",
                "advspatial.maps.importance:importance_map", "advspatial.maps.importance:importance_functions",
                "advspatial.maps.attack:attack_map", "advspatial.maps.attack:attack_functions",
                "advspatial.maps:compute_maps", "advspatial.defence.adaptive_evaluation:evaluate_adaptive",
                "advspatial.models.spec:load_model"]
#: entry points whose example needs files that may be absent here: run only where they are found
NEEDS = {"advspatial.models.spec:load_model": "the CIFAR-10 ResNet-20 weights ($ADVSPATIAL_DATA/cifar10-resnet/)"}


def available(target: str) -> bool:
    """True when what the example of ``target`` needs (:data:`NEEDS`) is here."""
    if target != "advspatial.models.spec:load_model":
        return True
    from advspatial.errors import AdvspatialError
    from advspatial.models.zoo import locate_weights, zoo_entry

    try:
        locate_weights(zoo_entry("cifar10-resnet20"), download=False)
    except AdvspatialError:
        return False
    return True
#: written with the gate's rewrite: when it has its example, this marker fails (strict) and is removed
GATE = "advspatial.faithfulness.gate:summarize_gate"


def attack_classes() -> list[str]:
    from advspatial import attacks

    return [f"{getattr(attacks, name).__module__}:{name}" for name in attacks.__all__
            if inspect.isclass(getattr(attacks, name)) and issubclass(getattr(attacks, name), attacks.Attack)
            and getattr(attacks, name) is not attacks.Attack]


def map_functions() -> list[str]:
    """Every map function, as published in ``advspatial.maps``: each importance method's and each attack map's
    public function."""
    from advspatial.maps.attack import attack_functions
    from advspatial.maps.importance import importance_functions

    return [f"advspatial.maps:{fn.__name__}" for fn in [*importance_functions().values(),
                                                        *attack_functions().values()]]


def resolve(target: str) -> tuple[Any, Any]:
    """(module, object) of ``module:name``."""
    module_name, name = target.split(":")
    module = importlib.import_module(module_name)
    return module, getattr(module, name)


def test_every_registered_map_has_a_function_with_an_example() -> None:
    """A map registered without its named function would escape the check below."""
    from advspatial.maps import list_attack_maps, list_importance_methods
    from advspatial.maps.attack import attack_functions
    from advspatial.maps.importance import importance_functions

    # "auto" is a choice among the registered explainers by head type, not a map of its own
    assert set(importance_functions()) == set(list_importance_methods()) - {"auto"}
    assert set(attack_functions()) == set(list_attack_maps())


TARGETS = [*ENTRY_POINTS, *attack_classes(), *map_functions(), GATE]


@pytest.mark.parametrize("target", TARGETS)
def test_the_docstring_example_runs(target: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    if not available(target):
        pytest.skip(f"needs {NEEDS[target]}")
    _, obj = resolve(target)
    doc = inspect.getdoc(obj) or ""
    assert "\nExamples:\n" in doc, f"{target} has no Examples: section in its docstring"
    tests = doctest.DocTestFinder(recurse=False).find(obj, target, globs={"__name__": "__main__"})
    examples = sum(len(t.examples) for t in tests)
    checked = sum(1 for t in tests for example in t.examples if example.want)
    assert checked, f"{target}: its Examples section shows no output to check"
    monkeypatch.chdir(tmp_path)  # the runs the examples start write here
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    for test in tests:
        runner.run(test)
    assert runner.failures == 0, f"{target}: {runner.failures} of {examples} doctest lines failed (printed above)"
