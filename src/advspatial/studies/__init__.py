"""A study across models: the RoI/RoA measurement (the ``maps`` experiment) on every model over the same images
with the same seeds, then one comparative analysis (``advspatial study``, :func:`advspatial.study`,
:func:`.run.run_study`).

- :mod:`.models`: the models of a study (specs, labels, per-model loading settings, covariates);
- :mod:`.running`: settings resolved and checked alike, the preflight, the study's directory;
- :mod:`.measure`: one model's resumable ``maps`` run and its :mod:`.records` (the per-image values a study pools);
- :mod:`.analysis` and :mod:`.agreement`: meta-analysis (pooling by :mod:`.meta`), contrasts, meta-regression,
  agreement between models;
- :mod:`.findings`, :mod:`.report`, :mod:`.figures`, :mod:`.tables`: what a study found, its report, its figures
  and its tidy tables;
- :mod:`.run`: :func:`run_study`.
"""
