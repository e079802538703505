"""The CUDA path: attacks, incremental one-pixel evaluation, the experiments and scale-out on a GPU.

Skipped where no CUDA device is present (CI has none); run on a GPU machine with
``python -m pytest tests/test_cuda.py``. Each test compares the GPU result with the CPU result of
the same computation, so a device-dependent seed, a tensor left on the wrong device or a kernel
difference beyond floating-point noise fails here.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from advspatial.attacks.onepixel import OnePixel
from advspatial.attacks.pgd import PGD
from advspatial.models.cifar_resnet import cifar_resnet
from advspatial.models.patch.graph import try_graph_patch_forward

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device here")
ROOT = Path(__file__).resolve().parents[1]


def images(n: int, channels: int = 1, size: int = 28, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, channels, size, size, generator=g), torch.randint(0, 10, (n,), generator=g)


def test_keyed_noise_made_on_cuda_equals_the_cpus() -> None:
    """The counter-based streams are integer arithmetic: uniform numbers equal to the bit; normal ones through the
    device's float32 log/sin/cos, equal to a few ulps."""
    from advspatial.runtime import per_sample_noise

    ids = torch.tensor([0, 5, 10_000_007])
    for kind in ("uniform", "normal"):
        cpu = per_sample_noise((3, 3, 64, 64), 11, ids, kind)
        gpu = per_sample_noise((3, 3, 64, 64), 11, ids.cuda(), kind, device="cuda").cpu()
        if kind == "uniform":
            assert torch.equal(cpu, gpu)
        else:
            assert torch.allclose(cpu, gpu, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("random_start", [False, True])
def test_pgd_on_cuda_equals_cpu(tiny_cnn, random_start: bool) -> None:
    """Same steps, same per-sample random start on both devices: the adversarial images agree except
    where a gradient component is ~0 and its sign differs in the last bits (< 0.5% of pixels)."""
    model = tiny_cnn()
    x, y = images(32)
    cpu = PGD(model, eps=0.1, alpha=0.01, steps=10, random_start=random_start, seed=3)(x, y)
    gpu = PGD(tiny_cnn().cuda(), eps=0.1, alpha=0.01, steps=10, random_start=random_start, seed=3)(x.cuda(), y.cuda())
    assert gpu.device.type == "cuda"
    differs = (gpu.cpu() - cpu).abs() > 1e-4
    assert differs.float().mean().item() < 5e-3
    assert (gpu.cpu() - x).abs().max().item() <= 0.1 + 1e-6


@pytest.fixture
def no_tf32():
    """Full float32 convolutions and matrix products: by default cuDNN convolutions use TF32 on Ampere and
    newer GPUs (10-bit mantissa), where a full forward pass and the incremental one each round differently
    (logits differ by up to ~1e-2 on ResNet-20); the exactness check needs float32 arithmetic on both sides."""
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    yield
    torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


def test_incremental_one_pixel_on_cuda_equals_full_forward(no_tf32) -> None:
    """GraphPatchForward through a residual network on the GPU: logits of one-pixel candidates equal a
    full forward pass of the patched images."""
    torch.manual_seed(0)
    model = cifar_resnet(20).cuda().eval()
    clean, _ = images(3, channels=3, size=32)
    clean = clean.cuda()
    evaluator = try_graph_patch_forward(model, clean)
    assert evaluator is not None, "ResNet-20 must be followed incrementally"
    g = torch.Generator().manual_seed(1)
    count = 64
    image = torch.randint(0, 3, (count,), generator=g).cuda()
    top, left = torch.randint(0, 32, (count,), generator=g).cuda(), torch.randint(0, 32, (count,), generator=g).cuda()
    patch = torch.rand(count, 3, 1, 1, generator=g).cuda()
    with torch.no_grad():
        fast = evaluator(image, top, left, patch)
        patched = clean[image].clone()
        patched[torch.arange(count), :, top, left] = patch[:, :, 0, 0]
        full = model(patched)
    assert fast.device.type == "cuda"
    assert (fast - full).abs().max().item() <= 1e-4


def test_one_pixel_attack_on_cuda_matches_cpu(tiny_cnn) -> None:
    """DE draws its population from per-image CPU generators, so both devices search the same candidates:
    success per image may differ only where two candidates tie to the last bits."""
    model = tiny_cnn()
    x, y = images(12)
    y = model(x).argmax(1)  # attack the model's own predictions: every image starts correct
    cpu = OnePixel(model, popsize=30, maxiter=10, seed=0).run(x, y)
    gpu = OnePixel(tiny_cnn().cuda(), popsize=30, maxiter=10, seed=0).run(x.cuda(), y.cuda())
    changed = ((gpu.x_adv.cpu() - x).abs().sum(1) > 0).flatten(1).sum(1)
    assert (changed <= 1).all()
    assert abs(int(gpu.success.sum()) - int(cpu.success.sum())) <= 1


def test_one_pixel_auto_uses_full_forward_passes_on_cuda(tiny_cnn) -> None:
    """On a GPU the cone's many small kernels cost more than a batch's full forward pass (benchmarks/README.md):
    ``incremental="auto"`` chooses full passes there, ``incremental=True`` still follows the cone."""
    model = tiny_cnn().cuda()
    x, y = images(2)
    x, y = x.cuda(), y.cuda()
    assert OnePixel(model)._scorer(x, None, y, targeted=False).patch_forward is None
    assert OnePixel(model, incremental=True)._scorer(x, None, y, targeted=False).patch_forward is not None


def run_cli(*args: str, launcher: list[str] | None = None) -> None:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT / "src"), os.environ.get("PYTHONPATH")]))}
    command = [*(launcher or [sys.executable, "-m", "advspatial"]), *args]
    proc = subprocess.run(command, capture_output=True, text=True, env=env, cwd=ROOT, timeout=900)
    assert proc.returncode == 0, proc.stderr[-2000:]


