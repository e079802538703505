"""The class prior's training batches as one run (experiments/spatial/prior.py): the prior and every batch's part
those of the batches attacked and mapped one at a time, in one batch's rounds; a part already saved is read back,
the others computed."""

from __future__ import annotations

from pathlib import Path

import torch
from conftest import TinyCNN
from helpers import synthetic_images, train_briefly

from advspatial.data.tensors import as_image_dataset, register_dataset_object
from advspatial.experiments.context import train_images
from advspatial.experiments.measurement.config import contribution_kw
from advspatial.experiments.measurement.stages import Context
from advspatial.experiments.spatial.config import SpatialConfig
from advspatial.experiments.spatial.prior import PRIOR_PARTS, TRAIN_ID_OFFSET, class_prior
from advspatial.maps import attack_map
from advspatial.passes import PassCount
from advspatial.regions import MapAccumulator
from advspatial.rundir import RunDir
from advspatial.runtime import batch_slices

PRIOR_N, BATCH = 30, 8


def _trained(name: str) -> tuple[TinyCNN, str]:
    """A TinyCNN trained briefly on 64 synthetic images, which are also the training set of dataset ``memory:name``
    (8 test images)."""
    torch.manual_seed(0)
    x, y = synthetic_images(64, seed=2)
    model = train_briefly(TinyCNN(num_classes=4), x, y, epochs=1, batch=32, lr=3e-3).eval()
    return model, register_dataset_object((x[:8], y[:8]), train=(x, y), name=name)


def _context(model: TinyCNN, dataset: str, out: Path) -> Context[SpatialConfig]:
    test_x, test_y = synthetic_images(8, seed=9)
    config = SpatialConfig(dataset=dataset, n=8, batch_size=BATCH, prior_n=PRIOR_N, steps=3, contribution_steps=4,
                           progress=False)
    rundir = RunDir(out)
    rundir.passes.watch(model)
    return Context(config, rundir, model, as_image_dataset((test_x, test_y)), torch.device("cpu"),
                   list(batch_slices(8, BATCH)))


def _prior_counts(ctx: Context[SpatialConfig]) -> PassCount:
    return ctx.rundir.passes.by_family().get("prior-classes", PassCount())


def _one_batch_at_a_time(ctx: Context[SpatialConfig]) -> tuple[torch.Tensor, list[MapAccumulator]]:
    """The prior made batch after batch, each attacked and mapped on its own."""
    cfg = ctx.config
    train = train_images(cfg, cfg.prior_n, ctx.data.ids)
    attack = cfg.budgeted_attack(cfg.defence_attack, ctx.model)
    total, parts = MapAccumulator(train.num_classes, train.image_shape[1:]), []
    for sl in batch_slices(len(train), cfg.batch_size):
        x, y = train.images(sl), train.labels[sl]
        result = attack.run(x, y, sample_ids=train.ids[sl] + TRAIN_ID_OFFSET)
        part = MapAccumulator(train.num_classes, train.image_shape[1:])
        part.update(attack_map(cfg.attack_map, ctx.model, x, result.x_adv, y, **contribution_kw(cfg)).map,
                    result.adv_pred)
        total.merge(part)
        parts.append(part)
    return torch.nan_to_num(total.means(), nan=0.0), parts


def test_the_priors_batches_as_one_run_give_each_batchs_part_in_one_batchs_rounds(tmp_path) -> None:
    model, dataset = _trained("prior-joint")
    ctx = _context(model, dataset, tmp_path / "joint")
    prior = class_prior(ctx)
    joint = _prior_counts(ctx)
    expected, parts = _one_batch_at_a_time(_context(model, dataset, tmp_path / "alone"))
    assert prior.abs().sum() > 0 and torch.allclose(prior, expected, atol=1e-6)
    batches = len(parts)
    assert batches == 4                                   # 30 training images, batches of 8
    for b, part in enumerate(parts):
        saved = PRIOR_PARTS.load(ctx.rundir, b)
        assert torch.equal(saved.counts, part.counts)
        assert saved.class_sums.keys() == part.class_sums.keys()
        assert all(torch.allclose(saved.class_sums[k], part.class_sums[k], atol=1e-6) for k in part.class_sums)
    # each batch alone makes a run's rounds; together about one run's, at the same passes
    alone = _context(model, dataset, tmp_path / "alone-counted")
    _one_batch_at_a_time(alone)
    separate = alone.rundir.passes.outside
    assert joint.forward == separate.forward and joint.backward == separate.backward
    assert joint.rounds * 3 < separate.rounds           # 10 against 37 here (a batch's own run: 9 or 10)


def test_a_run_with_a_lost_part_is_computed_whole_and_counts_what_a_run_in_one_go_does(tmp_path) -> None:
    """A lost part (a run stopped while saving) is computed again with the whole run of batches, so that it takes
    the share of the passes it had: the resumed run's counts are the uninterrupted run's, stage by stage."""
    model, dataset = _trained("prior-resume")
    first = _context(model, dataset, tmp_path / "run")
    prior = class_prior(first)
    shares = {key: count for key, count in first.rundir.passes.by_stage.items() if key.startswith("prior-classes/")}
    assert len(shares) == 4 and sum(c.forward for c in shares.values()) == _prior_counts(first).forward
    lost = tmp_path / "run" / "stages" / "prior-classes" / "batch-00002.pt"
    kept = (tmp_path / "run" / "stages" / "prior-classes" / "batch-00001.pt").stat().st_mtime_ns
    lost.unlink()
    again = _context(model, dataset, tmp_path / "run")
    assert torch.equal(class_prior(again), prior)
    assert lost.exists() and (tmp_path / "run" / "stages" / "prior-classes" / "batch-00001.pt").stat().st_mtime_ns \
        == kept   # only the lost part is saved again
    for key, count in shares.items():
        resumed = again.rundir.passes.by_stage[key]
        assert (resumed.forward, resumed.backward, resumed.calls, resumed.rounds) == (
            count.forward, count.backward, count.calls, count.rounds), key
