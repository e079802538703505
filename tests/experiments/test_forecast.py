"""The forecast a run prints before its first stage: known answers on a synthetic reference, the price fit, the
sentence, and when it stays silent."""

from __future__ import annotations

import dataclasses
import re
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from advspatial.experiments import forecast as fc
from advspatial.experiments.cost_references import REFERENCE_PANEL, REFERENCE_ROI, REFERENCE_STEPS, REFERENCES
from advspatial.experiments.stage_work import StageWork, iteration_setting, sized_setting
from advspatial.experiments.registry import get_experiment
from advspatial.experiments.running import resolve_config

FREE = fc.CallPrice(0.0, 0.0, 0.0, 0.0)


def test_the_forecast_prices_each_stage_groups_work_at_n(monkeypatch) -> None:
    reference = {"adaptive/main": StageWork(((50, 1000, 500, 10, 5), (200, 1000, 500, 10, 5))),  # fixed size
                 "attack/pgd": StageWork(((50, 1000, 500, 5, 5), (200, 4000, 2000, 20, 20)))}  # per image
    monkeypatch.setitem(fc.REFERENCES, "toy", reference)
    monkeypatch.setitem(fc.NON_MODEL_SECONDS_PER_CALL, "toy", 0.01)
    monkeypatch.setitem(fc.OUTSIDE_STAGES_SECONDS, "toy", ((50, 2.0), (200, 5.0)))  # 3.0 at n = 100
    price = fc.CallPrice(forward_fixed=0.1, forward_per_image=0.001, backward_fixed=0.2, backward_per_image=0.002)
    result = fc.forecast("toy", 100, price)
    adaptive = 10 * 0.1 + 1000 * 0.001 + 5 * 0.2 + 500 * 0.002 + 15 * 0.01
    attack = 10 * 0.1 + 2000 * 0.001 + 10 * 0.2 + 1000 * 0.002 + 20 * 0.01
    assert result is not None
    assert result.seconds == pytest.approx(adaptive + attack + 3.0)
    assert result.dominant == "the attacks" and result.dominant_share == pytest.approx(attack / result.seconds)


def test_work_priced_apart_from_the_reference_is_added_as_its_own_part(monkeypatch) -> None:
    work = StageWork(((5, 100, 0, 1, 0), (20, 100, 0, 1, 0)))
    monkeypatch.setitem(fc.REFERENCES, "toy", {"attack/pgd": work})
    monkeypatch.setitem(fc.OUTSIDE_STAGES_SECONDS, "toy", ((5, 0.0), (20, 0.0)))
    price = fc.CallPrice(0.0, 1.0, 0.0, 0.0)
    alone = fc.forecast("toy", 10, price)
    both = fc.forecast("toy", 10, price, apart={"the pairs": 300.0})
    assert alone is not None and both is not None and alone.seconds == pytest.approx(100.0)
    assert both.seconds == pytest.approx(400.0) and both.dominant == "the pairs"
    assert both.dominant_share == pytest.approx(0.75)


def test_pse_prices_its_pixel_group_pairs_apart_on_the_model_it_runs(monkeypatch, capsys) -> None:
    from advspatial.experiments.pse import cost

    config_cls = get_experiment("pse").config_cls
    assert get_experiment("pse").priced_apart is cost.pair_seconds
    model, images = nn.Sequential(nn.Flatten(), nn.Linear(784, 10)), torch.rand(4, 1, 28, 28)
    small = fc.announce("pse", config_cls(n=20), model, images)
    monkeypatch.setattr(cost, "pair_counts", lambda config, height, width: {config.block: 1e9})
    large = fc.announce("pse", config_cls(n=20), model, images)
    assert small is not None and large is not None and large.seconds > small.seconds
    assert large.dominant == cost.PAIRS and cost.PAIRS in capsys.readouterr().err


def test_stage_groups_of_one_part_of_the_run_share_its_name_and_its_share(monkeypatch) -> None:
    work = StageWork(((5, 100, 0, 1, 0), (20, 100, 0, 1, 0)))
    monkeypatch.setitem(fc.REFERENCES, "toy", {"adaptive/main": work, "baselines/noise": work, "attack/pgd": work,
                                               "gate/x": work})
    result = fc.forecast("toy", 10, fc.CallPrice(0.0, 1.0, 0.0, 0.0))
    assert result is not None and result.dominant == "the adaptive evaluation"
    assert result.dominant_share == pytest.approx(0.5)


