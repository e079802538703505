"""Fine-tuning a pretrained model in the localized experiment (``localized-training``): what is fine-tuned,
the training masks, the evaluated images kept out of training, the report and a resume that trains nothing again."""

from __future__ import annotations

import csv
import html
import json
import math
import re
from pathlib import Path

import pytest
import torch
from helpers import ReportParser, load_script

from advspatial import training_modes
from advspatial.errors import ConfigError
from advspatial.experiments import context as experiment_context
from advspatial.experiments import get_experiment, resolve_config, run_experiment
from advspatial.experiments.measurement.roi import resolve_importance
from advspatial.experiments.localized import stages as localized_stages
from advspatial.experiments.localized.config import MODES, ROI_GATE, LocalizedConfig, finetune_config, finetunes
from advspatial.experiments.localized.stages import finetune_images, finetune_models, training_foreground
from advspatial.rundir import RunDir


#: the report's sections, as tests/experiments/localized/test_run.py reads them of a natural run
SECTIONS = ["verdicts", "faithfulness", "setup", "models", "robustness", "background-attacks", "limits",
            "what-would-decide", "config"]


def read_rows(path: Path) -> list[dict[str, str]]:
    with path.open() as fh:
        return list(csv.DictReader(fh))


# -- fine-tuning a pretrained model -------------------------------------------------------------

#: a tiny pretrained-like model as a user would give it: FILE.py:factory (+ --weights STATE_DICT)
PATCH_NET = '''
import torch
from torch import nn


class Patch(nn.Module):
    """Keeps the features of rows/columns 2..5 only (a 4x4 patch of an 8x8 image)."""

    def __init__(self, side: int = 8) -> None:
        super().__init__()
        patch = torch.zeros(1, 1, side, side)
        patch[..., 2:6, 2:6] = 1.0
        self.register_buffer("patch", patch)

    def forward(self, x):
        return x * self.patch


class PatchNet(nn.Module):
    """1x1 conv, batch norm, softplus, the patch, global average pooling, linear: reads one 4x4 patch only."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 6, 1), nn.BatchNorm2d(6), nn.Softplus(), Patch())
        self.fc = nn.Linear(6, 3)

    def forward(self, x):
        return self.fc(self.features(x).mean((2, 3)))


def make():
    return PatchNet()
'''
PATCH = (slice(2, 6), slice(2, 6))


def patch_region(n: int) -> torch.Tensor:
    region = torch.zeros(n, 8, 8, dtype=torch.bool)
    region[:, PATCH[0], PATCH[1]] = True
    return region


def write_patch_model(root: Path) -> tuple[str, Path]:
    """The factory spec and a state dict of 'pretrained' weights: positive head weights, so the Grad-CAM of every
    class is positive exactly on the patch (the known answer), and non-trivial batch-norm statistics."""
    source = root / "patchnet.py"
    source.write_text(PATCH_NET)
    module = load_script(source, "patchnet_for_test")
    torch.manual_seed(0)
    model = module.make()
    with torch.no_grad():
        model.fc.weight.uniform_(0.2, 1.0)
        model.features[1].running_mean.uniform_(-0.1, 0.1)
        model.features[1].running_var.uniform_(0.8, 1.2)
    weights = root / "patchnet.pt"
    torch.save(model.state_dict(), weights)
    return f"{source}:make", weights


