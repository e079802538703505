"""Random numbers keyed by (seed, sample id, position): counter-based, made on whatever device the images are on.

Why: a run draws per-image noise inside its step loops (a randomized defence's draws under an EOT attack, ROAD's
fill, a random start). Drawn from one CPU generator per image, every draw is a loop over the images on the host
and a copy to the device, while the device waits. Here each number is a pure function of its key: word ``j``
of image ``i`` is ``mix(key(seed, sample_ids[i]) + (j + 1) * GAMMA)``, SplitMix64's output function (Steele,
Lea and Flood 2014) over a counter, computed with 64-bit integer tensor arithmetic. The numbers are the same on
every device (the uniform ones to the bit, the normal ones to the last bits of the device's ``log``/``sin``/``cos``)
and in every batch (an image's numbers depend on its id alone, never on its batch-mates or its row),
and a draw of a whole batch is a handful of elementwise kernels.

* :func:`keyed_bits`: the raw 64-bit words, (N, count) int64.
* :func:`keyed_uniform`: U[0, 1) with 24 bits (every value exact in float32, never 1), two per word.
* :func:`keyed_normal`: N(0, 1) by the Box-Muller transform of a word's two 32-bit halves (|z| < 6.7), computed
  in ``dtype`` (at least float32); a GPU's ``log``/``sin``/``cos`` may differ from the CPU's in the last bits
  (float32: a few ulps, 1e-7 of the value), the integers before them never do.

Example::

    >>> ids = torch.tensor([7, 3])
    >>> a = keyed_uniform((2, 4), seed=1, sample_ids=ids)
    >>> torch.equal(a[1], keyed_uniform((1, 4), seed=1, sample_ids=ids[1:])[0])  # the row of id 3, alone
    True
    >>> bool((a >= 0).all() and (a < 1).all())
    True
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

_WORD = 1 << 64


def _signed(value: int) -> int:
    """A 64-bit word as the int64 with the same bits."""
    value %= _WORD
    return value - _WORD if value >= 1 << 63 else value


#: SplitMix64's increment (the golden ratio's 64-bit fraction) and its mixing multipliers, as int64 bit patterns
GAMMA = _signed(0x9E3779B97F4A7C15)
_MULTIPLIERS = (_signed(0xBF58476D1CE4E5B9), _signed(0x94D049BB133111EB))
#: 64-bit words made at once at most (8 MB of int64): bounds the temporaries of a large draw
_CHUNK_WORDS = 1 << 20


def _shifted(z: torch.Tensor, bits: int) -> torch.Tensor:
    """``z >>> bits``: a logical right shift of int64 words (torch's ``>>`` is arithmetic)."""
    return (z >> bits) & ((1 << (64 - bits)) - 1)


def _mix(z: torch.Tensor) -> torch.Tensor:
    """SplitMix64's output function of int64 words, in place (the products wrap modulo 2**64)."""
    shifted = torch.empty_like(z)
    for bits, multiplier in ((30, _MULTIPLIERS[0]), (27, _MULTIPLIERS[1]), (31, None)):
        torch.bitwise_right_shift(z, bits, out=shifted).bitwise_and_((1 << (64 - bits)) - 1)
        z.bitwise_xor_(shifted)
        if multiplier is not None:
            z.mul_(multiplier)
    return z


def _keys(seed: int, sample_ids: torch.Tensor) -> torch.Tensor:
    """(N,) int64: each sample's key, ``mix(mix(seed) ^ id)`` (distinct ids give distinct keys within a seed)."""
    seed_word = _mix(torch.tensor([_signed(int(seed))], dtype=torch.int64, device=sample_ids.device))
    return _mix(sample_ids.to(torch.int64) ^ seed_word)


def _as_ids(sample_ids: torch.Tensor | Sequence[int], device: torch.device | str) -> torch.Tensor:
    """The ids as an int64 tensor on ``device`` (a copy to the device, never a read back)."""
    return torch.as_tensor(sample_ids, dtype=torch.int64).to(device)


def keyed_bits(seed: int, sample_ids: torch.Tensor | Sequence[int], count: int,
               device: torch.device | str = "cpu") -> torch.Tensor:
    """(N, count) int64: the 64-bit words ``0..count-1`` of each sample's stream.

    >>> keyed_bits(0, [5], 3).shape
    torch.Size([1, 3])
    """
    ids = _as_ids(sample_ids, device)
    keys = _keys(seed, ids)[:, None]
    rows = max(1, _CHUNK_WORDS // max(1, count))
    parts = []
    steps = torch.arange(1, count + 1, dtype=torch.int64, device=ids.device)[None].mul_(GAMMA)
    for start in range(0, len(ids), rows):
        parts.append(_mix(steps + keys[start:start + rows]))
    return torch.cat(parts) if parts else torch.empty(0, count, dtype=torch.int64, device=ids.device)


def keyed_uniform(shape: Sequence[int], seed: int, sample_ids: torch.Tensor | Sequence[int],
                  device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """``shape`` (its first dimension the samples) of U[0, 1) numbers with 24 bits: row ``i`` from the stream of
    ``sample_ids[i]`` under ``seed``, word ``j`` giving elements ``j`` (its top 24 bits) and ``half + j`` (bits 8-31).
    """
    shape = tuple(int(s) for s in shape)
    numel = math.prod(shape[1:])
    words = keyed_bits(seed, sample_ids, (numel + 1) // 2, device)
    exact = torch.promote_types(dtype, torch.float32)  # 24-bit integers are exact from float32 up
    halves = torch.cat([_shifted(words, 40).to(exact), (words >> 8).bitwise_and_(0xFFFFFF).to(exact)], dim=1)
    return halves[:, :numel].mul_(2.0 ** -24).to(dtype).reshape(shape)


def keyed_normal(shape: Sequence[int], seed: int, sample_ids: torch.Tensor | Sequence[int],
                 device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """``shape`` (its first dimension the samples) of N(0, 1) numbers: row ``i`` from the stream of
    ``sample_ids[i]`` under ``seed``, word ``j`` giving elements ``j`` (cosine) and ``half + j`` (sine)."""
    shape = tuple(int(s) for s in shape)
    numel = math.prod(shape[1:])
    half = (numel + 1) // 2
    words = keyed_bits(seed, sample_ids, half, device)
    math_dtype = torch.promote_types(dtype, torch.float32)  # float16 and bfloat16 through float32
    radius = _shifted(words, 32).to(math_dtype).add_(0.5).mul_(2.0 ** -32).log_().mul_(-2.0).sqrt_()
    angle = (words & 0xFFFFFFFF).to(math_dtype).mul_(2.0 ** -32 * 2.0 * math.pi)
    pairs = torch.cat([radius * torch.cos(angle), radius * torch.sin(angle)], dim=1)
    return pairs[:, :numel].to(dtype).reshape(shape)
