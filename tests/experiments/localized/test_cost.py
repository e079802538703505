"""What localized-training's forecast prices apart from its reference runs: the training of every model not cached,
counted from the settings and priced on the model."""

from __future__ import annotations

import pytest
import torch

from conftest import needs_fashion_mnist

from advspatial.experiments.forecast import CallPrice
from advspatial.experiments.localized import cost
from advspatial.experiments.localized.config import MODES, LocalizedConfig, seeded, train_config
from advspatial.model_cache import checkpoint_paths
from advspatial.models.cifar_resnet import cifar_resnet


@pytest.mark.parametrize(("mode", "passes", "images"), [("natural", (0, 0), 1), ("pgd", (7, 5), 1),
                                                        ("mixed-pgd", (7, 5), 2), ("localized", (7, 5), 2),
                                                        ("localized-random", (7, 5), 2)])
def test_each_mode_makes_its_pgd_example_and_sends_its_loss_images(mode, passes, images) -> None:
    config = LocalizedConfig(train_attack_steps=5)
    assert cost.attack_passes(config, mode) == passes and cost.loss_images(config, mode) == images
    unmixed = LocalizedConfig(mix=0.0)
    assert cost.attack_passes(unmixed, "mixed-pgd") == (0, 0) and cost.loss_images(unmixed, "mixed-pgd") == 1


def test_the_natural_model_from_scratch_may_have_its_own_epochs() -> None:
    config = LocalizedConfig(train_epochs=2, natural_epochs=5)
    assert cost.epochs_of(config, "natural") == 5 and cost.epochs_of(config, "pgd") == 2


def test_models_in_the_model_cache_are_not_trained_again(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("ADVSPATIAL_CACHE", str(tmp_path))
    config = LocalizedConfig(training_seeds=2)
    assert cost.models_to_train(config) == [(mode, k) for k in (0, 1) for mode in MODES]
    for mode, k in (("natural", 0), ("pgd", 1)):
        weights, _ = checkpoint_paths(train_config(seeded(config, k), mode))
        weights.write_bytes(b"")
    left = cost.models_to_train(config)
    assert len(left) == 8 and ("natural", 0) not in left and ("pgd", 1) not in left and ("pgd", 0) in left


def test_the_training_is_priced_model_by_model_at_the_measured_prices(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("ADVSPATIAL_CACHE", str(tmp_path))
    config = LocalizedConfig(training_seeds=1, train_epochs=2, train_limit=1000, train_attack_steps=5)
    monkeypatch.setattr(cost, "training_images", lambda c: 1000)
    monkeypatch.setattr(cost, "step_seconds_per_image", lambda model, images: 0.01)
    price = CallPrice(forward_fixed=1.28, forward_per_image=0.001, backward_fixed=0.0, backward_per_image=0.002)
    attack = 7 * (0.001 + 1.28 / 128) + 5 * 0.002  # per image: the PGD example, in calls of the training batch
    expected = 2 * 1000 * (0.01 + (attack + 0.01) + 3 * (attack + 2 * 0.01))  # natural, pgd, three mixed modes
    seconds = cost.training_seconds(config, cifar_resnet(8), torch.rand(4, 3, 8, 8), price)
    assert seconds == {cost.TRAINING: pytest.approx(expected)}
    monkeypatch.setattr(cost, "models_to_train", lambda c: [])
    assert cost.training_seconds(config, cifar_resnet(8), torch.rand(4, 3, 8, 8), price) == {}


def test_a_training_step_is_timed_on_a_copy_leaving_weights_and_random_stream_as_they_were() -> None:
    model = cifar_resnet(8).eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    torch.manual_seed(5)
    expected = torch.rand(3)
    torch.manual_seed(5)
    seconds = cost.step_seconds_per_image(model, torch.rand(4, 3, 8, 8, generator=torch.Generator().manual_seed(1)),
                                          repeats=2)
    assert torch.equal(torch.rand(3), expected) and 0 < seconds < 1
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items()) and not model.training


@needs_fashion_mnist
def test_a_new_run_states_its_training_before_training_and_leaves_the_random_stream(tmp_path, monkeypatch,
                                                                                      capsys) -> None:
    from advspatial.experiments import forecast as fc
    from advspatial.experiments.stage_work import StageWork
    from advspatial.experiments.localized.run import announce_cost
    from advspatial.rundir import RunDir

    monkeypatch.setenv("ADVSPATIAL_CACHE", str(tmp_path / "cache"))
    monkeypatch.setitem(fc.REFERENCES, "localized-training",
                        {"attack/pgd": StageWork(((8, 80, 80, 2, 2), (16, 160, 160, 4, 4)))})
    monkeypatch.setitem(fc.OUTSIDE_STAGES_SECONDS, "localized-training", ((8, 1.0), (16, 1.0)))
    monkeypatch.setattr(cost, "training_images", lambda config: 512)
    config = LocalizedConfig(n=8, batch_size=4, training_seeds=1, train_epochs=1, train_limit=512)
    torch.manual_seed(3)
    expected = torch.rand(2)
    torch.manual_seed(3)
    announce_cost(config, RunDir(tmp_path / "run"), torch.device("cpu"))
    assert torch.equal(torch.rand(2), expected)
    said = capsys.readouterr().err
    assert "localized-training on 8 images:" in said and cost.TRAINING in said
    announce_cost(LocalizedConfig(n=8, progress=False), RunDir(tmp_path / "run"), torch.device("cpu"))
    assert capsys.readouterr().err == ""
