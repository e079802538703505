"""The contract every *registered* attack keeps, driven by the registry: a newly registered attack is checked
here without a line of test code.

Box [0,1] and shape; its own budget (L-inf / L2 radius, L0 pixel count); exact zero outside a mask; a batch
equals each image attacked alone with the same sample ids; the same seed gives the same result; the model's
mode and requires_grad flags are restored.
"""

from __future__ import annotations

import re

import pytest
import torch
from helpers import GapNet, StepNotes
from torch import nn

from advspatial.attacks import list_attacks, make_attack

#: budgets that keep every attack CI-sized (only those an attack takes are passed)
SMALL = {"steps": 2, "n_restarts": 1, "n_queries": 20, "max_iter": 2, "binary_search_steps": 1, "popsize": 6,
         "maxiter": 2, "rounds": 2, "num_classes": 4, "n_target_classes": 2}
CLASSES, SIZE = 4, 12


def build(name: str, model: nn.Module, seed: int = 0):  # type: ignore[no-untyped-def]
    params = list_attacks()[name].parameters()
    return make_attack(name, model, seed=seed, **{k: v for k, v in SMALL.items() if k in params})


def images(n: int = 3) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    x = torch.rand(n, 3, SIZE, SIZE, generator=g)
    x[:, :, :3] = 0.0  # exact box edges
    x[:, :, -3:] = 1.0
    return x, torch.arange(n) % CLASSES


NAMES = sorted(list_attacks())


@pytest.mark.parametrize("name", NAMES)
def test_box_budget_and_shape(name):
    model = GapNet().eval()
    x, y = images()
    attack = build(name, model)
    result = attack.run(x, y)
    delta = result.x_adv - x
    assert result.x_adv.shape == x.shape and result.x_adv.dtype == x.dtype
    assert float(result.x_adv.min()) >= 0 and float(result.x_adv.max()) <= 1
    eps = getattr(attack, "eps", None)
    if attack.norm == "linf" and eps is not None:
        assert float(delta.abs().max()) <= eps + 1e-6
    elif attack.norm == "l2" and eps is not None:
        assert float(delta.flatten(1).norm(dim=1).max()) <= eps + 1e-5
    elif attack.norm == "l0":
        assert int(result.l0.max()) <= int(getattr(attack, "pixels", 1))
    assert torch.equal(result.success, result.adv_pred != y)


@pytest.mark.parametrize("name", NAMES)
def test_nothing_changes_outside_the_mask(name):
    model = GapNet().eval()
    x, y = images()
    mask = torch.zeros(len(x), SIZE, SIZE)
    mask[:, 4:9, 3:10] = 1.0
    x_adv = build(name, model).run(x, y, mask=mask).x_adv
    outside = (mask == 0).unsqueeze(1).expand_as(x)
    assert torch.equal(x_adv[outside], x[outside])


@pytest.mark.parametrize("name", NAMES)
def test_a_batch_equals_each_image_alone_and_seeds_repeat(name):
    model = GapNet().eval()
    x, y = images()
    ids = torch.tensor([7, 3, 11])
    batch = build(name, model).run(x, y, sample_ids=ids).x_adv
    alone = torch.cat([build(name, model).run(x[i:i + 1], y[i:i + 1], sample_ids=ids[i:i + 1]).x_adv
                       for i in range(len(x))])
    assert torch.allclose(batch, alone, atol=1e-5), "per-sample seeds: a batch equals its images alone"
    again = build(name, model).run(x, y, sample_ids=ids).x_adv
    assert torch.equal(batch, again), "the same seed gives the same result"


@pytest.mark.parametrize("name", NAMES)
def test_the_models_state_is_restored(name):
    model = GapNet().train()
    model.head.weight.requires_grad_(False)  # a frozen layer stays frozen, the others trainable
    x, y = images(2)
    build(name, model).run(x, y)
    assert model.training and all(m.training for m in model.modules())
    assert not model.head.weight.requires_grad
    assert all(p.requires_grad for n, p in model.named_parameters() if n != "head.weight")


#: attacks of one step: nothing to say where they are
ONE_STEP = {"fgsm"}


@pytest.mark.parametrize("name", NAMES)
def test_an_iterative_attack_says_where_it_is_while_it_runs_and_nothing_after(name):
    """A batch of a slow model can take minutes inside one attack call: the idle bar and the heartbeat show its step
    (generation, query, iteration), and the note is gone when the attack returns."""
    from advspatial import progress

    model = StepNotes(GapNet().eval())
    x, _ = images(2)
    with torch.no_grad():
        y = model(x).argmax(1)  # classified correctly: every attack has to search
    model.notes.clear()
    params = list_attacks()[name].parameters()
    extra = {"incremental": False} if "incremental" in params else {}  # the search's calls go through the model
    make_attack(name, model, **{k: v for k, v in SMALL.items() if k in params}, **extra).run(x, y)
    shown = [note for note in model.notes if note is not None]
    assert progress._ACTIVITY.step is None
    assert bool(shown) == (name not in ONE_STEP), f"{name}: notes seen {sorted(set(shown))}"
    assert all(re.fullmatch(r".+ \d+/\d+", note) for note in shown)
