"""A report's settings table lists the settings of the parts that ran; config.yaml keeps every setting."""

from __future__ import annotations

import html
import re
from pathlib import Path

import yaml
from helpers import self_labelled_tiny_cnn

import advspatial
from advspatial.experiments import experiments
from advspatial.experiments.settings import reported_settings


def _config(name: str, **values: object):  # type: ignore[no-untyped-def]
    return experiments()[name].config_cls(**values)


def test_a_maps_run_of_fgsm_and_pgd_lists_no_one_pixel_cw_or_defence_setting() -> None:
    shown = reported_settings(_config("maps", attacks=["fgsm", "pgd"]))
    assert "attacks" in shown and "eps_linf" in shown and "panel" in shown
    assert not [k for k in shown if k.startswith(("onepixel_", "cw_")) or k == "defence_attack"], sorted(shown)


def test_the_settings_of_an_attack_that_ran_are_listed() -> None:
    shown = reported_settings(_config("spatial", attacks=["pgd", "onepixel", "cw-l2"]))
    assert {"onepixel_n", "onepixel_popsize", "onepixel_steps", "cw_steps", "cw_search_steps"} <= set(shown)
    assert shown["defence_attack"] == "pgd", "the spatial experiment runs a defence"
    assert "cw_steps" not in reported_settings(_config("spatial", attacks=["pgd", "onepixel"]))


def test_an_experiment_without_attacks_lists_every_option() -> None:
    config = _config("baseline")
    assert reported_settings(config).keys() == {k for k in vars(config) if k not in type(config).CLI_HIDDEN}


def test_the_report_of_a_maps_run_lists_only_what_ran(tmp_path: Path) -> None:
    model, images, labels = self_labelled_tiny_cnn(8)
    out = tmp_path / "run"
    advspatial.run("maps", model=model, data=(images, labels), attacks=["fgsm"], quick=True, n=8, batch_size=4,
                   progress=False, out=str(out))
    report = (out / "report.html").read_text(encoding="utf-8")
    table = report[report.index("<section id='config'>"):]
    names = [html.unescape(name) for name in re.findall(r"<tr><td>([^<]*)</td>", table)]
    assert "attacks" in names and "n" in names
    assert not [k for k in names if k.startswith(("onepixel_", "cw_")) or k == "defence_attack"], names
    assert "onepixel_n" in yaml.safe_load((out / "config.yaml").read_text()), "config.yaml keeps every setting"
