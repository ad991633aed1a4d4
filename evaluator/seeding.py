"""Per-sample random draws made on the evaluation device: every random number of a method or metric is a pure
function of (global seed, method or metric name, global sample id, draw index).

A sample's score therefore depends only on that sample, never on its batch neighbours, the batch size, the
sharding or where in memory its draws are made (docs/protocol.md#seeding). The generator is counter-based: draw j
of sample i is computed from a hash of its key, so a whole group of samples gets its draws in one call, on the
device that holds the data, and nothing crosses between host and device.

The hash is splitmix64's output function (Steele, Lea and Flood 2014, "Fast splittable pseudorandom number
generators"). With γ = 0x9E3779B97F4A7C15 and all arithmetic modulo 2^64 (``>>`` a logical shift)::

    mix(z)     = z ^= z >> 30; z *= 0xBF58476D1CE4E5B9; z ^= z >> 27; z *= 0x94D049BB133111EB; z ^ (z >> 31)
    SM(s, n)   = mix(s + n·γ)                    (the n-th output, from 1, of splitmix64 started at state s)
    k          = first 8 bytes (little-endian) of SHA-256("<seed>\\x1f<name>")
    word(i, t) = SM(SM(k, id_i + 1), t + 1)      (64-bit word t of the sample whose global id is id_i)

Uniform and normal float32 draws take two values from each word (:func:`uniform`, :func:`normal`); integers and
float64 uniforms one (:func:`randint`, :func:`random_subsets`). Integer arithmetic is exact everywhere, so the
words are bit for bit the same on every device; the floats made from them may differ between a CPU and a GPU in
the last bit of ``log``/``cos``, and are reproducible on each.

On a CUDA (or any non-CPU) device the words are computed with int64 tensor operations, in blocks of up to 2^24
words. On the CPU they are computed with numpy's uint64 operations in cache-sized blocks of 2^16 words on one
thread: PyTorch has no unsigned 64-bit shift, and a parallel region per small kernel costs more than it gains on a
shared machine (measured in README.md, "Speed"). Both give the same words (tests/test_seeding.py).
"""

from __future__ import annotations

import contextlib
import hashlib
import math
from collections.abc import Callable, Iterator

import numpy as np
import torch
from torch import Tensor

from sclzoo.threads import torch_threads

__all__ = [
    "GAMMA",
    "deterministic_algorithms",
    "draw_words",
    "normal",
    "randint",
    "random_subsets",
    "sample_generator",
    "stable_seed",
    "stream_key",
    "uniform",
]

_MASK64 = (1 << 64) - 1
GAMMA = 0x9E3779B97F4A7C15
_MUL1 = 0xBF58476D1CE4E5B9
_MUL2 = 0x94D049BB133111EB
_SHIFTS = ((30, _MUL1), (27, _MUL2), (31, None))
#: Words computed per block: the temporaries of one call stay bounded, and on the CPU a block stays in cache.
_BLOCK_WORDS_CPU = 1 << 16
_BLOCK_WORDS_DEVICE = 1 << 24


def _signed(v: int) -> int:
    """The int64 with the same 64 bits as the unsigned integer ``v`` (mod 2^64)."""
    v &= _MASK64
    return v - (1 << 64) if v >= 1 << 63 else v


