"""The measurement's report sections (experiments/measurement/sections.py): texts that quote the run's own numbers."""

from __future__ import annotations

from types import SimpleNamespace

from advspatial.experiments.measurement.sections import onepixel_limits


def test_the_one_pixel_limit_states_how_many_images_the_attack_fooled_here() -> None:
    """It read "on 28x28 grey images they rarely succeed" on every dataset, also beside a CIFAR-10 ResNet-20 whose
    one-pixel attack fooled 26 of 57 images: the limit now quotes the run's own count."""
    cfg = SimpleNamespace(onepixel_n=100, onepixel_popsize=100, onepixel_steps=30)
    found = SimpleNamespace(n=64, attacks={"onepixel": SimpleNamespace(successful=26, success_rate=0.456)})
    (text,) = onepixel_limits(cfg, found)  # type: ignore[arg-type]
    assert text.startswith("One-pixel attacks run on the first 64 images with a reduced DE budget (population 100")
    assert "fool 26 of the correctly classified images (success rate 0.456)" in text and "grey" not in text
    assert onepixel_limits(cfg, SimpleNamespace(n=64, attacks={})) == []  # type: ignore[arg-type]
