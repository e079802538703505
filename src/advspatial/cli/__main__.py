"""``python -m advspatial.cli``: the ``advspatial`` command."""

from .main import main

main()
