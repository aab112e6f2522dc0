"""Deterministic permutations and the validation split carved from a training set.

Two carving rules, both fixed forever and the same on every machine:

* :func:`validation_indices` picks exactly ``round(VAL_FRACTION * n)`` items by their
  position (image sets, whose files come in a fixed order);
* :func:`validation_indices_by_name` picks about ``VAL_FRACTION`` of the items by a hash
  of each one's name (audio folders), so adding or removing a file never moves another
  between train and val.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import numpy as np

from vqvae.data.errors import DataError

__all__ = ["VAL_FRACTION", "fixed_permutation", "validation_indices", "validation_indices_by_name"]

VAL_FRACTION = 0.1
# Fixed forever and independent of any run seed, so every run of every user holds out
# the same images: a validation score is comparable across runs and seeds.
_VAL_SEED = 0x7661_6C69


def fixed_permutation(n: int, seed: int) -> np.ndarray:
    """A permutation of ``range(n)`` that depends only on ``n`` and ``seed``.

    It sorts SplitMix64 hashes of the indices rather than drawing from a NumPy or torch
    generator, whose streams may change between versions.

    Returns:
        int64 ``(n,)``.
    """
    with np.errstate(over="ignore"):  # uint64 arithmetic wraps by design
        z = np.arange(n, dtype=np.uint64) * np.uint64(0x9E3779B97F4A7C15) + np.uint64(seed)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        z ^= z >> np.uint64(31)
    return np.argsort(z, kind="stable").astype(np.int64)


def validation_indices(n: int) -> tuple[np.ndarray, np.ndarray]:
    """Split ``range(n)`` into the remaining training indices and the carved validation ones.

    ``round(VAL_FRACTION * n)`` indices (at least one) go to validation, chosen by a
    fixed permutation; both parts keep the source's order.

    Returns:
        ``(train, val)``, sorted int64 index arrays.

    Raises:
        DataError: when ``n < 2`` (nothing would be left for one of the two).
    """
    if n < 2:
        raise DataError(
            f"cannot carve a validation split from {n} training image(s): need at least 2; "
            "add images or provide a separate val/ folder"
        )
    n_val = max(1, round(n * VAL_FRACTION))
    perm = fixed_permutation(n, _VAL_SEED)
    return np.sort(perm[n_val:]), np.sort(perm[:n_val])


def validation_indices_by_name(names: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """Split items into training and carved validation ones by a hash of their names.

    Item ``i`` is held out when ``int(sha1(names[i]).hexdigest(), 16) % 10 == 0``: about
    ``VAL_FRACTION`` of the items, maybe none of a handful.

    Args:
        names: one name per item (e.g. a file's path below the split folder).

    Returns:
        ``(train, val)``, sorted int64 index arrays into ``names``.
    """
    held_out = np.array(
        [int(hashlib.sha1(name.encode()).hexdigest(), 16) % 10 == 0 for name in names], dtype=bool
    )
    indices = np.arange(len(names), dtype=np.int64)
    return indices[~held_out], indices[held_out]
