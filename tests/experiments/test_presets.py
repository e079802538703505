"""Dataset presets: budgets land in every experiment's own fields, with the documented precedence."""

from __future__ import annotations

import dataclasses

import pytest

from advspatial.errors import ConfigError
from advspatial.experiments import experiments, get_experiment, resolve_config
from advspatial.experiments.presets import GENERIC_BUDGETS, PRESETS, preset_table, resolve_preset_name


def test_every_preset_field_exists_and_every_generic_budget_is_documented() -> None:
    for name, experiment in experiments().items():
        fields = {f.name for f in dataclasses.fields(experiment.config_cls)}
        for generic, field in experiment.config_cls.PRESET_FIELDS.items():
            assert generic in GENERIC_BUDGETS, (name, generic)
            assert field in fields, (name, field)
    for budgets in PRESETS.values():
        assert set(budgets) <= set(GENERIC_BUDGETS)


def test_cifar10_preset_sets_every_experiments_budget() -> None:
    spatial = resolve_config(get_experiment("spatial"), None, {"preset": "cifar10"}, quick=False)
    assert spatial.eps_linf == pytest.approx(8 / 255)
    assert spatial.eps_l2 == 0.5
    pse = resolve_config(get_experiment("pse"), None, {"preset": "cifar10"}, quick=False)
    assert pse.eps == pytest.approx(8 / 255)
    perceptual = resolve_config(get_experiment("perceptual"), None, {"preset": "imagenet"}, quick=False)
    assert perceptual.eps_max == pytest.approx(16 / 255)
    assert perceptual.batch_size == 16
    localized = resolve_config(get_experiment("localized-training"), None, {"preset": "mnist", "norm": "l2"},
                               quick=False)
    assert localized.eps == 2.0


def test_precedence_defaults_preset_quick_cli() -> None:
    spatial = get_experiment("spatial")
    quick = resolve_config(spatial, None, {"preset": "imagenet"}, quick=True)
    assert quick.batch_size == spatial.config_cls.QUICK["batch_size"]  # --quick beats the preset
    assert quick.eps_linf == pytest.approx(4 / 255)
    explicit = resolve_config(spatial, None, {"preset": "imagenet", "eps_linf": 0.05}, quick=True)
    assert explicit.eps_linf == 0.05  # an explicit option beats both


def test_fashion_mnist_and_none_keep_the_defaults() -> None:
    for name in ("spatial", "pse", "perceptual", "localized-training", "propagation"):
        experiment = get_experiment(name)
        default = dataclasses.asdict(experiment.config_cls())
        for preset in ("fashion-mnist", "none"):
            resolved = dataclasses.asdict(resolve_config(experiment, None, {"preset": preset}, quick=False))
            resolved.pop("preset")
            assert resolved == {k: v for k, v in default.items() if k != "preset"}, (name, preset)


def test_auto_preset_follows_dataset_and_zoo_model() -> None:
    assert resolve_preset_name("auto", "fashion-mnist", "smallcnn") == "fashion-mnist"
    assert resolve_preset_name("auto", "cifar10", "smallcnn") == "cifar10"
    assert resolve_preset_name("auto", "imagefolder:/x", "cifar10-resnet20") == "cifar10"
    assert resolve_preset_name("auto", "imagefolder:/x", "imagenet-efficientnet-lite0") == "imagenet"
    assert resolve_preset_name("auto", "imagefolder:/x", "my.py:make") == "none"
    config = resolve_config(get_experiment("spatial"), None, {}, quick=False)
    assert config.preset == "fashion-mnist"  # the resolved name is what config.yaml records
    with pytest.raises(ConfigError, match="unknown preset 'cifar100'"):
        resolve_preset_name("cifar100", "cifar10", "smallcnn")


def test_auto_preset_follows_dataset_given_with_a_root() -> None:
    """``cifar10:PATH`` is CIFAR-10 (the form the README and the errors suggest): its budgets, not the defaults."""
    assert resolve_preset_name("auto", "cifar10:/data/cifar10", "my.py:make") == "cifar10"
    assert resolve_preset_name("auto", "mnist:/data/mnist", "my.py:make") == "mnist"
    assert resolve_preset_name("auto", "fashion-mnist:/d", "my.py:make") == "fashion-mnist"
    config = resolve_config(get_experiment("spatial"), None, {"dataset": "cifar10:/data/c", "model": "lenet5"},
                            quick=True)
    assert config.preset == "cifar10" and config.eps_linf == pytest.approx(8 / 255)


def test_preset_table_shows_budgets_as_fractions_of_255() -> None:
    table = preset_table()
    assert "8/255" in table and "4/255" in table
    assert table.count("\n") == len(GENERIC_BUDGETS) + 1


