"""Settings: reading, layering and validating an experiment's config (experiments/settings.py)."""

from __future__ import annotations

import re

import pytest
import yaml

from advspatial.errors import ConfigError
from advspatial.experiments import experiments
from advspatial.experiments.registry import get_experiment
from advspatial.experiments.running import resolve_config
from advspatial.experiments.settings import config_dict, config_from_mapping


def test_a_list_setting_naming_a_value_twice_is_refused(tmp_path) -> None:
    """``--attacks fgsm,fgsm`` (or ``attacks: [fgsm, fgsm]`` in YAML) counted every image twice in per_image.csv and
    in the statistics."""
    spatial = get_experiment("spatial")
    with pytest.raises(ConfigError, match=r"attacks names 'fgsm' twice.*at most once"):
        resolve_config(spatial, None, {"attacks": ["fgsm", "fgsm"]}, quick=True)
    config = tmp_path / "c.yaml"
    config.write_text("attacks: [pgd, fgsm, pgd]\n")
    with pytest.raises(ConfigError, match="attacks names 'pgd' twice"):
        resolve_config(spatial, str(config), {}, quick=True)
    with pytest.raises(ConfigError, match="panel_fractions names 0.1 twice"):
        resolve_config(spatial, None, {"panel_fractions": [0.1, 0.2, 0.1]}, quick=True)
    assert resolve_config(spatial, None, {"attacks": ["fgsm", "pgd"]}, quick=True).attacks == ["fgsm", "pgd"]


@pytest.mark.parametrize(("text", "message"), [
    ("[" * 5000 + "]" * 5000, "nests lists or mappings too deeply"),
    ("{a: " * 3000 + "1" + "}" * 3000, "nests lists or mappings too deeply"),
    ("1: 2\nn: 3\n", "setting names must be text; got 1"),
    ("~: 2\nn: 3\n", "setting names must be text; got None"),
    ("eps_linf: " + "9" * 400 + "\n", r"eps_linf=9{20}.*\.\.\..* is not valid; valid: a number"),
])
def test_malformed_yaml_configs_are_one_line(tmp_path, text: str, message: str) -> None:
    """YAML nested thousands deep (RecursionError), integer or null keys (TypeError while sorting) and integers too
    large for a float (OverflowError) ended in tracebacks."""
    config = tmp_path / "c.yaml"
    config.write_text(text)
    with pytest.raises(ConfigError, match=message) as info:
        resolve_config(get_experiment("spatial"), str(config), {}, quick=True)
    assert "\n" not in str(info.value)


def test_attack_params_that_clash_or_overflow_are_one_line() -> None:
    """``--param model=x`` gave 'make_attack() got multiple values for argument model'; ``--param eps=9...9`` an
    OverflowError."""
    from advspatial.cli.attack_commands import parse_params
    from advspatial.errors import AdvspatialError

    with pytest.raises(AdvspatialError, match="--param model is not an attack parameter here; use --model"):
        parse_params(("model=x",), "pgd")
    with pytest.raises(AdvspatialError, match="--param eps=9{30}... is too large"):
        parse_params(("eps=" + "9" * 400,), "pgd")



@pytest.mark.parametrize("name", sorted(experiments()))
def test_resolved_settings_read_back_from_config_yaml_as_the_same_values(name: str) -> None:
    """``advspatial report`` and ``--resume`` rebuild the config from config.yaml: every resolved setting, defaults
    included, must read back as the same value of the same type (a default 20 in a list of floats came back as
    20.0 and the re-rendered report's settings table differed)."""
    experiment = experiments()[name]
    needed = {"clean": "clean.pt", "adv": "adv.pt"} if name == "analyze" else {}  # its two required files
    config = config_from_mapping(experiment.config_cls, needed)  # the defaults, as a run resolves them
    text = yaml.safe_dump(config_dict(config), sort_keys=False)
    reloaded = config_from_mapping(experiment.config_cls, yaml.safe_load(text))
    assert repr(config_dict(reloaded)) == repr(config_dict(config))


