"""Seeds, devices, memory reuse and streaming batch iteration.

Everything random in advspatial takes a seed or a :class:`torch.Generator`;
:func:`make_generator` builds one on the right device; per-sample randomness is keyed
by ``(seed, sample id)``: a batch's noise by :func:`per_sample_noise` (counter-based streams made on the images'
device, :mod:`.keyed_random`), a search that draws as it goes by :func:`sample_generator`. Batching is deterministic:
:func:`batch_slices` always cuts the same ranges for the same ``n`` and batch size.
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Mapping, Sequence

import numpy as np
import torch

from .errors import ConfigError, ShapeError
from .host_syncs import host_copies
from .keyed_random import keyed_normal, keyed_uniform

#: glibc ``mallopt`` parameters (malloc.h) and the values :func:`keep_freed_memory` sets
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
_TRIM_BYTES, _MMAP_BYTES = 1 << 30, 256 << 20


def keep_freed_memory() -> bool:
    """Let glibc's allocator keep freed memory for reuse (tensors up to 256 MB from the heap, up to 1 GB kept).

    By default glibc returns large freed blocks to the system and the next tensor of that size comes back as
    fresh pages the kernel must zero: an attack step on a CPU allocates and frees the same activations over
    and over, and on a 2-core machine that cost a third of the time (SmallCNN forward and backward on 1,000
    images: 240 ms, of which 6 s of 14 s CPU in the kernel; 131 ms with the memory kept). Returns whether the
    settings were applied (False off glibc, e.g. macOS). The process may hold up to 1 GB it no longer uses.
    """
    import ctypes.util

    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name) if name else None
        mallopt = getattr(libc, "mallopt", None) if libc is not None else None
    except OSError:
        return False
    if mallopt is None:
        return False
    return bool(mallopt(_M_TRIM_THRESHOLD, _TRIM_BYTES)) and bool(mallopt(_M_MMAP_THRESHOLD, _MMAP_BYTES))


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (CPU and CUDA) so that a run can be repeated."""
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def make_generator(seed: int, device: torch.device | str = "cpu") -> torch.Generator:
    """A torch generator on ``device`` seeded with ``seed``."""
    gen = torch.Generator(device=torch.device(device))
    gen.manual_seed(int(seed))
    return gen


# -- per-sample randomness: the one owner of how a (seed, sample id) becomes random numbers -----------

def sample_seed(seed: int, sample_id: int) -> int:
    """The seed of one sample's random numbers in stream ``seed``: a function of ``(seed, sample_id)`` only.

    The searches that draw as they go (the one-pixel attack, Square, MPRT's smoothing noise, the random-sign
    control) seed one CPU generator per image with it (:func:`sample_generator`), so an image's numbers never
    depend on the batch it is in or on the device; a batch's noise is drawn by :func:`per_sample_noise`.
    """
    return (int(seed) * 1_000_003 + int(sample_id)) % (2**63 - 1)


def sample_generator(seed: int, sample_id: int) -> torch.Generator:
    """The CPU generator of one sample, seeded with :func:`sample_seed` ``(seed, sample_id)``."""
    return torch.Generator().manual_seed(sample_seed(seed, sample_id))


def stream_seed(seed: int, stream: int, counter: int = 0) -> int:
    """One seed per (experiment seed, random stream, counter): independent streams of per-sample noise."""
    return (int(seed) * 1_000_033 + stream * 7919 + int(counter) * 104_729) % (2**61 - 1)


def sample_ids_or_range(n: int, sample_ids: torch.Tensor | None) -> torch.Tensor:
    """``sample_ids`` as an (n,) int64 CPU tensor, or the positions ``0..n-1`` when None."""
    ids = torch.arange(n) if sample_ids is None else torch.as_tensor(sample_ids)
    ids = (ids if ids.device.type == "cpu" else ids.cpu()).long()  # ids on the host are not read back
    if ids.shape != (n,):
        raise ShapeError(f"sample_ids must have shape ({n},), got {tuple(ids.shape)}")
    return ids