def test_an_experiment_without_a_reference_gets_no_forecast() -> None:
    assert fc.forecast("no-such-experiment", 100, FREE) is None


def test_every_reference_names_registered_experiments_and_grows_with_n() -> None:
    price = fc.CallPrice(1e-3, 1e-4, 1e-3, 1e-4)
    for name in REFERENCES:
        get_experiment(name)  # raises for an unknown name
        small, large = fc.forecast(name, 50, price), fc.forecast(name, 1000, price)
        assert small is not None and large is not None and 0 < small.seconds < large.seconds


@pytest.mark.parametrize("price", [fc.CallPrice(1e-3, 1e-4, 1e-3, 1e-4), fc.CallPrice(2e-4, 2e-5, 3e-4, 4e-5),
                                   fc.CallPrice(5e-3, 1e-6, 5e-3, 1e-6)])
def test_no_reference_forecasts_less_for_more_images_or_prices_a_group_it_measured_at_nothing(price) -> None:
    ns = [*range(10, 1000, 10), *range(1000, 20_001, 500)]
    for name, groups in REFERENCES.items():
        seconds = [fc.forecast(name, n, price).seconds for n in ns]
        assert all(a <= b * (1 + 1e-9) for a, b in zip(seconds[:-1], seconds[1:], strict=True)), name
        for group, work in groups.items():
            last = work.points[-1]
            if any(count > 0 for count in last[1:]):
                for n in (last[0], 2 * last[0], 50 * last[0]):
                    assert any(count > 0 for count in fc.counts_at(group, work, n)), (name, group, n)


def test_every_part_of_a_reference_run_has_a_name_for_the_sentence() -> None:
    parts = {group.split("/")[0] for groups in REFERENCES.values() for group in groups}
    assert parts <= set(fc.GROUP_NAMES), f"no words for {sorted(parts - set(fc.GROUP_NAMES))}"


def test_experiments_without_an_explainer_panel_are_priced_as_their_reference_ran() -> None:
    for name in set(REFERENCES) - set(REFERENCE_ROI):
        assert fc.reference_work(name, None) == REFERENCES[name]
        assert name not in REFERENCE_PANEL


def test_the_price_fit_separates_a_fixed_cost_per_call_from_a_cost_per_image() -> None:
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 32 * 32, 64), nn.ReLU(), nn.Linear(64, 10))
    price = fc.measure_price(model, torch.rand(5, 3, 32, 32), batch=64)
    assert min(price.forward_fixed, price.forward_per_image, price.backward_fixed, price.backward_per_image) >= 0
    assert price.forward_fixed + 64 * price.forward_per_image > 0
    assert all(not p.requires_grad or p.grad is None for p in model.parameters())  # the probe leaves no gradients


@pytest.mark.parametrize(("seconds", "words"), [(20, "under a minute"), (70, "about 1 minute "),
                                                (420, "about 7 minutes")])
def test_the_sentence_rounds_to_minutes(seconds: float, words: str) -> None:
    text = fc.Forecast(seconds, "the adaptive evaluation", 0.45).sentence()
    assert text.startswith(words) and "the adaptive evaluation about 45%" in text
    assert "default settings" not in text
    other = fc.Forecast(seconds, "the faithfulness gates", 0.5, differing=("permutations",)).sentence()
    assert "for the default settings: yours differ in permutations)" in other
    many = fc.Forecast(seconds, "the faithfulness gates", 0.5, differing=("a", "b", "c", "d", "e")).sentence()
    assert "yours differ in a, b, c and 2 more)" in many
    assert "yours differ in a and b)" in fc.Forecast(seconds, "x", 0.5, differing=("a", "b")).sentence()
    assert "model cache" not in text


def test_a_model_cache_holding_stages_makes_the_forecast_an_upper_bound() -> None:
    text = fc.Forecast(420, "the adaptive evaluation", 0.45, cached_stages=15).sentence()
    assert text.startswith("about 7 minutes") and "at most: the model cache holds 15 stages" in text
    assert "holds 1 stage of" in fc.Forecast(420, "the adaptive evaluation", 0.45, cached_stages=1).sentence()