def test_a_zoo_models_input_size_beats_the_presets_image_size() -> None:
    spatial = get_experiment("spatial")
    lite1 = resolve_config(spatial, None, {"model": "imagenet-efficientnet-lite1", "dataset": "imagefolder:/x"},
                           quick=False)
    assert lite1.preset == "imagenet" and lite1.image_size == 0  # 0: the zoo model's 240 at load time
    assert lite1.dataset_options()["size"] == 240
    other = resolve_config(spatial, None, {"preset": "imagenet", "dataset": "imagefolder:/x"}, quick=False)
    assert other.image_size == 224


def test_every_preset_takes_a_panel_of_one_backward_pass_per_map_and_occlusion_or_ig_are_named() -> None:
    """The default panel costs about what the RoI's own gate costs (occlusion and IG with their randomization
    checks were 60% of the default run's model passes); a user names the expensive explainers."""
    for name in ("spatial", "maps"):
        experiment = get_experiment(name)
        for preset in ("fashion-mnist", "cifar10", "imagenet"):
            config = resolve_config(experiment, None, {"preset": preset}, quick=False)
            assert config.panel == ["gradcam", "hirescam", "inputxgrad"]
        chosen = resolve_config(experiment, None, {"preset": "imagenet", "panel": ["occlusion", "ig"]}, quick=False)
        assert chosen.panel == ["occlusion", "ig"]


def test_the_noise_baseline_follows_the_preset_and_full_eval_scales_it() -> None:
    """CIFAR-10's noise baseline has its own sd (the pretrained ResNet-20 is at chance under Fashion-MNIST's 0.2);
    --eval full runs every baseline at half, once and twice the preset's strength (JPEG: quality 2.5x, 1x, 1/4),
    which for the defaults is the fixed grid it always was, and validating again changes nothing."""
    spatial = get_experiment("spatial")
    cifar = resolve_config(spatial, None, {"preset": "cifar10"}, quick=False)
    assert cifar.noise_sds == [0.03]
    assert resolve_config(spatial, None, {"preset": "cifar10"}, quick=True).noise_sds == [0.03]
    full = resolve_config(spatial, None, {"preset": "cifar10", "eval": "full"}, quick=False)
    assert full.noise_sds == pytest.approx([0.015, 0.03, 0.06])
    default_full = resolve_config(spatial, None, {"eval": "full"}, quick=False)
    assert (default_full.noise_sds, default_full.blur_sigmas, default_full.jpeg_qualities) == (
        [0.1, 0.2, 0.4], [0.5, 1.0, 2.0], [50, 20, 5])
    before = dataclasses.asdict(full)
    full.validate()
    assert dataclasses.asdict(full) == before
    assert resolve_config(get_experiment("maps"), None, {"preset": "cifar10"}, quick=False).preset == "cifar10"


def test_curve_points_below_the_budget_are_opt_in_and_full_eval_measures_them() -> None:
    """No rule reads the convergence curve below the budget (read_curve: the budget's point and the points beyond),
    so a default run does not pay for them; ``--eval full`` and ``--curve-below-budget`` draw them."""
    spatial = get_experiment("spatial")
    assert not resolve_config(spatial, None, {}, quick=False).curve_below_budget
    assert resolve_config(spatial, None, {"eval": "full"}, quick=False).curve_below_budget
    assert resolve_config(spatial, None, {"curve_below_budget": True}, quick=False).curve_below_budget


def test_a_gpu_takes_a_device_sized_batch_unless_one_is_given(monkeypatch) -> None:
    import torch

    import advspatial.runtime
    import advspatial.stacked_runs

    spatial = get_experiment("spatial")
    on_cpu = resolve_config(spatial, None, {"preset": "cifar10", "n": 300}, quick=False)
    assert on_cpu.batch_size == 100  # the preset's: a CPU's batch
    monkeypatch.setattr(advspatial.runtime, "pick_device", lambda preference="auto": torch.device("cuda"))
    monkeypatch.setattr(advspatial.stacked_runs, "device_memory", lambda device: 80 * 10**9)
    on_gpu = resolve_config(spatial, None, {"preset": "fashion-mnist", "n": 300}, quick=False)
    assert on_gpu.batch_size == 300  # every image in one batch: 300 of 28x28 are within the element budget
    given = resolve_config(spatial, None, {"preset": "fashion-mnist", "n": 300, "batch_size": 50}, quick=False)
    assert given.batch_size == 50
    quick = resolve_config(get_experiment("pse"), None, {}, quick=True)
    assert quick.batch_size == get_experiment("pse").config_cls.QUICK["batch_size"]
