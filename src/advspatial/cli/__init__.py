"""The ``advspatial`` command (entry point :func:`main`); one module per group of commands.

- :mod:`.main`: the top-level group, error handling, warnings, :func:`main`;
- :mod:`.listing`: ``advspatial list``;
- :mod:`.model_commands`: ``train``, ``evaluate`` and the shared dataset and model options;
- :mod:`.attack_commands`: ``attack`` and ``maps`` (streamed over the dataset by :mod:`.pipeline`);
- :mod:`.run`: ``run [EXPERIMENT]``, its options generated from the experiment's config dataclass.
"""

from .main import cli, main

__all__ = ["cli", "main"]