def test_settings_that_change_the_work_make_the_forecast_say_so() -> None:
    config_cls = get_experiment("spatial").config_cls
    assert not fc.differing_settings(config_cls())
    assert not fc.differing_settings(config_cls(n=80, seed=3))  # where and how many, not how much per image
    assert fc.differing_settings(config_cls(adaptive_steps=10))


def test_a_stage_a_setting_sizes_is_priced_at_the_runs_own_images_and_batches_under_that_setting(monkeypatch) -> None:
    per_image = StageWork(((200, 30, 0, 1, 0), (1000, 30, 0, 1, 0)))  # 30 forward images per image, a call per batch
    monkeypatch.setitem(fc.REFERENCES, "toy", {"attack/pgd~ensemble_n": per_image})
    monkeypatch.setitem(fc.OUTSIDE_STAGES_SECONDS, "toy", ((200, 0.0), (1000, 0.0)))
    price = fc.CallPrice(1.0, 0.1, 0.0, 0.0)  # a call 1 s, a forward image 0.1 s

    def seconds(n: int, ensemble_n: int) -> float:
        result = fc.forecast("toy", n, price, config=SimpleNamespace(ensemble_n=ensemble_n, batch_size=50))
        assert result is not None
        return result.seconds

    assert seconds(300, 100) == pytest.approx(2 * 1.0 + 100 * 30 * 0.1)  # two batches of 50
    assert seconds(300, 50) == pytest.approx(1 * 1.0 + 50 * 30 * 0.1)  # half the ensemble, one batch
    assert seconds(20, 100) == pytest.approx(1 * 1.0 + 20 * 30 * 0.1)  # fewer images than the cap: n of them


def test_localized_training_prices_its_other_seeds_at_the_runs_seeds_and_follows_its_sizes() -> None:
    experiment = get_experiment("localized-training")
    config_cls, price = experiment.config_cls, fc.CallPrice(1e-3, 1e-4, 1e-3, 1e-4)
    groups = REFERENCES["localized-training"]
    other_seeds = {group for group in groups if "@seed" in group}
    assert other_seeds and {group.split("@seed")[1][0] for group in other_seeds} == {"1", "2"}
    scales = {seeds: fc.stage_scales("localized-training", groups, 300, config_cls(training_seeds=seeds))
              for seeds in (1, 3, 5)}
    for group in other_seeds:
        assert scales[1][group] == fc.Scale(0.0, 0.0) and scales[5][group] == scales[3][group].times(2.0)
    for group in set(groups) - other_seeds:
        assert scales[1][group] == scales[3][group] == scales[5][group]
    one, three = (fc.forecast("localized-training", 300, price, config=config_cls(training_seeds=k)) for k in (1, 3))
    smaller = fc.forecast("localized-training", 300, price, config=config_cls(ensemble_n=50, gate_n=100))
    assert one is not None and three is not None and smaller is not None
    assert one.seconds < three.seconds and smaller.seconds < three.seconds


def test_every_sized_reference_group_names_a_setting_its_experiment_sizes_by() -> None:
    for name, groups in REFERENCES.items():
        experiment = get_experiment(name)
        named = {setting for group in groups if (setting := sized_setting(group)) is not None}
        assert named == set(experiment.sized_by.values()), f"{name}: fit its reference again"
        fields = set(dataclasses.asdict(experiment.config_cls()))
        assert fc.followed_settings(experiment) <= fields


def test_a_setting_the_forecast_follows_leaves_the_sentence_for_the_runs_own_settings() -> None:
    experiment = get_experiment("localized-training")
    followed = frozenset(fc.followed_settings(experiment))
    assert {"ensemble_n", "gate_n", "randomization_images", "training_seeds"} <= followed
    smaller = experiment.config_cls(ensemble_n=50, gate_n=100, training_seeds=1)
    assert not fc.differing_settings(smaller, followed) and fc.differing_settings(smaller)
    assert fc.differing_settings(experiment.config_cls(ensemble_steps=10), followed)


