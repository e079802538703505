"""DeepFool: exact answer on affine models, torchattacks / ART cross-checks, masks, parameter errors."""

from __future__ import annotations

import pytest
import torch
import torchattacks
from torch import nn

from advspatial.attacks.deepfool import DeepFool, candidate_classes
from advspatial.errors import ConfigError


def _affine(classes: int, dim: int = 16, seed: int = 1) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(dim, classes)).eval()


def test_one_step_reaches_the_nearest_affine_boundary():
    """For an affine classifier, the minimal L2 perturbation is min_k |z_k - z_y| / ||w_k - w_y||,
    and DeepFool (overshoot 0) finds it in one linearization step, plus the 1e-4 push."""
    model = _affine(classes=4)
    w = model[1].weight.detach()
    x = 0.45 + 0.1 * torch.rand(5, 1, 4, 4, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        logits = model(x)
    y = logits.argmax(1)
    diff_w = w[None, :, :] - w[y][:, None, :]  # (N, K, D)
    gaps = (logits.gather(1, y[:, None]) - logits)  # >= 0
    dist = gaps / diff_w.norm(dim=2)
    dist[torch.arange(5), y] = float("inf")
    expected = dist.min(dim=1).values
    res = DeepFool(model, overshoot=0.0).run(x, y)
    assert res.success.all()
    assert (res.queries == 2 + 3).all()  # 3 candidate gradients, the forward that sees success, the final check
    assert torch.allclose(res.l2, expected, rtol=1e-3, atol=1e-4)
    assert (res.l2 >= expected - 1e-6).all()


def test_candidate_classes_exclude_the_label_best_first():
    logits = torch.tensor([[0.0, 3.0, 1.0, 2.0]])
    assert candidate_classes(logits, torch.tensor([1]), 2).tolist() == [[3, 2]]


def test_misclassified_images_are_left_unchanged_and_targets_are_refused(tiny_cnn):
    model = tiny_cnn(size=8)
    x = torch.rand(3, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        wrong = (model(x).argmax(1) + 1) % 10
    res = DeepFool(model).run(x, wrong)
    assert torch.equal(res.x_adv, x) and res.success.all()
    with pytest.raises(ConfigError, match="no targeted mode"):
        DeepFool(model).run(x, wrong, target=wrong)


def test_mask_restricts_the_perturbation(trained_tiny_cnn, fmnist_test_subset):
    x, y = fmnist_test_subset[0][:16], fmnist_test_subset[1][:16]
    mask = torch.zeros(28, 28)
    mask[:, 14:] = 1.0
    res = DeepFool(trained_tiny_cnn).run(x, y, mask=mask)
    assert (res.x_adv - x)[..., mask == 0].abs().max() == 0
    assert res.success_rate > 0.9


def _rate_and_l2(model, x, y, x_adv):
    with torch.no_grad():
        ok = model(x_adv).argmax(1) != y
    return ok, (x_adv - x).flatten(1).norm(dim=1)


@pytest.mark.slow
def test_success_and_norms_match_torchattacks_and_art(trained_tiny_cnn, fmnist_test_subset):
    """Success rate no lower than the references' - 2 points; median L2 (both succeed) within 5%."""
    from art.attacks.evasion import DeepFool as ArtDeepFool
    from art.estimators.classification import PyTorchClassifier

    model = trained_tiny_cnn
    x, y = fmnist_test_subset[0][:48], fmnist_test_subset[1][:48]
    res = DeepFool(model, max_iter=50, overshoot=0.02).run(x, y)
    clf = PyTorchClassifier(model, loss=nn.CrossEntropyLoss(), input_shape=(1, 28, 28), nb_classes=10,
                            clip_values=(0.0, 1.0))
    references = {
        "torchattacks": torchattacks.DeepFool(model, steps=50, overshoot=0.02)(x, y),
        "art": torch.as_tensor(ArtDeepFool(clf, max_iter=50, epsilon=0.02, nb_grads=10, verbose=False)
                               .generate(x.numpy())),
    }
    for name, x_ref in references.items():
        ok, l2 = _rate_and_l2(model, x, y, x_ref)
        both = ok & res.success & (l2 > 0)  # images the attack had to change
        assert res.success.float().mean() >= ok.float().mean() - 0.02, name
        assert both.sum() >= 10, name
        assert res.l2[both].median() <= 1.05 * l2[both].median(), name


@pytest.mark.parametrize("kwargs, match", [
    ({"max_iter": 0}, r"max_iter=0 is out of range; valid: \[1, inf\]"),
    ({"overshoot": -0.1}, r"overshoot=-0.1 is out of range; valid: \[0, inf\]"),
    ({"num_classes": 1}, r"num_classes=1 is out of range; valid: \[2, inf\]"),
])
def test_bad_parameters_name_the_valid_range(tiny_cnn, kwargs, match):
    with pytest.raises(ConfigError, match=match):
        DeepFool(tiny_cnn(size=8), **kwargs)
