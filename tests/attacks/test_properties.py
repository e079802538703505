"""Properties every gradient attack must keep, over random small inputs, masks and tiny models.

Box [0,1]; norm budget (FGSM/PGD); exact zero outside the mask; eps = 0 gives x;
model mode and requires_grad flags restored; a batch equals its images attacked
alone (same sample_ids); same seed, same result; AttackResult fields consistent.
"""

from __future__ import annotations

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from advspatial.attacks.base import prepare_mask
from advspatial.attacks.cw import CarliniWagnerL2
from advspatial.attacks.deepfool import DeepFool
from advspatial.attacks.fgsm import FGSM
from advspatial.attacks.pgd import PGD, PGDL2

ATTACKS = {
    "fgsm": (FGSM, dict(eps=0.1)),
    "pgd": (PGD, dict(eps=0.1, alpha=0.04, steps=3)),
    "pgd-early-stop": (PGD, dict(eps=0.1, alpha=0.04, steps=3, early_stop=True, loss="margin")),
    "bim": (PGD, dict(eps=0.1, alpha=0.04, steps=3, random_start=False)),
    "pgd-l2": (PGDL2, dict(eps=0.5, alpha=0.2, steps=3)),
    "pgd-l2-early-stop": (PGDL2, dict(eps=0.5, alpha=0.2, steps=3, early_stop=True)),
    "cw-l2": (CarliniWagnerL2, dict(c_init=1.0, binary_search_steps=2, steps=5, lr=0.05)),
    "deepfool": (DeepFool, dict(max_iter=4, num_classes=4)),
}
BUDGETED = [name for name, (cls, _) in ATTACKS.items() if cls in (FGSM, PGD, PGDL2)]
SETTINGS = settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
SIZE = 8


@st.composite
def problems(draw):
    """Random images (with exact 0/1 pixels), labels, an optional target, a mask of any accepted shape."""
    n = draw(st.integers(1, 4))
    c = draw(st.sampled_from([1, 3]))
    g = torch.Generator().manual_seed(draw(st.integers(0, 2**31 - 1)))
    x = torch.rand(n, c, SIZE, SIZE, generator=g)
    x = torch.where(x < 0.15, 0.0, torch.where(x > 0.85, 1.0, x))
    y = torch.randint(0, 10, (n,), generator=g)
    target = (y + torch.randint(1, 10, (n,), generator=g)) % 10 if draw(st.booleans()) else None
    kind = draw(st.sampled_from(["none", "hw", "n1hw", "1c11", "nhw", "fractional"]))
    binary = (torch.rand(n, 1, SIZE, SIZE, generator=g) < 0.5).float()
    mask = {
        "none": None,
        "hw": binary[0, 0],
        "n1hw": binary,
        "1c11": torch.tensor([0.0, 1.0, 0.5][:c]).view(1, c, 1, 1),
        "nhw": binary[:, 0],
        "fractional": binary * torch.rand(n, c, SIZE, SIZE, generator=g),
    }[kind]
    return dict(x=x, y=y, target=target, mask=mask, model_seed=draw(st.integers(0, 3)), train=draw(st.booleans()))


def _build(name, tiny_cnn, p, **override):
    cls, kwargs = ATTACKS[name]
    model = tiny_cnn(in_channels=p["x"].shape[1], size=SIZE, seed=p["model_seed"])
    target = None if cls is DeepFool else p["target"]
    return cls(model, **{**kwargs, **override}), target


@pytest.mark.parametrize("name", list(ATTACKS))
@SETTINGS
@given(p=problems())
def test_result_invariants(tiny_cnn, name, p):
    atk, target = _build(name, tiny_cnn, p)
    model, x, y = atk.model, p["x"], p["y"]
    if p["train"]:
        model.train()
        model.fc.weight.requires_grad_(False)
    flags = [q.requires_grad for q in model.parameters()]
    res = atk.run(x, y, mask=p["mask"], target=target)

    assert model.training == p["train"] and [q.requires_grad for q in model.parameters()] == flags
    assert res.x_adv.min() >= 0 and res.x_adv.max() <= 1
    delta = res.x_adv - x
    if p["mask"] is not None:
        outside = prepare_mask(p["mask"], x) == 0
        assert torch.equal(delta[outside], torch.zeros_like(delta[outside]))
    if name in BUDGETED:
        norm = delta.flatten(1).abs().amax(1) if atk.norm == "linf" else delta.flatten(1).norm(dim=1)
        assert (norm <= atk.eps + 1e-6).all()

    model.eval()
    with torch.no_grad():
        assert torch.equal(res.adv_pred, model(res.x_adv).argmax(1))
        assert torch.equal(res.clean_pred, model(x).argmax(1))
    expected = res.adv_pred == target if target is not None else res.adv_pred != y
    assert torch.equal(res.success, expected)
    assert torch.equal(res.labels, y) and (res.target is None) == (target is None)
    assert torch.allclose(res.l2, delta.flatten(1).norm(dim=1))
    assert torch.allclose(res.linf, delta.flatten(1).abs().amax(1))
    assert torch.equal(res.l0, (delta != 0).any(1).flatten(1).sum(1))
    assert res.queries.dtype == torch.long and (res.queries > 0).all()


@pytest.mark.parametrize("name", list(ATTACKS))
@SETTINGS
@given(p=problems())
def test_batch_equals_each_image_alone_and_seed_repeats(tiny_cnn, name, p):
    atk, target = _build(name, tiny_cnn, p, seed=11)
    x, y = p["x"], p["y"]
    ids = torch.arange(100, 100 + len(x))
    mask = prepare_mask(p["mask"], x)
    batch = atk.run(x, y, mask=mask, target=target, sample_ids=ids)
    for i in range(len(x)):
        alone = atk.run(
            x[i : i + 1], y[i : i + 1], mask=None if mask is None else mask[i : i + 1],
            target=None if target is None else target[i : i + 1], sample_ids=ids[i : i + 1],
        )
        assert torch.allclose(batch.x_adv[i : i + 1], alone.x_adv, atol=1e-6, rtol=0)
        assert torch.equal(batch.queries[i : i + 1], alone.queries)
    again = atk.run(x, y, mask=mask, target=target, sample_ids=ids)
    assert torch.equal(again.x_adv, batch.x_adv)


@pytest.mark.parametrize("name", BUDGETED)
@SETTINGS
@given(p=problems())
def test_zero_budget_returns_the_images_exactly(tiny_cnn, name, p):
    atk, target = _build(name, tiny_cnn, p, eps=0.0)
    res = atk.run(p["x"], p["y"], mask=p["mask"], target=target)
    assert torch.equal(res.x_adv, p["x"])
