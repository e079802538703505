"""Recording the outputs of a model's layers: owned by the one hook module, :mod:`advspatial.models.hooks`.

Kept so that ``advspatial.analysis.hooks`` (its former home) still names the recorder.
"""

from ..models.hooks import OutputRecorder, list_layers, record_outputs, select_layers

__all__ = ["OutputRecorder", "list_layers", "record_outputs", "select_layers"]