def test_spatial_prices_its_adaptive_evaluation_at_the_runs_adaptive_n() -> None:
    experiment = get_experiment("spatial")
    price, followed = fc.CallPrice(1e-3, 1e-4, 1e-3, 1e-4), frozenset(fc.followed_settings(experiment))
    default, larger, small_n = (fc.forecast("spatial", n, price, config=experiment.config_cls(n=n, adaptive_n=k))
                                for n, k in ((500, 50), (500, 200), (20, 50)))
    assert default is not None and larger is not None and small_n is not None
    adaptive = {group: work for group, work in REFERENCES["spatial"].items() if group.startswith("adaptive/")}
    assert adaptive and all(sized_setting(group) == "adaptive_n" for group in adaptive)
    per_image = sum(fc._seconds(work.typical(), price, fc.NON_MODEL_SECONDS_PER_CALL["spatial"], fc.Scale(1.0, 0.0))
                    for work in adaptive.values())
    assert larger.seconds - default.seconds > 150 * per_image  # 150 more images of the adaptive evaluation
    assert not fc.differing_settings(experiment.config_cls(adaptive_n=200), followed) and "onepixel_n" in followed


def test_a_smoke_test_a_quiet_run_and_an_unknown_experiment_print_nothing_and_probe_nothing(capsys,
                                                                                            monkeypatch) -> None:
    config_cls = get_experiment("spatial").config_cls
    model, images = nn.Sequential(nn.Flatten(), nn.Linear(784, 10)), torch.rand(4, 1, 28, 28)
    probed: list[int] = []
    measure = fc.measure_price
    monkeypatch.setattr(fc, "measure_price", lambda m, x, batch: probed.append(batch) or measure(m, x, batch))
    assert fc.announce("spatial", config_cls(smoke_test=True), model, images) is None
    assert fc.announce("spatial", config_cls(progress=False), model, images) is None
    assert fc.announce("no-such-experiment", config_cls(), model, images) is None
    assert capsys.readouterr().err == ""
    assert probed == []
    said = fc.announce("spatial", config_cls(n=40), model, images)
    assert said is not None and "spatial on 40 images:" in capsys.readouterr().err
    assert probed == [64]
    said = fc.announce("spatial", config_cls(n=40), model, images, cached_stages=3)
    assert said is not None and said.cached_stages == 3 and "holds 3 stages" in capsys.readouterr().err


@pytest.mark.parametrize(("batch_size", "side", "expected"), [(200, 28, 64), (200, 32, 64), (20, 32, 20),
                                                              (200, 64, 16), (200, 224, 2), (1, 224, 2)])
def test_the_probe_carries_at_most_the_pixels_of_64_small_images(batch_size: int, side: int, expected: int) -> None:
    assert fc.probe_batch(batch_size, side, side) == expected


def test_the_reference_gates_become_this_runs_gates_by_role() -> None:
    reference = REFERENCES["maps"]
    work = fc.reference_work("maps", fc.Explainers("gradcam", ("hirescam", "inputxgrad")))
    assert work is not None
    assert work["gate/gradcam"] == reference[f"gate/{REFERENCE_ROI['maps']}"]  # the RoI's gate is the RoI's
    assert work["gate/inputxgrad"] == reference["gate/inputxgrad"]  # a panel gate the reference ran too
    others = [reference[f"gate/{name}"] for name in REFERENCE_PANEL["maps"] if name != REFERENCE_ROI["maps"]]
    assert work["gate/hirescam"] == fc.mean_work(others)  # one it ran as its RoI: the mean of its panel gates
    explained = ("gate/", "panel/")
    assert {g: w for g, w in work.items() if not g.startswith(explained)} == {
        g: w for g, w in reference.items() if not g.startswith(explained)}
    # the panel's maps of the attacks' examples follow the panel as its gates do (the RoI's explainer makes none)
    assert {g for g in work if g.startswith("panel/")} == {"panel/hirescam", "panel/inputxgrad"}
    assert work["panel/inputxgrad"] == reference["panel/inputxgrad"]
    assert work["panel/hirescam"] == fc.mean_work([reference["panel/gradcam"], reference["panel/inputxgrad"]])
    alone = fc.reference_work("maps", fc.Explainers("gradcam"))
    assert alone is not None and not {"gate/hirescam", "gate/inputxgrad"} & set(alone)
    assert not {g for g in alone if g.startswith("panel/")}  # no panel: no panel maps
    assert fc.reference_work("maps") is reference and fc.reference_work("no-such-experiment") is None
    price = fc.CallPrice(1e-3, 1e-4, 1e-3, 1e-4)
    full, single = fc.forecast("maps", 60, price, fc.Explainers("hirescam", ("gradcam", "inputxgrad"))), \
        fc.forecast("maps", 60, price, fc.Explainers("hirescam"))
    assert full is not None and single is not None and single.seconds < full.seconds
    assert full.seconds == pytest.approx(fc.forecast("maps", 60, price).seconds)  # the reference's own explainers


