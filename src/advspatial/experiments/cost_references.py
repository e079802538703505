"""The forecast's reference work (:mod:`.forecast`): per experiment and stage group, the classifier's
forward and backward images and calls of a run on n images, measured at the reference runs' n.

Written by ``benchmarks/cost_reference.py`` from two or more runs per experiment on the default model (Fashion-MNIST
smallcnn) at the default settings. Between two runs' n a count is linear in n, beyond them it continues the nearest
segment (past the last run, a count that falls there holds the last run's): work of fixed size (the gates' checks,
the class prior) stays flat, work per image grows, and work capped at a setting (the budget calibration on at most
``calibration_n`` images) bends where a reference run on each side of the cap puts the bend. A group whose images
the experiment says a setting caps (its ``sized_by``: ``localized-training``'s ensemble on ``ensemble_n`` images)
holds its images per image and its calls per batch instead (:func:`~.stage_work.sized_group`), which the forecast
reads as the mean of the runs (:meth:`~.stage_work.StageWork.typical`) and prices at the run's own cap; a group
whose work follows an attack's iterations (its ``steps_by``: ``perceptual``'s ``steps``) is priced at the run's
iterations over the reference runs' (:data:`REFERENCE_STEPS`). The runs they were measured on: :data:`RUNS`.
Everything below :data:`GENERATED_BELOW` is rewritten by that script; the head above it (this docstring, the import of
:class:`~.stage_work.StageWork`, which reads the data) is kept.
"""

from __future__ import annotations

from advspatial.experiments.stage_work import StageWork

#: the line after which ``benchmarks/cost_reference.py`` writes the fitted data (keep it as it is)
GENERATED_BELOW = "# ---- written by benchmarks/cost_reference.py from the runs named in RUNS ----"