@pytest.mark.parametrize(("line", "message"), [
    ("n: true", "n=True is not valid; valid: an integer"),
    ("n: '12'", "n='12' is not valid; valid: an integer"),
    ("eps_linf: '0.1'", "eps_linf='0.1' is not valid; valid: a number"),
    ("eps_linf: true", "eps_linf=True is not valid; valid: a number"),
    ("progress: 5", "progress=5 is not valid; valid: true or false"),
    ("progress: 'no'", "progress='no' is not valid; valid: true or false"),
    ("attacks: {fgsm: 1}", "attacks={'fgsm': 1} is not valid; valid: a list (each item text)"),
    ("panel_fractions: [0.1, true]", "panel_fractions=True is not valid; valid: a number"),
    ("device: 0", "device=0 is not valid; valid: text"),
    ("weights: ~", "weights=None is not valid; valid: text"),
])
def test_a_yaml_value_of_another_type_is_refused_not_converted(tmp_path, line: str, message: str) -> None:
    """``n: true`` ran with n = 1, ``eps_linf: '0.1'`` and ``progress: 5`` were converted, ``attacks: {fgsm: 1}``
    became [fgsm], ``weights: ~`` the file name 'None': each value is now of its setting's type or refused."""
    config = tmp_path / "c.yaml"
    config.write_text(line + "\n")
    with pytest.raises(ConfigError, match=re.escape(message)) as info:
        resolve_config(get_experiment("maps"), str(config), {}, quick=True)
    assert str(config) in str(info.value) and "\n" not in str(info.value)


@pytest.mark.parametrize(("line", "given", "message"), [
    ("n: abc", {"n": 12}, "n='abc' is not valid"),
    ("eps_linf: -1", {"eps_linf": 0.1}, "eps_linf=-1.0 is out of range"),
    ("nosuch: 1", {"n": 12}, "unknown setting(s) ['nosuch']"),
])
def test_a_yaml_value_an_option_overrides_is_still_checked(tmp_path, line: str, given: dict, message: str) -> None:
    """``n: abc`` in --config beside ``--n 12`` ran with exit 0 as if the line were not there."""
    config = tmp_path / "c.yaml"
    config.write_text(line + "\n")
    with pytest.raises(ConfigError, match=re.escape(message)):
        resolve_config(get_experiment("maps"), str(config), given, quick=True)


def test_explicit_settings_beat_the_full_evaluation_grid(tmp_path) -> None:
    """``--eval full`` replaced ``--noise-sds``, ``--fills`` and ``--fractions`` given beside it; they now win, in
    a YAML file too, and the grid fills every setting not given."""
    spatial = get_experiment("spatial")
    given = {"eval": "full", "noise_sds": [0.05], "fills": ["zero"], "fractions": [0.2], "adaptive_n": 7}
    config = resolve_config(spatial, None, given, quick=False)
    assert (config.noise_sds, config.fills, config.fractions, config.adaptive_n) == ([0.05], ["zero"], [0.2], 7)
    assert config.blur_sigmas == [0.5, 1.0, 2.0] and config.sweep_adaptive
    file = tmp_path / "c.yaml"
    file.write_text("eval: full\nfractions: [0.2]\n")
    from_file = resolve_config(spatial, str(file), {"n": 30}, quick=False)
    assert from_file.fractions == [0.2] and from_file.adaptive_n == 30 and from_file.fills[-1] == "inpaint"
    again = resolve_config(spatial, None, config_dict(from_file), quick=False)  # a resume reads config.yaml back
    assert config_dict(again) == config_dict(from_file)


@pytest.mark.parametrize("name", sorted(n for n in experiments()  # analyze's config needs its example files
                                        if n != "analyze" and "gate_n" in config_dict(get_experiment(n).config_cls())))