def test_the_mean_of_stage_work_is_taken_count_by_count() -> None:
    a = StageWork(((10, 0, 10, 1, 0), (50, 8, 10, 5, 0)))
    b = StageWork(((10, 4, 0, 3, 2), (50, 4, 8, 7, 10)))
    assert fc.mean_work([a, b]) == StageWork(((10, 2, 5, 2, 1), (50, 6, 9, 6, 5)))
    with pytest.raises(ValueError, match="different reference runs"):
        fc.mean_work([a, StageWork(((20, 0, 0, 0, 0), (50, 0, 0, 0, 0)))])


def test_a_gap_head_gates_gradcam_and_hirescam_once_and_auto_resolves_as_the_run_does() -> None:
    config = get_experiment("maps").config_cls()
    gap = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                        nn.Linear(4, 10)).eval()
    flat = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 28 * 28, 10)).eval()
    images = torch.rand(3, 1, 28, 28)
    assert config.importance == "auto" and set(config.panel) >= fc.CAM_TWINS
    assert fc.gated_explainers(config, gap, images) == fc.Explainers(
        "gradcam", tuple(p for p in config.panel if p not in fc.CAM_TWINS))
    assert fc.gated_explainers(config, flat, images) == fc.Explainers(
        "hirescam", tuple(p for p in config.panel if p != "hirescam"))
    linear = nn.Sequential(nn.Flatten(), nn.Linear(784, 10))  # no feature map: the forecast keeps the reference's
    assert fc.gated_explainers(config, linear, images) is None
    assert fc.gated_explainers(get_experiment("baseline").config_cls(), gap, images) is None


def test_a_presets_budgets_are_not_settings_the_user_changed() -> None:
    config_cls = get_experiment("maps").config_cls
    given = {"preset": "cifar10"}
    preset = config_cls.preset_values("cifar10", given)
    assert preset and not fc.differing_settings(config_cls(preset="cifar10", **preset))
    assert fc.differing_settings(config_cls(preset="cifar10", **{**preset, "cw_steps": 7}))


def test_a_reference_that_gated_only_its_roi_prices_an_unseen_panel_gate_as_that_gate(monkeypatch) -> None:
    monkeypatch.setitem(fc.REFERENCE_PANEL, "maps", (REFERENCE_ROI["maps"],))
    work = fc.reference_work("maps", fc.Explainers("gradcam", ("occlusion",)))
    assert work is not None and work["gate/occlusion"] == REFERENCES["maps"][f"gate/{REFERENCE_ROI['maps']}"]


def test_explainers_the_reference_gated_leave_the_sentence_for_the_runs_own_settings(capsys) -> None:
    """The README's quick start (``maps``, ``panel=["gradcam"]``) is priced from the reference's own gates by role,
    so its sentence is for its settings; an explainer the reference never gated (occlusion: about 100x a gradient
    map) is priced as a gradient explainer, and the sentence names it."""
    measured = {REFERENCE_ROI["maps"], *REFERENCE_PANEL["maps"]}
    assert {"gradcam", "inputxgrad"} <= measured and not {"occlusion", "ig"} & measured
    assert fc.explainer_settings("maps", fc.Explainers("gradcam")) == {"importance", "panel"}
    assert fc.explainer_settings("maps", fc.Explainers("gradcam", ("occlusion",))) == {"importance", "panel"}
    assert fc.explainer_settings("maps", None) == fc.explainer_settings("pse", fc.Explainers("gradcam")) == frozenset()
    assert fc.unpriced_explainers("spatial", fc.Explainers("hirescam", ("gradcam", "inputxgrad"))) == ()
    assert fc.unpriced_explainers("maps", fc.Explainers("occlusion", ("gradcam", "ig"))) == ("occlusion", "ig")
    assert fc.unpriced_explainers("maps", None) == fc.unpriced_explainers("pse", fc.Explainers("ig")) == ()
    config_cls = get_experiment("maps").config_cls
    gap = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                        nn.Linear(4, 10)).eval()
    images = torch.rand(4, 1, 28, 28)
    said = fc.announce("maps", config_cls(n=60, panel=["gradcam"]), gap, images)
    text = capsys.readouterr().err
    assert said is not None and said.unpriced == () and "yours differ" not in text and "gradient explainer" not in text
    said = fc.announce("maps", config_cls(n=60, panel=["gradcam", "occlusion", "ig"]), gap, images)
    text = capsys.readouterr().err
    assert said is not None and said.unpriced == ("occlusion", "ig") and "yours differ" not in text
    assert "the gates of occlusion and ig priced as a gradient explainer's" in text
    assert fc.announce("maps", config_cls(n=60, panel=["gradcam"], permutations=100), gap, images) is not None
    assert "yours differ in permutations" in capsys.readouterr().err  # a setting it does not follow, named


