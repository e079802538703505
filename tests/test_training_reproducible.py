"""The model trained on first use is the same on every machine: its weights do not depend on the thread count."""

from __future__ import annotations

import torch

from advspatial.training import TRAINING_PROCEDURE, TrainConfig, train_model


def _weights_with_threads(threads: int) -> dict[str, torch.Tensor]:
    """The state dict of a tiny training run (64 Fashion-MNIST images, one epoch) started with ``threads`` threads."""
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        config = TrainConfig(train_limit=64, epochs=1, batch_size=16)
        trained = train_model(config, "cpu", progress=False)
        assert torch.get_num_threads() == threads, "training restores the caller's thread count"
        return trained.model.state_dict()
    finally:
        torch.set_num_threads(before)


def test_training_gives_the_same_weights_bit_for_bit_with_one_and_two_threads() -> None:
    one, two = _weights_with_threads(1), _weights_with_threads(2)
    assert one.keys() == two.keys()
    differing = [name for name in one if not torch.equal(one[name], two[name])]
    assert not differing, f"weights differ with the thread count: {differing}"


def test_training_leaves_deterministic_algorithms_as_it_found_them() -> None:
    assert not torch.are_deterministic_algorithms_enabled()
    train_model(TrainConfig(train_limit=16, epochs=1, batch_size=16), "cpu", progress=False)
    assert not torch.are_deterministic_algorithms_enabled()


def test_the_training_procedure_is_part_of_the_cache_key() -> None:
    """A checkpoint trained another way (thread-dependent weights) has another key, so it is not reused."""
    from advspatial.training import settings_key

    config = TrainConfig()
    assert config.key() == settings_key({**config.relevant(), "procedure": TRAINING_PROCEDURE})
    assert config.key() != settings_key(config.relevant())
