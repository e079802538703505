"""The localized experiment's settings: what is rejected before any work, the gate and inference settings,
and the training settings of each model (:mod:`advspatial.experiments.localized.config`)."""

from __future__ import annotations


import pytest
import torch

from advspatial.errors import ConfigError
from advspatial.experiments import get_experiment, resolve_config
from advspatial.experiments.measurement.config import GatedConfig
from advspatial.experiments.localized.config import (
    GATE_EPS_FOR_L2, MIXED, MODES, LocalizedConfig, gate_eps,
    train_config,
)
from advspatial.experiments.localized.stages import eval_attack
from advspatial.training import TrainConfig


# -- config and models -----------------------------------------------------------------------

@pytest.mark.parametrize(("values", "message"), [
    ({"finetune_lr": 0.0}, "finetune_lr"),
    ({"finetune_bn": "sometimes"}, "finetune_bn"),
    ({"mask": "no-such-mask"}, "neither one of"),
    ({"norm": "l1"}, "norm"),
    ({"eps": 1.5}, "eps"),
    ({"eps": 0.0}, "eps"),
    ({"mix": 1.5}, "mix"),
    ({"train_epochs": 0}, "train_epochs"),
    ({"steps": 0}, "steps"),
    ({"fraction": 1.0}, "fraction"),
    ({"importance": "no-such-map"}, "importance method"),
    ({"gate_fills": ["zero"]}, "gate_fills"),
    ({"gate_eps": 2.0}, "gate_eps"),
    ({"significance": 0.0}, "significance"),
    ({"sesoi": -0.1}, "sesoi"),
])
def test_invalid_settings_are_rejected_before_any_work(values: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        resolve_config(get_experiment("localized-training"), None, values, quick=False)


def test_an_unknown_model_is_rejected_before_any_work() -> None:
    from advspatial.errors import ModelError

    with pytest.raises(ModelError, match="unknown model"):
        resolve_config(get_experiment("localized-training"), None, {"model": "weights.pt"}, quick=False)


def test_l2_budget_may_exceed_one() -> None:
    config = resolve_config(get_experiment("localized-training"), None, {"norm": "l2", "eps": 1.5}, quick=False)
    assert eval_attack(torch.nn.Linear(1, 1), config).norm == "l2"


def test_gate_and_inference_settings() -> None:
    config = LocalizedConfig()
    assert isinstance(config, GatedConfig) and config.importance == "auto"
    assert (config.sesoi, config.significance) == (0.01, 0.05)
    quick = resolve_config(get_experiment("localized-training"), None, {}, quick=True)
    assert quick.gate_n <= quick.n and quick.gate_steps < config.gate_steps
    assert quick.randomization_images < config.randomization_images
    # the gate's PGD is L-inf: the experiment's eps for an L-inf run, a fixed L-inf budget for an L2 run
    assert gate_eps(config) == config.eps
    assert gate_eps(LocalizedConfig(norm="l2", eps=1.5)) == GATE_EPS_FOR_L2
    assert gate_eps(LocalizedConfig(norm="l2", eps=1.5, gate_eps=0.05)) == 0.05


def test_training_settings_of_the_models() -> None:
    config = LocalizedConfig()
    settings = {m: train_config(config, m) for m in MODES}
    natural, pgd, local = settings["natural"], settings["pgd"], settings["localized"]
    assert {s.epochs for s in settings.values()} == {config.train_epochs}, "epochs matched across every model"
    shared = train_config(LocalizedConfig(natural_epochs=5), "natural")
    assert shared.key() == TrainConfig().key(), "natural_epochs 5: the shared cached default model"
    assert [s.mode for s in settings.values()] == list(MODES)
    assert {settings[m].mix for m in MIXED} == {config.mix}, "the controls share localized training's mixture"
    assert settings["mixed-pgd"].eps == settings["localized-random"].eps == config.eps
    assert pgd.attack_steps == local.attack_steps == config.train_attack_steps
    assert pgd.eps == local.eps == config.eps and natural.train_limit is None
    other_mix = LocalizedConfig(mix=0.2)
    assert train_config(other_mix, "pgd").key() == pgd.key(), "mix does not retrain the PGD model"
    assert train_config(other_mix, "localized").mix == 0.2
    assert train_config(LocalizedConfig(train_limit=100), "pgd").train_limit == 100


@pytest.mark.parametrize("natural, words", [(1, "natural 1 epoch, the others 1"),
                                            (5, "natural 5 epochs, the others 1")])
def test_the_models_sentence_counts_its_epochs_in_words(natural: int, words: str) -> None:
    from types import SimpleNamespace

    from advspatial.experiments.localized.report import models_sentence

    config = LocalizedConfig(train_epochs=1, natural_epochs=natural, train_limit=512)
    sentence = models_sentence(config, SimpleNamespace(finetune=None))  # type: ignore[arg-type]
    assert sentence.endswith(f"training images ({words}).") and "the first 512" in sentence, sentence
