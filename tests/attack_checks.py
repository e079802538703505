"""Checks shared by the attack tests (importable as ``attack_checks``: tests/ is on pytest's pythonpath)."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from advspatial.attacks import Attack, AttackResult


class ImageByImage(nn.Module):
    """``model`` called on one image at a time: logits that do not depend on the batch at all.

    A CPU's convolution kernels may round a batch of 12 and an image alone differently (1e-6 in the logits of a
    small CNN on some CPUs), and an attack that picks its best point among near ties then follows another path. A
    test of the attack's own batch independence (no state shared between images, seeds by sample id, early stops
    per image) wraps its model in this, so that it tests the attack and not the CPU's kernels.
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.model(x[i:i + 1]) for i in range(len(x))])


def assert_batch_equals_each_alone(attack: Attack, x: torch.Tensor, y: torch.Tensor, ids: torch.Tensor,
                                   staggered: bool = True) -> None:
    """Attacked together, each image gets what it gets attacked alone with its sample id: the same point and the
    same query count. ``staggered``: also require images that stop at different times (else the test is weak).
    The attack's model should not depend on the batch (:class:`ImageByImage`)."""
    batch = attack.run(x, y, sample_ids=ids)
    if staggered:
        assert (batch.queries > batch.queries.min()).any(), "test needs images that stop at different times"
    for i in range(len(x)):
        alone = attack.run(x[i:i + 1], y[i:i + 1], sample_ids=ids[i:i + 1])
        assert torch.allclose(alone.x_adv, batch.x_adv[i:i + 1], atol=1e-6, rtol=0)
        assert alone.queries.item() == batch.queries[i].item()


def assert_eps_zero_returns_x_and_misclassified_stay(make: Callable[[float], Attack], x: torch.Tensor,
                                                     y: torch.Tensor) -> None:
    """``make(eps)``'s attack: at eps 0 it returns x after one clean pass; at eps 0.1 an image misclassified
    already is returned unchanged after the clean pass and run()'s final one."""
    zero = make(0.0).run(x, y)
    assert torch.equal(zero.x_adv, x) and (zero.queries == 1).all()
    res = make(0.1).run(x, y)
    wrong = res.clean_pred != y
    assert wrong.any()
    assert torch.equal(res.x_adv[wrong], x[wrong]) and (res.queries[wrong] == 2).all()


def assert_acts_only_inside_masks(attack: Attack, x: torch.Tensor, y: torch.Tensor, rows: slice,
                                  cols: slice) -> list[AttackResult]:
    """With a binary mask (1 on ``rows`` x ``cols``) and a fractional one (the same, times U[0,1)), the
    perturbation is exactly zero where the mask is 0 and nonzero somewhere inside it; returns both results."""
    mask = torch.zeros(len(x), *x.shape[2:])
    mask[:, rows, cols] = 1.0
    fractional = mask * torch.rand(mask.shape, generator=torch.Generator().manual_seed(0))
    results = []
    for m in (mask, fractional):
        res = attack.run(x, y, mask=m)
        delta = res.x_adv - x
        assert delta[:, 0][m == 0].abs().max() == 0
        assert delta[:, 0][m > 0].abs().max() > 0
        results.append(res)
    return results


# -- SSIM per window, from its definition (independent of advspatial.attacks.ssim_ball) -------------------------

#: SSIM's stabilizing constants for data in [0, 1]: (0.01 * 1)^2 and (0.03 * 1)^2
C1 = 0.01**2
C2 = 0.03**2


def windows_ref(t: torch.Tensor, w: int) -> torch.Tensor:
    """(N,C,H,W) -> (N,C,B,w*w) by F.unfold (independent of the module's reshape)."""
    n, c = t.shape[:2]
    cols = F.unfold(t.reshape(n * c, 1, *t.shape[2:]), kernel_size=w, stride=w)  # (N*C, w*w, B)
    return cols.transpose(1, 2).reshape(n, c, -1, w * w)


def contrast_structure_ref(x: torch.Tensor, x_adv: torch.Tensor, w: int) -> torch.Tensor:
    """S_b from SSIM's definition: (2 cov + C2) / (var_x + var_y + C2) with sample (n-1) covariance."""
    xb, yb = windows_ref(x.double(), w), windows_ref(x_adv.double(), w)
    n = w * w
    xc, yc = xb - xb.mean(-1, keepdim=True), yb - yb.mean(-1, keepdim=True)
    cov = (xc * yc).sum(-1) / (n - 1)
    var_x, var_y = xc.pow(2).sum(-1) / (n - 1), yc.pow(2).sum(-1) / (n - 1)
    return (2 * cov + C2) / (var_x + var_y + C2)


def luminance_ref(x: torch.Tensor, y: torch.Tensor, w: int) -> torch.Tensor:
    """SSIM's luminance term (2 mu_x mu_y + C1) / (mu_x^2 + mu_y^2 + C1) per window, C1 = 0.01^2."""
    mx, my = windows_ref(x.double(), w).mean(-1), windows_ref(y.double(), w).mean(-1)
    return (2 * mx * my + C1) / (mx.pow(2) + my.pow(2) + C1)