@pytest.mark.needs_fashion_mnist
def test_experiments_on_cuda_match_cpu(tmp_path: Path) -> None:
    """``advspatial run baseline --quick`` on the GPU gives the CPU's clean predictions."""
    run_cli("run", "baseline", "--quick", "--device", "cpu", "--out", str(tmp_path / "cpu"), "--no-progress")
    run_cli("run", "baseline", "--quick", "--device", "cuda", "--out", str(tmp_path / "gpu"), "--no-progress")
    cpu = json.loads((tmp_path / "cpu" / "metrics.json").read_text())
    gpu = json.loads((tmp_path / "gpu" / "metrics.json").read_text())
    assert gpu["clean_accuracy"] == cpu["clean_accuracy"]


@pytest.mark.needs_fashion_mnist
@pytest.mark.parametrize("name", ["spatial", "maps", "perceptual", "pse", "propagation", "localized-training"])
def test_every_experiment_runs_end_to_end_on_cuda(name: str, tmp_path: Path) -> None:
    """Every stage on the GPU: a tensor left on the CPU beside a GPU one fails here (the geometry null's noise and
    the unit sums of pse once did)."""
    run_cli("run", name, "--quick", "--device", "cuda", "--out", str(tmp_path / name), "--no-progress")
    assert (tmp_path / name / "report.html").is_file()


@pytest.mark.needs_fashion_mnist
def test_torchrun_on_cuda_uses_nccl_and_matches_one_process(tmp_path: Path) -> None:
    """One torchrun process on the GPU (NCCL beside gloo) gives the plain run's per-image rows."""
    run_cli("run", "baseline", "--quick", "--device", "cuda", "--out", str(tmp_path / "plain"), "--no-progress")
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "1", "-m",
                "advspatial", "--"]
    run_cli("run", "baseline", "--quick", "--out", str(tmp_path / "torchrun"), "--no-progress", launcher=launcher)
    plain = (tmp_path / "plain" / "per_image.csv").read_bytes()
    assert (tmp_path / "torchrun" / "per_image.csv").read_bytes() == plain