# ---- written by benchmarks/cost_reference.py from the runs named in RUNS ----
#: per experiment, its reference runs (date, commit and n)
RUNS: dict[str, str] = {
    "spatial": "2026-11-29, d379580: n = 50, 100, 200, 500",
    "maps": "2026-11-29, d379580: n = 60, 128, 200, 500",
    "perceptual": "2026-11-29, 332d625 to d379580 (no change to the experiment between): n = 50, 100, 200, 400",
    "propagation": "2026-11-29, 332d625: n = 20, 100",
    "pse": "2026-11-29, 68686ae: n = 50, 100, 200",
    "localized-training": "2026-11-29, 9a65cbf (models trained on 6,000 images, cached): n = 200, 1000",
}
#: per experiment with an explainer panel, its reference runs' RoI explainer and panel (whose gates REFERENCES holds)
REFERENCE_ROI: dict[str, str] = {"spatial": "hirescam", "maps": "hirescam"}
REFERENCE_PANEL: dict[str, tuple[str, ...]] = {
    "spatial": ("gradcam", "hirescam", "inputxgrad"),
    "maps": ("gradcam", "hirescam", "inputxgrad"),
}
#: per experiment whose forecast follows an attack's iterations (its steps_by), those settings' values in its
#: reference runs
REFERENCE_STEPS: dict[str, dict[str, int]] = {
    "spatial": {"cw_search_steps": 3, "cw_steps": 40, "steps": 20},
    "maps": {"cw_search_steps": 3, "cw_steps": 40, "steps": 20},
    "perceptual": {"steps": 50},
    "propagation": {"maxiter+1": 21, "popsize": 100},
}
#: per experiment, the framework's CPU seconds per classifier call outside the model (the reference runs, one thread)
NON_MODEL_SECONDS_PER_CALL: dict[str, float] = {
    "spatial": 0.00161,
    "maps": 0.00256,
    "perceptual": 0.00640,
    "propagation": 0.00115,
    "pse": 0.00106,
    "localized-training": 0.00121,
}
#: per experiment, the seconds outside every stage (loading, statistics, figures, report) in each reference
#: run: (n, seconds)
OUTSIDE_STAGES_SECONDS: dict[str, tuple[tuple[float, float], ...]] = {
    "spatial": ((50, 8.9), (100, 12.7), (200, 15.8), (500, 32.2),),
    "maps": ((60, 8.7), (128, 13.3), (200, 13.5), (500, 33.7),),
    "perceptual": ((50, 2.4), (100, 3.3), (200, 3.3), (400, 5.3),),
    "propagation": ((20, 3.4), (100, 5.4),),
    "pse": ((50, 6.3), (100, 5.7), (200, 7.7),),
    "localized-training": ((200, 5.7), (1000, 7.9),),
}
#: per experiment, per stage group, its counts in each reference run: (n, forward images, backward images,
#: calls, backward calls)
REFERENCES: dict[str, dict[str, StageWork]] = {
    "spatial": {
        "adaptive/main~adaptive_n": StageWork((
            (50, 4622.84, 4990.38, 6415, 8601), (100, 4517.04, 4900.02, 6450, 8604),
            (200, 5219.72, 5769.22, 6655, 8912), (500, 4827.6, 5250.6, 6434, 8580),
        )),
        "adaptive/undefended~adaptive_n": StageWork((
            (50, 1143.88, 1127.24, 3318, 3284), (100, 964.7, 949.26, 3319, 3285), (200, 1468, 1449.36, 3327, 3293),
            (500, 1099.4, 1082.72, 3313, 3279),
        )),
        "attack/cw-l2": StageWork((
            (50, 6150, 6000, 123, 120), (100, 12300, 12000, 123, 120), (200, 24600, 24000, 123, 120),
            (500, 61500, 60000, 369, 360),
        )),
        "attack/deepfool": StageWork((
            (50, 654, 4527, 22, 162), (100, 1305, 9036, 25, 189), (200, 2594, 17937, 25, 189),
            (500, 6371, 43803, 73, 549),
        )),
        "attack/fgsm": StageWork((
            (50, 150, 50, 3, 1), (100, 300, 100, 3, 1), (200, 600, 200, 3, 1), (500, 1500, 500, 9, 3),
        )),
        "attack/onepixel~onepixel_n": StageWork((
            (50, 2, 0, 2, 0), (100, 2, 0, 2, 0), (200, 2, 0, 2, 0), (500, 2, 0, 2, 0),
        )),
        "attack/pgd": StageWork((
            (50, 1100, 1000, 22, 20), (100, 2200, 2000, 22, 20), (200, 4400, 4000, 22, 20), (500, 11000, 10000, 66, 60),
        )),
        "attack/pgd-l2": StageWork((
            (50, 1100, 1000, 22, 20), (100, 2200, 2000, 22, 20), (200, 4400, 4000, 22, 20), (500, 11000, 10000, 66, 60),
        )),
        "baselines/blur~adaptive_n": StageWork((
            (50, 92.84, 88, 1028, 1017), (100, 91.82, 87.02, 1031, 1020), (200, 126.22, 121.22, 1031, 1020),
            (500, 146.12, 141.12, 1028, 1017),
        )),
        "baselines/jpeg~adaptive_n": StageWork((
            (50, 245.52, 139.84, 11095, 6050), (100, 140.48, 68.88, 5369, 2020), (200, 141.4, 69.8, 5369, 2020),
            (500, 661.38, 347.74, 11100, 6055),
        )),
        "baselines/noise~adaptive_n": StageWork((
            (50, 4521.6, 4403.6, 2492, 2424), (100, 4152.4, 4040, 1381, 1313), (200, 5017.6, 4888.4, 2593, 2525),
            (500, 4654, 4524.8, 1482, 1414),
        )),
        "clean-pass": StageWork(((50, 50, 0, 1, 0), (100, 100, 0, 1, 0), (200, 200, 0, 1, 0), (500, 500, 0, 3, 0),)),
        "defence/cw-l2": StageWork((
            (50, 2200, 150, 44, 3), (100, 4400, 300, 44, 3), (200, 8800, 600, 44, 3), (500, 22000, 1500, 132, 9),
        )),
        "defence/deepfool": StageWork((
            (50, 2200, 150, 44, 3), (100, 4400, 300, 44, 3), (200, 8800, 600, 44, 3), (500, 22000, 1500, 132, 9),
        )),
        "defence/fgsm": StageWork((
            (50, 3500, 300, 70, 6), (100, 7000, 600, 70, 6), (200, 14000, 1200, 70, 6), (500, 35000, 3000, 210, 18),
        )),
        "defence/onepixel~onepixel_n": StageWork((
            (50, 44, 3, 44, 3), (100, 44, 3, 44, 3), (200, 44, 3, 44, 3), (500, 44, 3, 44, 3),
        )),
        "defence/pgd": StageWork((
            (50, 2200, 150, 44, 3), (100, 4400, 300, 44, 3), (200, 8800, 600, 44, 3), (500, 22000, 1500, 132, 9),
        )),
        "defence/pgd-l2": StageWork((
            (50, 2200, 150, 44, 3), (100, 4400, 300, 44, 3), (200, 8800, 600, 44, 3), (500, 22000, 1500, 132, 9),
        )),
        "gate/budget": StageWork((
            (50, 6122, 5060, 49, 40), (100, 12244, 10120, 85, 70), (200, 13400, 11000, 85, 70),
            (500, 13400, 11000, 85, 70),
        )),
        "gate/control": StageWork((
            (50, 10051, 0, 38, 0), (100, 20101, 0, 73, 0), (200, 40201, 0, 112, 0), (500, 91203, 0, 142, 0),
        )),
        "gate/gradcam": StageWork((
            (50, 6765, 4500, 48, 23), (100, 13530, 9000, 96, 46), (200, 27059, 18000, 174, 92),
            (500, 27059, 18000, 174, 92),
        )),
        "gate/gradcam~randomization_images": StageWork((
            (50, 137.78, 133, 274, 133), (100, 136.39, 133, 274, 133), (200, 136.0859, 133, 274, 133),
            (500, 136.0859, 133, 274, 133),
        )),
        "gate/hirescam": StageWork((
            (50, 33821, 22500, 240, 114), (100, 67642, 45000, 480, 228), (200, 135284, 90000, 868, 456),
            (500, 135284, 90000, 868, 456),
        )),
        "gate/hirescam~randomization_images": StageWork((
            (50, 240.22, 238, 251, 238), (100, 240.11, 238, 251, 238), (200, 240.0859, 238, 251, 238),
            (500, 240.0859, 238, 251, 238),
        )),
        "gate/inputxgrad": StageWork((
            (50, 6764, 4500, 48, 23), (100, 13528, 9000, 96, 46), (200, 27057, 18000, 174, 92),
            (500, 27057, 18000, 174, 92),
        )),
        "gate/inputxgrad~randomization_images": StageWork((
            (50, 14.28, 13, 28, 13), (100, 14.14, 13, 28, 13), (200, 14.1094, 13, 28, 13), (500, 14.1094, 13, 28, 13),
        )),
        "maps/cw-l2": StageWork((
            (50, 932, 832, 5, 3), (100, 1832, 1632, 7, 5), (200, 3632, 3232, 11, 9), (500, 9064, 8064, 28, 22),
        )),
        "maps/deepfool": StageWork((
            (50, 1028, 928, 6, 4), (100, 1992, 1792, 8, 6), (200, 3920, 3520, 12, 10), (500, 10024, 9024, 31, 25),
        )),
        "maps/fgsm": StageWork((
            (50, 1028, 928, 6, 4), (100, 2152, 1952, 8, 6), (200, 4592, 4192, 13, 11), (500, 12488, 11488, 37, 31),
        )),
        "maps/onepixel~onepixel_n": StageWork((
            (50, 23.12, 21.12, 5, 3), (100, 27.28, 25.28, 10, 8), (200, 29.2, 27.2, 10, 8), (500, 43.28, 41.28, 11, 9),
        )),
        "maps/pgd": StageWork((
            (50, 932, 832, 5, 3), (100, 1960, 1760, 8, 6), (200, 3888, 3488, 12, 10), (500, 9512, 8512, 30, 24),
        )),
        "maps/pgd-l2": StageWork((
            (50, 932, 832, 5, 3), (100, 2056, 1856, 8, 6), (200, 4272, 3872, 13, 11), (500, 10152, 9152, 31, 25),
        )),
        "panel/gradcam": StageWork((
            (50, 101, 50, 3, 1), (100, 201, 100, 3, 1), (200, 401, 200, 3, 1), (500, 1003, 500, 9, 3),
        )),
        "panel/inputxgrad": StageWork((
            (50, 101, 50, 3, 1), (100, 201, 100, 3, 1), (200, 401, 200, 3, 1), (500, 1003, 500, 9, 3),
        )),
        "prior-classes": StageWork((
            (50, 21056, 19056, 127, 115), (100, 21056, 19056, 127, 115), (200, 21056, 19056, 127, 115),
            (500, 21056, 19056, 127, 115),
        )),
        "roi": StageWork(((50, 100, 50, 2, 1), (100, 200, 100, 2, 1), (200, 400, 200, 2, 1), (500, 1000, 500, 6, 3),)),
        "sweep": StageWork((
            (50, 4800, 200, 96, 4), (100, 9600, 400, 96, 4), (200, 19200, 800, 96, 4), (500, 48000, 2000, 288, 12),
        )),
    },
    "maps": {
        "attack/cw-l2": StageWork((
            (60, 7380, 7200, 123, 120), (128, 15744, 15360, 123, 120), (200, 24600, 24000, 123, 120),
            (500, 61500, 60000, 369, 360),
        )),
        "attack/deepfool": StageWork((
            (60, 802, 5580, 22, 162), (128, 1681, 11664, 25, 189), (200, 2594, 17937, 25, 189),
            (500, 6371, 43803, 73, 549),
        )),
        "attack/fgsm": StageWork((
            (60, 180, 60, 3, 1), (128, 384, 128, 3, 1), (200, 600, 200, 3, 1), (500, 1500, 500, 9, 3),
        )),
        "attack/onepixel": StageWork((
            (60, 120, 0, 2, 0), (128, 200, 0, 2, 0), (200, 200, 0, 2, 0), (500, 200, 0, 2, 0),
        )),
        "attack/pgd": StageWork((
            (60, 1320, 1200, 22, 20), (128, 2816, 2560, 22, 20), (200, 4400, 4000, 22, 20), (500, 11000, 10000, 66, 60),
        )),
        "attack/pgd-l2": StageWork((
            (60, 1320, 1200, 22, 20), (128, 2816, 2560, 22, 20), (200, 4400, 4000, 22, 20), (500, 11000, 10000, 66, 60),
        )),
        "clean-pass": StageWork(((60, 60, 0, 1, 0), (128, 128, 0, 1, 0), (200, 200, 0, 1, 0), (500, 500, 0, 3, 0),)),
        "gate/budget": StageWork((
            (60, 7452, 6160, 49, 40), (128, 13328, 11000, 85, 70), (200, 13400, 11000, 85, 70),
            (500, 13400, 11000, 85, 70),
        )),
        "gate/control": StageWork((
            (60, 12061, 0, 69, 0), (128, 25729, 0, 106, 0), (200, 40201, 0, 112, 0), (500, 91203, 0, 142, 0),
        )),
        "gate/gradcam": StageWork((
            (60, 8118, 5400, 74, 29), (128, 17318, 11520, 131, 59), (200, 27059, 18000, 174, 92),
            (500, 27059, 18000, 174, 92),
        )),
        "gate/gradcam~randomization_images": StageWork((
            (60, 137.3167, 133, 274, 133), (128, 136.0859, 133, 274, 133), (200, 136.0859, 133, 274, 133),
            (500, 136.0859, 133, 274, 133),
        )),
        "gate/hirescam": StageWork((
            (60, 40585, 27000, 368, 142), (128, 86582, 57600, 655, 292), (200, 135284, 90000, 868, 456),
            (500, 135284, 90000, 868, 456),
        )),
        "gate/hirescam~randomization_images": StageWork((
            (60, 240.1833, 238, 251, 238), (128, 240.0859, 238, 251, 238), (200, 240.0859, 238, 251, 238),
            (500, 240.0859, 238, 251, 238),
        )),
        "gate/inputxgrad": StageWork((
            (60, 8117, 5400, 74, 29), (128, 17316, 11520, 131, 59), (200, 27057, 18000, 174, 92),
            (500, 27057, 18000, 174, 92),
        )),
        "gate/inputxgrad~randomization_images": StageWork((
            (60, 14.2333, 13, 28, 13), (128, 14.1094, 13, 28, 13), (200, 14.1094, 13, 28, 13),
            (500, 14.1094, 13, 28, 13),
        )),
        "maps/cw-l2": StageWork((
            (60, 1112, 992, 5, 3), (128, 2336, 2080, 7, 5), (200, 3632, 3232, 11, 9), (500, 9064, 8064, 28, 22),
        )),
        "maps/deepfool": StageWork((
            (60, 1208, 1088, 6, 4), (128, 2528, 2272, 8, 6), (200, 3920, 3520, 12, 10), (500, 10024, 9024, 31, 25),
        )),
        "maps/fgsm": StageWork((
            (60, 1240, 1120, 6, 4), (128, 2816, 2560, 8, 6), (200, 4592, 4192, 13, 11), (500, 12488, 11488, 37, 31),
        )),
        "maps/onepixel": StageWork((
            (60, 1496, 1376, 6, 4), (128, 2920, 2720, 10, 8), (200, 2920, 2720, 10, 8), (500, 4328, 4128, 11, 9),
        )),
        "maps/pgd": StageWork((
            (60, 1112, 992, 5, 3), (128, 2560, 2304, 8, 6), (200, 3888, 3488, 12, 10), (500, 9512, 8512, 30, 24),
        )),
        "maps/pgd-l2": StageWork((
            (60, 1144, 1024, 5, 3), (128, 2816, 2560, 8, 6), (200, 4272, 3872, 13, 11), (500, 10152, 9152, 31, 25),
        )),
        "panel/gradcam": StageWork((
            (60, 121, 60, 3, 1), (128, 257, 128, 3, 1), (200, 401, 200, 3, 1), (500, 1003, 500, 9, 3),
        )),
        "panel/inputxgrad": StageWork((
            (60, 121, 60, 3, 1), (128, 257, 128, 3, 1), (200, 401, 200, 3, 1), (500, 1003, 500, 9, 3),
        )),
        "roi": StageWork(((60, 120, 60, 2, 1), (128, 256, 128, 2, 1), (200, 400, 200, 2, 1), (500, 1000, 500, 6, 3),)),
    },
    "perceptual": {
        "attack/pgd": StageWork((
            (50, 2600, 2500, 52, 50), (100, 5200, 5000, 52, 50), (200, 10400, 10000, 104, 100),
            (400, 20800, 20000, 208, 200),
        )),
        "attack/ssim-ball": StageWork((
            (50, 2650, 2550, 53, 51), (100, 5300, 5100, 53, 51), (200, 10600, 10200, 106, 102),
            (400, 21200, 20400, 212, 204),
        )),
        "calibration": StageWork((
            (50, 28600, 27500, 572, 550), (100, 57200, 55000, 572, 550), (200, 62400, 60000, 624, 600),
            (400, 62400, 60000, 624, 600),
        )),
        "cam": StageWork(((50, 50, 50, 1, 1), (100, 100, 100, 1, 1), (200, 200, 200, 2, 2), (400, 400, 400, 4, 4),)),
        "clean-pass": StageWork(((50, 50, 0, 1, 0), (100, 100, 0, 1, 0), (200, 200, 0, 2, 0), (400, 400, 0, 4, 0),)),
        "curve/ssim-ball": StageWork((
            (50, 13250, 12750, 265, 255), (100, 26500, 25500, 265, 255), (200, 26500, 25500, 265, 255),
            (400, 26500, 25500, 265, 255),
        )),
        "gate/budget": StageWork((
            (50, 6122, 5060, 85, 70), (100, 12244, 10120, 133, 110), (200, 13400, 11000, 134, 110),
            (400, 13400, 11000, 134, 110),
        )),
        "gate/control": StageWork((
            (50, 8851, 0, 14, 0), (100, 17701, 0, 25, 0), (200, 35402, 0, 43, 0), (400, 68354, 0, 51, 0),
        )),
        "gate/hirescam": StageWork((
            (50, 6850, 4500, 85, 50), (100, 13700, 9000, 170, 100), (200, 27400, 18000, 307, 190),
            (400, 6850, 4500, 85, 50),
        )),
        "gate/hirescam~randomization_images": StageWork((
            (50, 238.22, 238, 249, 238), (100, 238.11, 238, 249, 238), (200, 238.0859, 238, 243.5, 238),
            (400, 238.0859, 238, 243.5, 238),
        )),
        "geometry/pgd": StageWork(((50, 0, 0, 0, 0), (100, 0, 0, 0, 0), (200, 0, 0, 0, 0), (400, 0, 0, 0, 0),)),
        "geometry/ssim-ball": StageWork(((50, 0, 0, 0, 0), (100, 0, 0, 0, 0), (200, 0, 0, 0, 0), (400, 0, 0, 0, 0),)),
    },
    "propagation": {
        "attack/k1": StageWork(((20, 40, 0, 2, 0), (100, 200, 0, 2, 0),)),
        "attack/k3": StageWork(((20, 39040, 0, 170, 0), (100, 178100, 0, 709, 0),)),
        "attack/k5": StageWork(((20, 37540, 0, 159, 0), (100, 169000, 0, 673, 0),)),
        "locality/k1": StageWork(((20, 0, 0, 0, 0), (100, 1224, 0, 5, 0),)),
        "locality/k3": StageWork(((20, 306, 0, 2, 0), (100, 2876, 0, 12, 0),)),
        "locality/k5": StageWork(((20, 612, 0, 3, 0), (100, 4693, 0, 19, 0),)),
        "propagation/k1": StageWork(((20, 0, 0, 0, 0), (100, 32, 0, 8, 0),)),
        "propagation/k3": StageWork(((20, 8, 0, 8, 0), (100, 88, 0, 8, 0),)),
        "propagation/k5": StageWork(((20, 16, 0, 8, 0), (100, 152, 0, 8, 0),)),
        "random": StageWork(((20, 160, 0, 8, 0), (100, 800, 0, 8, 0),)),
    },
    "pse": {
        "adaptive/cw-l2": StageWork(((50, 703, 219, 38, 28), (100, 1480, 510, 41, 31), (200, 1381, 427, 40, 30),)),
        "adaptive/pgd": StageWork(((50, 721, 237, 40, 30), (100, 2551, 577, 1076, 62), (200, 1425, 471, 39, 29),)),
        "adaptive/unmasked": StageWork(((50, 352, 110, 15, 10), (100, 720, 236, 17, 12), (200, 690, 214, 16, 11),)),
        "attack/cw-l2": StageWork((
            (50, 20300, 20000, 406, 400), (100, 40600, 40000, 406, 400), (200, 81200, 80000, 812, 800),
        )),
        "attack/pgd": StageWork(((50, 2200, 2000, 44, 40), (100, 4400, 4000, 44, 40), (200, 8800, 8000, 88, 80),)),
        "cam-target/cw-l2": StageWork(((50, 100, 100, 2, 2), (100, 200, 200, 2, 2), (200, 400, 400, 4, 4),)),
        "cam-target/pgd": StageWork(((50, 100, 100, 2, 2), (100, 200, 200, 2, 2), (200, 400, 400, 4, 4),)),
        "cam-true": StageWork(((50, 50, 50, 1, 1), (100, 100, 100, 1, 1), (200, 200, 200, 2, 2),)),
        "clean-pass": StageWork(((50, 50, 0, 1, 0), (100, 100, 0, 1, 0), (200, 200, 0, 2, 0),)),
        "gate/budget": StageWork((
            (50, 6122, 5060, 85, 70), (100, 12244, 10120, 133, 110), (200, 13400, 11000, 134, 110),
        )),
        "gate/control": StageWork(((50, 8851, 0, 14, 0), (100, 17701, 0, 25, 0), (200, 35402, 0, 43, 0),)),
        "gate/hirescam": StageWork((
            (50, 18761, 16400, 334, 288), (100, 37511, 32800, 419, 338), (200, 57875, 48464, 794, 666),
        )),
        "masking/cw-l2": StageWork(((50, 9602, 0, 194, 0), (100, 19202, 0, 194, 0), (200, 38404, 0, 388, 0),)),
        "masking/pgd": StageWork(((50, 9602, 0, 194, 0), (100, 19202, 0, 194, 0), (200, 38404, 0, 388, 0),)),
        "pse/control": StageWork(((50, 942, 0, 24, 0), (100, 1890, 0, 24, 0), (200, 3744, 0, 48, 0),)),
        "pse/isolated": StageWork(((50, 400, 0, 8, 0), (100, 800, 0, 8, 0), (200, 1600, 0, 16, 0),)),
        "pse/leave-one-out": StageWork(((50, 400, 0, 8, 0), (100, 800, 0, 8, 0), (200, 1600, 0, 16, 0),)),
        "stability/cw-l2": StageWork(((50, 2842, 0, 10, 0), (100, 5521, 0, 12, 0), (200, 5008, 0, 11, 0),)),
        "stability/pgd": StageWork(((50, 3601, 0, 10, 0), (100, 7368, 0, 12, 0), (200, 7125, 0, 12, 0),)),
        "units/train": StageWork((
            (50, 22874, 22000, 459, 440), (100, 22874, 22000, 459, 440), (200, 22874, 22000, 459, 440),
        )),
    },
    "localized-training": {
        "attack/localized": StageWork(((200, 22000, 20000, 110, 100), (1000, 110000, 100000, 550, 500),)),
        "attack/localized-random": StageWork(((200, 22000, 20000, 110, 100), (1000, 110000, 100000, 550, 500),)),
        "attack/localized-random@seed1": StageWork(((200, 22000, 20000, 110, 100), (1000, 110000, 100000, 550, 500),)),
        "attack/localized-random@seed1~ensemble_n": StageWork((
            (200, 1329.55, 125.55, 2222, 204), (1000, 1284.45, 120.51, 2222, 204),
        )),
        "attack/localized-random@seed2": StageWork(((200, 22000, 20000, 110, 100), (1000, 110000, 100000, 550, 500),)),
        "attack/localized-random@seed2~ensemble_n": StageWork((
            (200, 1382.49, 128.25, 2222, 204), (1000, 1263.15, 119.41, 2222, 204),
        )),
        "attack/localized-random~ensemble_n": StageWork((
            (200, 1405.49, 131.15, 2222, 204), (1000, 1285.21, 121.37, 2222, 204),
        )),
        "attack/localized@seed1": StageWork(((200, 22000, 20000, 110, 100), (1000, 110000, 100000, 550, 500),)),
        "attack/localized@seed1~ensemble_n": StageWork((
            (200, 982.15, 99.37, 2222, 204), (1000, 956.51, 93.63, 2222, 204),
        )),
        "attack/localized@seed2": StageWork(((200, 22000, 20000, 110, 100), (1000, 110000, 100000, 550, 500),)),
        "attack/localized@seed2~ensemble_n": StageWork((
            (200, 1208.17, 114.65, 2222, 204), (1000, 1075.51, 102.27, 2222, 204),
        )),
        "attack/localized~ensemble_n": StageWork((
            (200, 1141.47, 108.11, 2222, 204), (1000, 1032.12, 99.14, 2222, 204),
        )),
        "attack/mixed-pgd": StageWork(((200, 22000, 20000, 110, 100), (1000, 110000, 100000, 550, 500),)),
        "attack/mixed-pgd@seed1": StageWork(((200, 22000, 20000, 110, 100), (1000, 110000, 100000, 550, 500),)),
        "attack/mixed-pgd@seed1~ensemble_n": StageWork((
            (200, 1483.55, 139.11, 2222, 204), (1000, 1339.91, 125.97, 2222, 204),
        )),
        "attack/mixed-pgd@seed2": StageWork(((200, 22000, 20000, 110, 100), (1000, 110000, 100000, 550, 500),)),
        "attack/mixed-pgd@seed2~ensemble_n": StageWork((
            (200, 1470.31, 135.93, 2222, 204), (1000, 1416.31, 132.15, 2222, 204),
        )),
        "attack/mixed-pgd~ensemble_n": StageWork((
            (200, 1460.59, 136.19, 2222, 204), (1000, 1405.54, 131.24, 2222, 204),
        )),
        "attack/natural": StageWork(((200, 22000, 20000, 110, 100), (1000, 110000, 100000, 550, 500),)),
        "attack/natural@seed1": StageWork(((200, 22000, 20000, 110, 100), (1000, 110000, 100000, 550, 500),)),
        "attack/natural@seed1~ensemble_n": StageWork((
            (200, 572.99, 61.71, 2222, 204), (1000, 529.09, 57.93, 2222, 204),
        )),
        "attack/natural@seed2": StageWork(((200, 22000, 20000, 110, 100), (1000, 110000, 100000, 550, 500),)),
        "attack/natural@seed2~ensemble_n": StageWork((
            (200, 716.74, 74.88, 2222, 204), (1000, 637.47, 65.85, 2222, 204),
        )),
        "attack/natural~ensemble_n": StageWork(((200, 563.98, 62.72, 1166, 152), (1000, 625.96, 64.4, 2222, 204),)),
        "attack/pgd": StageWork(((200, 22000, 20000, 110, 100), (1000, 110000, 100000, 550, 500),)),
        "attack/pgd@seed1": StageWork(((200, 22000, 20000, 110, 100), (1000, 110000, 100000, 550, 500),)),
        "attack/pgd@seed1~ensemble_n": StageWork((
            (200, 1462.17, 137.81, 2222, 204), (1000, 1383.8, 129.56, 2222, 204),
        )),
        "attack/pgd@seed2": StageWork(((200, 22000, 20000, 110, 100), (1000, 110000, 100000, 550, 500),)),
        "attack/pgd@seed2~ensemble_n": StageWork((
            (200, 1483.14, 138.64, 2222, 204), (1000, 1360.97, 127.09, 2222, 204),
        )),
        "attack/pgd~ensemble_n": StageWork(((200, 1450.63, 136.29, 2222, 204), (1000, 1374.31, 130.27, 2222, 204),)),
        "gate/localized": StageWork(((200, 13400, 11000, 85, 70), (1000, 13400, 11000, 85, 70),)),
        "gate/localized-random": StageWork(((200, 2600, 2000, 13, 10), (1000, 2600, 2000, 13, 10),)),
        "gate/localized-random~gate_n": StageWork((
            (200, 315.005, 91, 244, 111), (1000, 349.006, 91, 173.3333, 84.3333),
        )),
        "gate/localized-random~randomization_images": StageWork((
            (200, 238.0859, 238, 249, 238), (1000, 238.0859, 238, 249, 238),
        )),
        "gate/localized~gate_n": StageWork(((200, 315.005, 91, 244, 111), (1000, 349.006, 91, 173.3333, 84.3333),)),
        "gate/localized~randomization_images": StageWork((
            (200, 238.0859, 238, 249, 238), (1000, 238.0859, 238, 249, 238),
        )),
        "gate/mixed-pgd": StageWork(((200, 2600, 2000, 13, 10), (1000, 2600, 2000, 13, 10),)),
        "gate/mixed-pgd~gate_n": StageWork(((200, 315.005, 91, 244, 111), (1000, 349.006, 91, 173.3333, 84.3333),)),
        "gate/mixed-pgd~randomization_images": StageWork((
            (200, 238.0859, 238, 249, 238), (1000, 238.0859, 238, 249, 238),
        )),
        "gate/natural": StageWork(((200, 13400, 11000, 85, 70), (1000, 13400, 11000, 85, 70),)),
        "gate/natural~gate_n": StageWork(((200, 315.005, 91, 244, 111), (1000, 349.006, 91, 173.3333, 84.3333),)),
        "gate/natural~randomization_images": StageWork((
            (200, 238.0859, 238, 249, 238), (1000, 238.0859, 238, 249, 238),
        )),
        "gate/pgd": StageWork(((200, 2600, 2000, 13, 10), (1000, 2600, 2000, 13, 10),)),
        "gate/pgd~gate_n": StageWork(((200, 315.005, 91, 244, 111), (1000, 349.006, 91, 173.3333, 84.3333),)),
        "gate/pgd~randomization_images": StageWork(((200, 238.0859, 238, 249, 238), (1000, 238.0859, 238, 249, 238),)),
        "importance/localized": StageWork(((200, 400, 400, 2, 2), (1000, 2000, 2000, 10, 10),)),
        "importance/localized-random": StageWork(((200, 400, 400, 2, 2), (1000, 2000, 2000, 10, 10),)),
        "importance/localized-random@seed1": StageWork(((200, 400, 400, 2, 2), (1000, 2000, 2000, 10, 10),)),
        "importance/localized-random@seed2": StageWork(((200, 400, 400, 2, 2), (1000, 2000, 2000, 10, 10),)),
        "importance/localized@seed1": StageWork(((200, 400, 400, 2, 2), (1000, 2000, 2000, 10, 10),)),
        "importance/localized@seed2": StageWork(((200, 400, 400, 2, 2), (1000, 2000, 2000, 10, 10),)),
        "importance/mixed-pgd": StageWork(((200, 400, 400, 2, 2), (1000, 2000, 2000, 10, 10),)),
        "importance/mixed-pgd@seed1": StageWork(((200, 400, 400, 2, 2), (1000, 2000, 2000, 10, 10),)),
        "importance/mixed-pgd@seed2": StageWork(((200, 400, 400, 2, 2), (1000, 2000, 2000, 10, 10),)),
        "importance/natural": StageWork(((200, 400, 400, 2, 2), (1000, 2000, 2000, 10, 10),)),
        "importance/natural@seed1": StageWork(((200, 400, 400, 2, 2), (1000, 2000, 2000, 10, 10),)),
        "importance/natural@seed2": StageWork(((200, 400, 400, 2, 2), (1000, 2000, 2000, 10, 10),)),
        "importance/pgd": StageWork(((200, 400, 400, 2, 2), (1000, 2000, 2000, 10, 10),)),
        "importance/pgd@seed1": StageWork(((200, 400, 400, 2, 2), (1000, 2000, 2000, 10, 10),)),
        "importance/pgd@seed2": StageWork(((200, 400, 400, 2, 2), (1000, 2000, 2000, 10, 10),)),
    },
}
