"""Tests of the localized experiment: config, model settings, per-image evaluation, claims, and a CI-sized run.

The claims are tested on hand-made per-image columns (known verdicts, a failed
faithfulness gate). The end-to-end run uses the ``--quick`` preset (five
smallcnn models trained for one epoch on 512 images, in a temporary model
cache, without the full test-set accuracy pass) and checks the run directory,
the faithfulness gate of each model, the claims and their verdicts, recomputes
every reported number from per_image.csv, parses the HTML report, and resumes
after lost stages with identical rows.
"""

from __future__ import annotations

import csv
import dataclasses
import html
import json
import math
import re
from pathlib import Path

import pytest
import torch
import yaml
from conftest import fashion_mnist_available, needs_fashion_mnist
from helpers import ReportParser, assert_smoke_test

from advspatial import training, training_modes
from advspatial.experiments.localized.attack_rows import model_rows, row_stats, seed_spread
from advspatial.experiments.localized.attacked_region import (
    foreground_energy, fooled_first, importance_region, mask_uses_importance, region_mask,
)
from advspatial.data import ImageDataset
from advspatial.errors import ConfigError
from advspatial.experiments import context as experiment_context
from advspatial.experiments import get_experiment, resolve_config, run_experiment
from advspatial.faithfulness.record import GateResult
from advspatial.experiments.measurement.config import GatedConfig
from advspatial.experiments.measurement.roi import resolve_importance
from advspatial.experiments.measurement.roi import roi_label
from advspatial.experiments.localized import stages as localized_stages
from advspatial.experiments.localized.claims import build_claims, primary_condition
from advspatial.experiments.localized.config import (
    CONDITIONS, GATE_EPS_FOR_L2, MIXED, MODES, ROI_GATE, LocalizedConfig, finetune_config, finetunes, gate_eps,
    seed_name, train_config,
)
from advspatial.experiments.localized.findings import ModelFindings, TrainingFacts
from advspatial.experiments.localized.stages import (
    ModelEvaluation, context_of, eval_attack, evaluate_model, finetune_images, finetune_models, training_foreground,
)
from advspatial.experiments.smoke import SMOKE_MARK, would_read
from advspatial.masks import BACKGROUND_TAU
from advspatial.statistics.claims import sentence_case
from advspatial.statistics.verdicts import VERDICTS
from advspatial.rundir import RunDir
from advspatial.training import TrainConfig

SECTIONS = ["verdicts", "faithfulness", "setup", "models", "robustness", "background-attacks", "limits",
            "what-would-decide", "config"]
FIGURES = {"accuracy.png", "examples-natural.png", "importance-natural.png", "examples-localized.png",
           "importance-localized.png"}


def grey_dataset(n: int = 10, seed: int = 0) -> ImageDataset:
    """MNIST-like images (bright blob on black) with their x > tau foreground masks."""
    g = torch.Generator().manual_seed(seed)
    pixels = torch.zeros(n, 1, 28, 28)
    for i in range(n):
        r, c = torch.randint(3, 12, (2,), generator=g).tolist()
        pixels[i, 0, r : r + 12, c : c + 10] = 0.3 + 0.7 * torch.rand(12, 10, generator=g)
    return ImageDataset("grey", pixels, torch.arange(n) % 10, tuple(str(k) for k in range(10)),
                        masks=pixels[:, 0] > BACKGROUND_TAU)


# -- config and models -----------------------------------------------------------------------

