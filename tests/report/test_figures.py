"""Figures: valid PNGs of plausible size, bad shapes rejected, matplotlib's global backend untouched."""

from __future__ import annotations

import struct
from pathlib import Path

import matplotlib
import pytest
from matplotlib.colors import to_rgb
import torch

from advspatial.errors import ShapeError
from advspatial.regions import binarize, segregate
from advspatial.report.figures import plot_class_mean_maps, plot_region_grid

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC and data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


@pytest.fixture
def synthetic() -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    n = 6
    images = torch.rand(n, 1, 16, 16, generator=gen)
    importance = torch.rand(n, 16, 16, generator=gen) ** 2
    importance[0] = 0  # an all-zero map must still draw
    attack = importance + 0.3 * torch.rand(n, 16, 16, generator=gen)
    return {"images": images, "importance": importance, "attack": attack, "labels": torch.arange(n) % 3}


def test_region_grid(tmp_path: Path, synthetic: dict[str, torch.Tensor]) -> None:
    backend = matplotlib.get_backend()
    imp, att = synthetic["importance"], synthetic["attack"]
    parts = segregate(binarize(imp).mask, binarize(att).mask)
    out = plot_region_grid(synthetic["images"], imp, att, parts, tmp_path / "sub" / "grid.png",
                           row_labels=[f"image {i}" for i in range(6)], max_rows=4)
    width, height = _png_size(out)
    assert out == tmp_path / "sub" / "grid.png" and out.stat().st_size > 10_000
    assert 600 <= width <= 2000 and 600 <= height <= 3000 and height > width * 0.8  # 4 rows of 4 panels
    rgb = torch.rand(2, 3, 16, 16)
    out2 = plot_region_grid(rgb, imp[:2], att[:2], parts.codes()[:2], tmp_path / "rgb.png")
    assert _png_size(out2)[1] < height  # fewer rows, shorter figure
    assert matplotlib.get_backend() == backend


def test_region_grid_draws_each_panels_colours_one_axes_a_row(tmp_path: Path, monkeypatch) -> None:
    """Every row's four panels in one axes (a figure of many one-panel axes spent its time making axes), with the
    colours the panels mean: the image, the heat map at 0.75 over it, the four parts."""
    import numpy as np
    from matplotlib import colormaps
    from PIL import Image

    from advspatial.report import figures

    drawn = []
    save = figures.save_figure
    monkeypatch.setattr(figures, "save_figure", lambda fig, path: drawn.append(fig) or save(fig, path))
    n, side = 3, 16
    images = torch.full((n, 1, side, side), 0.5)
    importance = torch.ones(n, side, side)  # at its peak everywhere: heat 1
    attack = torch.zeros(n, side, side)
    attack[:, :8] = 1.0
    codes = torch.zeros(n, side, side, dtype=torch.long)
    codes[:, :, :8] = 3  # left half "both", right half "neither"
    out = plot_region_grid(images, importance, attack, codes, tmp_path / "grid.png")
    assert len(drawn[0].axes) == n + 1  # one axes a row and the colour bar
    png = np.asarray(Image.open(out).convert("RGB")).astype(int).reshape(-1, 3)

    def pixels_of(rgb: np.ndarray) -> int:
        return int((np.abs(png - np.round(255 * rgb)).max(1) <= 2).sum())

    gray = colormaps["gray"](0.5)[:3]
    heat = 0.75 * np.array(colormaps["inferno"](1.0)[:3]) + 0.25 * np.array(gray)
    cold = 0.75 * np.array(colormaps["inferno"](0.0)[:3]) + 0.25 * np.array(gray)
    panel = 150 * 150  # a panel is about 170 px wide here: its pixels far outnumber any label's
    assert pixels_of(np.array(gray)) > n * panel  # the image panels
    assert pixels_of(heat) > n * 1.5 * panel  # the importance panels and the attack's hot half
    assert pixels_of(cold) > n * 0.4 * panel  # the attack's cold half
    both, neither = (np.array(to_rgb(figures.PART_COLOURS[k])) for k in (3, 0))
    assert pixels_of(both) > n * 0.4 * panel and pixels_of(neither) > n * 0.4 * panel


