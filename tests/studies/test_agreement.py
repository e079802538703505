"""Agreement between models on known answers: the same maps agree perfectly, unrelated maps at chance, and maps
on different grids are compared on the coarser one."""

from __future__ import annotations

import math

import pytest
import torch
from study_records import model

from advspatial.studies.agreement import attack_agreement, common_grid, roi_agreement
from advspatial.studies.analysis import correct_agreement


def blob_maps(n: int, seed: int, size: int = 8) -> torch.Tensor:
    """A bright 3x3 blob at a random place per image, on a faint random background."""
    g = torch.Generator().manual_seed(seed)
    maps = torch.rand(n, size, size, generator=g) * 0.1
    for i in range(n):
        r, c = torch.randint(0, size - 2, (2,), generator=g).tolist()
        maps[i, r:r + 3, c:c + 3] += 1.0
    return maps


def test_models_with_the_same_maps_agree_beyond_the_same_class_null() -> None:
    maps = blob_maps(60, 0)
    cells = attack_agreement([model("a", maps=maps), model("b", seed=5, maps=maps.clone())], "pgd", 0.2, 0, 200)
    correct_agreement(cells, sesoi=0.01, alpha=0.05)
    (cell,) = cells
    assert (cell.a, cell.b, cell.n) == ("a", "b", 60)
    assert cell.observed == pytest.approx(1.0)  # the same region on every image
    assert cell.null < 0.5 and cell.effect.low > 0 and cell.verdict == "supported"


def test_unrelated_maps_agree_at_chance() -> None:
    cells = attack_agreement([model("a", maps=blob_maps(60, 1)), model("b", maps=blob_maps(60, 2))], "pgd", 0.2, 0,
                             500)
    correct_agreement(cells, sesoi=0.01, alpha=0.05)
    assert cells[0].effect.low < 0 < cells[0].effect.high
    assert cells[0].verdict != "supported"


def test_roi_agreement_uses_the_images_both_classify_correctly_and_both_gates() -> None:
    maps = blob_maps(60, 3)
    a, b = model("a", maps=maps), model("b", maps=maps.clone(), faithful=False)
    b.roi_correct[:10] = False
    cells = roi_agreement([a, b], 0.2, 0, 100)
    correct_agreement(cells, sesoi=0.01, alpha=0.05)
    assert cells[0].n == 50 and cells[0].subject == "RoI"
    assert cells[0].verdict == "not interpretable"  # b's RoI failed its faithfulness gate
    assert cells[0].gates == {"a: RoI faithfulness": True, "b: RoI faithfulness": False}


def test_too_few_common_images_give_no_number() -> None:
    a, b = model("a", n=60), model("b", n=60)
    b.attacks["pgd"].ids = b.attacks["pgd"].ids + 1000  # no image in common
    cell = attack_agreement([a, b], "pgd", 0.2, 0, 50)[0]
    assert cell.n == 0 and math.isnan(cell.observed)
    correct_agreement([cell], sesoi=0.01, alpha=0.05)
    assert cell.verdict == "insufficient data"


def test_maps_on_different_grids_meet_on_the_coarser_one() -> None:
    fine = torch.zeros(2, 16, 16)
    fine[:, :8, :8] = 1.0
    coarse = torch.rand(2, 8, 8)
    a, b = common_grid(fine, coarse)
    assert a.shape == b.shape == (2, 8, 8)
    assert float(a[:, :4, :4].min()) == 1.0 and float(a[:, 4:, :].max()) == 0.0
    assert torch.equal(b, coarse)
