"""The ``analyze`` experiment: examples made elsewhere measured exactly as the spatial experiment measures its own."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from helpers import assert_smoke_test, self_labelled_tiny_cnn

import advspatial
from advspatial.data import register_dataset_object
from advspatial.errors import AdvspatialError, ConfigError
from advspatial.experiments import get_experiment, resolve_config
from advspatial.experiments.analyze import ExternalExamples, infer_norm
from advspatial.experiments.maps import maps_analysis
from advspatial.experiments.maps.report import render
from advspatial.models import register_model_object
from advspatial.rundir import RunDir

#: small but complete measurement settings shared by both sides of a comparison
MEASURE = {"batch_size": 10, "contribution_steps": 8, "permutations": 100, "gate_n": 20, "gate_steps": 3,
           "randomization_images": 2, "panel": [], "panel_fractions": [0.3], "figure_images": 2, "progress": False,
           "eps_linf": 0.1}


@pytest.fixture(scope="module")
def setup():
    """A tiny CNN, 20 images labelled by it (every image correct), and its registered spec names."""
    return self_labelled_tiny_cnn(20)


def test_analyze_equals_the_spatial_measurement_of_the_same_examples(setup, tmp_path):
    """PGD examples analysed as external ones give the spatial measurement's rows and claims exactly."""
    model, x, y = setup
    spec, data = register_model_object(model), register_dataset_object((x, y))
    config = resolve_config(get_experiment("spatial"), None,
                            {**MEASURE, "model": spec, "dataset": data, "subset": "first", "attacks": ["pgd"],
                             "defence_attack": "pgd", "steps": 5}, quick=False)
    own_rows, own = maps_analysis(config, RunDir(tmp_path / "own"))
    own_metrics, own_sections = own.to_metrics(), render(config, own, tmp_path / "own" / "figures").sections
    pgd = config.budgeted_attack("pgd", model)
    x_adv = pgd.run(x, y, sample_ids=torch.arange(len(x))).x_adv
    result = advspatial.analyze(model, x, x_adv, y, source="pgd", out=str(tmp_path / "ext"), norm="linf",
                                subset="first", **MEASURE)
    assert len(result.rows) == len(own_rows)
    assert sum(r["success"] for r in own_rows) >= 3 and own_metrics["claims"]  # a comparison with content
    for own, ext in zip(own_rows, result.rows, strict=True):
        for key, value in own.items():
            if key != "queries":
                assert ext[key] == value or (value != value and ext[key] != ext[key]), key
    assert [c["effect"] for c in result.metrics["claims"]] == [c["effect"] for c in own_metrics["claims"]]
    assert [c["verdict"] for c in result.metrics["claims"]] == [c["verdict"] for c in own_metrics["claims"]]
    assert (tmp_path / "ext" / "report.html").is_file()
    html = (tmp_path / "ext" / "report.html").read_text()
    assert "The examples" in html
    # both end with the measurement's limits; only the external examples' names the maker's responsibility
    assert own_sections[-1].title == "Limits of the method" and "Limits of the method" in html
    assert "made elsewhere" in html and not any("made elsewhere" in p for p in own_sections[-1].paragraphs)
    assert any("No defence is evaluated here" in p for p in own_sections[-1].paragraphs)


def _independent_columns(model, x, x_adv, y):
    with torch.no_grad():
        pred = model(x_adv).argmax(1)
    delta = (x_adv - x).flatten(1)
    return pred != y, delta.norm(dim=1), delta.abs().amax(1)


