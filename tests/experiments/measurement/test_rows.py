"""The rows' bounded stores (experiments/measurement/rows.py): the figure examples drawn across classes, with values
that cost to make (images decoded from files) made only for the images chosen."""

from __future__ import annotations

import torch

from advspatial.experiments.measurement.rows import keep_across_classes


def test_a_value_made_on_demand_is_made_for_the_chosen_images_only() -> None:
    labels = torch.tensor([0, 0, 1, 1, 2, 2, 0, 1])
    keep = torch.tensor([True, True, False, True, True, True, True, True])
    images = torch.arange(8.0)[:, None].expand(8, 3)
    asked: list[list[int]] = []

    def decode(chosen: torch.Tensor) -> torch.Tensor:
        asked.append(chosen.tolist())
        return images[chosen]

    eager: dict[str, list[torch.Tensor]] = {"x": [], "labels": []}
    lazy: dict[str, list[torch.Tensor]] = {"x": [], "labels": []}
    for store, x in ((eager, images), (lazy, decode)):
        keep_across_classes(store, 3, keep[:4], 3, x=x[:4] if isinstance(x, torch.Tensor) else x, labels=labels[:4])
        keep_across_classes(store, 3, keep[4:], 3, x=x[4:] if isinstance(x, torch.Tensor) else
                            (lambda chosen: decode(chosen + 4)), labels=labels[4:])
    assert asked == [[0, 3], [4]]  # one image a class, three in all: the first batch's class 0 and 1, then class 2
    assert torch.equal(torch.cat(lazy["x"]), torch.cat(eager["x"]))
    assert torch.equal(torch.cat(lazy["labels"]), torch.tensor([0, 1, 2]))


def test_a_full_store_asks_for_no_image() -> None:
    store: dict[str, list[torch.Tensor]] = {"x": [torch.zeros(2, 3)], "labels": [torch.tensor([0, 1])]}
    asked: list[int] = []
    keep_across_classes(store, 2, torch.ones(3, dtype=torch.bool), 2,
                        x=lambda chosen: asked.append(len(chosen)) or torch.zeros(len(chosen), 3),
                        labels=torch.tensor([0, 1, 1]))
    assert asked == [0]
    assert sum(len(t) for t in store["labels"]) == 2
