"""A small YAML file never exhausts the machine: aliases are refused wherever advspatial reads YAML (a run's
``--config``, a study's ``models:``, ``--param``), and error messages quote values through a bounded repr."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import yaml
from helpers import run_cli
from hypothesis import given
from hypothesis import strategies as st

from advspatial.errors import bounded_repr
from advspatial.files import YAMLAliasError, YAMLDuplicateKeyError, load_yaml_text


def alias_bomb(depth: int = 6) -> str:
    """A flow list of nested aliases: each level holds the previous one nine times (9**depth leaves)."""
    levels = ["&a0 [x, x, x, x, x, x, x, x, x]"]
    levels += [f"&a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, depth)]
    return "[" + ", ".join(levels) + "]"


def test_the_bomb_is_small() -> None:
    assert len(alias_bomb()) < 1024


@pytest.mark.parametrize("where", ["run-config", "study-models", "param"])
def test_an_alias_bomb_is_refused_fast_in_one_short_line(where: str, tmp_path: Path, capsys) -> None:
    config = tmp_path / "bomb.yaml"
    if where == "run-config":
        config.write_text(f"attacks: {alias_bomb()}\n")
        args = ["run", "maps", "--config", str(config), "--out", str(tmp_path / "run")]
    elif where == "study-models":
        config.write_text(f"models: {alias_bomb()}\n")
        args = ["study", "--config", str(config), "--out", str(tmp_path / "study")]
    else:
        args = ["attack", "--model", "smallcnn", "--param", f"eps={alias_bomb()}"]
    run_cli(capsys, *args)  # the first call imports the command's modules
    start = time.process_time()
    code, out, err = run_cli(capsys, *args)
    assert time.process_time() - start < 1.0
    assert code == 2, err
    assert len(err.encode()) < 1024 and len(err.strip().splitlines()) == 1, err[:2000]
    assert "alias" in err


def test_yaml_without_aliases_reads_as_safe_load_does() -> None:
    text = "a: &x 1\nb: [1, 2.5, true, null, text]\nc: {d: [e]}\n"
    assert load_yaml_text(text) == yaml.safe_load(text)
    with pytest.raises(YAMLAliasError, match=r"\*x"):
        load_yaml_text("a: &x 1\nb: *x\n")
    with pytest.raises(YAMLAliasError):
        load_yaml_text("base: &b {n: 1}\nother:\n  <<: *b\n")  # a merge key is an alias too
    with pytest.raises(yaml.constructor.ConstructorError):
        load_yaml_text("!!python/object/apply:os.system ['true']")


def test_a_key_given_twice_is_refused_where_safe_load_kept_the_last(tmp_path: Path, capsys) -> None:
    """``n: 8`` then ``n: 10`` in a run's --config ran with n = 10, whichever the user meant."""
    with pytest.raises(YAMLDuplicateKeyError, match="the key 'n' is given twice"):
        load_yaml_text("n: 8\nattacks: [fgsm]\nn: 10\n")
    with pytest.raises(YAMLDuplicateKeyError, match="'eps'"):
        load_yaml_text("params: {eps: 0.1, steps: 3}\nother: {eps: 1, eps: 2}\n")  # nested, in flow style
    assert load_yaml_text("a: {n: 1}\nb: {n: 2}\n1: x\n'1': y\n") == {"a": {"n": 1}, "b": {"n": 2}, 1: "x", "1": "y"}
    config = tmp_path / "twice.yaml"
    config.write_text("n: 8\nn: 10\n")
    code, _, err = run_cli(capsys, "run", "maps", "--config", str(config), "--out", str(tmp_path / "run"))
    assert code == 2 and len(err.strip().splitlines()) == 1 and "given twice" in err, err
    assert not (tmp_path / "run").exists()


_data = st.recursive(st.one_of(st.none(), st.integers(), st.floats(), st.text(), st.binary()),
                     lambda inner: st.one_of(st.lists(inner), st.tuples(inner, inner),
                                             st.dictionaries(st.text(max_size=5), inner)), max_leaves=40)


@given(_data, st.integers(8, 200))
def test_a_bounded_repr_is_never_longer_than_its_limit(value: object, limit: int) -> None:
    shown = bounded_repr(value, limit)
    assert len(shown) <= limit
    if len(repr(value)) <= limit and not isinstance(value, (list, tuple, dict)):
        assert shown == repr(value)


def test_a_bounded_repr_of_a_huge_value_costs_nothing() -> None:
    nested: list = [0] * 9
    for _ in range(12):  # 9**13 leaves if it were expanded
        nested = [nested] * 9
    start = time.process_time()
    assert bounded_repr(nested).startswith("[[[")
    assert bounded_repr(10**5000) == "<int of 16610 bits>"
    assert time.process_time() - start < 0.1