@pytest.mark.parametrize("library", ["torchattacks", "art"])
def test_examples_made_by_reference_libraries(setup, tmp_path, library):
    """Examples from torchattacks (L-inf PGD) and ART (L2 PGD) enter as they are: success and norms are those
    of the given images, the threat model is inferred, the source is named."""
    model, x, y = setup
    x, y = x[:12], y[:12]
    if library == "torchattacks":
        torchattacks = pytest.importorskip("torchattacks", reason="torchattacks not installed (test extra)")
        x_adv = torchattacks.PGD(model, eps=0.1, alpha=0.025, steps=5)(x, y).detach()
        expected_norm = "linf"
    else:
        pytest.importorskip("art", reason="adversarial-robustness-toolbox not installed (test extra)")
        from art.attacks.evasion import ProjectedGradientDescent
        from art.estimators.classification import PyTorchClassifier

        classifier = PyTorchClassifier(model, loss=torch.nn.CrossEntropyLoss(), input_shape=(1, 28, 28),
                                       nb_classes=10, clip_values=(0.0, 1.0))
        attack = ProjectedGradientDescent(classifier, norm=2, eps=1.5, eps_step=0.5, max_iter=5,
                                          num_random_init=0, verbose=False)
        x_adv = torch.from_numpy(attack.generate(x.numpy())).float()
        expected_norm = "l2"
    result = advspatial.analyze(model, x, x_adv, y, source=library, out=str(tmp_path / library), subset="first",
                                **MEASURE)
    success, l2, linf = _independent_columns(model, x, x_adv, y)
    assert [r["success"] for r in result.rows] == success.tolist()
    assert np.allclose([r["l2"] for r in result.rows], l2.numpy(), atol=1e-5)
    assert np.allclose([r["linf"] for r in result.rows], linf.numpy(), atol=1e-6)
    assert result.metrics["examples"]["norm"] == expected_norm
    assert result.metrics["examples"]["source"] == library
    assert {r["attack"] for r in result.rows} == {library}


def test_labels_default_to_the_models_predictions(setup, tmp_path):
    model, x, y = setup
    x_adv = (x + 0.1 * torch.randn_like(x)).clamp(0, 1)
    result = advspatial.analyze(model, x[:10], x_adv[:10], out=str(tmp_path / "p"), subset="first", **MEASURE)
    assert all(r["correct"] for r in result.rows)
    assert "predictions" in result.metrics["examples"]["labels"]


def test_infer_norm_known_answers():
    x = torch.full((6, 3, 16, 16), 0.5)
    one_pixel = x.clone()
    one_pixel[:, :, 3, 4] = 1.0
    assert infer_norm(x, one_pixel)[0] == "l0"
    signs = torch.randint(0, 2, x.shape).float() * 2 - 1
    assert infer_norm(x, x + 0.03 * signs)[0] == "linf"
    scales = torch.linspace(0.01, 0.2, 6)[:, None, None, None]
    assert infer_norm(x, x + scales * torch.randn(x.shape).clamp(-2, 2) / 2)[0] == "l2"


def test_external_examples_serve_by_sample_id(setup):
    model, x, y = setup
    adversarial = torch.rand_like(x)
    attack = ExternalExamples(model, adversarial, "mine", "l2")
    ids = torch.tensor([5, 2, 7])
    result = attack.run(x[ids], y[ids], sample_ids=ids)
    assert torch.equal(result.x_adv, adversarial[ids])
    assert attack.name == "mine" and attack.norm == "l2"
    assert result.queries.tolist() == [1, 1, 1]  # the base class's clean and adversarial predictions only


def test_resume_refuses_changed_inputs(setup, tmp_path):
    model, x, y = setup
    clean, adv = tmp_path / "clean.npy", tmp_path / "adv.npy"
    np.save(clean, x[:10].numpy())
    np.save(adv, (x[:10] + 0.05).clamp(0, 1).numpy())
    np.savetxt(tmp_path / "y.txt", y[:10].numpy(), fmt="%d")
    settings = {**MEASURE, "labels": str(tmp_path / "y.txt"), "out": str(tmp_path / "run"), "subset": "first"}
    advspatial.analyze(model, clean, adv, **{k: v for k, v in settings.items() if k != "labels"},
                       labels=str(tmp_path / "y.txt"))
    np.save(adv, (x[:10] + 0.07).clamp(0, 1).numpy())
    with pytest.raises(AdvspatialError, match="other inputs"):
        advspatial.analyze(model, clean, adv, resume=True, **{k: v for k, v in settings.items() if k != "labels"},
                           labels=str(tmp_path / "y.txt"))