def test_region_strip_draws_one_axes_an_example(tmp_path: Path, monkeypatch) -> None:
    from advspatial.report import figures

    drawn = []
    save = figures.save_figure
    monkeypatch.setattr(figures, "save_figure", lambda fig, path: drawn.append(fig) or save(fig, path))
    n = 5
    images, maps = torch.rand(n, 3, 16, 16), torch.rand(n, 16, 16)
    codes = torch.randint(0, 4, (n, 16, 16))
    figures.plot_region_strip(images, maps, maps, codes, tmp_path / "strip.png", column_labels=list("abcde"),
                              importance_name="gradcam", attack_name="contribution", title="t")
    assert len(drawn[0].axes) == n
    titles = [t.get_text() for ax in drawn[0].axes for t in ax.texts]
    assert titles == [text for label in "abcde" for text in (label, "RoI: gradcam", "RoA: contribution", "regions")]


def test_region_grid_rejects_bad_shapes(tmp_path: Path, synthetic: dict[str, torch.Tensor]) -> None:
    imp, att, images = synthetic["importance"], synthetic["attack"], synthetic["images"]
    codes = segregate(imp > 0.5, att > 0.5).codes()
    with pytest.raises(ShapeError, match="images"):
        plot_region_grid(images[:, 0], imp, att, codes, tmp_path / "a.png")
    with pytest.raises(ShapeError, match="attack"):
        plot_region_grid(images, imp, att[:, :8], codes, tmp_path / "a.png")
    with pytest.raises(ShapeError, match="codes"):
        plot_region_grid(images, imp, att, imp > 0.5, tmp_path / "a.png")
    with pytest.raises(ShapeError, match="row_labels"):
        plot_region_grid(images, imp, att, codes, tmp_path / "a.png", row_labels=["x"])
    with pytest.raises(ShapeError, match="max_rows must be >= 1"):
        plot_region_grid(images, imp, att, codes, tmp_path / "a.png", max_rows=0)
    assert not (tmp_path / "a.png").exists()


def test_class_mean_maps(tmp_path: Path, synthetic: dict[str, torch.Tensor]) -> None:
    means = torch.rand(4, 16, 16)
    means[3] = float("nan")  # a class without images
    out = plot_class_mean_maps(means, ["a", "b", "c", "d"], tmp_path / "means.png", counts=[2, 2, 2, 0], ncols=2)
    width, height = _png_size(out)
    assert out.stat().st_size > 5_000 and 300 <= width <= 1500 and 300 <= height <= 1500
    with pytest.raises(ShapeError, match="class name"):
        plot_class_mean_maps(means, ["a", "b"], tmp_path / "x.png")
    with pytest.raises(ShapeError):
        plot_class_mean_maps(means[0], ["a"], tmp_path / "x.png")


def test_a_figure_never_writes_through_a_planted_symlink(tmp_path: Path) -> None:
    """A symlink planted at a figure's path redirected the write to its target."""
    from matplotlib.figure import Figure

    from advspatial.report.figures import save_figure

    victim = tmp_path / "victim.txt"
    victim.write_text("keep me")
    (tmp_path / "fig.png").symlink_to(victim)
    fig = Figure(figsize=(1, 1))
    fig.add_subplot().plot([0, 1])
    save_figure(fig, tmp_path / "fig.png")
    assert victim.read_text() == "keep me"
    assert _png_size(tmp_path / "fig.png")[0] > 0 and not (tmp_path / "fig.png").is_symlink()


@pytest.mark.parametrize("name", ["$x^$", r"$\undefinedcmd{x}$", "cost $5 and $6", r"$\alpha$ ok"])
def test_user_text_that_is_not_valid_mathtext_is_drawn_literally(tmp_path, name: str) -> None:
    """A class name or --source label holding '$x^$' made savefig fail after all the work was done."""
    from matplotlib.figure import Figure

    from advspatial.report.figures import save_figure

    fig = Figure(figsize=(2, 2))
    ax = fig.add_subplot()
    ax.set_title(name)
    ax.set_xlabel(name)
    path = save_figure(fig, tmp_path / "f.png")
    assert path.read_bytes()[:4] == b"\x89PNG"
    assert ax.title.get_parse_math() == (name in (r"$\alpha$ ok", "cost $5 and $6"))  # valid math is typeset


def test_a_name_that_is_not_utf8_is_written_with_a_replacement_character(tmp_path) -> None:
    """A class folder b'0caf\\xe9' (held by Python as a lone surrogate) crashed the report writer."""
    import os

    from advspatial.files import atomic_write_text

    name = os.fsdecode(b"0caf\xe9")
    atomic_write_text(tmp_path / "r.html", f"<td>{name}</td>")
    assert (tmp_path / "r.html").read_text(encoding="utf-8") == "<td>0caf\ufffd</td>"
