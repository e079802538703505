"""The README's picture: the first screen of a run's report and one of its figures, as one small PNG.

Why: the report is what advspatial produces, so the first page shows it, made from a real run so that it can be
made again when the report changes. The first screen is taken by a headless Chromium at 1280x800 (the report as a
reader opens it: its answer and the run's overview figure, where the model looks and where the attack acts on
examples across classes); ``--figure NAME`` puts one more figure of the run below it. The PNG is reduced to an
adaptive palette until it fits the size limit. Run from the repository root, after a default run::

    advspatial run --out runs/spatial                 # or make run
    python scripts/readme_picture.py runs/spatial     # writes docs/images/default-run-report.png

Needs a headless Chromium (``apt-get install chromium``; ``--browser PATH`` for another); nothing else in the project
does, and the tests never start it.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from io import BytesIO
from pathlib import Path

from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "docs" / "images" / "default-run-report.png"
BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
#: the first screen as a reader sees it, in CSS pixels
SCREEN = (1280, 800)
#: the figure a report's first screen shows (then the picture is that screen alone, unless --figure names another)
OVERVIEW = "overview.png"
#: the figures tried in turn when none is named and the report has no overview: one attack's regions, else the
#: verdicts' forest plot
FIGURES = ("regions-pgd.png", "regions-fgsm.png", "forest.png")


def find_browser(given: str | None) -> str:
    """The Chromium to run: ``given``, or the first of :data:`BROWSERS` on the PATH."""
    found = given or next((b for b in BROWSERS if shutil.which(b)), None)
    if found is None:
        sys.exit(f"no headless Chromium found (tried {', '.join(BROWSERS)}): apt-get install chromium, or --browser")
    return found


def screenshot(report: Path, browser: str, size: tuple[int, int] = SCREEN) -> Image.Image:
    """The first screen of ``report`` (an HTML file) at ``size``, rendered by a headless ``browser``."""
    with tempfile.TemporaryDirectory() as scratch:
        shot = Path(scratch) / "screen.png"
        subprocess.run([browser, "--headless=new", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                        "--force-device-scale-factor=1", f"--user-data-dir={scratch}/profile",
                        f"--window-size={size[0]},{size[1]}", f"--screenshot={shot}", report.resolve().as_uri()],
                       check=True, capture_output=True, timeout=180)
        with Image.open(shot) as image:
            return image.convert("RGB").crop((0, 0, *size))


def scaled(image: Image.Image, width: int) -> Image.Image:
    """``image`` in RGB, resized to ``width`` pixels with its aspect ratio."""
    return image.convert("RGB").resize((width, round(image.height * width / image.width)), Image.Resampling.LANCZOS)


def compose(screen: Image.Image, figure: Image.Image, width: int, figure_share: float = 1.0,
            gap: int = 12) -> Image.Image:
    """``screen`` scaled to ``width`` pixels above ``figure`` scaled to ``figure_share`` of it (centred), on white,
    a grey rule between them."""
    top, bottom = scaled(screen, width), scaled(figure, round(width * figure_share))
    canvas = Image.new("RGB", (width, top.height + gap + bottom.height), "white")
    canvas.paste(top, (0, 0))
    canvas.paste(Image.new("RGB", (width, 2), (190, 190, 190)), (0, top.height + gap // 2 - 1))
    canvas.paste(bottom, ((width - bottom.width) // 2, top.height + gap))
    return canvas


def small_png(image: Image.Image, max_bytes: int) -> bytes:
    """``image`` as PNG bytes: full colour if it fits ``max_bytes``, else the largest adaptive palette that fits
    (256, 128, 64 or 32 colours); ValueError if none does."""
    for colours in (None, 256, 128, 64, 32):
        candidate = image if colours is None else image.quantize(colors=colours, method=Image.Quantize.MEDIANCUT)
        buffer = BytesIO()
        candidate.save(buffer, format="PNG", optimize=True)
        if buffer.tell() <= max_bytes:
            return buffer.getvalue()
    raise ValueError(f"even 32 colours take more than {max_bytes} bytes: pass a smaller --width")


def figure_of(run_dir: Path, name: str | None) -> Path:
    """The figure file: ``name`` in the run's figures/, or the first of :data:`FIGURES` the run has."""
    names = [name] if name else list(FIGURES)
    for candidate in names:
        if (run_dir / "figures" / candidate).is_file():
            return run_dir / "figures" / candidate
    sys.exit(f"{run_dir}/figures has none of {', '.join(names)}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dir", type=Path, help="a finished run directory (with report.html and figures/)")
    parser.add_argument("--out", type=Path, default=OUT, help=f"the PNG to write (default: {OUT.relative_to(ROOT)})")
    parser.add_argument("--figure", default=None, help=f"a file in RUN_DIR/figures (default: the first of {FIGURES})")
    parser.add_argument("--width", type=int, default=1000, help="width of the picture in pixels")
    parser.add_argument("--figure-share", type=float, default=0.6, help="the figure's width, a share of --width")
    parser.add_argument("--max-kb", type=int, default=300, help="size limit of the PNG in KB")
    parser.add_argument("--browser", default=None, help="the Chromium executable (default: found on the PATH)")
    args = parser.parse_args(argv)

    report = args.run_dir / "report.html"
    if not report.is_file():
        sys.exit(f"{report} does not exist: a finished run directory is needed")
    screen = screenshot(report, find_browser(args.browser))
    if args.figure is None and (args.run_dir / "figures" / OVERVIEW).is_file():
        picture = scaled(screen, args.width)  # the first screen already shows the run's picture
    else:
        with Image.open(figure_of(args.run_dir, args.figure)) as figure:
            picture = compose(screen, figure, args.width, args.figure_share)
    data = small_png(picture, args.max_kb * 1000)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_bytes(data)
    print(f"{args.out}: {picture.width}x{picture.height}, {len(data) / 1000:.0f} KB")


if __name__ == "__main__":
    main()
