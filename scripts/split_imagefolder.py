"""Split a class-folder image dataset into ``train/`` and ``test/`` folders of symbolic links, deterministically.

Why: a model trained on a folder that has no ``train/`` and ``test/`` folders is tested on the images it was
trained on. The CIFAR-10 JPEG folder of ``$ADVSPATIAL_DATA`` holds the 10,000 CIFAR-10 *test* images only; a
transformer trained here must keep a part of them aside, and the CNN-versus-ViT study measures every model on
that part (docs/transformers.md). Every ``every``-th file of each class (in sorted order, starting with the
first) goes to ``test/``, the others to ``train/``; nothing is copied::

    python scripts/split_imagefolder.py ../shared/data/cifar10-test-jpeg /work/cache/cifar10-split --every 5
    # -> /work/cache/cifar10-split/{train,test}/<class>/<file> (8,000 and 2,000 links)
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


class SplitError(Exception):
    """Bad input (a missing source, a file where a folder belongs, a target that is not empty): one line, exit 2."""


def split(source: Path, target: Path, every: int) -> tuple[int, int]:
    """Link the files of ``source/<class>/`` into ``target/{train,test}/<class>/``; (train, test) counts."""
    if every < 2:
        raise SplitError(f"--every must be at least 2, got {every}")
    if not source.is_dir():
        raise SplitError(f"{source} is not a folder" + ("" if source.exists() else " (it does not exist)") +
                         "; valid: a folder with one sub-folder of images per class")
    if target.exists() and not target.is_dir():
        raise SplitError(f"{target} is a file; valid: a new (or empty) folder for the split")
    classes = sorted(p for p in source.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not classes:
        raise SplitError(f"{source} has no class folders")
    if target.exists() and any(target.iterdir()):
        raise SplitError(f"{target} is not empty: a split goes into a new folder")
    counts = {"train": 0, "test": 0}
    for folder in classes:
        files = sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))
        for i, file in enumerate(files):
            part = "test" if i % every == 0 else "train"
            link = target / part / folder.name / file.name
            link.parent.mkdir(parents=True, exist_ok=True)
            link.symlink_to(file.resolve())
            counts[part] += 1
    return counts["train"], counts["test"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source", type=Path)
    parser.add_argument("target", type=Path)
    parser.add_argument("--every", type=int, default=5, help="every N-th file of a class goes to test/ (default 5)")
    args = parser.parse_args(argv)
    try:
        train, test = split(args.source, args.target, args.every)
    except (SplitError, OSError) as exc:  # OSError: a read-only or full disk, a file in the way, no permission
        detail = f"{exc.strerror}: {exc.filename}" if isinstance(exc, OSError) and exc.strerror else str(exc)
        print(f"split_imagefolder.py: error: {detail}", file=sys.stderr)
        return 2
    print(f"{args.target}: {train} training and {test} test images (links)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
