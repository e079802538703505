"""ROAD curves (regions/road.py): equal to Quantus 0.6's ROAD, batch invariance, known answers."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from advspatial.errors import ConfigError, ShapeError
from advspatial.faithfulness.road import (
    ROAD_PERCENTAGES, order_region, pixel_order, removal_count, road_curve, road_curves, road_symmetric,
)

SIZE = 16
PATCH = (slice(3, 9), slice(4, 10))   # the 6x6 patch the template model reads


def _quantus_road(model, x, y, maps, percentages, noise=0.0) -> np.ndarray:
    import quantus

    metric = quantus.ROAD(percentages=list(percentages), noise=noise, abs=False, normalise=False,
                          disable_warnings=True, display_progressbar=False)
    out = metric(model=model, x_batch=x.numpy(), y_batch=y.numpy(), a_batch=maps[:, None].numpy(), device="cpu")
    return np.array([out[p] for p in percentages])


@pytest.mark.parametrize("seed", [0, 1])
def test_morf_and_lerf_accuracy_equal_quantus_road(tiny_cnn, seed):
    """noise=0, one channel, maps with distinct values (Quantus' argsort and our order pick the same pixels).

    Quantus' ROAD is MoRF only; its LeRF is ROAD on the reversed map (1 + 1/256 - map: exact in float32,
    since the map's values are distinct multiples of 1/256; Quantus refuses all-negative maps).
    Quantus ranks the elements of (N,C,H,W); with C=1 these are the pixels."""
    model = tiny_cnn(size=SIZE, seed=seed)
    with torch.no_grad():                                    # sharper logits: predictions that move
        for p in model.parameters():
            p.mul_(4)
    gen = torch.Generator().manual_seed(10 + seed)
    x = torch.rand(24, 1, SIZE, SIZE, generator=gen)
    with torch.no_grad():
        y = model(x).argmax(1)
    y[::4] = (y[::4] + 1) % 10                               # some images start wrong
    hw = SIZE * SIZE
    maps = torch.stack([(torch.randperm(hw, generator=gen) + 1).float() / hw for _ in range(24)]).view(24, SIZE, SIZE)
    pct = [1, 5, 12.5, 30, 50, 77, 99]
    curves = road_curves(model, x, y, maps, pct, noise=0.0)
    np.testing.assert_allclose(curves.accuracy("morf").numpy(), _quantus_road(model, x, y, maps, pct), atol=1e-5)
    np.testing.assert_allclose(curves.accuracy("lerf").numpy(), _quantus_road(model, x, y, (hw + 1) / hw - maps, pct),
                               atol=1e-5)
    # the curves are not flat: the comparison could fail
    assert len(set(curves.accuracy("morf").tolist())) > 2


def test_curves_are_batch_independent_and_seeded(tiny_cnn):
    model = tiny_cnn(size=SIZE)
    gen = torch.Generator().manual_seed(3)
    x = torch.rand(6, 1, SIZE, SIZE, generator=gen)
    y = torch.randint(0, 10, (6,), generator=gen)
    maps = (torch.rand(6, SIZE, SIZE, generator=gen) * 4).floor()     # many ties: broken by seeded numbers
    ids = torch.tensor([40, 2, 7, 19, 5, 300])
    whole = road_curves(model, x, y, maps, (10, 50), seed=4, sample_ids=ids, score="logit")
    for i in range(6):
        alone = road_curves(model, x[i:i + 1], y[i:i + 1], maps[i:i + 1], (10, 50), seed=4,
                            sample_ids=ids[i:i + 1], score="logit")
        # the images and regions are the same bit for bit; the model's batched arithmetic may round differently
        torch.testing.assert_close(alone.morf_score[0], whole.morf_score[i], atol=1e-6, rtol=0)
        torch.testing.assert_close(alone.lerf_score[0], whole.lerf_score[i], atol=1e-6, rtol=0)
        assert torch.equal(pixel_order(maps[i:i + 1], 4, ids[i:i + 1])[0], pixel_order(maps, 4, ids)[i])
    other = road_curves(model, x, y, maps, (10, 50), seed=5, sample_ids=ids, score="logit")
    assert not torch.equal(other.morf_score, whole.morf_score)


def test_pixel_order_ranks_by_value_and_regions_take_its_ends():
    maps = torch.tensor([[[0.1, 0.9, 0.5], [0.3, 0.7, 0.2]]])
    order = pixel_order(maps)
    assert order.tolist() == [[1, 4, 2, 3, 5, 0]]
    assert removal_count(2, 3, 50) == 3 and removal_count(2, 3, 49) == 2   # int(), like Quantus
    morf = order_region(order, 2, 3, 50, True)
    lerf = order_region(order, 2, 3, 50, False)
    assert morf.flatten().tolist() == [False, True, True, False, True, False]
    assert torch.equal(lerf, ~morf)
    # ties are broken by the image's own numbers: the same in any batch, never by position alone
    flat = torch.zeros(2, 4, 4)
    a = pixel_order(flat, seed=0, sample_ids=torch.tensor([1, 2]))
    b = pixel_order(flat[:1], seed=0, sample_ids=torch.tensor([2]))
    assert torch.equal(a[1], b[0]) and not torch.equal(a[0], a[1]) and a[0].tolist() != list(range(16))


class TemplateModel(nn.Module):
    """Three classes, each a +-1 template on PATCH: logit_c = <template_c, patch - 0.5>; the rest is ignored."""

    def __init__(self) -> None:
        super().__init__()
        gen = torch.Generator().manual_seed(0)
        self.templates = nn.Parameter(torch.randint(0, 2, (3, 6, 6), generator=gen).float() * 2 - 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        patch = x[:, 0, PATCH[0], PATCH[1]] - 0.5
        return torch.einsum("nhw,chw->nc", patch, self.templates)


def _template_data(n: int = 30) -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    model = TemplateModel()
    gen = torch.Generator().manual_seed(1)
    y = torch.arange(n) % 3
    x = 0.5 + 0.05 * torch.randn(n, 1, SIZE, SIZE, generator=gen)
    x[:, 0, PATCH[0], PATCH[1]] += 0.3 * model.templates.detach()[y]
    return model, x.clamp(0, 1), y


def test_symmetric_score_is_positive_for_the_map_of_what_the_model_reads():
    """Known answer: the patch map's MoRF loses the class (the patch is imputed from the flat background),
    its LeRF keeps it; the reversed map gives the opposite sign."""
    model, x, y = _template_data()
    gen = torch.Generator().manual_seed(2)
    patch_map = 0.01 * torch.rand(len(x), SIZE, SIZE, generator=gen)
    patch_map[:, PATCH[0], PATCH[1]] += 1.0
    good = road_curves(model, x, y, patch_map, (20, 40, 60))
    bad = road_curves(model, x, y, patch_map.max() - patch_map, (20, 40, 60))
    assert good.accuracy("lerf").min() == 1.0 and good.accuracy("morf").max() < 0.6
    assert float(road_symmetric(good).mean()) > 0.4 and float(good.symmetric("score").mean()) > 0.2
    assert float(road_symmetric(bad).mean()) < -0.4
    d = good.as_dict()
    assert d["percentages"] == [20.0, 40.0, 60.0] and d["n"] == len(x)
    assert d["symmetric_accuracy"] == pytest.approx(float(road_symmetric(good).mean()))


def test_road_curve_alone_equals_its_half_of_road_curves(tiny_cnn):
    model = tiny_cnn(size=SIZE)
    x = torch.rand(4, 1, SIZE, SIZE, generator=torch.Generator().manual_seed(5))
    y = torch.tensor([0, 1, 2, 3])
    maps = torch.rand(4, SIZE, SIZE, generator=torch.Generator().manual_seed(6))
    both = road_curves(model, x, y, maps, (30,))
    lerf = road_curve(model, x, y, maps, (30,), most_relevant=False)
    assert torch.equal(lerf[0], both.lerf_correct) and torch.equal(lerf[1], both.lerf_score)
    assert bool(((both.morf_score > 0) & (both.morf_score < 1)).all())   # probabilities by default
    assert ROAD_PERCENTAGES == (10, 20, 30, 40, 50, 60, 70, 80, 90)


def test_errors_are_one_line_and_name_what_is_valid(tiny_cnn):
    model = tiny_cnn(size=SIZE)
    x, y = torch.rand(2, 1, SIZE, SIZE), torch.tensor([0, 1])
    maps = torch.rand(2, SIZE, SIZE)
    with pytest.raises(ConfigError, match="percentages"):
        road_curves(model, x, y, maps, (10, 120))
    with pytest.raises(ConfigError, match="percentages"):
        road_curves(model, x, y, maps, ())
    with pytest.raises(ConfigError, match="valid: probability, logit"):
        road_curves(model, x, y, maps, score="margin")
    with pytest.raises(ShapeError, match="maps must have shape"):
        road_curves(model, x, y, maps[:, :-1])
    with pytest.raises(ConfigError, match="valid: lerf, morf"):
        road_curves(model, x, y, maps, (10,)).accuracy("both")