def test_the_sentence_names_each_explainer_it_prices_as_a_gradient_explainer() -> None:
    one = fc.Forecast(420, "the faithfulness gates", 0.6, unpriced=("occlusion",)).sentence()
    assert "; the gate of occlusion priced as a gradient explainer's, which the reference runs gated" in one
    three = fc.Forecast(420, "the faithfulness gates", 0.6, unpriced=("occlusion", "ig", "smoothgrad")).sentence()
    assert "the gates of occlusion, ig and smoothgrad priced" in three
    assert "gradient explainer" not in fc.Forecast(420, "the faithfulness gates", 0.6).sentence()


def test_a_setting_the_experiment_sets_itself_is_not_one_the_user_changed() -> None:
    """``maps`` sets ``defence_attack`` to its first attack run on every image (fgsm by default, against the class
    default pgd): the sentence said "yours differ" for every ``maps`` run, the defaults' too."""
    experiment = get_experiment("maps")
    config = resolve_config(experiment, None, {}, quick=False)
    assert config.defence_attack != experiment.config_cls().defence_attack
    assert "defence_attack" in experiment.config_cls.CLI_HIDDEN
    assert not fc.differing_settings(config, frozenset(fc.followed_settings(experiment)))
    assert fc.differing_settings(resolve_config(experiment, None, {"permutations": 100}, quick=False))
    assert fc.differing_settings(resolve_config(experiment, None, {"permutations": 100, "gate_n": 100}, quick=False),
                                 frozenset(fc.followed_settings(experiment))) == ("gate_n", "permutations")


def test_an_attacks_iterations_scale_the_stages_that_follow_them() -> None:
    """The cifar10 and imagenet presets give ``perceptual`` 20 steps where its reference ran the default 50: its
    attacks, calibration and curve were forecast at 2.5x their work (1.6-1.8x the measured runs)."""
    experiment = get_experiment("perceptual")
    groups = REFERENCES["perceptual"]
    assert REFERENCE_STEPS["perceptual"] == {"steps": 50} and "steps" in fc.followed_settings(experiment)
    scales = fc.stage_scales("perceptual", groups, 200, experiment.config_cls(steps=20))
    at_reference = fc.stage_scales("perceptual", groups, 200, experiment.config_cls(steps=50))
    following = {"attack/pgd", "attack/ssim-ball", "calibration", "curve/ssim-ball"}
    assert following <= set(groups) and all(at_reference[group] == fc.Scale() for group in following)
    for group in groups:
        assert scales[group] == (fc.Scale(0.4, 0.4) if group in following else at_reference[group]), group
    price = fc.CallPrice(1e-3, 1e-4, 1e-3, 1e-4)
    preset, default = (fc.forecast("perceptual", 200, price, config=experiment.config_cls(steps=k)) for k in (20, 50))
    assert preset is not None and default is not None and preset.seconds < default.seconds
    assert not fc.differing_settings(experiment.config_cls(steps=25), frozenset(fc.followed_settings(experiment)))
    for name in ("spatial", "maps"):  # CW-L2's Adam steps in each search round: the cifar10 preset's 50 x 4
        measurement = get_experiment(name)
        scales = fc.stage_scales(name, REFERENCES[name], 200,
                                 measurement.config_cls(cw_steps=50, cw_search_steps=4, steps=40))
        cw = scales["attack/cw-l2"]
        assert (cw.images, cw.calls) == pytest.approx((200 / 120, 200 / 120))
        assert scales["attack/pgd"] == scales["attack/pgd-l2"] == fc.Scale(2.0, 2.0)
        assert scales["attack/fgsm"] == scales["maps/cw-l2"] == fc.Scale()