FACTORY = """
import torch
from torch import nn

class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                                      nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2))
        self.fc = nn.Linear(16 * 7 * 7, 10)

    def forward(self, x):
        return self.fc(torch.flatten(self.features(x), 1))

def make():
    torch.manual_seed(0)
    return Net().eval()
"""


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "advspatial.cli", *args], capture_output=True, text=True)


def test_cli_analyze_with_image_folders(tmp_path):
    """Two folders of PNGs with the same names and a labels file: exit 0, the run directory and report."""
    from PIL import Image

    (tmp_path / "net.py").write_text(FACTORY)
    rng = np.random.default_rng(0)
    for folder in ("clean", "adv"):
        (tmp_path / folder).mkdir()
    for i in range(8):
        image = rng.integers(0, 256, (28, 28), dtype=np.uint8)
        Image.fromarray(image).save(tmp_path / "clean" / f"img{i}.png")
        Image.fromarray(np.clip(image.astype(int) + 20, 0, 255).astype(np.uint8)).save(tmp_path / "adv" / f"img{i}.png")
    (tmp_path / "labels.txt").write_text("\n".join(str(i % 10) for i in range(8)))
    out = tmp_path / "run"
    proc = _cli("analyze", "--model", f"{tmp_path / 'net.py'}:make", "--clean", str(tmp_path / "clean"), "--adv",
                str(tmp_path / "adv"), "--labels", str(tmp_path / "labels.txt"), "--source", "mytool", "--quick",
                "--no-progress", "--gate-n", "8", "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    assert "mytool: 8 example pairs" in proc.stdout
    assert_smoke_test(out, proc.stdout)  # --quick: a smoke test, and it says so
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["examples"]["source"] == "mytool"
    assert (out / "report.html").is_file() and (out / "per_image.csv").is_file()
    (tmp_path / "adv" / "img3.png").rename(tmp_path / "adv" / "other.png")
    proc = _cli("analyze", "--model", f"{tmp_path / 'net.py'}:make", "--clean", str(tmp_path / "clean"), "--adv",
                str(tmp_path / "adv"), "--labels", str(tmp_path / "labels.txt"), "--quick", "--out",
                str(tmp_path / "r2"))
    assert proc.returncode == 2
    assert "same file names" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


def test_analyze_refuses_missing_inputs_before_any_work(tmp_path):
    with pytest.raises(ConfigError, match="--clean and --adv"):
        resolve_config(get_experiment("analyze"), None, {"clean": "", "adv": ""}, quick=False)
    with pytest.raises(ConfigError, match="not found"):
        resolve_config(get_experiment("analyze"), None, {"clean": str(tmp_path / "x.npy"),
                                                         "adv": str(tmp_path / "y.npy")}, quick=False)


def test_analyze_without_a_model_is_refused(tmp_path):
    """``advspatial.analyze(None, clean=x, adv=x_adv)`` (and ``advspatial analyze`` without ``--model``) trained the
    default smallcnn on the analysed images, their labels all 0, and analysed that."""
    images = torch.rand(8, 1, 28, 28)
    with pytest.raises(ConfigError, match="analyze needs --model"):
        advspatial.analyze(None, clean=images, adv=(images + 0.05).clamp(0, 1), out=str(tmp_path / "a"))


@pytest.mark.parametrize("source", ["", "  ", "$$", "/:\\"])
def test_a_source_that_names_nothing_is_refused_before_any_work(setup, tmp_path, source):
    """A source with no letter, digit or ``._+=-`` leaves no name for the examples' figures and files."""
    model, x, _ = setup
    with pytest.raises(ConfigError, match="names nothing"):
        advspatial.analyze(model, x, x, source=source, out=str(tmp_path / "a"))
