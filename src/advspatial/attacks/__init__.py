"""Attacks in the torchattacks idiom: ``PGD(model, eps=8/255)(images, labels)``.

Every attack shares one base (:mod:`advspatial.attacks.base`): images in [0,1],
mask semantics, per-sample seeds, the model frozen in eval mode and restored.
``atk(x, y)`` returns the adversarial images; ``atk.run(x, y)`` an
:class:`AttackResult` with success, predictions, norms and query counts.
Registered names (``advspatial list attacks``) build the same classes through
:func:`make_attack`.

The examples in the docstrings take ``model`` (a classifier on images in [0,1]), ``images`` (N,C,H,W) and
``labels`` as given; the test suite runs every one of them with a small CNN and twelve 28x28 images.
"""

from .apgd import APGD, APGDL2
from .apgd_targeted import APGDT
from .base import Attack, AttackResult, AttackSpec, list_attacks, make_attack, perturbation_norms, register_attack
from .budgets import Budget, attack_for_budget
from .cw import CarliniWagnerL2
from .deepfool import DeepFool
from .ensemble import AutoAttack, AutoAttackL2
from .fgsm import FGSM
from .onepixel import KPixel, OnePixel
from .pgd import PGD, PGDL2
from .square import Square, SquareL2
from .ssim_ball import SSIMBallAttack

__all__ = [
    "APGD", "APGDL2", "APGDT", "Attack", "AttackResult", "AttackSpec", "AutoAttack", "AutoAttackL2", "Budget",
    "CarliniWagnerL2", "DeepFool", "FGSM", "KPixel", "OnePixel", "PGD", "PGDL2", "SSIMBallAttack", "Square",
    "SquareL2", "attack_for_budget", "list_attacks", "make_attack", "perturbation_norms", "register_attack",
]