def test_a_road_fill_on_cuda_is_solved_there_and_equals_the_cpus_exact_fill() -> None:
    """On a GPU ROAD's systems are solved on the device (conjugate gradients): within 1e-6 of the CPU's sparse LU in
    float32, the gradient too, and no read of the images to the host."""
    from advspatial import host_syncs
    from advspatial.regions.imputation import linear_imputation

    g = torch.Generator().manual_seed(0)
    x = torch.rand(4, 3, 64, 64, generator=g)
    region = torch.nn.functional.interpolate(torch.rand(4, 1, 5, 5, generator=g), size=(64, 64), mode="bilinear")[:, 0]
    region = region >= region.flatten(1).median(dim=1).values[:, None, None]
    upstream = torch.randn(x.shape, generator=g)
    cpu_x = x.clone().requires_grad_(True)
    cpu = linear_imputation(cpu_x, region)
    (cpu_grad,) = torch.autograd.grad(cpu, cpu_x, upstream)
    gpu_x = x.cuda().requires_grad_(True)
    reads: list[int] = []
    with host_syncs.counting(lambda: reads.append(1)):
        gpu = linear_imputation(gpu_x, region.cuda())
        (gpu_grad,) = torch.autograd.grad(gpu, gpu_x, upstream.cuda())
    assert float((gpu.detach().cpu() - cpu.detach()).abs().max()) < 1e-6
    assert float((gpu_grad.cpu() - cpu_grad).abs().max()) < 1e-5
    assert len(reads) <= 40  # a check every 50 steps, forward and backward: no per-call copy of the images


def test_stacked_deletion_on_cuda_is_one_call_and_equals_cpu(tiny_cnn, no_tf32) -> None:
    """On a GPU the gate's regions and fills go to the classifier stacked (stacked_runs.forward_stacked): one call for
    all of them besides the clean pass, and the same columns as the CPU's one call per region."""
    from advspatial.faithfulness.deletion import deletion_columns, gate_regions
    from advspatial.passes import PassLedger

    x, y = images(16)
    importance = x.mean(1)
    ids = torch.arange(16)
    regions = gate_regions(importance, 0.2, 0, ids)
    cpu = deletion_columns(tiny_cnn(), x, y, regions, fills=("zero", "blur"), sample_ids=ids)
    model, ledger = tiny_cnn().cuda(), PassLedger()
    ledger.watch(model)
    gpu = deletion_columns(model, x.cuda(), y.cuda(), {k: v.cuda() for k, v in regions.items()},
                           fills=("zero", "blur"), sample_ids=ids)
    assert (ledger.outside.calls, ledger.outside.rounds) == (2, 2)
    for key, column in cpu.items():
        assert torch.allclose(gpu[key], column, atol=1e-4, equal_nan=True), key


def test_a_guarded_model_on_cuda_reads_its_finiteness_once_per_stage(tiny_cnn) -> None:
    """On a GPU the output guard holds its finiteness check until the stage's end: one host read per stage, and a
    model that returns NaN fails the stage there."""
    from advspatial.errors import ModelError
    from advspatial.models.outputs import guard_outputs
    from advspatial.passes import PassLedger

    model, ledger = tiny_cnn().cuda(), PassLedger()
    guard_outputs(model, "tiny")
    ledger.watch(model)
    x, _ = images(8)
    with ledger.stage("sound"), torch.no_grad():
        for _ in range(3):
            model(x.cuda())
    assert ledger.by_stage["sound"].syncs == 1
    with pytest.raises(ModelError, match="non-finite logits"):
        with ledger.stage("nan"), torch.no_grad():
            model(torch.full_like(x, float("nan")).cuda())


def test_an_attack_stage_on_cuda_reads_its_checks_once(tiny_cnn) -> None:
    """On a GPU an attack holds its input-range and finiteness checks, as the guard holds its own, until the stage's
    end: FGSM's stage of three calls on a guarded model takes one host read, and its images are the CPU's."""
    from advspatial.attacks.fgsm import FGSM
    from advspatial.models.outputs import guard_outputs
    from advspatial.passes import PassLedger

    cpu_model = tiny_cnn()
    model, ledger = guard_outputs(tiny_cnn().cuda(), "tiny"), PassLedger()
    ledger.watch(model)
    x, y = images(8)
    with ledger.stage("attack"):
        result = FGSM(model).run(x.cuda(), y.cuda())
    assert ledger.by_stage["attack"].calls == 3 and ledger.by_stage["attack"].syncs == 1
    differ = (result.x_adv.cpu() - FGSM(cpu_model).run(x, y).x_adv).abs() > 1e-5  # a gradient's sign near 0 may flip
    assert differ.float().mean() < 1e-3
