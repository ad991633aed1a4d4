"""Per-sample random draws: every random number of a method or metric is a pure function of
(global seed, method or metric name, global sample id, draw).

A sample's score therefore depends only on that sample, never on its batch neighbours, the batch size or the
sharding (docs/protocol.md#seeding). Draws are made on the CPU and moved to the evaluation device, so CPU and
GPU runs see the same numbers.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Callable, Iterator

import torch
from torch import Tensor

__all__ = ["deterministic_algorithms", "per_sample_draws", "sample_generator", "stable_seed"]


def stable_seed(seed: int, name: str, sample_id: int) -> int:
    """A 63-bit seed that is a stable function of (seed, name, sample_id).

    Python's ``hash()`` is salted per process, so it would give different draws in every worker; SHA-256 gives
    the same number on every machine, process and Python version.
    """
    digest = hashlib.sha256(f"{int(seed)}\x1f{name}\x1f{int(sample_id)}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


def sample_generator(
    seed: int, name: str, sample_id: int, device: torch.device | str = "cpu"
) -> torch.Generator:
    """The random generator of one sample for one metric or method.

    Args:
        seed: Global seed of the run.
        name: Metric or method name (draws of different metrics are independent).
        sample_id: Global dataset index of the sample.
        device: Device of the generator. sclzoo draws on the CPU and moves the draws, so that scores do not
            depend on the accelerator; pass another device only if that does not matter to you.

    Returns:
        A ``torch.Generator`` seeded with :func:`stable_seed` of the three keys.
    """
    gen = torch.Generator(device=device)
    gen.manual_seed(stable_seed(seed, name, sample_id))
    return gen


def per_sample_draws(
    seed: int,
    name: str,
    sample_ids: Tensor,
    draw: Callable[[torch.Generator], tuple[Tensor, ...]],
    device: torch.device | str,
) -> tuple[Tensor, ...]:
    """Draws random tensors sample by sample, each from its own generator, and stacks them.

    Args:
        seed: Global seed.
        name: Metric or method name.
        sample_ids: (N,) global sample indices.
        draw: Maps one sample's CPU generator to a tuple of tensors (always drawn in the same order).
        device: Where the stacked draws go.

    Returns:
        One tensor per element of ``draw``'s tuple, shape (N, *element shape), on ``device``.
    """
    per_sample = [draw(sample_generator(seed, name, i)) for i in sample_ids.tolist()]  # one host transfer
    return tuple(torch.stack(parts).to(device) for parts in zip(*per_sample, strict=True))


@contextlib.contextmanager
def deterministic_algorithms() -> Iterator[None]:
    """Runs the block with ``torch.use_deterministic_algorithms(True, warn_only=True)`` and restores the caller's
    setting afterwards (an operation without a deterministic kernel warns instead of failing)."""
    enabled = torch.are_deterministic_algorithms_enabled()
    warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(enabled, warn_only=warn_only)
