"""The statistics engine, the claims and their verdicts: one rule for every number advspatial calls a finding.

Every experiment that makes a claim draws its numbers from here, so one claim means the same thing
everywhere (METHODS.md §1, "Inference"). Apart from the code that turns maps into regions
(:mod:`advspatial.regions`) and from the faithfulness gate (:mod:`advspatial.faithfulness`).

Modules: :mod:`.estimates` (means with bootstrap CIs, paired p), :mod:`.nulls` and :mod:`.placement` (the
hierarchy of nulls), :mod:`.excess` (the per-image excess over a pair-based null), :mod:`.inference`
(comparisons against the nulls), :mod:`.store` (an experiment's kept images against every null and the
model-free references, in one call), :mod:`.accuracy` (Wilson intervals, paired accuracies), :mod:`.seeds`
(training procedures over seeds), :mod:`.verdicts` (corrections, smallest effects of interest, the verdict
rule), :mod:`.claims` (pre-declared claims judged together), :mod:`.wording` (the sentence of a comparison),
:mod:`.pixel_test` (where one-pixel attacks land).
"""

from .accuracy import accuracy, paired_accuracy, wilson_interval
from .claims import Claim, judge
from .estimates import Estimate, bootstrap_mean_ci, paired_p
from .inference import NullComparison, compare_to_nulls
from .pixel_test import pixel_in_roi_test
from .verdicts import VERDICTS, benjamini_hochberg, holm, verdict
from .wording import describe

__all__ = [
    "VERDICTS", "Claim", "Estimate", "NullComparison", "accuracy", "benjamini_hochberg", "bootstrap_mean_ci",
    "compare_to_nulls", "describe", "holm", "judge", "paired_accuracy", "paired_p", "pixel_in_roi_test", "verdict",
    "wilson_interval",
]
