"""The localized experiment's claims (:mod:`advspatial.experiments.localized.claims`), on hand-made per-image
columns: known verdicts, a failed faithfulness gate, too few images, and the training seed as a claim's unit."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from advspatial.experiments.localized.attack_rows import seed_spread
from advspatial.faithfulness.record import GateResult
from advspatial.experiments.localized.claims import build_claims, primary_condition
from advspatial.experiments.localized.config import ROI_GATE, LocalizedConfig, seed_name
from advspatial.experiments.localized.stages import ModelEvaluation
from advspatial.statistics.verdicts import VERDICTS


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
