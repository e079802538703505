"""The one registry type behind attacks, models, datasets, maps and fills."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from advspatial.errors import ConfigError
from advspatial.registry import Registry


@dataclass(frozen=True)
class Spec:
    value: int
    description: str


def test_register_get_iterate_describe():
    reg: Registry[Spec] = Registry("widget")
    assert reg.register("b", Spec(2, "the second")) == Spec(2, "the second")
    reg.register("a", Spec(1, "the first"))
    assert reg.get("a") == Spec(1, "the first") and "a" in reg and "z" not in reg
    assert reg.names() == list(reg) == ["a", "b"] and len(reg) == 2
    assert reg.descriptions() == {"a": "the first", "b": "the second"}
    assert list(reg.items()) == ["a", "b"]
    reg.items().clear()  # a copy
    assert len(reg) == 2
    reg.live["c"] = Spec(3, "patched in")  # the storage itself, as tests patch it
    assert reg.get("c").value == 3 and reg.names() == ["a", "b", "c"]


def test_unknown_name_is_one_line_listing_the_valid_names():
    reg: Registry[Spec] = Registry("widget")
    reg.register("a", Spec(1, "x"))
    reg.register("b", Spec(2, "y"))
    with pytest.raises(ConfigError, match=r"^unknown widget 'c'; valid: a, b$"):
        reg.get("c")


def test_duplicate_or_empty_name_is_an_error():
    reg: Registry[Spec] = Registry("widget")
    reg.register("a", Spec(1, "x"))
    with pytest.raises(ConfigError, match="widget 'a' is already registered"):
        reg.register("a", Spec(3, "other"))
    assert reg.get("a").value == 1
    with pytest.raises(ConfigError, match="non-empty string"):
        reg.register("", Spec(1, "x"))


def test_decorator_registers_a_function_described_by_its_docstring():
    reg: Registry = Registry("map")

    @reg.decorator("double")
    def double(v: int) -> int:
        """Twice the value.

        More text."""
        return 2 * v

    assert double(2) == 4 and reg.get("double") is double
    assert reg.descriptions() == {"double": "Twice the value."}
    described = Registry("map", describe=lambda fn: fn.__name__)
    described.register("d", double)
    assert described.descriptions() == {"d": "double"}


def test_every_extension_kind_is_a_registry():
    from advspatial.attacks.base import ATTACKS
    from advspatial.data.registry import DATASETS
    from advspatial.maps.attack import ATTACK_MAPS
    from advspatial.maps.importance import IMPORTANCE_METHODS
    from advspatial.models.registry import MODELS
    from advspatial.regions.fills import FILLS

    for reg in (ATTACKS, DATASETS, ATTACK_MAPS, IMPORTANCE_METHODS, MODELS, FILLS):
        assert isinstance(reg, Registry) and len(reg) > 0
        assert all(isinstance(text, str) for text in reg.descriptions().values()), reg.kind
    for reg in (ATTACKS, DATASETS, ATTACK_MAPS, IMPORTANCE_METHODS, MODELS):  # ``advspatial list`` shows these
        assert all(reg.descriptions().values()), reg.kind
    with pytest.raises(ConfigError, match="^unknown attack 'nope'; valid: .*pgd"):
        ATTACKS.get("nope")
    with pytest.raises(ConfigError, match="attack 'pgd' is already registered"):
        from advspatial.attacks import register_attack

        register_attack("pgd", "again")(ATTACKS.get("pgd").cls)
