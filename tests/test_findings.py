"""docs/findings/generate.py: a findings page is generated from a run directory's own files (``page``) or a study
directory's (``study``).

The generator is a docs script (not part of the package), loaded here from its path. A fake run
directory (config.yaml, metrics.json, findings-run.json written by the test) must give a page whose
verdict table holds every claim with its effect, CI, adjusted p and verdict, and whose header says
the command, the machine and the wall time.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest
from helpers import load_script

GENERATOR = Path(__file__).resolve().parent.parent / "docs" / "findings" / "generate.py"


@pytest.fixture(scope="module")
def gen() -> ModuleType:
    return load_script(GENERATOR, "findings_generate")


def claim(subject: str, null: str, mean: float, low: float, high: float, p_adj: float, verdict: str,
          primary: bool = True, **extra: object) -> dict:
    return {"claim": f"{subject} beats {null}", "subject": subject, "statistic": "peak PMmax @ model",
            "null": null, "observed": mean, "null_value": 0.0,
            "effect": {"mean": mean, "low": low, "high": high, "n": 32}, "ratio": math.nan, "p": p_adj / 2,
            "p_adjusted": p_adj, "gates": {}, "primary": primary, "verdict": verdict, "sesoi": 0.01, **extra}


def fake_run(path: Path, claims: list[dict], record: bool = True, **metrics: object) -> Path:
    path.mkdir(parents=True)
    (path / "config.yaml").write_text(
        "experiment: propagation\ndataset: imagefolder:/data/cifar\nmodel: cifar10-resnet20\npreset: cifar10\n"
        "n: 32\nsubset: stratified\nseed: 0\ndevice: cpu\npixels_list:\n- 1\nprogress: false\n", encoding="utf-8")
    body = {"n": 32, "clean_accuracy": 0.875, "claims": claims, "wall_seconds": 31.75, **metrics}
    # NaN as the run writes it (json.dumps default allow_nan)
    (path / "metrics.json").write_text(json.dumps(body, indent=2), encoding="utf-8")
    if record:
        (path / "findings-run.json").write_text(json.dumps({
            "command": "advspatial run propagation --n 32 --no-progress", "environment": {"ADVSPATIAL_DATA": "/d"},
            "machine": {"cpu_count": 2, "processor": "x86_64", "torch": "2.9.0", "torch_threads": 2},
            "wall_seconds": 37.4, "returncode": 0, "timed_out": False, "started": "2026-11-24 05:00:00 UTC",
            "load_average": {"before": [1.0, 1.0, 1.0], "during_mean": 2.1, "during_max": 2.5,
                             "after": [1.9, 1.5, 1.2]}}), encoding="utf-8")
    return path


def table_rows(page: str) -> list[list[str]]:
    """The verdict-table rows of a page (lines of a table whose last cell is a bold verdict)."""
    rows = []
    for line in page.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.lstrip().startswith("|") and cells[-1].startswith("**"):
            rows.append(cells)
    return rows


def test_page_holds_every_claim_with_effect_ci_p_and_verdict(gen: ModuleType, tmp_path: Path) -> None:
    claims = [claim("random one-pixel change", "0 (no propagation)", 0.1392, 0.1165, 0.1796, 1e-4, "supported"),
              claim("1-pixel attack", "random placement", 0.628, math.nan, math.nan, math.nan,
                    "insufficient data"),
              claim("random one-pixel change", "0.1 x max", -0.02, -0.05, 0.01, 0.31, "not supported",
                    primary=False)]
    run = gen.read_run(fake_run(tmp_path / "run", claims))
    page = gen.page([run])
    rows = table_rows(page)
    assert len(rows) == 3
    assert rows[0] == ["random one-pixel change", "peak PMmax @ model", "0 (no propagation)",
                       "+0.139 [+0.117, +0.180]", "32", "1.00e-04", "**supported**"]
    assert rows[1][3] == "+0.628 [—, —]" and rows[1][5] == "—" and rows[1][6] == "**insufficient data**"
    assert rows[2][6] == "**not supported**" and rows[2][5] == "0.310"
    assert page.index("### Primary claims (2)") < page.index("### Secondary claims (1)")
    assert "Verdicts: supported × 1, insufficient data × 1, not supported × 1." in page


def test_page_says_command_machine_and_wall_time(gen: ModuleType, tmp_path: Path) -> None:
    run = gen.read_run(fake_run(tmp_path / "run", [claim("s", "0", 1.0, 0.5, 1.5, 0.01, "supported")]))
    page = gen.page([run], title="propagation on ResNet-20")
    assert page.startswith("# Findings: propagation on ResNet-20\n")
    assert "ADVSPATIAL_DATA=/d advspatial run propagation --n 32 --no-progress" in page
    assert "2 CPU cores" in page and "torch 2.9.0" in page and "during 2.1 (max 2.5)" in page
    assert "37.4 s for the command; 31.8 s inside the run" in page
    assert "| n (images) | 32 |" in page and "| model | `cifar10-resnet20` |" in page
    assert "torch 2.9.0 (2 threads)" in page  # torch's default, as the recording process saw it


def test_a_run_with_advspatial_threads_states_its_own_threads(gen: ModuleType, tmp_path: Path) -> None:
    path = fake_run(tmp_path / "run", [])
    rec = json.loads((path / gen.RECORD).read_text(encoding="utf-8"))
    rec["environment"]["ADVSPATIAL_THREADS"] = "1"
    (path / gen.RECORD).write_text(json.dumps(rec), encoding="utf-8")
    assert "torch 2.9.0 (1 thread)" in gen.page([gen.read_run(path)])


def test_unrecorded_run_reconstructs_its_command_from_the_config(gen: ModuleType, tmp_path: Path) -> None:
    run = gen.read_run(fake_run(tmp_path / "run", [], record=False))
    page = gen.page([run])
    assert "advspatial run propagation --dataset imagefolder:/data/cifar --model cifar10-resnet20" in page
    assert "--pixels-list 1" in page and "--progress" not in page
    assert "command reconstructed from `config.yaml`" in page and "not recorded" in page
    assert "This run makes no claims." in page


def test_long_tables_fold_and_experiment_blocks_render(gen: ModuleType, tmp_path: Path) -> None:
    claims = [claim("random one-pixel change", f"0 @ {i}", 0.1, 0.05, 0.2, 0.01, "supported", primary=False)
              for i in range(gen.FOLD_ROWS + 1)]
    per_se = {"change": "a random pixel", "images": 32, "draws": 4, "fraction": 0.1,
              "layers": [{"depth": 0, "relative_depth": 0.0, "layer": "conv1",
                          "ratio": {"mean": 0.7, "low": 0.6, "high": 0.8, "n": 32}, "share_above_fraction": 1.0}]}
    run = gen.read_run(fake_run(tmp_path / "run", claims, per_se=per_se))
    page = gen.page([run])
    assert f'??? note "{gen.FOLD_ROWS + 1} secondary claims"' in page
    assert len(table_rows(page)) == gen.FOLD_ROWS + 1
    assert "### Propagation per se" in page and "| 0 | 0.00 | `conv1` | 0.700 [0.600, 0.800] | 1.000 |" in page


def test_perceptual_page_gives_each_curves_end_and_a_chosen_roi_in_its_heading(gen: ModuleType,
                                                                              tmp_path: Path) -> None:
    end = {"effect": {"mean": 0.0006, "low": 0.0002, "high": 0.0021, "n": 33}, "p_adjusted": 0.01,
           "verdict": "negligible"}
    distortion = {"images_both": 33, "only_ssim_ball": 2, "only_pgd": 0,
                  "ceilings": {"ssim-ball": 0.9945, "pgd": 0.9999}, "capped": {"ssim-ball": 33, "pgd": 1},
                  "reach": {"ssim-ball": 0.0059, "pgd": 0.00004},
                  "bounds": {"ssim-ball": end, "pgd": {**end, "effect": {"mean": -0.0054, "low": -0.0071,
                                                                          "high": -0.0038, "n": 33}}}}
    run = gen.read_run(fake_run(tmp_path / "run", [], minimal_distortion=distortion))
    run.config.update(experiment="perceptual", importance="inputxgrad")
    page = gen.page([run])
    assert "## cifar10-resnet20 on imagefolder:/data/cifar, RoI inputxgrad" in page
    assert "Images fooled by both attacks at some budget: 33 (the SSIM ball alone 2, PGD alone 0)" in page
    assert "| ssim-ball | 0.9945 | 33 of 33 | +0.0059 | +0.001 [+0.000, +0.002] | *negligible* |" in page
    # PGD's end lowers the difference, here by less than 0.001: not printed as 0
    assert "| pgd | 0.9999 | 1 of 33 | -4.0e-05 | -0.005 [-0.007, -0.004] | *negligible* |" in page


def test_a_curve_end_missing_from_the_file_reads_not_recorded_unless_nothing_was_capped(gen: ModuleType,
                                                                                          tmp_path: Path) -> None:
    """metrics.json written before the ends were kept has capped images but no ends: not "none capped"."""
    distortion = {"images_both": 10, "only_ssim_ball": 0, "only_pgd": 0, "ceilings": {"ssim-ball": 0.98, "pgd": 0.99},
                  "capped": {"ssim-ball": 4, "pgd": 0}, "reach": {"ssim-ball": 0.01, "pgd": 0.0}}
    run = gen.read_run(fake_run(tmp_path / "run", [], minimal_distortion=distortion))
    run.config["experiment"] = "perceptual"
    page = gen.page([run])
    assert "| ssim-ball | 0.9800 | 4 of 10 | +0.0100 | — | — (not recorded) |" in page
    assert "| pgd | 0.9900 | 0 of 10 | +0.0000 | — | — (none capped) |" in page


def test_a_propagation_run_names_its_de_budget_in_its_heading(gen: ModuleType, tmp_path: Path) -> None:
    runs = [gen.read_run(fake_run(tmp_path / name, [])) for name in ("default", "literature")]
    for run, (popsize, maxiter) in zip(runs, ((100, 20), (400, 75)), strict=True):
        run.config.update(experiment="propagation", popsize=popsize, maxiter=maxiter)
    page = gen.page(runs)
    assert "## cifar10-resnet20 on imagefolder:/data/cifar, DE population 100, 20 generations\n" in page
    assert "## cifar10-resnet20 on imagefolder:/data/cifar, DE population 400, 75 generations\n" in page


def test_a_run_of_the_default_explainer_keeps_its_plain_heading(gen: ModuleType, tmp_path: Path) -> None:
    run = gen.read_run(fake_run(tmp_path / "run", []))
    run.config["importance"] = "auto"
    assert "## cifar10-resnet20 on imagefolder:/data/cifar\n" in gen.page([run])
    assert "curve range" not in gen.page([run])


def test_spatial_page_gives_the_defence_under_adaptive_attack(gen: ModuleType, tmp_path: Path) -> None:
    def share(k: int, n: int = 50) -> dict:
        return {"value": k / n, "low": 0.0, "high": 0.2, "k": k, "n": n}

    main = {"label": "gradient RoA, fraction 0.2, zero fill", "evaluated": True, "clean": share(42),
            "adaptive:worst": share(3), "control": {**share(1), "k": float("nan")},
            "convergence": {"defended": {"converged": False}}, "verdict": "not better than control"}
    adaptive = {"images": 50, "budget": {"components": ["apgd-ce", "square"], "steps": 100, "restarts": 5,
                                         "queries": 5000},
                "undefended": {"clean": share(48), "white-box": share(0)},
                "settings": {"main|0.2|zero": main,
                             "sweep|0.1|zero": {"label": "gradient RoA, fraction 0.1, zero fill", "evaluated": False,
                                                "verdict": "not evaluated adaptively"}},
                "baselines": {"jpeg|20": {"clean": share(44), "robust": share(2), "convergence": {"converged": True}}}}
    content = {"pgd": {"contribution": {"sentence": "pgd puts 30% of its contribution map in the RoI."}}}
    roi = {"method": "hirescam", "status": "failed", "interpretation": "not interpretable: it fails randomization"}
    path = fake_run(tmp_path / "run", [], adaptive=adaptive, content=content, roi=roi)
    config = (path / "config.yaml").read_text(encoding="utf-8").replace("propagation", "spatial")
    (path / "config.yaml").write_text(config, encoding="utf-8")
    page = gen.page([gen.read_run(path)])
    assert "### The defence under adaptive attack" in page
    assert ("RoI hirescam, faithfulness gate failed (not interpretable: it fails randomization)" in page
            and "- **pgd** (contribution map): pgd puts 30% of its contribution map in the RoI." in page)
    assert page.index("Where the attacks act") < page.index("The defence under adaptive attack")
    assert "ensemble apgd-ce, square (100 APGD steps × 5 restarts, 5000 Square queries)" in page
    assert "white-box 0.000 [0.000, 0.200] (0/50)" in page
    assert ("| gradient RoA, fraction 0.2, zero fill | 0.840 [0.000, 0.200] (42/50) | 0.060 [0.000, 0.200] (3/50) | "
            "0.020 [0.000, 0.200] | no | *not better than control* |") in page  # a bootstrap share has no count
    assert "| gradient RoA, fraction 0.1, zero fill | — | not attacked adaptively | — | — |" in page
    assert "| jpeg 20 | 0.880 [0.000, 0.200] (44/50) | 0.040 [0.000, 0.200] (2/50) | yes |" in page


def test_one_page_refuses_two_experiments(gen: ModuleType, tmp_path: Path) -> None:
    a = gen.read_run(fake_run(tmp_path / "a", []))
    b = gen.read_run(fake_run(tmp_path / "b", []))
    b.config["experiment"] = "pse"
    with pytest.raises(SystemExit, match="one experiment"):
        gen.page([a, b])
    with pytest.raises(SystemExit, match="no config.yaml"):
        gen.read_run(tmp_path)


def test_record_writes_command_machine_and_wall_time(gen: ModuleType, tmp_path: Path) -> None:
    info = gen.record(tmp_path / "run", [sys.executable, "-c", "print('hi')"], timeout=60)
    saved = json.loads((tmp_path / "run" / gen.RECORD).read_text(encoding="utf-8"))
    assert saved == info and info["returncode"] == 0 and not info["timed_out"]
    assert info["machine"]["cpu_count"] >= 1 and info["wall_seconds"] >= 0
    assert gen.shown_command(["/venv/bin/python", "-m", "advspatial", "run", "pse", "--n", "8"]) == \
        "advspatial run pse --n 8"


def test_a_resumed_run_shows_its_first_command_each_part_and_the_summed_wall_time(gen: ModuleType,
                                                                                   tmp_path: Path) -> None:
    path = fake_run(tmp_path / "run", [])
    first = json.loads((path / gen.RECORD).read_text(encoding="utf-8"))
    first.update(wall_seconds=421.0, returncode=124, timed_out=True)
    resumed = {**first, "command": "advspatial run --resume /r --no-progress", "wall_seconds": 79.0,
               "returncode": 0, "timed_out": False}
    (path / gen.RECORD).write_text(json.dumps(gen.merge_records(first, resumed)), encoding="utf-8")
    page = gen.page([gen.read_run(path)])
    assert "advspatial run propagation --n 32 --no-progress" in page.split("```")[1]
    assert "421.0 s, exit 124 (stopped by the timeout)" in page
    assert "`advspatial run --resume /r --no-progress`: 79.0 s, exit 0" in page
    assert "500.0 s for the command" in page and "failure" not in page


def test_a_finished_run_resumed_on_newer_code_says_so_and_sums_the_cpu_seconds(gen: ModuleType,
                                                                             tmp_path: Path) -> None:
    path = fake_run(tmp_path / "run", [])
    first = json.loads((path / gen.RECORD).read_text(encoding="utf-8"))
    first.update(wall_seconds=6296.0, cpu_seconds=5437.0, returncode=0, timed_out=False, code="1cc3f61")
    resumed = {**first, "command": "advspatial run --resume /r", "wall_seconds": 507.1, "cpu_seconds": 498.2,
               "code": "abc1234"}
    merged = gen.merge_records(first, resumed)
    assert merged["cpu_seconds"] == pytest.approx(5935.2) and merged["wall_seconds"] == pytest.approx(6803.1)
    (path / gen.RECORD).write_text(json.dumps(merged), encoding="utf-8")
    page = gen.page([gen.read_run(path)])
    assert "6296.0 s, exit 0, code 1cc3f61" in page and "507.1 s, exit 0, code abc1234" in page
    assert "resumed the finished run" in page and "stopped before its end" not in page
    assert "(5935 CPU-s)" in page or "(5,935 CPU-s)" in page
    assert "s inside its last part (metrics.json" in page  # metrics.json times the resume alone
    assert gen.merge_records({**first, "cpu_seconds": None}, resumed)["cpu_seconds"] is None  # an unknown part


def test_record_names_the_code_it_ran(gen: ModuleType) -> None:
    try:
        head = subprocess.run(["git", "-C", str(gen.HERE), "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout, or no git")
    assert gen.code_version().rstrip("+") == head


def test_record_names_the_code_as_it_was_when_the_command_started(gen: ModuleType, tmp_path: Path,
                                                                  monkeypatch) -> None:
    versions = iter(["abc1234", "def5678"])  # the checkout moves on while the command runs
    monkeypatch.setattr(gen, "code_version", lambda: next(versions))
    info = gen.record(tmp_path / "run", [sys.executable, "-c", "print('hi')"], timeout=60)
    assert info["code"] == "abc1234"


def test_a_resumed_run_killed_by_the_system_says_so_not_that_its_timeout_stopped_it(gen: ModuleType,
                                                                                  tmp_path: Path) -> None:
    path = fake_run(tmp_path / "run", [])
    first = json.loads((path / gen.RECORD).read_text(encoding="utf-8"))
    first.update(wall_seconds=3603.3, returncode=-9, timed_out=False)
    resumed = {**first, "command": "advspatial run --resume /r --no-progress", "wall_seconds": 900.0,
               "returncode": 0, "timed_out": False}
    (path / gen.RECORD).write_text(json.dumps(gen.merge_records(first, resumed)), encoding="utf-8")
    page = gen.page([gen.read_run(path)])
    assert "3603.3 s, exit -9 (killed by signal 9: SIGKILL, as the out-of-memory killer sends)" in page
    assert "timeout" not in page


# -- the study page (generate.py study): a study directory in the shape of its findings ------------------

def study_estimate(mean: float, low: float, high: float, n: int = 100) -> dict:
    return {"mean": mean, "low": low, "high": high, "n": n}


def model(spec: str, accuracy: float, method: str, status: str) -> dict:
    return {"spec": spec, "report": "models/x/report.html", "parameters": 272474, "depth": 20, "image_shape": [32, 32],
            "clean_accuracy": accuracy, "robust_accuracy": 0.0, "roi_method": method, "roi_status": status,
            "wall_seconds": 312.5, "skipped": {}, "covariates": {}}


def fake_study(path: Path) -> Path:
    (path / "models" / "resnet20").mkdir(parents=True)
    (path / "models" / "vit-tiny").mkdir(parents=True)
    (path / "study.yaml").write_text("models:\n- {model: cifar10-resnet20, label: resnet20}\n"
                                     "settings:\n  dataset: imagefolder:/data/split\n  preset: cifar10\n  n: 100\n"
                                     "quick: false\n", encoding="utf-8")
    for label, why in (("resnet20", "GAP + linear head"), ("vit-tiny", "a vision transformer (8x8 patch tokens)")):
        (path / "models" / label / "metrics.json").write_text(json.dumps({"roi": {"method": "m", "why": why}}))
    effect = {"model": "resnet20", "n": 61, "effect": study_estimate(0.031, 0.012, 0.05, 61), "se": 0.01,
              "observed": 0.21, "null": 0.18, "included": True, "reason": "", "reference": "", "run_verdict": "meets"}
    excluded = {**effect, "model": "vit-tiny", "n": 12, "included": False, "reason": "fewer than 30 images",
                "effect": study_estimate(-0.02, -0.09, 0.04, 12)}
    meta = {"k": 2, "effect": 0.028, "se": 0.01, "low": 0.008, "high": 0.048, "z": 2.8, "p": 0.005, "tau2": 0.0,
            "i2": 0.0, "q": 0.1, "q_p": 0.75, "prediction_low": math.nan, "prediction_high": math.nan,
            "fixed_effect": 0.028}
    metrics = {
        "dataset": "imagefolder:/data/split", "n": 100,
        "models": {"resnet20": model("cifar10-resnet20", 0.81, "gradcam", "passed"),
                   "vit-tiny": model("vit-tiny", 0.62, "chefer", "failed")},
        "failed": {"resnet56": "ModelError: weights not found"},
        "endpoints": [{"attack": "pgd", "endpoint": "excess over the same-class null", "models": [effect, excluded],
                       "pooled": {"meta": meta, "claim": 0, "heterogeneity": "low"}, "note": ""}],
        "contrasts": [{"attack": "pgd", "a": "resnet20", "b": "vit-tiny",
                       "effect": study_estimate(0.05, 0.01, 0.09, 40), "p": 0.01, "p_adjusted": 0.02,
                       "verdict": "higher", "gates": {}}],
        "agreement": [{"subject": "RoA: pgd", "a": "resnet20", "b": "vit-tiny", "n": 33, "observed": 0.31,
                       "null": 0.22, "effect": study_estimate(0.09, 0.04, 0.13, 33), "p": 0.001, "p_adjusted": 0.003,
                       "verdict": "agree", "gates": {}}],
        "regressions": [],
        "claims": [{"claim": "pooled", "subject": "pgd", "statistic": "excess", "null": "same-class",
                    "observed": 0.21, "null_value": 0.18, "effect": study_estimate(0.028, 0.008, 0.048, 2),
                    "ratio": math.nan, "p": 0.005, "p_adjusted": 0.01, "gates": {}, "primary": True,
                    "verdict": "meets", "sesoi": 0.01}],
        "wall_seconds": 700.0,
    }
    (path / "metrics.json").write_text(json.dumps(metrics), encoding="utf-8")
    (path / "findings-run.json").write_text(json.dumps({
        "command": "advspatial study --config docs/cnn-vs-vit.yaml --n 100", "wall_seconds": 801.5,
        "environment": {"ADVSPATIAL_DATA": "../shared/data"},
        "machine": {"cpu_count": 2, "processor": "x86_64", "torch": "2.13.0", "torch_threads": 1}}))
    return path


def test_study_page_holds_models_endpoints_contrasts_agreement_and_claims(gen: ModuleType, tmp_path: Path) -> None:
    training = {"config": {"arch": "vit-tiny", "epochs": 40, "augment": "flip-crop"}, "train_images": 8000,
                "test_accuracy": 0.6234, "train_seconds": 1834.2, "num_parameters": 311338, "device": "cpu",
                "threads": 1, "torch": "2.13.0", "created": "2026-11-25T19:10:00"}
    text = gen.study_page(fake_study(tmp_path / "study"), training, title="CNNs versus a ViT")
    assert text.startswith("# Findings: CNNs versus a ViT")
    assert "advspatial study --config docs/cnn-vs-vit.yaml --n 100" in text and "801.5 s" in text
    assert "| `vit-tiny` | `vit-tiny` | 272,474 | 0.620 |" in text and "a vision transformer (8x8 patch tokens)" in text
    assert "**failed**" in text and "`resnet56` | failed: ModelError: weights not found" in text
    assert "+0.031 [+0.012, +0.050]" in text and "not pooled: fewer than 30 images" in text
    assert "**pooled** (random effects) | 2 |" in text and "+0.028 [+0.008, +0.048]" in text
    assert "| pgd | `resnet20` | `vit-tiny` | +0.050 [+0.010, +0.090] | 0.020 | **higher** |" in text
    assert "| RoA: pgd | `resnet20` | `vit-tiny` | 33 | 0.310 | 0.220 | +0.090 [+0.040, +0.130] | 0.003 | **agree** |" \
           in text
    assert "test accuracy (its dataset's test split) | 0.6234" in text and "1834.2 s" in text
    assert "Verdicts: meets × 1." in text


def test_study_page_needs_a_finished_study(gen: ModuleType, tmp_path: Path) -> None:
    with pytest.raises(SystemExit, match="no study.yaml"):
        gen.study_page(tmp_path)


def test_study_page_gives_each_models_gate_row_by_row(gen: ModuleType, tmp_path: Path) -> None:
    study = fake_study(tmp_path / "study")
    decision = {"rule": "specificity", "mean": -0.086, "low": -0.166, "high": -0.017, "low90": -0.15,
                "high90": -0.03, "sd": 0.5, "n": 143, "margin": 0.2, "outcome": "does less"}
    # a fill whose 95% CI is off 0 but whose 90% CI lies inside the margin: "within the margin", in its cell and
    # in the row's outcome, though the run (written before the row read it so) stored "beats"
    within = {**decision, "mean": 0.411, "low": 0.057, "high": 0.743, "low90": 0.114, "high90": 0.692,
              "margin": 0.717, "outcome": "beats", "within_margin": True}
    gate = {"status": "passed", "n": 143, "restricted_attack": {"eps": 0.44 / 255, "flip_rate": 0.5, "images": 100},
            "comparisons": {
                "class-layout": {"name": "class-layout", "words": "the class layout (where objects ...)",
                                 "role": "specificity", "outcome": "does less", "decisions": {"attack": decision}},
                "centre": {"name": "centre", "words": "the centre prior", "role": "specificity", "outcome": "beats",
                           "decisions": {"deletion:road": within, "deletion:blur": {**within, "mean": 1.5,
                                         "low": 1.2, "high": 1.8, "low90": 1.25, "high90": 1.75,
                                         "within_margin": False}}},
                "randomization": {"name": "randomization", "words": "randomization (the map changes ...)",
                                  "role": "randomization", "outcome": "passes", "decisions": {},
                                  "effects": {"cascade spearman": {"mean": 0.17, "low": 0.09, "high": 0.25}}}}}
    (study / "models" / "resnet20" / "metrics.json").write_text(json.dumps(
        {"roi": {"method": "gradcam", "why": "GAP"}, "faithfulness": {"gradcam": gate}}))
    text = gen.study_page(study)
    assert "**`resnet20`**, `gradcam`: passed on 143 correctly classified images; restricted attack at 0.44/255" in text
    assert "| the class layout | specificity | does less | attack -0.086 [-0.166, -0.017] does less |" in text
    assert ("| the centre prior | specificity | mixed | deletion:road +0.411 [+0.057, +0.743] within the margin; "
            "deletion:blur +1.500 [+1.200, +1.800] beats |") in text
    assert "| randomization | randomization | passes | cascade spearman +0.17 [+0.09, +0.25] |" in text
    assert "**`vit-tiny`**" not in text   # its metrics hold no gate: no block rather than an empty one
