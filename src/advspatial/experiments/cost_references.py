"""The forecast's reference work (:mod:`.forecast`): per experiment and stage group, the classifier's
forward and backward images and calls of a run on n images as ``a + b * n``.

Written by ``benchmarks/cost_reference.py`` from two runs per experiment on the default model (Fashion-MNIST
smallcnn) at the default settings. Fitted per stage group between the two n: work of fixed size (the gates'
checks, the adaptive evaluation's ``adaptive_n`` images, the class prior) lands in ``a``, work per image in ``b``.
The runs they were fitted from: :data:`RUNS`. Everything below :data:`GENERATED_BELOW` is rewritten by that
script; the head above it (this docstring, :class:`StageWork`) is kept.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class StageWork:
    """``(a, b)`` per count: the count of a run on n images is ``a + b * n`` (never below 0)."""

    forward: tuple[float, float]
    backward: tuple[float, float]
    calls: tuple[float, float]
    backward_calls: tuple[float, float]

    def at(self, n: int) -> tuple[float, float, float, float]:
        """(forward images, backward images, forward calls, backward calls) on ``n`` images."""
        forward, backward, calls, backward_calls = (max(0.0, a + b * n) for a, b in (
            self.forward, self.backward, self.calls, self.backward_calls))
        return forward, backward, calls, backward_calls


#: the line after which ``benchmarks/cost_reference.py`` writes the fitted data (keep it as it is)
GENERATED_BELOW = "# ---- written by benchmarks/cost_reference.py from the runs named in RUNS ----"

# ---- written by benchmarks/cost_reference.py from the runs named in RUNS ----
#: the reference runs (date, commits, experiments and n)
RUNS = "2026-11-26, 3ad0683 and 67b1786: spatial at n = 100 and 500, maps at n = 60 and 200"
#: per experiment, the reference runs' RoI explainer and explainer panel (the gates in REFERENCES are theirs)
REFERENCE_ROI: dict[str, str] = {"spatial": "hirescam", "maps": "hirescam"}
REFERENCE_PANEL: dict[str, tuple[str, ...]] = {
    "spatial": ("gradcam", "hirescam", "inputxgrad"),
    "maps": ("gradcam", "hirescam", "inputxgrad"),
}
#: per experiment, the framework's CPU seconds per classifier call outside the model (the reference runs, one thread)
NON_MODEL_SECONDS_PER_CALL: dict[str, float] = {"spatial": 0.00147, "maps": 0.00523}
#: seconds outside every stage (loading, statistics, figures, report) per experiment
OUTSIDE_STAGES_SECONDS: dict[str, float] = {"spatial": 28.9, "maps": 13.2}
#: per experiment, per stage group, its work as a + b * n: StageWork(forward, backward, calls, backward_calls)
REFERENCES: dict[str, dict[str, StageWork]] = {
    "spatial": {
        "adaptive/main": StageWork((228893.2, -9.412), (248272.0, -0.41), (6047.5, -0.165), (8579.0, -0.5)),
        "adaptive/undefended": StageWork((46215.5, 15.945), (45461.0, 15.79), (3309.8, 0.013), (3275.8, 0.013)),
        "attack/cw-l2": StageWork((0.0, 123.0), (0.0, 120.0), (61.5, 0.615), (60.0, 0.6)),
        "attack/deepfool": StageWork((38.5, 12.665), (344.2, 86.918), (13.0, 0.12), (99.0, 0.9)),
        "attack/fgsm": StageWork((0.0, 3.0), (0.0, 1.0), (1.5, 0.015), (0.5, 0.005)),
        "attack/onepixel": StageWork((200.0, 0.0), (0.0, 0.0), (2.0, 0.0), (0.0, 0.0)),
        "attack/pgd": StageWork((0.0, 22.0), (0.0, 20.0), (11.0, 0.11), (10.0, 0.1)),
        "attack/pgd-l2": StageWork((0.0, 22.0), (0.0, 20.0), (11.0, 0.11), (10.0, 0.1)),
        "baselines/blur": StageWork((4227.5, 5.505), (3836.5, 5.515), (1038.0, -0.02), (1027.0, -0.02)),
        "baselines/jpeg": StageWork((39765.5, 51.995), (38290.0, 28.43), (3885.2, 14.838), (961.8, 10.582)),
        "baselines/noise": StageWork((189010.5, 18.695), (180537.5, 22.725), (1361.8, 0.253), (1287.8, 0.253)),
        "clean-pass": StageWork((0.0, 1.0), (0.0, 0.0), (0.5, 0.005), (0.0, 0.0)),
        "defence/cw-l2": StageWork((0.0, 44.0), (0.0, 3.0), (22.0, 0.22), (1.5, 0.015)),
        "defence/deepfool": StageWork((0.0, 44.0), (0.0, 3.0), (22.0, 0.22), (1.5, 0.015)),
        "defence/fgsm": StageWork((0.0, 70.0), (0.0, 6.0), (35.0, 0.35), (3.0, 0.03)),
        "defence/onepixel": StageWork((4400.0, 0.0), (300.0, 0.0), (44.0, 0.0), (3.0, 0.0)),
        "defence/pgd": StageWork((0.0, 44.0), (0.0, 3.0), (22.0, 0.22), (1.5, 0.015)),
        "defence/pgd-l2": StageWork((0.0, 44.0), (0.0, 3.0), (22.0, 0.22), (1.5, 0.015)),
        "gate/budget": StageWork((8715.0, 2.17), (7200.0, 1.6), (97.0, 0.0), (80.0, 0.0)),
        "gate/control": StageWork((2625.5, 178.755), (0.0, 0.0), (62.8, 0.182), (0.0, 0.0)),
        "gate/gradcam": StageWork((25601.0, 45.66), (21723.0, 33.77), (426.8, 0.212), (208.5, 0.125)),
        "gate/hirescam": StageWork((79565.0, 192.46), (61743.0, 133.57), (797.8, 1.062), (538.5, 0.625)),
        "gate/inputxgrad": StageWork((14223.0, 37.19), (10563.0, 25.37), (180.8, 0.212), (88.5, 0.125)),
        "maps/cw-l2": StageWork((24.0, 18.08), (24.0, 16.08), (1.8, 0.052), (0.8, 0.043)),
        "maps/deepfool": StageWork((-16.0, 20.08), (-16.0, 18.08), (2.2, 0.058), (1.2, 0.048)),
        "maps/fgsm": StageWork((-432.0, 25.84), (-432.0, 23.84), (0.8, 0.072), (-0.2, 0.062)),
        "maps/onepixel": StageWork((2328.0, 4.0), (2128.0, 4.0), (9.8, 0.003), (7.8, 0.003)),
        "maps/pgd": StageWork((32.0, 20.88), (32.0, 18.88), (2.0, 0.06), (1.0, 0.05)),
        "maps/pgd-l2": StageWork((-8.0, 19.36), (-8.0, 17.36), (1.5, 0.055), (0.5, 0.045)),
        "panel/gradcam": StageWork((0.5, 2.005), (0.0, 1.0), (1.5, 0.015), (0.5, 0.005)),
        "panel/inputxgrad": StageWork((0.5, 2.005), (0.0, 1.0), (1.5, 0.015), (0.5, 0.005)),
        "prior-classes": StageWork((20992.0, 0.0), (18992.0, 0.0), (96.0, 0.0), (84.0, 0.0)),
        "roi": StageWork((0.0, 2.0), (0.0, 1.0), (1.0, 0.01), (0.5, 0.005)),
        "sweep": StageWork((0.0, 96.0), (0.0, 4.0), (48.0, 0.48), (2.0, 0.02)),
    },
    "maps": {
        "attack/cw-l2": StageWork((0.0, 123.0), (0.0, 120.0), (123.0, 0.0), (120.0, 0.0)),
        "attack/deepfool": StageWork((34.4, 12.793), (288.0, 88.2), (20.7, 0.021), (150.4, 0.193)),
        "attack/fgsm": StageWork((0.0, 3.0), (0.0, 1.0), (3.0, 0.0), (1.0, 0.0)),
        "attack/onepixel": StageWork((85.7, 0.571), (0.0, 0.0), (2.0, 0.0), (0.0, 0.0)),
        "attack/pgd": StageWork((0.0, 22.0), (0.0, 20.0), (22.0, 0.0), (20.0, 0.0)),
        "attack/pgd-l2": StageWork((0.0, 22.0), (0.0, 20.0), (22.0, 0.0), (20.0, 0.0)),
        "clean-pass": StageWork((0.0, 1.0), (0.0, 0.0), (1.0, 0.0), (0.0, 0.0)),
        "gate/budget": StageWork((3565.7, 31.171), (2971.4, 25.143), (97.0, 0.0), (80.0, 0.0)),
        "gate/control": StageWork((1.0, 205.0), (0.0, 0.0), (56.9, 0.336), (0.0, 0.0)),
        "gate/gradcam": StageWork((5196.7, 216.171), (4968.0, 168.2), (374.4, 0.793), (171.0, 0.5)),
        "gate/hirescam": StageWork((9360.7, 832.171), (9288.0, 596.2), (536.1, 3.964), (351.0, 2.5)),
        "gate/inputxgrad": StageWork((1338.0, 157.4), (1265.1, 109.914), (128.4, 0.793), (51.0, 0.5)),
        "maps/cw-l2": StageWork((32.0, 18.0), (32.0, 16.0), (2.4, 0.043), (0.4, 0.043)),
        "maps/deepfool": StageWork((45.7, 19.371), (45.7, 17.371), (3.4, 0.043), (1.4, 0.043)),
        "maps/fgsm": StageWork((-196.6, 23.943), (-196.6, 21.943), (3.0, 0.05), (1.0, 0.05)),
        "maps/onepixel": StageWork((885.7, 10.171), (800.0, 9.6), (4.3, 0.029), (2.3, 0.029)),
        "maps/pgd": StageWork((-59.4, 21.657), (-59.4, 19.657), (1.6, 0.057), (-0.4, 0.057)),
        "maps/pgd-l2": StageWork((-59.4, 20.057), (-59.4, 18.057), (2.4, 0.043), (0.4, 0.043)),
        "panel/gradcam": StageWork((1.0, 2.0), (0.0, 1.0), (3.0, 0.0), (1.0, 0.0)),
        "panel/inputxgrad": StageWork((1.0, 2.0), (0.0, 1.0), (3.0, 0.0), (1.0, 0.0)),
        "roi": StageWork((0.0, 2.0), (0.0, 1.0), (2.0, 0.0), (1.0, 0.0)),
    },
}
