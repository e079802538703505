"""Unit-level stages of ``pse``: unit sums and masking curves over batches, the ranking split, the adaptive attack."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from torch import nn

from advspatial.analysis.units import masking_curve, unit_activation_change
from advspatial.errors import ConfigError
from advspatial.experiments.pse import PSEConfig
from advspatial.experiments.pse.units import (
    UnitSums, adaptive_k, cam_layer_name, combine_curves, count_units, sensitive_units_in_batch,
)
from advspatial.experiments.pse.config import adaptive_attack_of, adaptive_description
from advspatial.experiments.pse.stages import TRAIN_UNITS, train_split
from advspatial.experiments.stage import FieldsStage


def test_adaptive_k_is_the_best_k_short_of_every_unit() -> None:
    curve = {"ks": torch.tensor([0, 1, 2, 4, 8]), "robust_acc": torch.tensor([0.1, 0.3, 0.5, 0.5, 0.9])}
    assert adaptive_k(curve) == 2  # the best k short of masking every unit; ties: the smallest


def test_adaptive_attack_is_the_ensemble_by_default_or_pgd_labelled_an_upper_bound(tiny_cnn) -> None:
    model = tiny_cnn()
    ensemble = adaptive_attack_of(model, PSEConfig(adaptive_queries=10))
    assert ensemble.name == "autoattack" and ensemble.n_queries == 10
    assert "ensemble" in adaptive_description(PSEConfig())
    assert "upper bound" not in adaptive_description(PSEConfig())
    assert adaptive_attack_of(model, PSEConfig(adaptive_attack="pgd")).name == "pgd"
    assert "upper bound" in adaptive_description(PSEConfig(adaptive_attack="pgd"))
    assert "adaptive_attack" not in PSEConfig.QUICK  # quick runs attack the masked model with the ensemble too
    with pytest.raises(ConfigError):
        PSEConfig(adaptive_attack="fgsm").validate()


def test_units_are_ranked_on_training_images_disjoint_from_the_test_ids(tiny_cnn, tmp_path) -> None:
    """One image set for both splits: the ranking images never include a test image."""
    from advspatial.data.tensors import register_dataset_object
    from advspatial.rundir import RunDir

    g = torch.Generator().manual_seed(0)
    name = register_dataset_object((torch.rand(40, 1, 28, 28, generator=g), torch.arange(40) % 10))
    config = PSEConfig(dataset=name, unit_train_n=30, batch_size=8)
    test_ids = torch.arange(0, 40, 3)
    ctx = SimpleNamespace(config=config, data=SimpleNamespace(ids=test_ids), model=tiny_cnn(),
                          device=torch.device("cpu"), rundir=RunDir(tmp_path / "run"),
                          each_batch=lambda fn, desc="", slices=None: [fn(b, sl) for b, sl in enumerate(slices)])
    train = train_split(ctx)
    assert train.shared and 20 < len(train.data) <= 40 - len(test_ids)  # stratified, rounded per class
    assert not torch.isin(train.data.ids, test_ids).any()
    assert (train.targets != train.data.labels).all()


def test_unit_sums_over_batches_equal_the_whole_set(tiny_cnn, image_pair) -> None:
    model = tiny_cnn()
    x, x_adv, _ = image_pair(7)
    keep = torch.tensor([True, False, True, True, False, True, True])
    units = count_units(model, "features.3", x[:1])
    assert units == 16
    sums = UnitSums.from_change(None, 0, units)
    for sl in (slice(0, 3), slice(3, 5), slice(5, 7)):
        sums = sums + sensitive_units_in_batch(model, "features.3", x[sl], x_adv[sl], keep[sl], units)
    whole = unit_activation_change(model, "features.3", x[keep], x_adv[keep])
    combined = sums.change()
    assert sums.images == int(keep.sum())
    for key in ("mean_abs", "signed_mean", "clean_mean_abs"):
        torch.testing.assert_close(getattr(combined, key), getattr(whole, key), rtol=1e-5, atol=1e-7)


def test_unit_sums_of_no_images_is_nan() -> None:
    empty = UnitSums.from_change(None, 0, 4)
    assert empty.images == 0 and torch.isnan(empty.change().mean_abs).all()


def test_masking_curves_combined_over_batches_equal_the_whole_set(tiny_cnn, image_pair) -> None:
    model = tiny_cnn()
    x, x_adv, y = image_pair(9, seed=3)
    with torch.no_grad():
        y = model(x).argmax(1)  # some correct images so that the accuracies move
    ranked = torch.arange(16).flip(0)
    whole = masking_curve(model, "features.3", ranked, x, y, x_adv, n_random=2, seed=5)
    slices = (slice(0, 4), slice(4, 9))
    curves = [{k: getattr(c, k) for k in c.__dataclass_fields__}
              for c in (masking_curve(model, "features.3", ranked, x[s], y[s], x_adv[s], n_random=2, seed=5)
                        for s in slices)]
    combined = combine_curves(curves, [4, 5])
    for key in ("clean_acc", "robust_acc", "random_clean_acc", "random_robust_acc", "random_clean_all"):
        torch.testing.assert_close(combined[key], getattr(whole, key).double(), rtol=0, atol=1e-12)
    assert combined["clean_acc"][0] == 1.0  # k = 0 masks nothing: y is the prediction


def test_cam_layer_name(tiny_cnn) -> None:
    model = tiny_cnn()
    probe = torch.rand(1, 1, 28, 28)
    assert cam_layer_name(model, probe) == "features.3"
    assert cam_layer_name(model, probe, "features.0") == "features.0"
    plain = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 26 * 26, 10))
    assert cam_layer_name(plain, probe) == "1"  # found: the last 4-D feature map


def test_unit_sums_stage_round_trips_through_the_run_directory(tmp_path) -> None:
    from advspatial.rundir import RunDir

    rundir = RunDir(tmp_path / "run")
    sums = UnitSums(torch.rand(5, dtype=torch.float64), torch.rand(5, dtype=torch.float64),
                    torch.rand(5, dtype=torch.float64), 3)
    stage = TRAIN_UNITS.at("pgd", "targeted")
    assert isinstance(stage, FieldsStage) and stage.kind is UnitSums
    assert stage.key(2) == "units/train/pgd/targeted/batch-00002"
    stage.save(rundir, sums, 2)
    loaded = stage.load(rundir, 2)
    assert loaded.images == 3 and all(torch.equal(getattr(loaded, k), getattr(sums, k))
                                      for k in ("mean_abs", "signed_mean", "clean_mean_abs"))
