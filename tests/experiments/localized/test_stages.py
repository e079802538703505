"""The localized experiment's per-model evaluation (:mod:`advspatial.experiments.localized.stages`)."""

from __future__ import annotations


import torch

from advspatial.experiments.localized.config import CONDITIONS, LocalizedConfig
from advspatial.experiments.localized.stages import context_of, evaluate_model
from advspatial.rundir import RunDir


def test_evaluate_model_is_independent_of_batching_and_respects_the_mask(tiny_cnn, tmp_path, grey_dataset) -> None:
    data = grey_dataset(n=7)
    model = tiny_cnn(seed=1)
    results = []
    for bs in (7, 3):
        config = LocalizedConfig(n=7, batch_size=bs, steps=3, eps=0.2, progress=False)
        ctx = context_of(config, RunDir(tmp_path / f"bs{bs}"), data, model)
        results.append(evaluate_model(ctx, "natural", model, "gradcam"))
    a, b = results
    for cond in CONDITIONS:
        assert torch.equal(a.preds[cond], b.preds[cond]), cond
    assert torch.equal(a.region_x_adv, b.region_x_adv)
    assert torch.allclose(a.cam_energy_clean, b.cam_energy_clean, equal_nan=True)
    x = data.images()
    with torch.no_grad():
        assert torch.equal(a.preds["clean"], model(x).argmax(1))
        assert torch.equal(a.preds["region"], model(a.region_x_adv).argmax(1))
    delta = (a.region_x_adv - x)[:, 0]
    assert torch.count_nonzero(delta[data.masks]) == 0 and torch.count_nonzero(delta) > 0
    assert torch.allclose(a.region_share, (~data.masks).float().flatten(1).mean(1))
    # stages were written per batch: a second evaluation loads them instead of attacking again
    stages = sorted(p.relative_to(tmp_path / "bs3").as_posix() for p in (tmp_path / "bs3").rglob("*.pt"))
    assert "stages/attack/natural/region/batch-00002.pt" in stages
    assert "stages/importance/natural/gradcam/batch-00002.pt" in stages
    assert a.importance == "gradcam"


def test_the_other_training_seeds_models_count_their_evaluation_passes(tiny_cnn, tmp_path, grey_dataset,
                                                                       monkeypatch) -> None:
    from types import SimpleNamespace

    from advspatial.experiments.localized import stages
    from advspatial.experiments.localized.config import MODES

    data = grey_dataset(n=4)
    models = {mode: SimpleNamespace(model=tiny_cnn(seed=i)) for i, mode in enumerate(MODES)}
    monkeypatch.setattr(stages, "train_models", lambda config, device, timings: models)
    config = LocalizedConfig(n=4, batch_size=4, steps=2, eps=0.2, ensemble_n=0, training_seeds=2, progress=False)
    rundir = RunDir(tmp_path / "run")
    ctx = context_of(config, rundir, data, models["natural"].model)
    rows: list[dict] = []
    stages.other_seeds(ctx, {mode: {"method": "gradcam"} for mode in MODES}, {}, rows)
    families = rundir.passes.by_family()
    for mode in MODES:
        full = families[f"attack/{mode}@seed1/full"]
        assert full.forward >= 4 * 2 and full.backward >= 4 * 2, mode  # 2 PGD steps on each of the 4 images
    assert len(rows) == len(MODES) * 4
