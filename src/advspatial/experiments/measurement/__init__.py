"""The RoI/RoA measurement: where attacks act (RoA) against where the model looks (RoI), gated on the faithfulness
of the explainer (METHODS.md §1). Shared machinery, not an experiment: the ``maps``, ``analyze`` and spatial
experiments and the studies across models run it through one entry, :func:`measure`.

Its parts: the settings (:mod:`.config`), the cached stages and their context (:mod:`.stages`), the faithfulness
gate as a stage and what its status means for the RoI (:mod:`.gate`, :mod:`.roi`), per-image rows and bounded
stores (:mod:`.rows`), the co-location claims and the decomposition (:mod:`.colocation`, :mod:`.decomposition`),
the inference (:mod:`.claims`), the findings' parts (:mod:`.findings`), the figures (:mod:`.figures`) and the
report's sections (:mod:`.sections`).
"""

from .config import GatedConfig, MeasurementConfig
from .run import Measurement, measure

__all__ = ["GatedConfig", "Measurement", "MeasurementConfig", "measure"]
