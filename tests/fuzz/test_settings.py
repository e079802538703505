"""Fuzzing experiments/settings.py and the ``--param`` parser (cli/attack_commands.py): YAML config files of
any text, keys, values and depth, and ``NAME=VALUE`` strings, resolve to a validated config or attack, or
a one-line ConfigError. Budget and profiles: tests/fuzzing.py."""

from __future__ import annotations

import dataclasses
import tempfile
from pathlib import Path

import torch
import yaml
from fuzzing import fuzz_settings, valid_or_one_line
from hypothesis import example, given
from hypothesis import strategies as st

from advspatial.attacks import list_attacks, make_attack
from advspatial.cli.attack_commands import parse_params
from advspatial.experiments.registry import get_experiment
from advspatial.experiments.running import resolve_config
from advspatial.experiments.settings import ExperimentConfig

EXPERIMENTS = ["baseline", "spatial", "perceptual"]
#: model specs the fuzzer may name (arbitrary text could name a module to import: a config file is code)
MODELS = ["smallcnn", "lenet5", "nosuchmodel", "", "x.py:f", "torchvision:nosuch", "cifar10-resnet20", "a:b:c"]

_scalar = st.one_of(
    st.none(), st.booleans(), st.integers(-(10**3), 10**3), st.integers(10**300, 10**400),
    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=10),
    st.sampled_from(["nan", "inf", "1e999", "0x10", "1_000", "fgsm,pgd", "fgsm,fgsm", "auto", "none", "cpu", "cuda:7",
                     "fashion-mnist", "cifar10:/nonexistent", "imagefolder:", "memory:x", "yes", "8/255"]),
)
_value = st.recursive(_scalar, lambda inner: st.one_of(st.lists(inner, max_size=3),
                                                       st.dictionaries(st.text(max_size=4), inner, max_size=2)),
                      max_leaves=6)


def field_names() -> list[str]:
    names: set[str] = set()
    for name in EXPERIMENTS:
        names |= {f.name for f in dataclasses.fields(get_experiment(name).config_cls)}
    return sorted(names - {"model", "out", "class_map", "weights"})


_key = st.one_of(st.sampled_from(field_names()), st.text(max_size=6), st.integers(-2, 2), st.none())
_mapping = st.dictionaries(_key, _value, max_size=5).map(
    lambda d: {**d, **({"model": d["model"]} if "model" in d else {})})
_yaml_text = st.one_of(
    st.tuples(_mapping, st.sampled_from(MODELS)).map(
        lambda t: yaml.safe_dump({**t[0], "model": t[1]}, allow_unicode=True)),
    st.text(max_size=60),
    st.integers(1, 60).map(lambda depth: "n: " + "[" * depth + "]" * depth),
    st.integers(1, 60).map(lambda depth: "a: " + "{b: " * depth + "1" + "}" * depth),
    st.sampled_from(["!!python/object/apply:os.system ['true']", "a: &x [*x]", "? [1, 2]\n: 3", "1: 2\nn: 3",
                     "~: 2\nfoo: 3", "n: !!binary aGVsbG8=", "- 1\n- 2", "n: 1\nn: 2", "\t", "n: 0", "%YAML 9.9\n---"]),
)


def check_config(experiment: str, text: str, quick: bool) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp, "config.yaml")
        path.write_text(text, encoding="utf-8", errors="surrogatepass")
        config = valid_or_one_line(resolve_config, get_experiment(experiment), str(path), {}, quick)
    if config is not None:
        assert isinstance(config, ExperimentConfig) and config.preset != "auto"
        config.validate()  # resolve_config's result is valid as it stands


@fuzz_settings(150)
@given(st.sampled_from(EXPERIMENTS), _yaml_text, st.booleans())
@example("baseline", "n: " + "[" * 5000 + "]" * 5000, False)  # RecursionError in PyYAML
@example("baseline", "1: 2\nfoo: 3", False)  # integer keys beside text keys
@example("spatial", "eps_linf: " + "9" * 400, True)  # an integer too large for a float
def test_config_files_resolve_or_refuse_in_one_line(experiment: str, text: str, quick: bool) -> None:
    check_config(experiment, text, quick)


ATTACKS = sorted(list_attacks())


def declared(attack: str) -> list[str]:
    return sorted(list_attacks()[attack].parameters())


_param_value = st.one_of(
    _scalar.map(lambda v: yaml.safe_dump(v).removesuffix("\n...\n").strip() if not isinstance(v, str) else v),
    st.integers(1, 60).map(lambda depth: "[" * depth + "]" * depth),
    st.sampled_from(["", "=", "[1, 2]", "{a: 1}", "!!python/name:os.system", "0.03", "-1", "1e-3", "true", "~",
                     "&a 1"]),
)


@st.composite
def params(draw: st.DrawFn) -> tuple[str, tuple[str, ...]]:
    attack = draw(st.sampled_from(ATTACKS))
    key = st.one_of(st.sampled_from(declared(attack) + ["model", "seed", "eps", "steps", " eps ", "ste-ps"]),
                    st.text(max_size=5))
    pairs = draw(st.lists(st.one_of(st.tuples(key, _param_value).map("=".join), st.text(max_size=8)), max_size=3))
    return attack, tuple(pairs)


@fuzz_settings(200)
@given(params())
@example(("autoattack", ("components=null",)))  # found: TypeError, None is not iterable
@example(("autoattack", ("components=[1, [2]]",)))
@example(("autoattack", ("components=apgd-ce, square",)))
@example(("pgd", ("model=x",)))  # make_attack() got multiple values for 'model'
@example(("pgd", ("eps=" + "9" * 400,)))  # OverflowError
@example(("pgd", ("eps=" + "[" * 3000 + "]" * 3000,)))  # found: PyYAML's RecursionError in a --param value
def test_attack_params_build_an_attack_or_refuse_in_one_line(case: tuple[str, tuple[str, ...]]) -> None:
    attack, pairs = case
    kwargs = valid_or_one_line(parse_params, pairs, attack)
    if kwargs is not None:  # what the attack command does next, before any work
        built = valid_or_one_line(make_attack, attack, torch.nn.Identity(), seed=0, **kwargs)
        assert built is None or built.__class__.__name__
