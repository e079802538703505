"""``python -m advspatial``: the command line (what ``torchrun -m advspatial`` starts in every process)."""

from .cli import main

if __name__ == "__main__":
    main()
