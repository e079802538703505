"""scripts/readme_picture.py, which makes the README's picture from a run, and the picture the README shows.

The browser part (a headless Chromium's screenshot) is not run here: the tests never need a browser. What is
checked: the composition, the size limit, the choice of figure, and that the committed picture is the one the README
names, a PNG within its size limit.
"""

from __future__ import annotations

import re
from io import BytesIO
from pathlib import Path

import pytest
import torch
from PIL import Image
from helpers import load_script

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "readme_picture.py"
readme_picture = load_script(SCRIPT, "readme_picture")


def noise(width: int, height: int, seed: int = 0) -> Image.Image:
    pixels = torch.randint(0, 256, (height, width, 3), generator=torch.Generator().manual_seed(seed), dtype=torch.uint8)
    return Image.fromarray(pixels.numpy())


def test_the_screen_goes_above_the_figure_which_is_centred_at_its_share_of_the_width() -> None:
    screen, figure = Image.new("RGB", (1280, 800), "red"), Image.new("RGB", (500, 250), "blue")
    picture = readme_picture.compose(screen, figure, width=640, figure_share=0.5, gap=12)
    assert picture.size == (640, 400 + 12 + 160)
    assert picture.getpixel((10, 10)) == (255, 0, 0)
    assert picture.getpixel((10, 400 + 5)) == (190, 190, 190)  # the rule between them
    bottom = picture.height - 10
    assert picture.getpixel((320, bottom)) == (0, 0, 255)  # the figure, 320 wide, from x = 160 to 480
    assert picture.getpixel((150, bottom)) == picture.getpixel((490, bottom)) == (255, 255, 255)


def test_a_picture_too_large_in_full_colour_is_reduced_to_a_palette_within_the_limit() -> None:
    image = noise(300, 200)
    full = BytesIO()
    image.save(full, format="PNG", optimize=True)
    limit = full.tell() // 2
    data = readme_picture.small_png(image, limit)
    assert len(data) <= limit
    with Image.open(BytesIO(data)) as reduced:
        assert reduced.mode == "P" and reduced.size == image.size
    with pytest.raises(ValueError, match="--width"):
        readme_picture.small_png(image, 100)


def test_the_first_figure_the_run_has_is_taken(tmp_path: Path) -> None:
    (tmp_path / "figures").mkdir()
    Image.new("RGB", (4, 4)).save(tmp_path / "figures" / "forest.png")
    assert readme_picture.figure_of(tmp_path, None).name == "forest.png"
    Image.new("RGB", (4, 4)).save(tmp_path / "figures" / "regions-pgd.png")
    assert readme_picture.figure_of(tmp_path, None).name == "regions-pgd.png"
    with pytest.raises(SystemExit):
        readme_picture.figure_of(tmp_path, "missing.png")


def test_the_readme_shows_the_committed_picture_within_its_size_limit() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    shown = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", readme)
    assert shown == [str(readme_picture.OUT.relative_to(ROOT))]
    data = readme_picture.OUT.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) <= 300_000