def test_panel_gate_n_is_an_option_only_where_there_is_an_explainer_panel(name: str, tmp_path) -> None:
    """``--panel-gate-n`` sizes the gates of an explainer panel; an experiment without one (its gate is the RoI's
    explainer's alone) accepted it and did nothing with it. There it is no option, a YAML value other than the
    default is refused in one line, and an older run's config.yaml holding the default still reads."""
    from click.testing import CliRunner

    from advspatial.cli import cli

    experiment = get_experiment(name)
    has_panel = "panel" in config_dict(experiment.config_cls())
    config = tmp_path / "c.yaml"
    config.write_text("panel_gate_n: 50\n")
    options = CliRunner().invoke(cli, ["run", name, "--help"], terminal_width=10_000).output
    if has_panel:
        assert "--panel-gate-n" in options
        assert resolve_config(experiment, str(config), {}, quick=True).panel_gate_n == 50
        return
    assert "--panel-gate-n" not in options
    with pytest.raises(ConfigError, match=r"^panel_gate_n=50 does nothing here: this experiment gates no explainer "
                                          r"panel \(its gate's images are gate_n\)"):
        resolve_config(experiment, str(config), {}, quick=True)
    config.write_text("panel_gate_n: 200\n")
    assert resolve_config(experiment, str(config), {}, quick=True).panel_gate_n == 200


@pytest.mark.parametrize(("name", "setting"), [("spatial", "eps_linf"), ("maps", "eps_l2"), ("pse", "eps")])
def test_a_budget_of_zero_is_refused_naming_the_setting(name: str, setting: str, tmp_path) -> None:
    """``--eps-linf 0`` passed the setting's check, then failed inside the gate naming an internal value
    (planned_eps): an attack with no budget attacks nothing."""
    with pytest.raises(ConfigError, match=rf"^{setting}=0\.0 is out of range; valid: \(0, "):
        resolve_config(get_experiment(name), None, {setting: 0.0, "out": str(tmp_path / "run")}, quick=True)
    assert not (tmp_path / "run").exists()


def test_a_folder_image_size_too_small_to_locate_anything_is_refused(tmp_path) -> None:
    """``--image-size 1`` evaluated a zoo model on 1x1 images (exit 0), and a run stopped naming an SSIM window
    the user never set."""
    from advspatial.experiments.settings import MIN_IMAGE_SIDE, dataset_options

    folder = f"imagefolder:{tmp_path}"
    for size in (1, MIN_IMAGE_SIDE - 1):
        with pytest.raises(ConfigError, match=rf"image_size={size} is out of range; valid: 0 .* or \[8, 4096\]"):
            dataset_options(folder, "cifar10-resnet20", size, "crop", "")
    assert dataset_options(folder, "smallcnn", MIN_IMAGE_SIDE, "crop", "")["size"] == MIN_IMAGE_SIDE
    assert dataset_options(folder, "cifar10-resnet20", 0, "crop", "")["size"] == 32  # the zoo model's own


def test_a_zoo_model_given_another_image_size_is_noted_once(tmp_path, capsys, monkeypatch) -> None:
    """A zoo model on images resized to another side than its own runs (a smaller side is faster), and one line
    says that its accuracy there may be far below its own, once per model and size; its own size, or none given,
    says nothing."""
    from advspatial import distributed
    from advspatial.experiments import settings

    monkeypatch.setattr(distributed, "_NOTED", set())
    folder = f"imagefolder:{tmp_path}"
    for _ in range(2):
        settings.note_foreign_image_size("cifar10-resnet20", folder, 64)
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1 and "cifar10-resnet20 takes 32x32 images and these are resized to 64x64" in lines[0]
    for model, size in (("cifar10-resnet20", 32), ("cifar10-resnet20", 0), ("smallcnn", 64)):
        settings.note_foreign_image_size(model, folder, size)
    settings.note_foreign_image_size("cifar10-resnet20", "fashion_mnist", 48)  # refused elsewhere: no folder to resize
    assert capsys.readouterr().err == ""
