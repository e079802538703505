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
#: per experiment, its reference runs (date, commit and n)
RUNS: dict[str, str] = {
    "spatial": "2026-11-27, 8c37312: n = 100 and 500",
    "maps": "2026-11-27, 8c37312: n = 60 and 200",
    "perceptual": "2026-11-29, 332d625: n = 50 and 200",
    "propagation": "2026-11-29, 332d625: n = 20 and 100",
}
#: per experiment with an explainer panel, its reference runs' RoI explainer and panel (whose gates REFERENCES holds)
REFERENCE_ROI: dict[str, str] = {"spatial": "hirescam", "maps": "hirescam"}
REFERENCE_PANEL: dict[str, tuple[str, ...]] = {
    "spatial": ("gradcam", "hirescam", "inputxgrad"),
    "maps": ("gradcam", "hirescam", "inputxgrad"),
}
#: per experiment, the framework's CPU seconds per classifier call outside the model (the reference runs, one thread)
NON_MODEL_SECONDS_PER_CALL: dict[str, float] = {
    "spatial": 0.00092,
    "maps": 0.00347,
    "perceptual": 0.00417,
    "propagation": 0.00658,
}
#: seconds outside every stage (loading, statistics, figures, report) per experiment
OUTSIDE_STAGES_SECONDS: dict[str, float] = {"spatial": 14.2, "maps": 8.1, "perceptual": 3.3, "propagation": 5.4}
#: per experiment, per stage group, its work as a + b * n: StageWork(forward, backward, calls, backward_calls)
REFERENCES: dict[str, dict[str, StageWork]] = {
    "spatial": {
        "adaptive/main": StageWork((238170.0, 25.67), (257564.5, 28.915), (6625.2, 0.048), (8867.0, 0.07)),
        "adaptive/undefended": StageWork((46870.8, 14.633), (46113.8, 14.482), (3309.8, 0.013), (3275.8, 0.013)),
        "attack/cw-l2": StageWork((0.0, 123.0), (0.0, 120.0), (61.5, 0.615), (60.0, 0.6)),
        "attack/deepfool": StageWork((38.5, 12.665), (344.2, 86.918), (13.0, 0.12), (99.0, 0.9)),
        "attack/fgsm": StageWork((0.0, 3.0), (0.0, 1.0), (1.5, 0.015), (0.5, 0.005)),
        "attack/onepixel": StageWork((200.0, 0.0), (0.0, 0.0), (2.0, 0.0), (0.0, 0.0)),
        "attack/pgd": StageWork((0.0, 22.0), (0.0, 20.0), (11.0, 0.11), (10.0, 0.1)),
        "attack/pgd-l2": StageWork((0.0, 22.0), (0.0, 20.0), (11.0, 0.11), (10.0, 0.1)),
        "baselines/blur": StageWork((4010.0, 5.56), (3772.0, 5.54), (1038.0, -0.02), (1027.0, -0.02)),
        "baselines/jpeg": StageWork((1154.5, 53.745), (-68.5, 30.195), (3937.2, 14.318), (1012.2, 10.078)),
        "baselines/noise": StageWork((232700.0, 20.2), (226240.0, 20.2), (1583.0, 0.0), (1515.0, 0.0)),
        "clean-pass": StageWork((0.0, 1.0), (0.0, 0.0), (0.5, 0.005), (0.0, 0.0)),
        "defence/cw-l2": StageWork((0.0, 44.0), (0.0, 3.0), (22.0, 0.22), (1.5, 0.015)),
        "defence/deepfool": StageWork((0.0, 44.0), (0.0, 3.0), (22.0, 0.22), (1.5, 0.015)),
        "defence/fgsm": StageWork((0.0, 70.0), (0.0, 6.0), (35.0, 0.35), (3.0, 0.03)),
        "defence/onepixel": StageWork((4400.0, 0.0), (300.0, 0.0), (44.0, 0.0), (3.0, 0.0)),
        "defence/pgd": StageWork((0.0, 44.0), (0.0, 3.0), (22.0, 0.22), (1.5, 0.015)),
        "defence/pgd-l2": StageWork((0.0, 44.0), (0.0, 3.0), (22.0, 0.22), (1.5, 0.015)),
        "gate/budget": StageWork((11955.0, 2.89), (9900.0, 2.2), (85.0, 0.0), (70.0, 0.0)),
        "gate/control": StageWork((2325.5, 177.755), (0.0, 0.0), (55.8, 0.172), (0.0, 0.0)),
        "gate/gradcam": StageWork((22841.8, 43.273), (19119.0, 31.81), (350.5, 0.195), (167.5, 0.115)),
        "gate/hirescam": StageWork((73062.5, 185.905), (55884.0, 129.16), (634.0, 0.97), (409.0, 0.57)),
        "gate/inputxgrad": StageWork((11461.8, 34.803), (7959.0, 23.41), (104.5, 0.195), (47.5, 0.115)),
        "maps/cw-l2": StageWork((24.0, 18.08), (24.0, 16.08), (1.8, 0.052), (0.8, 0.043)),
        "maps/deepfool": StageWork((-16.0, 20.08), (-16.0, 18.08), (2.2, 0.058), (1.2, 0.048)),
        "maps/fgsm": StageWork((-432.0, 25.84), (-432.0, 23.84), (0.8, 0.072), (-0.2, 0.062)),
        "maps/onepixel": StageWork((2328.0, 4.0), (2128.0, 4.0), (9.8, 0.003), (7.8, 0.003)),
        "maps/pgd": StageWork((40.0, 20.8), (40.0, 18.8), (2.0, 0.06), (1.0, 0.05)),
        "maps/pgd-l2": StageWork((-8.0, 19.36), (-8.0, 17.36), (1.5, 0.055), (0.5, 0.045)),
        "panel/gradcam": StageWork((0.5, 2.005), (0.0, 1.0), (1.5, 0.015), (0.5, 0.005)),
        "panel/inputxgrad": StageWork((0.5, 2.005), (0.0, 1.0), (1.5, 0.015), (0.5, 0.005)),
        "prior-classes": StageWork((20992.0, 0.0), (18992.0, 0.0), (126.0, 0.0), (114.0, 0.0)),
        "roi": StageWork((0.0, 2.0), (0.0, 1.0), (1.0, 0.01), (0.5, 0.005)),
        "sweep": StageWork((0.0, 96.0), (0.0, 4.0), (48.0, 0.48), (2.0, 0.02)),
    },
    "maps": {
        "attack/cw-l2": StageWork((0.0, 123.0), (0.0, 120.0), (123.0, 0.0), (120.0, 0.0)),
        "attack/deepfool": StageWork((34.0, 12.8), (284.1, 88.264), (20.7, 0.021), (150.4, 0.193)),
        "attack/fgsm": StageWork((0.0, 3.0), (0.0, 1.0), (3.0, 0.0), (1.0, 0.0)),
        "attack/onepixel": StageWork((85.7, 0.571), (0.0, 0.0), (2.0, 0.0), (0.0, 0.0)),
        "attack/pgd": StageWork((0.0, 22.0), (0.0, 20.0), (22.0, 0.0), (20.0, 0.0)),
        "attack/pgd-l2": StageWork((0.0, 22.0), (0.0, 20.0), (22.0, 0.0), (20.0, 0.0)),
        "clean-pass": StageWork((0.0, 1.0), (0.0, 0.0), (1.0, 0.0), (0.0, 0.0)),
        "gate/budget": StageWork((4902.9, 42.486), (4085.7, 34.571), (33.6, 0.257), (27.1, 0.214)),
        "gate/control": StageWork((1.0, 201.0), (0.0, 0.0), (50.6, 0.307), (0.0, 0.0)),
        "gate/gradcam": StageWork((4305.1, 200.864), (4104.0, 154.6), (305.1, 0.714), (135.0, 0.45)),
        "gate/hirescam": StageWork((7416.4, 792.993), (7344.0, 565.6), (404.7, 3.571), (245.4, 2.243)),
        "gate/inputxgrad": StageWork((445.9, 142.086), (401.1, 96.314), (59.1, 0.714), (15.0, 0.45)),
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
    "perceptual": {
        "attack/pgd": StageWork((0.0, 52.0), (0.0, 50.0), (34.7, 0.347), (33.3, 0.333)),
        "attack/ssim-ball": StageWork((0.0, 53.0), (0.0, 51.0), (35.3, 0.353), (34.0, 0.34)),
        "calibration": StageWork((17333.3, 225.333), (16666.7, 216.667), (554.7, 0.347), (533.3, 0.333)),
        "cam": StageWork((0.0, 1.0), (0.0, 1.0), (0.7, 0.007), (0.7, 0.007)),
        "clean-pass": StageWork((0.0, 1.0), (0.0, 0.0), (0.7, 0.007), (0.0, 0.0)),
        "curve/ssim-ball": StageWork((8833.3, 88.333), (8500.0, 85.0), (265.0, 0.0), (255.0, 0.0)),
        "gate/budget": StageWork((3696.0, 48.52), (3080.0, 39.6), (68.7, 0.327), (56.7, 0.267)),
        "gate/control": StageWork((0.7, 177.007), (0.0, 0.0), (4.3, 0.193), (0.0, 0.0)),
        "gate/hirescam": StageWork((5723.0, 260.76), (5712.0, 213.76), (180.7, 3.067), (162.0, 2.52)),
        "geometry/pgd": StageWork((0.0, 0.0), (0.0, 0.0), (0.0, 0.0), (0.0, 0.0)),
        "geometry/ssim-ball": StageWork((0.0, 0.0), (0.0, 0.0), (0.0, 0.0), (0.0, 0.0)),
    },
    "propagation": {
        "attack/k1": StageWork((0.0, 2.0), (0.0, 0.0), (2.0, 0.0), (0.0, 0.0)),
        "attack/k3": StageWork((4275.0, 1738.25), (0.0, 0.0), (35.2, 6.737), (0.0, 0.0)),
        "attack/k5": StageWork((4675.0, 1643.25), (0.0, 0.0), (30.5, 6.425), (0.0, 0.0)),
        "locality/k1": StageWork((-306.0, 15.3), (0.0, 0.0), (-1.2, 0.062), (0.0, 0.0)),
        "locality/k3": StageWork((-336.5, 32.125), (0.0, 0.0), (-0.5, 0.125), (0.0, 0.0)),
        "locality/k5": StageWork((-408.2, 51.013), (0.0, 0.0), (-1.0, 0.2), (0.0, 0.0)),
        "propagation/k1": StageWork((-8.0, 0.4), (0.0, 0.0), (-2.0, 0.1), (0.0, 0.0)),
        "propagation/k3": StageWork((-12.0, 1.0), (0.0, 0.0), (8.0, 0.0), (0.0, 0.0)),
        "propagation/k5": StageWork((-18.0, 1.7), (0.0, 0.0), (8.0, 0.0), (0.0, 0.0)),
        "random": StageWork((0.0, 8.0), (0.0, 0.0), (8.0, 0.0), (0.0, 0.0)),
    },
}
