"""The one-pixel incremental evaluator: the logits of many images that differ from a base image in a few
pixels, computed from the change alone instead of a full forward pass each (the one-pixel attack's engine).

Modules: :mod:`.forward` (:class:`~.forward.PatchForward`, the evaluator, and ``try_patch_forward``), :mod:`.graph`
(:class:`~.graph.GraphPatchForward`, for models whose stem is a graph rather than a chain), :mod:`.stem` (the
stem's nodes and what the evaluator supports), :mod:`.tracing` (the stem read off the traced model),
:mod:`.layers` and :mod:`.updates` (the incremental updates of window layers), :mod:`.cache` (structures
reused across calls).
"""
