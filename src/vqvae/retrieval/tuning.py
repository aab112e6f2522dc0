"""Choosing the re-ranking's shift tolerance from the database's own labels.

Whether a code should match only the code at the same grid position (``shift`` 0) or the
nearest code within one position (``shift`` 1, an image distortion model) depends on the
data: centred digits are told apart by where their strokes are, photographs of objects
that sit anywhere in the frame are not. ``benchmarks/retrieval.py`` measured both ways:
on MNIST shift 0 found 0.95 same-digit neighbours in ten and shift 1 0.80; on CIFAR-10
shift 0 found 0.26 and shift 1 0.30. So an index whose items have labels picks the shift
itself: a seeded sample of its items searches the rest of the database with each shift,
and the shift with the higher precision@10 is kept. The queries the index will answer
later play no part. Without labels, or on rows of different lengths (audio, aligned by
time warping instead), the shift is 0.
"""

from __future__ import annotations

import numpy as np

from vqvae.retrieval.metrics import precision_at_k

__all__ = ["SHIFTS", "choose_shift"]

SHIFTS = (0, 1)
SAMPLE = 500  # database items that play the queries


def choose_shift(representation, labels: np.ndarray | None, *, sample: int = SAMPLE, seed: int = 0) -> tuple[int, dict]:
    """The shift of :data:`SHIFTS` whose re-ranking finds most same-label neighbours.

    Args:
        representation: a built ``ngram`` representation (its ``search`` takes ``shift``).
        labels: ``(N,)`` labels of the database items, −1 where unknown; None: no labels.
        sample: items that search the rest of the database (left out of it meanwhile).

    Returns:
        ``(shift, record)``: the record holds the precision@10 of each shift and the sample
        size, or why no choice was made.
    """
    base = representation.base
    if not base.fixed:
        return 0, {"chosen": 0, "reason": "rows of different lengths are aligned by time warping"}
    if not representation.settings.rerank:
        return 0, {"chosen": 0, "reason": "no re-ranking"}
    known = np.flatnonzero(labels >= 0) if labels is not None else np.empty(0, dtype=np.int64)
    if labels is None or len(np.unique(labels[known])) < 2 or len(known) <= 10 + 1:
        return 0, {"chosen": 0, "reason": "the items have no labels to choose by"}
    rng = np.random.default_rng(seed)
    rows = np.sort(rng.choice(known, size=min(sample, len(known) // 2), replace=False))
    grids = base.grids[rows].astype(np.int64)
    scores = {}
    for shift in SHIFTS:
        _, found = representation.search(grids, 10, exclude=rows, shift=shift)
        scores[str(shift)] = precision_at_k(found, labels[rows], labels, 10)
    chosen = int(max(SHIFTS, key=lambda s: (scores[str(s)], -s)))  # ties: the stricter
    return chosen, {"chosen": chosen, "precision_at_10": scores, "queries": len(rows), "seed": seed}