def per_sample_noise(
    shape: Sequence[int], seed: int, sample_ids: torch.Tensor | Sequence[int], kind: str = "uniform",
    device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """(N, *shape[1:]) noise on ``device``; row i keyed by ``(seed, sample_ids[i])``
    (:mod:`~advspatial.keyed_random`, counter-based).

    ``uniform`` is U[-1,1) (24 bits), ``normal`` is N(0,1). Made on ``device`` itself, with the same numbers on
    every device and in every batch: a draw inside a step loop is a few elementwise kernels, not a loop over the
    images on the host. ``sample_ids`` may be ints already on the host.
    """
    if kind not in ("uniform", "normal"):
        raise ConfigError(f"noise kind {kind!r} unknown; valid: uniform, normal")
    ids = sample_ids if isinstance(sample_ids, torch.Tensor) else torch.tensor([int(s) for s in sample_ids],
                                                                               dtype=torch.int64)
    if kind == "normal":
        return keyed_normal(shape, seed, ids, device, dtype)
    return keyed_uniform(shape, seed, ids, device, dtype).mul_(2).sub_(1)


def pick_device(preference: str = "auto") -> torch.device:
    """Resolve ``auto`` to CUDA when present (``cuda:LOCAL_RANK`` under torchrun), else CPU; validate an
    explicit choice."""
    if preference == "auto":
        from .distributed import default_device

        return torch.device(default_device() or ("cuda" if torch.cuda.is_available() else "cpu"))
    try:
        device = torch.device(preference)
    except RuntimeError as exc:
        raise ConfigError(f"device={preference!r} is not a valid device; valid: auto, cpu, cuda, cuda:N") from exc
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device={preference!r} requested but CUDA is not available; valid here: auto, cpu")
    return device


def batch_slices(n: int, batch_size: int) -> Iterator[slice]:
    """Consecutive slices ``[i, i+batch_size)`` covering ``range(n)``; deterministic."""
    if batch_size < 1:
        raise ConfigError(f"batch_size={batch_size} is out of range; valid: >= 1")
    for start in range(0, n, batch_size):
        yield slice(start, min(start + batch_size, n))


def scaled_batch(count_at_28: int, height: int, width: int) -> int:
    """A per-pass image count given for 28x28 images, scaled to ``height x width`` (same pixels per pass).

    Batch limits tuned on MNIST-sized images (e.g. 2048 images per forward pass)
    exhaust memory at 224x224; scaled by the pixel count they keep the memory of a
    pass where it was: 2048 at 28x28 is 32 at 224x224. At least 1.
    """
    return max(1, int(count_at_28) * 28 * 28 // (int(height) * int(width)))


def model_device(model: torch.nn.Module) -> torch.device:
    """The device of a model's first parameter or buffer (CPU for a parameter-free model)."""
    for tensor in model.parameters():
        return tensor.device
    for buffer in model.buffers():
        return buffer.device
    return torch.device("cpu")


def to_host(tensors: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``{name: tensor.detach().cpu()}`` in one device->host read per device and dtype instead of one per tensor
    (:func:`~advspatial.host_syncs.host_copies`; same values, shapes and order). Why: each read is a
    synchronisation a GPU waits on, and a batch's columns are many.

    >>> out = to_host({"a": torch.ones(3), "b": torch.zeros(2, 2), "n": torch.arange(3)})
    >>> [(k, tuple(v.shape), v.dtype) for k, v in out.items()]
    [('a', (3,), torch.float32), ('b', (2, 2), torch.float32), ('n', (3,), torch.int64)]
    """
    return dict(zip(tensors, host_copies(list(tensors.values())), strict=True))


def outside_unit_interval(t: torch.Tensor) -> torch.Tensor:
    """0-dim bool on ``t``'s device: some value of ``t`` lies below 0 or above 1 (NaN does not: it compares False),
    unread, so that a check may hold it to a stage's end (:func:`~advspatial.host_syncs.require`).

    >>> bool(outside_unit_interval(torch.tensor([0.0, 1.0]))), bool(outside_unit_interval(torch.tensor([1.5])))
    (False, True)
    """
    return (t.detach().amin() < 0) | (t.detach().amax() > 1)


def min_max_each(tensors: Sequence[torch.Tensor]) -> list[tuple[float, float]]:
    """``(min, max)`` of each non-empty tensor (all on one device), all in one host read instead of two a tensor
    (NaN where a tensor holds NaN, which compares False either way, as ``float(t.min()) < 0`` does).

    >>> min_max_each([torch.tensor([0.5, 1.0]), torch.tensor([[-2.0, 3.0]])])
    [(0.5, 1.0), (-2.0, 3.0)]
    """
    if not tensors:
        return []
    values = torch.stack([v for t in tensors for v in (t.detach().min().to(torch.float64),
                                                        t.detach().max().to(torch.float64))]).tolist()
    return [(values[2 * i], values[2 * i + 1]) for i in range(len(tensors))]
