"""Exactness of PatchForward's change paths (models/patch_updates.py) and of its per-model structure cache."""

from __future__ import annotations

import gc
import weakref

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from advspatial.models.patch.cache import StructureCache
from advspatial.models.patch.forward import STRUCTURES, PatchForward
from advspatial.models.patch.updates import DeltaConv

from .test_patch_forward import assert_matches_model, patched, random_patches, with_random_batchnorm_stats


def deltas(forward: PatchForward) -> list[DeltaConv]:
    return [plan.delta for plan in forward.plans if plan is not None and plan.delta is not None]


# -- the stride-1 convolution on the change: block-Toeplitz rows, conv_transpose2d ---------------

@settings(max_examples=40, deadline=None)
@given(kernel=st.integers(1, 5), cin=st.integers(1, 5), cout=st.integers(1, 6), padding=st.integers(0, 2),
       first_kernel=st.integers(2, 4), patch_rows=st.integers(1, 3), patch_cols=st.integers(1, 3),
       size=st.integers(5, 11), seed=st.integers(0, 2**16))
def test_conv_change_by_toeplitz_rows_matches_full_forward(
    kernel: int, cin: int, cout: int, padding: int, first_kernel: int, patch_rows: int, patch_cols: int,
    size: int, seed: int,
) -> None:
    """conv -> ReLU -> max pool -> conv (the change path) -> flatten -> linear, patches at every border and corner
    (random_patches always includes the image's four corners), windows clipped at the map's edges."""
    torch.manual_seed(seed)
    stem = nn.Sequential(nn.Conv2d(2, cin, first_kernel, padding=first_kernel // 2), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Conv2d(cin, cout, kernel, padding=padding), nn.ReLU())
    side = (size + 2 * (first_kernel // 2) - first_kernel + 1) // 2 + 2 * padding - kernel + 1
    if side < 1:
        return
    assert stem.eval()(torch.zeros(1, 2, size, size)).shape[-1] == side
    model = nn.Sequential(*stem, nn.Flatten(), nn.Linear(cout * side * side, 3)).eval()
    clean = torch.rand(3, 2, size, size)
    forward = assert_matches_model(model, clean, (patch_rows, patch_cols), n=16, seed=seed)
    assert all(d.toeplitz is not None for d in deltas(forward))


@pytest.mark.parametrize("dilation, groups", [(2, 1), (1, 2)])
def test_dilated_or_grouped_conv_change_uses_the_transposed_convolution(dilation: int, groups: int) -> None:
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(2, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 4, 3, padding=dilation, dilation=dilation,
                                                          groups=groups),
        nn.Flatten(), nn.Linear(4 * 10 * 10, 3),
    ).eval()
    forward = assert_matches_model(model, torch.rand(2, 2, 10, 10), (2, 1), n=20)
    assert [d.toeplitz is None for d in deltas(forward)] == [False, True]


def _affine_norm(channels: int, affine: bool) -> nn.BatchNorm2d:
    norm = nn.BatchNorm2d(channels, affine=affine)
    if affine:
        with torch.no_grad():
            norm.weight.copy_(torch.randn(channels))  # some channels negative
            norm.bias.copy_(torch.randn(channels))
    return norm


@pytest.mark.parametrize("layout", ["bn-relu", "bn-last", "two-bn-inplace-relu", "no-affine"])
def test_batchnorm_after_a_delta_conv_is_applied_to_its_change(layout: str) -> None:
    """bn(c + d) = bn(c) + scale * d: the conv spreads its change through the scaled kernel onto the clean output
    *after* the BatchNorm (negative scales included), which then costs nothing per candidate; the BatchNorm may end
    the stem, and an in-place ReLU after it must not change the cached output."""
    torch.manual_seed(3)
    affine = layout != "no-affine"
    first = [nn.Conv2d(2, 4, 3, padding=1), nn.ReLU()]
    if layout == "two-bn-inplace-relu":
        first = [nn.Conv2d(2, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 4, 3, padding=1), _affine_norm(4, True),
                 nn.ReLU(inplace=True)]
    second = [nn.Conv2d(4, 5, 3, padding=1), _affine_norm(5, affine)]
    second += [] if layout == "bn-last" else [nn.ReLU(inplace=layout == "two-bn-inplace-relu")]
    model = with_random_batchnorm_stats(nn.Sequential(*first, *second, nn.Flatten(), nn.Linear(5 * 9 * 9, 3)), seed=4)
    forward = assert_matches_model(model, torch.rand(3, 2, 9, 9), (2, 2), n=24)
    norms = {i for i, stage in enumerate(forward.stages) if type(stage.apply_full) is nn.BatchNorm2d}
    assert forward.absorbed == norms and all(forward.plans[i - 1].delta is not None for i in norms)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_batchnorm_kept_in_float32_beside_a_low_precision_conv_is_not_absorbed(dtype: torch.dtype) -> None:
    """Mixed precision (the BatchNorm left in float32): scaling the kernel would change the conv's dtype, so the
    BatchNorm runs per candidate as in the model."""
    torch.manual_seed(0)
    model = with_random_batchnorm_stats(nn.Sequential(
        nn.Conv2d(2, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 6, 3, padding=1), nn.BatchNorm2d(6), nn.ReLU(),
        nn.MaxPool2d(2), nn.Flatten(), nn.Linear(6 * 5 * 5, 3)), seed=1).to(dtype)
    model[3].float()
    clean = torch.rand(3, 2, 10, 10).to(dtype)
    forward = PatchForward(model, clean)
    assert not forward.absorbed
    image, top, left, patch = random_patches(clean.float(), 12, (1, 1), 0)
    patch = patch.to(dtype)
    with torch.no_grad():
        got, expected = forward(image, top, left, patch), model(patched(clean, image, top, left, patch))
    torch.testing.assert_close(got.float(), expected.float(), atol=2e-2, rtol=2e-2)


# -- a delta conv fused with the next window layer (ConvIntoWindow) -----------------------

@settings(max_examples=30, deadline=None)
@given(pool=st.sampled_from(["max2", "max3s2", "avg2", "max2pad", "conv3"]), batchnorm=st.booleans(),
       kernel=st.integers(1, 4), padding=st.integers(0, 2), patch_rows=st.integers(1, 2), patch_cols=st.integers(1, 2),
       seed=st.integers(0, 2**16))
def test_conv_fused_into_the_next_window_layer_equals_the_stage_by_stage_path(
    pool: str, batchnorm: bool, kernel: int, padding: int, patch_rows: int, patch_cols: int, seed: int,
) -> None:
    """Fused or not, the logits are the same (and the model's to 1e-5); a window layer with padding is not fused."""
    torch.manual_seed(seed)
    window = {"max2": nn.MaxPool2d(2), "max3s2": nn.MaxPool2d(3, 2), "avg2": nn.AvgPool2d(2),
              "max2pad": nn.MaxPool2d(2, padding=1), "conv3": nn.Conv2d(3, 3, 3, stride=2)}[pool]
    pointwise = [nn.BatchNorm2d(3), nn.ReLU()] if batchnorm else [nn.ReLU()]
    stem = nn.Sequential(nn.Conv2d(2, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 3, kernel, padding=padding),
                         *pointwise, window)
    with torch.no_grad():
        shape = stem.eval()(torch.zeros(1, 2, 12, 12)).shape
    model = with_random_batchnorm_stats(nn.Sequential(*stem, nn.Flatten(), nn.Linear(shape[1:].numel(), 3)), seed)
    clean = torch.rand(3, 2, 12, 12)
    fused = assert_matches_model(model, clean, (patch_rows, patch_cols), n=16, seed=seed)
    targets = {last for _, last in fused.fusions.values()}
    conv_is_delta = fused.plans[2] is not None and fused.plans[2].delta is not None
    assert (len(stem) - 1 in targets) == (conv_is_delta and pool != "max2pad")
    assert (3 in fused.absorbed) == (batchnorm and conv_is_delta)  # the BatchNorm right after the delta conv
    for step, last in fused.fusions.values():  # into max pooling: ReLU after it, on the pooled window
        assert step.pool_first == (last == len(stem) - 1 and pool.startswith("max"))
    PatchForward.FUSE = False
    try:
        plain = PatchForward(model, clean, (patch_rows, patch_cols))
    finally:
        PatchForward.FUSE = True
    assert not plain.fusions
    image, top, left, patch = random_patches(clean, 16, (patch_rows, patch_cols), seed)
    with torch.no_grad():
        torch.testing.assert_close(fused(image, top, left, patch), plain(image, top, left, patch), atol=1e-6, rtol=1e-6)


def test_toeplitz_spread_equals_the_transposed_convolution() -> None:
    """The row products give conv_transpose2d's spread of a random change, position for position."""
    torch.manual_seed(0)
    conv = nn.Conv2d(3, 5, (3, 4), bias=False)
    delta = DeltaConv.__new__(DeltaConv)
    delta.groups, delta.dilation, delta.spread = 1, (1, 1), (2 + 2, 3 + 3)
    delta.toeplitz = delta._toeplitz(conv.weight.detach(), 3, 6)
    change = torch.randn(7, 2, 3, 3)  # (N, h, w, C_in)
    flipped = conv.weight.detach().flip(2, 3).transpose(0, 1)  # (C_in, C_out, kh, kw): the "full" convolution
    expected = torch.nn.functional.conv_transpose2d(change.permute(0, 3, 1, 2), flipped)
    torch.testing.assert_close(delta.spread_change(change), expected.permute(0, 2, 3, 1), atol=1e-6, rtol=1e-6)


# -- the linear fold: per position, exact zeros skipped --------------------------------------------

def test_fold_of_an_unchanged_pixel_gives_the_clean_logits_exactly(tiny_cnn) -> None:
    """A 'change' equal to the clean pixel leaves every stem output unchanged: no product at all is added."""
    model, clean = tiny_cnn(), torch.rand(3, 1, 28, 28)
    forward = PatchForward(model, clean)
    assert forward.fold is not None
    image, top, left, _ = random_patches(clean, 30, (1, 1), seed=1)
    same = clean[image, :, top, left][:, :, None, None]
    with torch.no_grad():
        got = forward(image, top, left, same)
    assert torch.equal(got, forward.clean_logits[image])


def test_fold_with_mostly_dead_relus_matches_full_forward() -> None:
    """A negative bias kills most ReLUs: most stem-output rows are exact zeros and are skipped."""
    torch.manual_seed(0)
    conv = nn.Conv2d(1, 6, 3, padding=1)
    with torch.no_grad():
        conv.bias.fill_(-0.8)
    model = nn.Sequential(conv, nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(6 * 7 * 7, 4)).eval()
    assert_matches_model(model, torch.rand(4, 1, 14, 14), n=60)


# -- the structure cache ----------------------------------------------------------------------------

def lenet_like(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return with_random_batchnorm_stats(nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(4, 6, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(6 * 6 * 6, 5),
    ))


def test_structure_is_reused_for_the_same_unchanged_model() -> None:
    model = lenet_like()
    first = assert_matches_model(model, torch.rand(2, 1, 12, 12))
    second = assert_matches_model(model, torch.rand(3, 1, 12, 12), seed=1)
    assert second.stages is first.stages and second.fold is first.fold
    other_size = assert_matches_model(model, torch.rand(2, 1, 12, 12), size=(2, 2))
    assert other_size.stages is not first.stages  # another patch size: another entry


def _set_weight_in_place(model: nn.Module) -> None:
    with torch.no_grad():
        model[4].weight.mul_(-1.5)


def _set_weight_through_data(model: nn.Module) -> None:
    model[7].weight.data.copy_(torch.randn_like(model[7].weight))


def _load_other_state(model: nn.Module) -> None:
    model.load_state_dict(lenet_like(seed=5).state_dict())


def _replace_a_module(model: nn.Module) -> None:
    model[2] = nn.Tanh()


def _change_an_attribute(model: nn.Module) -> None:
    model[3].kernel_size, model[3].padding = 3, 1  # pooling 3x3 instead of 2x2, same 6x6 output


@pytest.mark.parametrize("change", [_set_weight_in_place, _set_weight_through_data, _load_other_state,
                                    _replace_a_module, _change_an_attribute])
def test_a_changed_model_gets_a_new_structure(change) -> None:  # type: ignore[no-untyped-def]
    model = lenet_like()
    before = assert_matches_model(model, torch.rand(2, 1, 12, 12))
    change(model)
    after = assert_matches_model(model.eval(), torch.rand(2, 1, 12, 12), seed=2)
    assert after.stages is not before.stages


def test_training_mode_or_hooks_are_seen() -> None:
    model = lenet_like()
    before = PatchForward(model, torch.rand(2, 1, 12, 12))
    model[1].train()  # BatchNorm in training mode is no longer pointwise: the stem ends before it
    during = PatchForward(model, torch.rand(2, 1, 12, 12))
    assert len(during.stages) == 1 and during.stages is not before.stages
    model.eval()
    handle = model[5].register_forward_hook(lambda module, inputs, output: None)
    hooked = assert_matches_model(model, torch.rand(2, 1, 12, 12))
    assert hooked.stages is not before.stages
    handle.remove()


def test_cache_does_not_keep_the_model_alive() -> None:
    model = lenet_like()
    PatchForward(model, torch.rand(2, 1, 12, 12))
    ref = weakref.ref(model)
    del model
    gc.collect()
    assert ref() is None


def test_structure_cache_builds_again_after_a_failed_build() -> None:
    cache: StructureCache[int] = StructureCache()
    model = nn.Linear(2, 2)
    with pytest.raises(RuntimeError):
        cache.get(model, "k", lambda: (_ for _ in ()).throw(RuntimeError("no")))
    assert cache.get(model, "k", lambda: 7) == 7 and cache.get(model, "k", lambda: 8) == 7


def test_cached_structure_on_new_clean_images_matches_full_forward() -> None:
    """Clean activations are never cached: the same structure on other images gives those images' logits."""
    model = lenet_like()
    STRUCTURES.clear()
    for seed in range(3):
        clean = torch.rand(2, 1, 12, 12)
        forward = PatchForward(model, clean)
        image, top, left, patch = random_patches(clean, 10, (1, 1), seed)
        with torch.no_grad():
            torch.testing.assert_close(forward(image, top, left, patch),
                                       model(patched(clean, image, top, left, patch)), atol=1e-5, rtol=1e-5)
