"""Counter-based random numbers: the same numbers from the same keys, forever.

Moving MNIST sequences and the collector's policy draw their randomness from SplitMix64
hashes of integer keys (a seed, a split, an index, a step) rather than from a NumPy or
torch generator, whose streams may change between versions and which would have to be
replayed from the start to reach item ``i``. Item ``i`` is computed on its own.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["hash_seed", "hash_uniforms"]

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


def _splitmix(z: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore"):  # uint64 arithmetic wraps by design
        z = z + _GOLDEN
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return z ^ (z >> np.uint64(31))


def _key(keys: Sequence[int]) -> np.uint64:
    h = np.zeros(1, dtype=np.uint64)
    for k in keys:
        h = _splitmix(h ^ np.uint64(int(k) & 0xFFFF_FFFF_FFFF_FFFF))
    return h[0]


def hash_uniforms(keys: Sequence[int], start: int, count: int) -> np.ndarray:
    """Numbers ``start .. start + count - 1`` of the uniform stream named by ``keys``.

    Args:
        keys: non-negative integers naming the stream, e.g. ``(seed, split, index)``.
        start: position of the first number in the stream.
        count: how many numbers.

    Returns:
        float64 ``(count,)`` in ``[0, 1)``, 53 random bits each.
    """
    with np.errstate(over="ignore"):
        counters = np.arange(start, start + count, dtype=np.uint64) * _GOLDEN + _key(keys)
    bits = _splitmix(counters) >> np.uint64(11)
    return bits.astype(np.float64) * (1.0 / (1 << 53))


def hash_seed(keys: Sequence[int]) -> int:
    """A 31-bit seed named by ``keys`` (for engines that take a C ``int`` seed)."""
    return int(_key(keys) >> np.uint64(33))