def test_every_steps_pattern_names_reference_groups_and_recorded_settings() -> None:
    for name, groups in REFERENCES.items():
        experiment = get_experiment(name)
        fields = set(dataclasses.asdict(experiment.config_cls()))
        for pattern, names in experiment.steps_by.items():
            assert any(re.search(pattern, group) for group in groups), f"{name}: {pattern} matches no group"
            assert set(names) <= set(REFERENCE_STEPS.get(name, {})), f"{name}: fit its reference again"
            assert {iteration_setting(spec) for spec in names} <= fields, f"{name}: {names} names no setting"


def test_perceptual_prices_its_randomization_checks_at_the_runs_randomization_images() -> None:
    """The EfficientNet-Lite0 findings command checks randomization on 32 images where the reference's 128."""
    experiment = get_experiment("perceptual")
    groups = REFERENCES["perceptual"]
    sized = [group for group in groups if sized_setting(group) == "randomization_images"]
    assert sized == ["gate/hirescam~randomization_images"]
    assert "randomization_images" in fc.followed_settings(experiment)
    scales = fc.stage_scales("perceptual", groups, 200, experiment.config_cls(randomization_images=32, batch_size=8))
    assert scales[sized[0]] == fc.Scale(32.0, 4.0)  # 32 images in 4 batches of 8
    assert fc.stage_scales("perceptual", groups, 20, experiment.config_cls())[sized[0]] == fc.Scale(20.0, 1.0)
    price = fc.CallPrice(1e-3, 1e-4, 1e-3, 1e-4)
    fewer, default = (fc.forecast("perceptual", 200, price, config=experiment.config_cls(randomization_images=k))
                      for k in (32, 128))
    assert fewer is not None and default is not None and fewer.seconds < default.seconds


@pytest.mark.parametrize("name", ["spatial", "maps"])
def test_a_panel_experiment_prices_each_explainers_randomization_checks_at_the_runs_randomization_images(name) -> None:
    experiment, price = get_experiment(name), fc.CallPrice(1e-3, 1e-4, 1e-3, 1e-4)
    sized = {group for group in REFERENCES[name] if sized_setting(group) == "randomization_images"}
    assert sized == {f"gate/{e}~randomization_images" for e in (REFERENCE_ROI[name], *REFERENCE_PANEL[name])}
    assert "randomization_images" in fc.followed_settings(experiment)
    followed = frozenset(fc.followed_settings(experiment))
    assert not fc.differing_settings(experiment.config_cls(randomization_images=32), followed)

    def checks(explainers: fc.Explainers, images: int) -> float:
        work = fc.reference_work(name, explainers)
        assert work is not None
        config = experiment.config_cls(n=500, randomization_images=images, batch_size=32)
        scales = fc.stage_scales(name, work, 500, config)
        return sum(fc._seconds(fc.counts_at(group, w, 500), price, 0.0, scales[group])
                   for group, w in work.items() if group in sized or sized_setting(group) == "randomization_images")

    default = fc.Explainers("hirescam", ("gradcam", "inputxgrad"))
    assert checks(default, 32) == pytest.approx(checks(default, 128) / 4)  # a quarter of the images and batches
    # by role: the RoI's checks (more draws) are the reference RoI's whatever explainer it is, a panel explainer's
    # its own; an explainer the run does not gate has none
    reference = REFERENCES[name]
    swapped = fc.reference_work(name, fc.Explainers("gradcam", ("hirescam",)))
    alone = fc.reference_work(name, fc.Explainers("gradcam", ()))
    assert swapped is not None and alone is not None
    assert swapped["gate/gradcam~randomization_images"] == reference["gate/hirescam~randomization_images"]
    assert swapped["gate/hirescam~randomization_images"] == fc.mean_work(
        [reference["gate/gradcam~randomization_images"], reference["gate/inputxgrad~randomization_images"]])
    assert {g for g in alone if sized_setting(g) == "randomization_images"} == {"gate/gradcam~randomization_images"}
    fewer, default_run = (fc.forecast(name, 500, price, default, config=experiment.config_cls(randomization_images=k))
                          for k in (32, 128))
    assert fewer is not None and default_run is not None and fewer.seconds < default_run.seconds