@pytest.mark.parametrize(("values", "message"), [
    ({"finetune_lr": 0.0}, "finetune_lr"),
    ({"finetune_bn": "sometimes"}, "finetune_bn"),
    ({"mask": "no-such-mask"}, "neither one of"),
    ({"norm": "l1"}, "norm"),
    ({"eps": 1.5}, "eps"),
    ({"eps": 0.0}, "eps"),
    ({"mix": 1.5}, "mix"),
    ({"train_epochs": 0}, "train_epochs"),
    ({"steps": 0}, "steps"),
    ({"fraction": 1.0}, "fraction"),
    ({"importance": "no-such-map"}, "importance method"),
    ({"gate_fills": ["zero"]}, "gate_fills"),
    ({"gate_eps": 2.0}, "gate_eps"),
    ({"significance": 0.0}, "significance"),
    ({"sesoi": -0.1}, "sesoi"),
])
def test_invalid_settings_are_rejected_before_any_work(values: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        resolve_config(get_experiment("localized-training"), None, values, quick=False)


def test_an_unknown_model_is_rejected_before_any_work() -> None:
    from advspatial.errors import ModelError

    with pytest.raises(ModelError, match="unknown model"):
        resolve_config(get_experiment("localized-training"), None, {"model": "weights.pt"}, quick=False)


def test_l2_budget_may_exceed_one() -> None:
    config = resolve_config(get_experiment("localized-training"), None, {"norm": "l2", "eps": 1.5}, quick=False)
    assert eval_attack(torch.nn.Linear(1, 1), config).norm == "l2"


def test_gate_and_inference_settings() -> None:
    config = LocalizedConfig()
    assert isinstance(config, GatedConfig) and config.importance == "auto"
    assert (config.sesoi, config.significance) == (0.01, 0.05)
    quick = resolve_config(get_experiment("localized-training"), None, {}, quick=True)
    assert quick.gate_n <= quick.n and quick.gate_steps < config.gate_steps
    assert quick.randomization_images < config.randomization_images
    # the gate's PGD is L-inf: the experiment's eps for an L-inf run, a fixed L-inf budget for an L2 run
    assert gate_eps(config) == config.eps
    assert gate_eps(LocalizedConfig(norm="l2", eps=1.5)) == GATE_EPS_FOR_L2
    assert gate_eps(LocalizedConfig(norm="l2", eps=1.5, gate_eps=0.05)) == 0.05


def test_which_masks_rest_on_the_importance_map() -> None:
    grey = grey_dataset(4)
    colour = ImageDataset("colour", torch.rand(4, 3, 16, 16), torch.arange(4), tuple("abcd"))
    assert not mask_uses_importance("background", grey), "grey data: the dataset's own x > tau masks"
    assert mask_uses_importance("background", colour) and mask_uses_importance("foreground", colour)
    assert mask_uses_importance("roi", grey) and mask_uses_importance("roi-complement", grey)


def test_importance_masks_use_the_configured_map(tiny_cnn) -> None:
    colour = ImageDataset("colour", torch.rand(6, 3, 28, 28), torch.arange(6) % 10, tuple(str(k) for k in range(10)))
    model = tiny_cnn(in_channels=3)
    config = LocalizedConfig(fraction=0.25)
    region = region_mask(config.mask, colour, slice(0, 6), model, "saliency", config.fraction, config.seed)
    roi = importance_region("saliency", model, colour.images(), colour.labels, 0.25, 0, torch.arange(6))
    assert torch.equal(region[:, 0].bool(), ~roi), "background of colour data = complement of the RoI"
    assert (roi.flatten(1).float().mean(1) - 0.25).abs().max() < 0.01
    fg = region_mask("foreground", colour, slice(2, 4), model, "saliency", 0.25, 0)
    assert torch.equal(fg[:, 0].bool(), roi[2:4]), "batch-independent: ties broken per sample id"


def test_training_settings_of_the_models() -> None:
    config = LocalizedConfig()
    settings = {m: train_config(config, m) for m in MODES}
    natural, pgd, local = settings["natural"], settings["pgd"], settings["localized"]
    assert {s.epochs for s in settings.values()} == {config.train_epochs}, "epochs matched across every model"
    shared = train_config(LocalizedConfig(natural_epochs=5), "natural")
    assert shared.key() == TrainConfig().key(), "natural_epochs 5: the shared cached default model"
    assert [s.mode for s in settings.values()] == list(MODES)
    assert {settings[m].mix for m in MIXED} == {config.mix}, "the controls share localized training's mixture"
    assert settings["mixed-pgd"].eps == settings["localized-random"].eps == config.eps
    assert pgd.attack_steps == local.attack_steps == config.train_attack_steps
    assert pgd.eps == local.eps == config.eps and natural.train_limit is None
    other_mix = LocalizedConfig(mix=0.2)
    assert train_config(other_mix, "pgd").key() == pgd.key(), "mix does not retrain the PGD model"
    assert train_config(other_mix, "localized").mix == 0.2
    assert train_config(LocalizedConfig(train_limit=100), "pgd").train_limit == 100


def test_foreground_energy_known_answers() -> None:
    cam = torch.tensor([[[1.0, 3.0], [0.0, 0.0]], [[0.0, 0.0], [0.0, 0.0]]])
    keep = torch.tensor([[[1.0, 0.0], [1.0, 1.0]], [[1.0, 1.0], [1.0, 1.0]]])
    energy = foreground_energy(cam, keep)
    assert energy[0].item() == pytest.approx(0.25) and math.isnan(energy[1].item())


def test_metrics_are_computed_from_rows() -> None:
    rows = [{"model": "natural", "label": 1, "clean_pred": 1, "full_pred": 2, "region_pred": 1, "complement_pred": 3,
             "region_share": 0.5, "cam_energy_clean": 0.8, "cam_energy_region_adv": math.nan},
            {"model": "natural", "label": 2, "clean_pred": 2, "full_pred": 2, "region_pred": 0, "complement_pred": 3,
             "region_share": 0.7, "cam_energy_clean": 0.6, "cam_energy_region_adv": 0.4},
            {"model": "pgd", "label": 0, "clean_pred": 5, "full_pred": 5, "region_pred": 5, "complement_pred": 5,
             "region_share": 0.1, "cam_energy_clean": 0.1, "cam_energy_region_adv": 0.1}]
    m = row_stats(rows, "natural")
    assert m.images == 2 and m.accuracy["clean"] == 1.0 and m.accuracy["full"] == 0.5
    assert m.accuracy["region"] == 0.5 and m.accuracy["complement"] == 0.0 and not m.attacked
    assert m.region_share == pytest.approx(0.6)
    # an image with an all-zero Grad-CAM (NaN share) before or after is left out of both means
    assert m.cam_energy_clean == pytest.approx(0.6) and m.cam_energy_region_adv == pytest.approx(0.4)
    assert m.cam_zero_images == 1 and row_stats(rows, "pgd").cam_zero_images == 0


def test_a_models_findings_are_one_flat_object_in_metrics_json() -> None:
    """metrics.json keeps its flat keys per model (``<condition>_accuracy``, ``<condition>_images``, the training
    facts), and reads back as the same typed findings."""
    rows = [{"model": "pgd", "label": i % 2, "clean_pred": 0, "ensemble_pred": 0 if i < 2 else -1,
             "full@x2_pred": 1, "region_share": 0.25, "cam_energy_clean": 0.5, "cam_energy_region_adv": 0.75}
            for i in range(4)]
    stats = row_stats(rows, "pgd")
    assert stats.accuracy == {"clean": 0.5, "ensemble": 0.5, "full@x2": 0.5} and stats.attacked == {"ensemble": 2.0}
    for facts in (TrainingFacts(0.9, 1.5, 2, "a.pt"), TrainingFacts(math.nan, 1.5, 2, "b.pt", 7, 0.25, "k")):
        model = ModelFindings(stats, facts, seed_spread(rows, ["pgd"]), "interpretable", "interpretable")
        flat = model.as_dict()
        assert list(flat)[:6] == ["images", "clean_accuracy", "ensemble_accuracy", "ensemble_images",
                                  "full@x2_accuracy", "region_share"]
        assert ("steps" in flat) == (facts.steps is not None), "a model trained from scratch has no steps"
        again = ModelFindings.from_dict(json.loads(json.dumps(flat)))
        assert json.dumps(again.as_dict()) == json.dumps(flat)
        assert again.stats == stats and again.seeds["ensemble"].values == [0.5]


def test_rows_of_a_model_and_the_images_a_figure_shows() -> None:
    labels = torch.tensor([0, 1, 2, 3])
    preds = {"clean": torch.tensor([0, 1, 0, 3]), "region": torch.tensor([0, 0, 0, 1])}
    rows = model_rows("m", labels, preds, torch.full((4,), 0.5), torch.tensor([0.2, 0.4, math.nan, 1.0]),
                      torch.tensor([0.1, 0.3, 0.5, 0.9]))
    assert [r["index"] for r in rows] == [0, 1, 2, 3]
    assert list(rows[0]) == ["model", "index", "label", "clean_pred", "region_pred", "region_share",
                             "cam_energy_clean", "cam_energy_region_adv"], "the per_image.csv columns, in order"
    stats = row_stats(rows, "m")
    assert stats.accuracy == {"clean": 0.75, "region": 0.25} and stats.cam_zero_images == 1
    # correct when clean: images 0, 1 and 3; the region-only attack fools 1 and 3, shown first
    assert fooled_first(labels, preds["clean"], preds["region"], 2).tolist() == [1, 3]
    assert fooled_first(labels, preds["clean"], preds["region"], 5).tolist() == [1, 3, 0]


def test_evaluate_model_is_independent_of_batching_and_respects_the_mask(tiny_cnn, tmp_path) -> None:
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


# -- claims ------------------------------------------------------------------------------

def fake_evaluation(correct: dict[str, torch.Tensor], labels: torch.Tensor, before: torch.Tensor,
                    after: torch.Tensor, method: str = "hirescam") -> ModelEvaluation:
    """Per-image columns with the given correctness per condition (a wrong prediction is label + 1)."""
    preds = {c: torch.where(ok, labels, (labels + 1) % 10) for c, ok in correct.items()}
    n = len(labels)
    return ModelEvaluation(preds, torch.full((n,), 0.5), before, after, torch.zeros(n, 1, 2, 2), 0.0, method)


def fake_run(n: int = 60) -> tuple[torch.Tensor, dict[str, ModelEvaluation]]:
    """natural: fooled by the background attack on every image; pgd and localized: robust on every image.
    natural's map moves 0.2 into the background; pgd's does not move; localized's moves back by 0.1."""
    labels = torch.arange(n) % 10
    yes, no = torch.ones(n, dtype=torch.bool), torch.zeros(n, dtype=torch.bool)
    half = torch.arange(n) % 2 == 0
    fg = torch.linspace(0.5, 0.8, n)
    conds = {"clean": yes, "full": no, "complement": half}
    evs = {"natural": fake_evaluation({**conds, "region": no}, labels, fg, fg - 0.2),
           "pgd": fake_evaluation({**conds, "region": yes}, labels, fg, fg.clone()),
           "mixed-pgd": fake_evaluation({**conds, "region": half}, labels, fg, fg.clone()),
           "localized": fake_evaluation({**conds, "region": yes}, labels, fg, fg + 0.1),
           "localized-random": fake_evaluation({**conds, "region": no}, labels, fg, fg.clone())}
    evs["natural"].cam_energy_adv[0] = math.nan  # an all-zero map: left out of that model's energy claim
    return labels, evs


def judged(gates: dict[str, bool], mask_gated: bool = False, n: int = 60) -> dict[tuple[str, str], object]:
    from advspatial.statistics.claims import judge

    config = LocalizedConfig()
    labels, evs = fake_run(n)
    gate = {m: GateResult(ok, "") for m, ok in gates.items()}
    claims = judge(build_claims(config, labels, evs, gate, mask_gated, same_seeds(evs)), sesoi=config.sesoi,
                   alpha=config.significance)
    return {(c.subject, c.statistic): c for c in claims}


def same_seeds(evs: dict[str, ModelEvaluation], seeds: int = 3) -> dict[str, list[ModelEvaluation]]:
    """Training seeds 1 .. seeds-1 whose models behave exactly as the first seed's (every seed agrees)."""
    return {m: [ev] * (seeds - 1) for m, ev in evs.items()}


ALL_PASS = {"natural": True, "pgd": True, "mixed-pgd": True, "localized": True, "localized-random": True}


def test_claims_are_paired_per_image_with_known_verdicts() -> None:
    claims = judged(ALL_PASS)
    assert all(c.verdict in VERDICTS for c in claims.values())
    primary = [k for k, c in claims.items() if c.primary]
    # primary: localized vs each of the 4 others on the region, the energy shift of natural, pgd, localized;
    # secondary: the controls' energy shift, 3 other conditions x 4 comparisons, pgd vs natural on the region
    assert len(primary) == 7 and len(claims) == 7 + 2 + 12 + 1
    mixed = claims[("localized vs mixed-pgd model", "background-only PGD (diagnostic) accuracy")]
    assert mixed.primary and mixed.effect.mean == pytest.approx(0.5) and mixed.verdict == "supported"
    random_mask = claims[("localized vs localized-random model", "background-only PGD (diagnostic) accuracy")]
    assert random_mask.primary and random_mask.effect.mean == 1.0 and random_mask.verdict == "supported"
    assert not claims[("mixed-pgd model", "hirescam energy share in the background")].primary
    nat = claims[("localized vs natural model", "background-only PGD (diagnostic) accuracy")]
    assert (nat.observed, nat.null_value, nat.effect.mean, nat.effect.n) == (1.0, 0.0, 1.0, 60)
    assert nat.verdict == "supported" and nat.gates == {} and nat.primary
    assert nat.per_seed == (1.0, 1.0, 1.0) and nat.seeds_text() == "3 of 3 seeds agree"
    same = claims[("localized vs pgd model", "background-only PGD (diagnostic) accuracy")]
    # both models right on every image: no image differs, so the CI is the exact bound (+-0.06 at n = 60), not
    # a zero-width interval, and the verdict is "not supported" rather than "equivalent"
    assert same.effect.mean == 0 and same.p == 1.0 and same.verdict == "not supported"
    assert same.effect.high == pytest.approx(1 - 0.025 ** (1 / 60)) == -same.effect.low
    shift = claims[("natural model", "hirescam energy share in the background")]
    assert shift.effect.n == 59, "the image with an all-zero map is left out"
    assert shift.effect.mean == pytest.approx(0.2) and shift.verdict == "supported"
    assert shift.gates == {ROI_GATE: True}
    assert claims[("pgd model", "hirescam energy share in the background")].verdict == "equivalent to null"
    assert claims[("localized model", "hirescam energy share in the background")].verdict == "reversed"
    full = claims[("localized vs natural model", "full-image PGD accuracy")]
    # no image differs
    assert not full.primary and full.verdict == "not supported" and full.p_adjusted == full.p_adjusted


def test_the_region_only_ensemble_is_the_primary_endpoint_when_run() -> None:
    from advspatial.statistics.claims import judge

    config = LocalizedConfig()
    labels, evs = fake_run(60)
    for mode, ev in evs.items():  # the ensemble on the region: robust only for the localized model
        robust = torch.full_like(labels, -1)
        robust[:40] = labels[:40] if mode == "localized" else (labels[:40] + 1) % 10
        ev.preds["region-ensemble"] = robust
    gate = {m: GateResult(True, "passed") for m in ALL_PASS}
    claims = {(c.subject, c.statistic): c for c in judge(build_claims(config, labels, evs, gate, False,
                                                                      same_seeds(evs)),
                                                          sesoi=config.sesoi, alpha=config.significance)}
    endpoint = claims[("localized vs pgd model", "background-only ensemble accuracy")]
    assert endpoint.primary and endpoint.effect.n == 40, "only the first ensemble_n images are attacked"
    assert endpoint.effect.mean == 1.0 and endpoint.verdict == "supported"
    diagnostic = claims[("localized vs pgd model", "background-only PGD (diagnostic) accuracy")]
    # identical on every image: a bound, no equivalence
    assert not diagnostic.primary and diagnostic.verdict == "not supported"
    assert sum(c.primary for c in claims.values()) == 7
    without = dataclasses.replace(config, ensemble_n=0)
    assert primary_condition(without, evs["localized"].preds) == "region"


def test_failed_gate_makes_map_claims_not_interpretable() -> None:
    claims = judged({**ALL_PASS, "natural": False})
    assert claims[("natural model", "hirescam energy share in the background")].verdict == "not interpretable"
    assert claims[("pgd model", "hirescam energy share in the background")].verdict == "equivalent to null"
    # a mask-free background (the dataset's own masks): accuracy claims do not rest on the map
    assert claims[("localized vs natural model", "background-only PGD (diagnostic) accuracy")].verdict == "supported"
    # a background cut from the map: every accuracy under it rests on both models' maps
    gated = judged({**ALL_PASS, "natural": False}, mask_gated=True)
    assert gated[("localized vs natural model",
                  "background-only PGD (diagnostic) accuracy")].verdict == "not interpretable"
    assert gated[("localized vs natural model", "foreground-only PGD accuracy")].verdict == "not interpretable"
    assert gated[("localized vs pgd model", "background-only PGD (diagnostic) accuracy")].verdict == "not supported"
    assert gated[("localized vs natural model", "clean accuracy")].gates == {}, "clean images need no mask"


def test_few_images_give_insufficient_data() -> None:
    claims = judged(ALL_PASS, n=20)
    assert {c.verdict for c in claims.values()} == {"insufficient data"}


# -- end to end ----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    """A --quick run in a temporary model cache; the 10000-image accuracy pass of training is stubbed."""
    if not fashion_mnist_available():
        pytest.skip("Fashion-MNIST not installed (make data)")
    root = tmp_path_factory.mktemp("localized")
    patch = pytest.MonkeyPatch()
    patch.setenv("ADVSPATIAL_CACHE", str(root / "cache"))
    patch.setattr(training, "evaluate_accuracy", lambda model, dataset: -1.0)
    config = resolve_config(get_experiment("localized-training"), None, {"out": str(root / "run"), "progress": False},
                            quick=True)
    try:
        result, rundir = run_experiment("localized-training", config)
        yield result, rundir.path, config, patch
    finally:
        patch.undo()


def read_rows(path: Path) -> list[dict[str, str]]:
    with path.open() as fh:
        return list(csv.DictReader(fh))


@pytest.fixture(scope="module")
def quick_outputs(quick_run):
    """The quick run's directory, settings, metrics.json and per_image.csv rows (read once; not to be changed)."""
    _, path, config, _ = quick_run
    return path, config, json.loads((path / "metrics.json").read_text()), read_rows(path / "per_image.csv")


def as_float(value: str) -> float:
    return float(value) if value not in ("", "nan") else math.nan


@pytest.mark.slow
@needs_fashion_mnist
def test_quick_run_writes_every_result(quick_run) -> None:
    result, path, config, _ = quick_run
    for name in ("config.yaml", "metrics.json", "per_image.csv", "report.html"):
        assert (path / name).is_file(), name
    assert yaml.safe_load((path / "config.yaml").read_text())["experiment"] == "localized-training"
    assert {p.name for p in (path / "figures").glob("*.png")} == FIGURES
    rows = read_rows(path / "per_image.csv")
    assert len(rows) == len(MODES) * config.n
    assert [r["model"] for r in rows[:: config.n]] == list(MODES)
    assert "accuracy" in result.summary.split("\n")[1] and "localized" in result.summary  # [0]: the smoke line


@pytest.mark.slow
@needs_fashion_mnist
def test_quick_run_metrics_agree_with_rows(quick_outputs) -> None:
    _, config, metrics, rows = quick_outputs
    assert metrics["n"] == config.n and set(metrics["models"]) == set(MODES)
    for mode in MODES:
        group = [r for r in rows if r["model"] == mode]
        assert [int(r["index"]) for r in group] == list(range(config.n))
        m = metrics["models"][mode]
        for cond in CONDITIONS:
            attacked = [r for r in group if r[f"{cond}_pred"] != "-1"]  # the ensembles attack the first images only
            expected = sum(r[f"{cond}_pred"] == r["label"] for r in attacked) / len(attacked)
            assert m[f"{cond}_accuracy"] == pytest.approx(expected, abs=1e-12), (mode, cond)
        shares = [as_float(r["region_share"]) for r in group]
        assert m["region_share"] == pytest.approx(sum(shares) / len(shares))
        assert all(0.0 < s < 1.0 for s in shares) and 0.3 < m["region_share"] < 0.8, "Fashion-MNIST: ~half background"
        pairs = [(as_float(r["cam_energy_clean"]), as_float(r["cam_energy_region_adv"])) for r in group]
        pairs = [p for p in pairs if not (math.isnan(p[0]) or math.isnan(p[1]))]
        assert m["cam_zero_images"] == len(group) - len(pairs)
        for k, key in enumerate(("cam_energy_clean", "cam_energy_region_adv")):
            assert m[key] == pytest.approx(sum(p[k] for p in pairs) / len(pairs)) if pairs else math.isnan(m[key])
        assert all(0.0 <= e <= 1.0 for p in pairs for e in p)
        assert m["epochs"] == config.train_epochs, "matched epochs"
        assert Path(m["checkpoint"]).is_file()
    assert set(metrics["timings"]) >= ({f"train/{m}" for m in MODES} | {f"evaluate/{m}" for m in MODES}
                                       | {f"gate/{m}" for m in MODES})


@pytest.mark.slow
@needs_fashion_mnist
def test_quick_run_gates_every_model(quick_outputs) -> None:
    path, config, metrics, _ = quick_outputs
    gates = metrics["faithfulness"]
    assert set(gates) == set(MODES)
    for mode in MODES:
        g, imp = gates[mode], metrics["importance"][mode]
        assert isinstance(g["passed"], bool) and g["reason"] and g["method"] == imp["method"]
        assert imp["method"] == "hirescam" and "flatten/FC head" in imp["why"], "auto: smallcnn has a flatten head"
        assert imp["faithful"] == g["passed"]
        assert g["n"] <= min(config.gate_n, config.n) and len(g["randomization"]) >= 1
        assert (path / f"stages/gate/{mode}/{imp['method']}/randomization.pt").is_file()
        label = would_read(metrics["models"][mode]["cam_interpretation"])
        # an undecided gate keeps the verdicts, read with its caveat: the label is the caveat's first words
        assert label.split(";")[0] == (roi_label(GateResult.from_dict(g)) or "interpretable")
        assert (";" in label) == (g["status"] == "undecided")
        assert label.startswith(("interpretable", "not interpretable"))
        # Fashion-MNIST: the background is the dataset's own mask, so accuracies do not rest on the map
        assert would_read(metrics["models"][mode]["mask_interpretation"]).startswith("interpretable")
    assert metrics["mask_from_importance"] is False


@pytest.mark.slow
@needs_fashion_mnist
def test_quick_run_is_a_smoke_test_and_says_so(quick_run) -> None:
    result, path, _, _ = quick_run
    assert_smoke_test(path, result.summary)


@pytest.mark.slow
@needs_fashion_mnist
def test_quick_run_claims_and_verdicts(quick_outputs) -> None:
    _, config, metrics, rows = quick_outputs
    claims = metrics["claims"]
    assert claims and all(would_read(c["verdict"]) in VERDICTS for c in claims)
    assert sum(c["primary"] for c in claims) == 7  # localized vs 4 models, the energy shift of 3
    for c in claims:
        gated = bool(c["gates"])
        assert gated == ("energy share" in c["statistic"]), c
        if gated and not all(c["gates"].values()):
            assert would_read(c["verdict"]) == "not interpretable", c
        mode = c["subject"].split()[0]
        if gated:
            assert c["gates"] == {ROI_GATE: metrics["faithfulness"][mode]["status"] != "failed"}
        elif c["effect"]["n"] < 30:
            assert would_read(c["verdict"]) == "insufficient data", c
    # the primary accuracy claim, recomputed from the rows: paired per image on the same images
    main = next(c for c in claims if c["subject"] == "localized vs natural model" and c["primary"])
    by = {m: {int(r["index"]): r for r in rows if r["model"] == m} for m in ("natural", "localized")}
    assert main["statistic"] == "background-only ensemble accuracy"  # the primary endpoint (the first ensemble_n)
    first = min(config.ensemble_n, config.n)
    diff = [float(by["localized"][i]["region-ensemble_pred"] == by["localized"][i]["label"])
            - float(by["natural"][i]["region-ensemble_pred"] == by["natural"][i]["label"]) for i in range(first)]
    assert main["effect"]["n"] == first
    assert main["effect"]["mean"] == pytest.approx(sum(diff) / len(diff), abs=1e-12)
    # one training seed (--quick): its own Δ, no CI over runs, and no verdict about the procedure
    assert config.training_seeds == 1 and main["seeds"] == 1 and main["per_seed"] == [main["effect"]["mean"]]
    assert math.isnan(main["effect"]["low"]) and would_read(main["verdict"]) == "insufficient data"
    assert all(c["seeds"] == 1 and would_read(c["verdict"]) in ("insufficient data", "not interpretable")
               for c in claims)
    assert main["observed"] - main["null_value"] == pytest.approx(main["effect"]["mean"], abs=1e-12)


@pytest.mark.slow
@needs_fashion_mnist
def test_quick_run_report_has_every_section_and_figure(quick_run) -> None:
    _, path, _, _ = quick_run
    parser = ReportParser()
    parser.feed((path / "report.html").read_text())
    assert parser.sections == SECTIONS, "the verdicts come first, then the faithfulness gate"
    assert len(parser.images) == len(FIGURES) and all(src.startswith("data:image/png;base64,") for src in parser.images)
    assert parser.tables >= 8
    text = (path / "report.html").read_text()
    for header in ("full-image PGD", "background-only PGD", "foreground-only PGD"):
        assert header in text
    verdicts = text[text.index('<section id="verdicts">'):text.index('<section id="faithfulness">')]
    assert "Region of Importance (RoI)" in verdicts and "Region of Attack (RoA)" in verdicts
    assert "What this run shows" in verdicts and "<details" in verdicts, "secondary claims folded"
    metrics = json.loads((path / "metrics.json").read_text())
    for c in metrics["claims"]:
        if c["primary"]:
            shown = f"{c['subject']}: {c['claim']} — {SMOKE_MARK}{would_read(c['verdict']).upper()}"
            assert html.escape(shown) in verdicts
    gate = text[text.index('<section id="faithfulness">'):text.index('<section id="setup">')]
    assert all(f"{m}: hirescam" in gate for m in MODES) and "randomization" in gate
    for g in metrics["faithfulness"].values():
        if not g["passed"]:
            assert html.escape(sentence_case(roi_label(GateResult.from_dict(g)))) in text


@pytest.mark.slow
@needs_fashion_mnist
def test_resume_after_lost_stages_gives_identical_rows(quick_run) -> None:
    _, path, config, _ = quick_run
    before = (path / "per_image.csv").read_text()
    lost = [path / "stages/attack/pgd/region/batch-00001.pt",
            path / "stages/importance/localized/hirescam/batch-00000.pt",
            path / "stages/attack/natural/full/batch-00000.pt", path / "stages/gate/pgd/hirescam/randomization.pt"]
    claims = json.loads((path / "metrics.json").read_text())["claims"]
    for stage in lost:
        assert stage.is_file(), stage
        stage.unlink()
    (path / "per_image.csv").unlink()
    (path / "metrics.json").unlink()
    with pytest.raises(ConfigError, match="already holds a run"):
        run_experiment("localized-training", config)
    run_experiment("localized-training", config, resume=True)  # models come from the cache, lost stages are recomputed
    assert all(stage.is_file() for stage in lost)
    assert (path / "per_image.csv").read_text() == before
    assert json.dumps(json.loads((path / "metrics.json").read_text())["claims"]) == json.dumps(claims)


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
    import importlib.util

    source = root / "patchnet.py"
    source.write_text(PATCH_NET)
    spec = importlib.util.spec_from_file_location("patchnet_for_test", source)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
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
    assert body.startswith(f"models fine-tuned from the pretrained {config.model}: 1 epoch(s)")
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


def seeded_run(region_correct: dict[str, list[float]], n: int = 60
               ) -> tuple[torch.Tensor, dict[str, ModelEvaluation], dict[str, list[ModelEvaluation]]]:
    """:func:`fake_run` with every model of training seed k correct under the region-only attack on the first
    ``region_correct[mode][k]`` share of the images (modes not named: as in :func:`fake_run`, every seed alike)."""
    labels, evs = fake_run(n)
    seeds = same_seeds(evs, max(len(v) for v in region_correct.values()))
    for mode, shares in region_correct.items():
        models = []
        for share in shares:
            ev = dataclasses.replace(evs[mode], preds=dict(evs[mode].preds))
            ok = torch.arange(n) < round(share * n)
            ev.preds["region"] = torch.where(ok, labels, (labels + 1) % 10)
            models.append(ev)
        evs[mode], seeds[mode] = models[0], models[1:]
    return labels, evs, seeds


def seeded_verdict(region_correct: dict[str, list[float]], b: str = "natural") -> object:
    """The judged claim 'localized vs ``b``' under the region-only PGD of :func:`seeded_run`."""
    from advspatial.statistics.claims import judge

    config = LocalizedConfig(ensemble_n=0)
    labels, evs, seeds = seeded_run(region_correct)
    claims = judge(build_claims(config, labels, evs, {m: GateResult(True, "passed") for m in evs}, False, seeds),
                   sesoi=config.sesoi, alpha=config.significance)
    return next(c for c in claims if c.subject == f"localized vs {b} model" and c.primary)


def test_the_seed_is_the_unit_of_a_claim_about_training() -> None:
    """Known answers: seed k of the localized model against seed k of the natural one, each seed its own Δ."""
    agree = seeded_verdict({"localized": [1.0, 0.9, 0.95], "natural": [0.0, 0.0, 0.0]})
    assert agree.per_seed == pytest.approx((1.0, 0.9, 0.95)) and agree.effect.mean == pytest.approx(0.95)
    assert agree.effect.low > 0 and agree.verdict == "supported" and agree.seeds_text() == "3 of 3 seeds agree"
    assert agree.observed == pytest.approx(0.95) and agree.null_value == 0.0 and agree.effect.n == 60
    # one seed of eight against: the CI lies above 0 and p_adj < 0.05, but the sign rule withholds "supported"
    against = seeded_verdict({"localized": [0.5] * 7 + [0.0], "natural": [0.0] * 7 + [0.05]})
    assert against.per_seed == pytest.approx((0.5,) * 7 + (-0.05,))
    assert against.effect.low > 0 and against.p_adjusted < 0.05
    assert against.verdict == "not supported" and against.seeds_text() == "7 of 8 seeds agree"
    three_against = seeded_verdict({"localized": [1.0, 1.0, 0.0], "natural": [0.0, 0.0, 0.1]})
    assert three_against.verdict == "not supported" and three_against.seeds_text() == "2 of 3 seeds agree"
    # between-run variance is in the CI: three seeds of 0.3, 0.5, 0.7 are wider than any image-only CI
    spread = seeded_verdict({"localized": [0.3, 0.5, 0.7], "natural": [0.0, 0.0, 0.0]})
    assert spread.effect.high - spread.effect.low > 0.5 * 2 * 4.30 * 0.2 / 3 ** 0.5
    two = seeded_verdict({"localized": [1.0, 1.0], "natural": [0.0, 0.0]})
    assert two.verdict == "insufficient data" and math.isnan(two.p_adjusted) and len(two.per_seed) == 2
    one = seeded_verdict({"localized": [1.0], "natural": [0.0]})
    assert one.verdict == "insufficient data" and one.per_seed == (1.0,) and math.isnan(one.effect.low)


def test_seed_spread_of_the_accuracies() -> None:
    rows = [{"model": seed_name("pgd", k), "index": i, "label": 0, "clean_pred": 0, "region_pred": int(i < k + 1),
             "region_share": 0.2, "cam_energy_clean": 0.5, "cam_energy_region_adv": 0.5} for k in range(2)
            for i in range(4)]
    spread = seed_spread(rows, [seed_name("pgd", k) for k in range(2)])
    assert spread["region"].values == [0.75, 0.5] and spread["region"].mean == pytest.approx(0.625)
    assert spread["region"].sd == pytest.approx(((0.125**2) * 2) ** 0.5)
