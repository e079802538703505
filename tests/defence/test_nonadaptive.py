"""evaluate_defence: every column as documented, a known-answer toy, batching independence."""

from __future__ import annotations

import pytest
import torch
from helpers import grad_map, intensity_map
from torch import nn

from advspatial.defence.nonadaptive import evaluate_defence
from advspatial.defence.neutralize import NeutralizedModel
from advspatial import stacked_runs
from advspatial.errors import ShapeError
from advspatial.passes import PassLedger
from advspatial.regions import random_region_like
from advspatial.regions.fills import fill


class _Linear2(nn.Module):
    """z0 = 0, z1 = sum of rows 0-1 of a 1x4x4 image - 0.6."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z1 = x[:, 0, :2].flatten(1).sum(1) - 0.6
        return torch.stack([torch.zeros_like(z1), z1], dim=1)


def _row0(x: torch.Tensor) -> torch.Tensor:
    maps = torch.zeros(x.shape[0], 4, 4)
    maps[:, 0] = 1.0
    return maps


def _rows01(x: torch.Tensor) -> torch.Tensor:
    maps = torch.zeros(x.shape[0], 4, 4)
    maps[:, :2] = 1.0
    return maps


def test_known_answers_on_a_toy():
    # the attack sits in row 1 = RoA \ RoI: the defence and the oracle remove it, the upper bound too
    model = _Linear2()
    defended = NeutralizedModel(model, _row0, _rows01, fraction=0.5, roi_fraction=0.25, control_match="none")
    x = torch.zeros(8, 1, 4, 4)
    x_adv = x.clone()
    x_adv[:, :, 1] = 0.25
    y = torch.zeros(8, dtype=torch.long)
    oracle = torch.zeros(8, 4, 4, dtype=torch.bool)
    oracle[:, 1] = True
    roa = torch.zeros(8, 4, 4, dtype=torch.bool)
    roa[:, :2] = True
    res = evaluate_defence(model, defended, x, y, x_adv, oracle, roa)
    assert res.pred_clean.tolist() == [0] * 8 and res.pred_adv.tolist() == [1] * 8
    assert res.pred_defended_adv.tolist() == [0] * 8 and res.pred_clean_restore_adv.tolist() == [0] * 8
    assert res.pred_oracle_adv.tolist() == [0] * 8 and res.pred_oracle_clean_restore.tolist() == [0] * 8
    assert res.pred_defended_clean.tolist() == [0] * 8
    assert res.n_region_adv.tolist() == [4] * 8 and res.n_region_oracle.tolist() == [4] * 8
    # oracle control: 4 random pixels of rows 0-1; it removes 0.25 per chosen row-1 pixel, so it
    # flips back (z1 = 1 - 0.25 r - 0.6 < 0) only when at least r = 2 of its 4 pixels are in row 1
    removed = torch.stack([random_region_like(oracle, 0, within=roa, draw=d)[:, 1].flatten(1).sum(1)
                           for d in range(10)], dim=1)
    assert torch.equal(res.pred_oracle_control_adv, (removed < 2).long())
    assert res.pred_oracle_control_adv.shape == (8, 10)
    assert 0 < int(res.pred_oracle_control_adv.sum()) < 80  # both outcomes occur: the control is not trivial
    acc = res.accuracies()
    assert acc["adv"] == 0.0 and acc["defended_adv"] == 1.0 and acc["clean"] == 1.0
    # matched on foreground (row 1 is the only foreground of x_adv), the oracle's control inside RoA has to
    # take its 4 pixels from row 1: it is the oracle region itself, and restores every image
    assert NeutralizedModel(model, _row0, _rows01, fraction=0.5).control_match == "foreground"
    matched_defence = NeutralizedModel(model, _row0, _rows01, fraction=0.5, roi_fraction=0.25)
    matched = evaluate_defence(model, matched_defence, x, y, x_adv, oracle, roa)
    assert matched.pred_oracle_control_adv.eq(0).all()


def test_columns_follow_their_definitions_and_ignore_batching(tiny_cnn):
    model = tiny_cnn()
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(5, 1, 28, 28, generator=gen)
    x_adv = (x + 0.2 * torch.randn(x.shape, generator=gen)).clamp(0, 1)
    y = torch.randint(0, 10, (5,), generator=gen)
    defended = NeutralizedModel(model, intensity_map, grad_map(model), fraction=0.2, fill="blur", mode="random")
    oracle = torch.rand(5, 28, 28, generator=gen) < 0.1
    roa = oracle | (torch.rand(5, 28, 28, generator=gen) < 0.2)
    ids = torch.arange(10, 15)  # global ids of these images in a larger dataset
    res = evaluate_defence(model, defended, x, y, x_adv, oracle, roa, sample_ids=ids, draws=4, batch_size=2)
    alone = evaluate_defence(model, defended, x, y, x_adv, oracle, roa, sample_ids=ids, draws=4, batch_size=64)
    for name, col in res.columns().items():
        assert torch.equal(col, getattr(alone, name)), name
        assert col.shape == ((5, 4) if "_control_" in name else (5,))
    # the last three images evaluated on their own, with their global ids: the same rows
    tail = evaluate_defence(model, defended, x[2:], y[2:], x_adv[2:], oracle[2:], roa[2:], sample_ids=ids[2:], draws=4)
    for name, col in tail.columns().items():
        assert torch.equal(col, getattr(res, name)[2:]), name

    pred = lambda images: model(images).argmax(1)  # noqa: E731
    with torch.no_grad():
        sel_adv = defended.variant("defend").select(x_adv, sample_ids=ids)
        sel_clean = defended.variant("defend").select(x, sample_ids=ids)
        region_adv, region_clean = sel_adv.neutralized, sel_clean.neutralized
        blur = lambda images, region: fill(images, region, "blur")  # noqa: E731

        def controls(images, selection):
            return torch.stack([pred(blur(images, random_region_like(
                selection.neutralized, 0, within=~selection.roi, strata=(images.amax(1) > 0.05).long(), draw=d,
                sample_ids=ids))) for d in range(4)], dim=1)

        def oracle_controls():
            return torch.stack([pred(blur(x_adv, random_region_like(
                oracle, 0, within=roa, strata=(x_adv.amax(1) > 0.05).long(), draw=d, sample_ids=ids)))
                for d in range(4)], dim=1)

        expected = {
            "label": y,
            "pred_clean": pred(x),
            "pred_adv": pred(x_adv),
            "pred_defended_adv": pred(blur(x_adv, region_adv)),
            "pred_control_adv": controls(x_adv, sel_adv),
            "pred_clean_restore_adv": pred(torch.where(region_adv[:, None], x, x_adv)),
            "pred_defended_clean": pred(blur(x, region_clean)),
            "pred_control_clean": controls(x, sel_clean),
            "n_region_adv": region_adv.flatten(1).sum(1),
            "n_region_clean": region_clean.flatten(1).sum(1),
            "pred_oracle_adv": pred(blur(x_adv, oracle)),
            "pred_oracle_control_adv": oracle_controls(),
            "pred_oracle_clean_restore": pred(torch.where(oracle[:, None], x, x_adv)),
            "n_region_oracle": oracle.flatten(1).sum(1),
        }
    assert set(res.columns()) == set(expected)
    for name, value in expected.items():
        assert torch.equal(getattr(res, name), value), name
    assert bool((res.n_region_adv > 0).all())
    rows = res.rows()
    assert len(rows) == 5 and rows[2]["pred_adv"] == int(expected["pred_adv"][2])
    share = float((expected["pred_control_adv"][2] == y[2]).float().mean())
    assert rows[2]["pred_control_adv"] == pytest.approx(share)  # a control's row is its share of correct draws
    assert defended.calls == 0  # the mode of the given defence is not used


def test_a_batchs_filled_images_are_one_round_and_stacked_calls_give_the_same_columns(tiny_cnn, monkeypatch):
    """Per batch: the undefended predictions one round, every filled image (defended, controls, put-back, oracle)
    another, besides the selection's own maps; the same columns when a GPU's stacked calls are forced here."""
    model = tiny_cnn()
    gen = torch.Generator().manual_seed(1)
    x = torch.rand(6, 1, 28, 28, generator=gen)
    x_adv = (x + 0.2 * torch.randn(x.shape, generator=gen)).clamp(0, 1)
    y = torch.randint(0, 10, (6,), generator=gen)
    defended = NeutralizedModel(model, intensity_map, grad_map(model), fraction=0.2, fill="blur")
    oracle = torch.rand(6, 28, 28, generator=gen) < 0.1
    ledger = PassLedger()
    ledger.watch(model)
    one_each = evaluate_defence(model, defended, x, y, x_adv, oracle, draws=3, batch_size=3)
    loop_calls, loop_rounds = ledger.outside.calls, ledger.outside.rounds
    filled = 2 * (1 + 3) + 1 + 1 + 3 + 1   # defended and controls for adv and clean, put back, oracle's three
    maps_calls = loop_calls - 2 * (2 + filled)
    assert loop_rounds == maps_calls + 2 * 2   # two batches: the maps' calls, then two rounds each
    monkeypatch.setattr(stacked_runs, "CPU_STACK_ELEMENTS", 1 << 30)
    stacked = evaluate_defence(model, defended, x, y, x_adv, oracle, draws=3, batch_size=3)
    assert ledger.outside.calls - loop_calls == maps_calls + 2 * 2
    for name, col in one_each.columns().items():
        assert torch.equal(col, getattr(stacked, name)), name


def test_without_oracle_and_empty_input(tiny_cnn):
    model = tiny_cnn()
    defended = NeutralizedModel(model, intensity_map, intensity_map, fraction=0.1)
    x = torch.rand(2, 1, 28, 28)
    res = evaluate_defence(model, defended, x, torch.tensor([1, 2]), x)
    assert res.pred_oracle_adv is None and "pred_oracle_adv" not in res.columns()
    assert torch.equal(res.pred_clean_restore_adv, res.pred_adv)  # x_adv == x: nothing to put back
    empty = evaluate_defence(model, defended, x[:0], torch.tensor([], dtype=torch.long), x[:0])
    assert len(empty) == 0 and empty.rows() == []
    with pytest.raises(ShapeError, match="x_adv"):
        evaluate_defence(model, defended, x, torch.tensor([1, 2]), x[:1])
    with pytest.raises(ShapeError, match="region must have shape"):
        evaluate_defence(model, defended, x, torch.tensor([1, 2]), x, torch.zeros(2, 5, 5, dtype=torch.bool))


def test_restores_training_mode(tiny_cnn):
    model = tiny_cnn().train()
    defended = NeutralizedModel(model, intensity_map, intensity_map, fraction=0.1)
    evaluate_defence(model, defended, torch.rand(2, 1, 28, 28), torch.tensor([0, 1]), torch.rand(2, 1, 28, 28))
    assert model.training and all(p.requires_grad for p in model.parameters())