def write_folder(root: Path, per_class: int = 20) -> Path:
    """An image folder without train/ and test/ (one image set for both splits): 3 classes of 8x8 PNGs, a
    class-coloured patch on noise."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    for c, name in enumerate(("red", "green", "blue")):
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            img = rng.integers(20, 120, (8, 8, 3), dtype=np.uint8)
            img[2:6, 2:6, c] = 230
            Image.fromarray(img).save(root / name / f"{i:03d}.png")
    return root


def finetune_values(root: Path) -> dict:
    spec, weights = write_patch_model(root)
    return {"dataset": f"imagefolder:{write_folder(root / 'images')}", "model": spec, "weights": str(weights),
            "image_size": 8, "fraction": 0.25, "eps": 0.1, "finetune_bn": "frozen", "out": str(root / "run"),
            "progress": False}


def test_a_pretrained_model_is_fine_tuned_and_a_registered_one_trained(tmp_path) -> None:
    values = finetune_values(tmp_path)
    config = resolve_config(get_experiment("localized-training"), None, values, quick=True)
    assert finetunes(config) and not finetunes(LocalizedConfig())
    assert finetunes(LocalizedConfig(model="lenet5", weights=values["weights"])), "a name with weights"
    settings = {m: finetune_config(config, m, "abc", "ids", "masks") for m in MODES}
    assert {s.epochs for s in settings.values()} == {config.train_epochs}, "natural gets as many epochs"
    assert {(s.lr, s.batch_size, s.seed, s.freeze_bn, s.start) for s in settings.values()} == {
        (config.finetune_lr, 128, config.model_seed, True, config.model)}
    assert settings["natural"].key() == finetune_config(config, "natural", "abc", "ids", "other").key()


def test_training_masks_are_the_complement_of_the_start_models_top_region(tmp_path, monkeypatch) -> None:
    """Known answer: the start model reads one 4x4 patch, so its Grad-CAM top 25% is that patch on every image;
    localized fine-tuning attacks exactly the rest."""
    values = finetune_values(tmp_path)
    config = resolve_config(get_experiment("localized-training"), None, values, quick=True)
    rundir = RunDir(config.out)
    data = experiment_context.test_images(config, rundir)
    start = experiment_context.load_checked_model(config, data, torch.device("cpu"))
    train = finetune_images(config, data)
    method, why = resolve_importance(config.importance, start, train.images(slice(0, 2)))
    assert method == "gradcam" and "GAP" in why
    foreground = training_foreground(config, rundir, start, train, method)
    assert torch.equal(foreground, patch_region(len(train)))
    assert (rundir.stages / "finetune/masks/gradcam-f0.25/batch-00000.pt").is_file()
    calls = []
    original = training_modes._adversarial_batch

    def spy(model, x, y, cfg, mask):  # type: ignore[no-untyped-def]
        calls.append(None if mask is None else mask.clone())
        return original(model, x, y, cfg, mask)

    monkeypatch.setattr(training_modes, "_adversarial_batch", spy)
    trained, info = finetune_models(config, rundir, data, torch.device("cpu"), {})
    # one adversarial batch per step (44 images, batch 128) of pgd, mixed-pgd, localized, localized-random
    assert len(calls) == 4
    assert calls[0] is None and calls[1] is None, "pgd and mixed-pgd: the whole image"
    assert torch.equal(calls[2][:, 0].bool(), ~patch_region(len(train))), "localized: the complement of the patch"
    random_region = calls[3][:, 0].bool()
    assert torch.equal(random_region.flatten(1).sum(1), (~patch_region(len(train))).flatten(1).sum(1)), \
        "localized-random: a region of the same area per image"
    assert not torch.equal(random_region, ~patch_region(len(train))), "... at random positions"
    assert info.mask_source.startswith("the complement of the top 25% of the start model's gradcam map")


def test_the_start_models_training_masks_are_in_the_ledger_and_its_fine_tuning_is_not(tmp_path) -> None:
    config = resolve_config(get_experiment("localized-training"), None, finetune_values(tmp_path), quick=True)
    rundir = RunDir(config.out)
    data = experiment_context.test_images(config, rundir)
    finetune_models(config, rundir, data, torch.device("cpu"), {})
    train = finetune_images(config, data)
    masks = rundir.passes.by_family()["finetune/masks/gradcam-f0.25"]
    assert masks.forward >= len(train) and masks.backward >= len(train)  # a Grad-CAM map of every training image
    # outside the stages only the start model's probes of its head (a few images): the five fine-tunings, copies of
    # the start that each pass every training image several times, count nothing
    assert rundir.passes.outside.forward < len(train)


def test_finetuning_never_trains_on_the_evaluated_images(tmp_path) -> None:
    values = finetune_values(tmp_path)
    config = resolve_config(get_experiment("localized-training"), None, values, quick=True)
    data = experiment_context.test_images(config)
    train = finetune_images(config, data)
    assert len(data) == config.n == 16 and len(train) == 60 - 16, "every other image, none of the evaluated"
    assert not set(train.ids.tolist()) & set(data.ids.tolist())
    few = finetune_images(LocalizedConfig(**{**vars(config), "train_limit": 9}), data)
    assert len(few) == 9 and torch.bincount(few.labels).tolist() == [3, 3, 3], "class-stratified"


@pytest.fixture(scope="module")
def finetune_run(tmp_path_factory):
    """A --quick run fine-tuning the patch model on a shared-split image folder."""
    root = tmp_path_factory.mktemp("finetune")
    values = finetune_values(root)
    config = resolve_config(get_experiment("localized-training"), None, values, quick=True)
    result, rundir = run_experiment("localized-training", config)
    return result, rundir.path, config


@pytest.mark.slow
def test_finetune_run_reports_what_was_fine_tuned(finetune_run) -> None:
    result, path, config = finetune_run
    metrics = json.loads((path / "metrics.json").read_text())
    ft = metrics["finetune"]
    assert ft["start"] == config.model and ft["epochs"] == config.train_epochs and ft["lr"] == config.finetune_lr
    assert ft["train_images"] == 44 and ft["excludes_evaluated"] and ft["bn"] == "frozen"
    assert ft["mask_method"] == "gradcam" and ft["start_gate"]["method"] == "gradcam"
    assert 0.0 <= ft["start_clean_accuracy"] <= 1.0
    trained = {int(r["index"]) for r in read_rows(path / "train_subset.csv")}
    evaluated = {int(r["index"]) for r in read_rows(path / "subset.csv")}
    assert len(trained) == 44 and not trained & evaluated
    for mode in MODES:
        m = metrics["models"][mode]
        assert m["epochs"] == config.train_epochs and m["steps"] == 1 and Path(m["checkpoint"]).is_file()
        assert math.isnan(m["test_accuracy"])
    assert (path / "stages/gate/start/gradcam").is_dir()
    body = result.summary.split("\n")[1]  # [0]: the smoke line
    assert body.startswith(f"models fine-tuned from the pretrained {config.model}: 1 epoch,")
    assert "excluding the evaluated images" in body
    text = html.unescape((path / "report.html").read_text())
    verdicts = text[text.index('<section id="verdicts">'):text.index('<section id="faithfulness">')]
    assert f"fine-tuned from the same pretrained {config.model} (not trained from scratch)" in verdicts
    assert "leaving out the 16 evaluated images" in verdicts
    assert f"start ({config.model}): gradcam" in text, "the start model's gate is in the gate section"
    parser = ReportParser()
    parser.feed((path / "report.html").read_text())
    assert parser.sections == SECTIONS
    # claims keep their gates: each model's own RoI gate on the accuracy claims under a map-cut background
    assert metrics["mask_from_importance"] is True
    for c in metrics["claims"]:
        if c["statistic"].startswith(("background-only", "foreground-only")):
            modes = c["subject"].replace(" model", "").split(" vs ")
            assert c["gates"] == {ROI_GATE: all(metrics["faithfulness"][m]["status"] != "failed" for m in modes)}, c


@pytest.mark.slow
def test_finetuned_models_start_identical_and_end_as_their_losses_say(finetune_run) -> None:
    from advspatial.models.loading import state_checksum

    _, path, config = finetune_run
    def stage_of(mode: str) -> Path:  # "localized-*" would also match "localized-random-*"
        return next(p for p in (path / "stages/finetune").glob(f"{mode}-*.pt")
                    if re.fullmatch(rf"{re.escape(mode)}-[0-9a-f]{{12}}", p.stem))

    saved = {m: torch.load(stage_of(m), weights_only=True)["value"] for m in MODES}  # a stage file: header + value
    start_weights = torch.load(config.weights, weights_only=True)
    sums = {}
    for mode, stage in saved.items():
        state = stage["state_dict"]
        assert state.keys() == start_weights.keys()
        assert stage["metadata"]["config"]["start_sha256"] == json.loads(
            (path / "metrics.json").read_text())["finetune"]["start_sha256"], "the same start for all three"
        assert torch.equal(state["features.3.patch"], start_weights["features.3.patch"])
        assert torch.equal(state["features.1.running_mean"], start_weights["features.1.running_mean"]), "BN frozen"
        assert not torch.equal(state["fc.weight"], start_weights["fc.weight"]), mode
        data = experiment_context.test_images(config)
        model = experiment_context.load_checked_model(config, data, torch.device("cpu"))
        model.load_state_dict(state)
        sums[mode] = state_checksum(model)
    assert sums["pgd"] != sums["natural"], "PGD examples change the patch: PGD fine-tuning ends elsewhere"
    # known answer: the start reads only the patch and batch norm is frozen (in train mode, batch statistics
    # would carry the background into the patch), so a background-only example has the clean image's logits and
    # localized fine-tuning takes exactly the natural steps (different weights for a model that reads the
    # background are checked in tests/test_training.py)
    assert sums["localized"] == sums["natural"]


@pytest.mark.slow
def test_finetune_resume_does_not_train_again(finetune_run, monkeypatch) -> None:
    _, path, config = finetune_run
    before = (path / "per_image.csv").read_text()
    (path / "per_image.csv").unlink()

    def refuse(*args, **kwargs):  # type: ignore[no-untyped-def]
        raise AssertionError("a resumed run must load the fine-tuned models, not train them")

    monkeypatch.setattr(localized_stages, "finetune_model", refuse)
    run_experiment("localized-training", config, resume=True)
    assert (path / "per_image.csv").read_text() == before
    # other start weights under the same run directory: refused, not mixed with the stages of the old ones
    original = Path(config.weights).read_bytes()
    weights = torch.load(config.weights, weights_only=True)
    weights["fc.bias"] += 1.0
    torch.save(weights, config.weights)
    try:
        with pytest.raises(ConfigError, match="start model changed"):
            run_experiment("localized-training", config, resume=True)
    finally:
        Path(config.weights).write_bytes(original)
