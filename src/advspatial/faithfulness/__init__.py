"""The faithfulness gate: an importance map counts as the model's Region of Importance only after it beats
model-free references on deletion and ROAD curves and survives model randomization (METHODS.md §1).

Modules: :mod:`.gate` (the gate's summary and rule), :mod:`.record` (its typed record), :mod:`.deletion`
(deletion curves and the restricted-attack check), :mod:`.road` (ROAD: deletion with noisy linear imputation),
:mod:`.randomization` (the model-randomization cascade), :mod:`.mprt` (smooth and efficient MPRT),
:mod:`.sequential` (interim looks that stop a gate once its verdict is decided).
"""

from .gate import summarize_gate
from .record import GateResult
from .road import RoadCurves, road_curves, road_symmetric

__all__ = ["GateResult", "RoadCurves", "road_curves", "road_symmetric", "summarize_gate"]