def stable_seed(seed: int, name: str, sample_id: int) -> int:
    """A 63-bit seed that is a stable function of (seed, name, sample_id), for the CPU generators of draws that
    are not per sample (the randomised model of ``mprt_last``, ``--selection stratified``).

    Python's ``hash()`` is salted per process, so it would give different draws in every worker; SHA-256 gives
    the same number on every machine, process and Python version.
    """
    digest = hashlib.sha256(f"{int(seed)}\x1f{name}\x1f{int(sample_id)}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


def sample_generator(
    seed: int, name: str, sample_id: int, device: torch.device | str = "cpu"
) -> torch.Generator:
    """A ``torch.Generator`` seeded with :func:`stable_seed` of the three keys, for draws that are not per sample
    (such as the re-initialisation of a model); per-sample draws use :func:`uniform` and its siblings."""
    gen = torch.Generator(device=device)
    gen.manual_seed(stable_seed(seed, name, sample_id))
    return gen


def stream_key(seed: int, name: str) -> int:
    """k: the 64-bit key of stream ``name`` under the global ``seed`` (an unsigned int below 2^64)."""
    digest = hashlib.sha256(f"{int(seed)}\x1f{name}".encode()).digest()
    return int.from_bytes(digest[:8], "little")


# --------------------------------------------------------------------------------------------------------------
# The words, on either backend
# --------------------------------------------------------------------------------------------------------------


def _shr(z: Tensor, s: int) -> Tensor:
    """Logical right shift of int64 bit patterns (``>>`` on int64 is arithmetic, so the sign copies are masked)."""
    return torch.bitwise_right_shift(z, s).bitwise_and_((1 << (64 - s)) - 1)


def _mix_(z: Tensor) -> Tensor:
    """mix() on int64 bit patterns, in place (int64 multiplication wraps modulo 2^64)."""
    for s, mul in _SHIFTS:
        z.bitwise_xor_(_shr(z, s))
        if mul is not None:
            z.mul_(_signed(mul))
    return z


def _mix_np_(z: np.ndarray, tmp: np.ndarray) -> np.ndarray:
    """mix() on a uint64 array, in place (``tmp``: scratch of the same shape)."""
    for s, mul in _SHIFTS:
        np.right_shift(z, np.uint64(s), out=tmp)
        np.bitwise_xor(z, tmp, out=z)
        if mul is not None:
            np.multiply(z, np.uint64(mul), out=z)
    return z


def _sample_states(seed: int, name: str, sample_ids: Tensor, device: torch.device) -> Tensor:
    """(N,) int64 SM(k, id + 1): each sample's own splitmix64 state, on ``device``."""
    if sample_ids.ndim != 1:
        raise ValueError(f"sample_ids must be a 1-d tensor, got shape {tuple(sample_ids.shape)}")
    ids = sample_ids.detach().to(device=device, dtype=torch.long)
    return _mix_((ids + 1).mul_(_signed(GAMMA)).add_(_signed(stream_key(seed, name))))


def _word_blocks(
    seed: int, name: str, sample_ids: Tensor, n_words: int, device: torch.device | str | None, row_words: int = 1,
    *, use_numpy: bool | None = None,
) -> Iterator[tuple[slice, slice, Tensor]]:
    """(rows, words, block): word(i, t) for i in ``rows`` and t in ``words`` as an int64 tensor (R, T) on the
    device, block by block. Column blocks are whole multiples of ``row_words``. ``use_numpy`` (default: on the
    CPU) picks the numpy backend; the tensor backend runs on any device."""
    dev = sample_ids.device if device is None else torch.device(device)
    states = _sample_states(seed, name, sample_ids, dev)
    n = states.shape[0]
    budget = _BLOCK_WORDS_CPU if dev.type == "cpu" else _BLOCK_WORDS_DEVICE
    cols = min(n_words, max(row_words, budget // row_words * row_words))
    rows = max(1, budget // max(1, cols))
    if dev.type == "cpu" if use_numpy is None else use_numpy:
        states_np = states.cpu().numpy().view(np.uint64)
        gamma = np.uint64(GAMMA)
        tmp = np.empty(rows * cols, dtype=np.uint64)
        for r0 in range(0, n, rows):
            r1 = min(n, r0 + rows)
            for c0 in range(0, n_words, cols):
                c1 = min(n_words, c0 + cols)
                offsets = np.arange(c0 + 1, c1 + 1, dtype=np.uint64) * gamma  # arrays wrap modulo 2^64
                z = states_np[r0:r1, None] + offsets[None, :]
                _mix_np_(z, tmp[: z.size].reshape(z.shape))
                yield slice(r0, r1), slice(c0, c1), torch.from_numpy(z.view(np.int64)).to(dev)
        return
    for r0 in range(0, n, rows):
        r1 = min(n, r0 + rows)
        for c0 in range(0, n_words, cols):
            c1 = min(n_words, c0 + cols)
            steps = torch.arange(c0 + 1, c1 + 1, device=dev, dtype=torch.long).mul_(_signed(GAMMA))
            yield slice(r0, r1), slice(c0, c1), _mix_(states[r0:r1, None] + steps[None, :])


def _numel(shape: tuple[int, ...]) -> int:
    if any(isinstance(s, bool) or not isinstance(s, int) or s < 0 for s in shape):
        raise ValueError(f"a draw shape is a tuple of non-negative ints, got {shape!r}")
    return math.prod(shape)


def _target(sample_ids: Tensor, device: torch.device | str | None) -> torch.device:
    return sample_ids.device if device is None else torch.device(device)


@contextlib.contextmanager
def _threads_for(device: torch.device) -> Iterator[None]:
    """One PyTorch thread while a CPU call converts its cache-sized blocks (see the module docstring)."""
    with torch_threads(1 if device.type == "cpu" else None):
        yield


# --------------------------------------------------------------------------------------------------------------
# Draws
# --------------------------------------------------------------------------------------------------------------


def draw_words(
    seed: int, name: str, sample_ids: Tensor, shape: tuple[int, ...], device: torch.device | str | None = None
) -> Tensor:
    """The raw words (int64 bit patterns) 0..M−1 of every sample, M = prod(shape).

    Args:
        seed: Global seed of the run.
        name: Metric or method name (the stream); different names give independent draws.
        sample_ids: (N,) global sample ids (any device).
        shape: Shape of one sample's draws; draw j is element j of that shape in C order.
        device: Where the draws are made and returned; default ``sample_ids``' device.

    Returns:
        (N, *shape) int64.
    """
    dev = _target(sample_ids, device)
    m = _numel(shape)
    out = torch.empty(sample_ids.shape[0], m, dtype=torch.long, device=dev)
    with _threads_for(dev):
        for rows, cols, w in _word_blocks(seed, name, sample_ids, m, dev):
            out[rows, cols] = w
    return out.view(sample_ids.shape[0], *shape)


def _two_per_word(
    seed: int, name: str, sample_ids: Tensor, shape: tuple[int, ...], device: torch.device | str | None,
    pair: Callable[[Tensor], tuple[Tensor, Tensor]],
) -> Tensor:
    """(N, *shape) float32 draws, two per word: draw j is value j mod 2 of ``pair(word ⌊j/2⌋)``."""
    dev = _target(sample_ids, device)
    m = _numel(shape)
    n = sample_ids.shape[0]
    out = torch.empty(n, m + m % 2, dtype=torch.float32, device=dev)
    with _threads_for(dev):
        for rows, cols, w in _word_blocks(seed, name, sample_ids, (m + 1) // 2, dev):
            block = out[rows, 2 * cols.start : 2 * cols.stop].view(rows.stop - rows.start, -1, 2)
            block[..., 0], block[..., 1] = pair(w)
    return out[:, :m].reshape(n, *shape)


def _bits(w: Tensor, low: int) -> Tensor:
    """Bits low..low+23 of each word as int64 in 0..2^24 − 1."""
    return torch.bitwise_right_shift(w, low).bitwise_and_(0xFFFFFF)


def uniform(
    seed: int,
    name: str,
    sample_ids: Tensor,
    shape: tuple[int, ...],
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> Tensor:
    """U[0, 1) draws.

    float32: two per word; draw 2t is bits 40..63 and draw 2t + 1 bits 8..31 of word t, times 2^-24.
    float64: one per word; draw t is the top 53 bits of word t times 2^-53.

    Args and shapes as :func:`draw_words`; returns (N, *shape) of ``dtype``.
    """
    if dtype == torch.float32:
        scale = 2.0**-24

        def pair(w: Tensor) -> tuple[Tensor, Tensor]:
            return _bits(w, 40).to(torch.float32).mul_(scale), _bits(w, 8).to(torch.float32).mul_(scale)

        return _two_per_word(seed, name, sample_ids, shape, device, pair)
    if dtype != torch.float64:
        raise ValueError(f"uniform draws are float32 or float64, got {dtype}")
    dev = _target(sample_ids, device)
    m = _numel(shape)
    out = torch.empty(sample_ids.shape[0], m, dtype=dtype, device=dev)
    with _threads_for(dev):
        for rows, cols, w in _word_blocks(seed, name, sample_ids, m, dev):
            out[rows, cols] = _shr(w, 11).to(dtype).mul_(2.0**-53)
    return out.view(sample_ids.shape[0], *shape)


def normal(
    seed: int, name: str, sample_ids: Tensor, shape: tuple[int, ...], device: torch.device | str | None = None
) -> Tensor:
    """N(0, 1) float32 draws, two per word by Box–Muller: with u₁ = (bits 40..63 + 1) · 2^-24 ∈ (0, 1] and
    u₂ = bits 8..31 · 2^-24 ∈ [0, 1) of word t, draw 2t = √(−2 ln u₁) · cos(2π u₂) and draw 2t + 1 =
    √(−2 ln u₁) · sin(2π u₂).

    Args and shapes as :func:`draw_words`; returns (N, *shape) float32.
    """
    scale = 2.0**-24

    def pair(w: Tensor) -> tuple[Tensor, Tensor]:
        radius = _bits(w, 40).add_(1).to(torch.float32).mul_(scale).log_().mul_(-2.0).sqrt_()
        angle = _bits(w, 8).to(torch.float32).mul_(scale * 2 * math.pi)
        return radius * angle.cos(), radius.mul_(angle.sin_())

    return _two_per_word(seed, name, sample_ids, shape, device, pair)


def randint(
    seed: int,
    name: str,
    sample_ids: Tensor,
    shape: tuple[int, ...],
    high: int,
    device: torch.device | str | None = None,
) -> Tensor:
    """Integers uniform on {0, …, high − 1}, one per word: ⌊(top 32 bits) · high / 2^32⌋, in exact integer
    arithmetic (the bias is below high / 2^32).

    Args and shapes as :func:`draw_words`, with ``high`` in 1..2^31; returns (N, *shape) int64.
    """
    if isinstance(high, bool) or not isinstance(high, int) or not 1 <= high <= 1 << 31:
        raise ValueError(f"randint: high must be an int in 1..2^31, got {high!r}")
    dev = _target(sample_ids, device)
    m = _numel(shape)
    out = torch.empty(sample_ids.shape[0], m, dtype=torch.long, device=dev)
    with _threads_for(dev):
        for rows, cols, w in _word_blocks(seed, name, sample_ids, m, dev):
            out[rows, cols] = torch.bitwise_right_shift(_shr(w, 32).mul_(high), 32)
    return out.view(sample_ids.shape[0], *shape)


def random_subsets(
    seed: int,
    name: str,
    sample_ids: Tensor,
    n_subsets: int,
    size: int,
    population: int,
    device: torch.device | str | None = None,
) -> Tensor:
    """``n_subsets`` uniformly random ``size``-subsets of {0, …, population − 1} per sample.

    Subset r of a sample holds the positions p of its ``size`` largest words (compared as int64) among words
    r·population + p, p = 0 … population − 1, largest first (two equal words, at a chance of about
    population² / 2^65 per subset, are ordered as ``topk`` orders them).

    Returns:
        (N, n_subsets, size) int64 on ``device`` (default ``sample_ids``' device).
    """
    if not 1 <= size <= population:
        raise ValueError(f"random_subsets: size must be in 1..{population}, got {size}")
    dev = _target(sample_ids, device)
    n = sample_ids.shape[0]
    out = torch.empty(n, n_subsets, size, dtype=torch.long, device=dev)
    with _threads_for(dev):
        for rows, cols, w in _word_blocks(seed, name, sample_ids, n_subsets * population, dev, population):
            r0, r1 = cols.start // population, cols.stop // population
            out[rows, r0:r1] = w.view(rows.stop - rows.start, r1 - r0, population).topk(size, dim=2).indices
    return out


_FILL = "fill_uninitialized_memory"


@contextlib.contextmanager
def deterministic_algorithms() -> Iterator[None]:
    """Runs the block with ``torch.use_deterministic_algorithms(True, warn_only=True)`` and restores the caller's
    settings afterwards (an operation without a deterministic kernel warns instead of failing).

    Deterministic mode also makes PyTorch fill every newly allocated tensor with NaN before its kernel writes it
    (``torch.utils.deterministic.fill_uninitialized_memory``, a debugging aid against reading memory nobody wrote).
    The block runs without that fill: it writes every activation of every pass twice, and cost 12 % of
    ``max_sensitivity`` on the bundled ResNet-8 (README.md, "Speed"). Scores are the same bit for bit with and
    without it for every method and metric (tests/test_seeding.py), i.e. nothing here reads unwritten memory.
    """
    import torch.utils.deterministic as deterministic

    enabled = torch.are_deterministic_algorithms_enabled()
    warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    fill = getattr(deterministic, _FILL)  # a property of the module object, which type checkers do not see
    torch.use_deterministic_algorithms(True, warn_only=True)
    setattr(deterministic, _FILL, False)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(enabled, warn_only=warn_only)
        setattr(deterministic, _FILL, fill)
