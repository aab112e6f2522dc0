"""Re-ranking candidates by where their codes are: aligned distances between code grids.

Two grids of the same shape are compared position by position; rows of different lengths
(audio) are aligned first by dynamic time warping. Either way the cost of putting code
``a`` against code ``b`` is the squared distance between their code vectors, so two near
codes count as nearly equal where Hamming matching would count them as different.

Shapes: Q queries, R candidates per query, P positions, K codebook size, B pairs.
"""

from __future__ import annotations

import itertools

import numpy as np
import torch

__all__ = ["code_distances", "rerank_scores"]


def code_distances(codebook: np.ndarray) -> np.ndarray:
    """``(K, K)`` float32 squared Euclidean distances between code vectors."""
    e = torch.from_numpy(np.asarray(codebook, dtype=np.float32))
    return torch.cdist(e, e).square().numpy()


def rerank_scores(queries: np.ndarray, candidates: np.ndarray, table: np.ndarray,
                  shape: tuple[int, ...] | None, shift: int = 0) -> np.ndarray:
    """Minus the aligned distance of each query to each of its candidates (higher is nearer).

    Args:
        queries: ``(Q, P)`` codes, −1 past a row's end.
        candidates: ``(Q, R, P')`` codes of each query's candidates, −1 past a row's end
            (and everywhere for a missing candidate, which scores −inf).
        table: :func:`code_distances`.
        shape: the grid ``S'`` (``P == P' == prod(S')``) when every row has one fixed shape:
            compared position by position; None for rows of different lengths: dynamic time
            warping, divided by the sum of the two lengths so that long and short rows compare.
        shift: on grids, each code may match the nearest code up to ``shift`` positions
            away along every axis (both ways, averaged), as the image distortion model
            of Keysers et al. (2007) lets pixels move; 0 is strict position by position.

    Returns:
        ``(Q, R)`` float32.
    """
    present = (candidates >= 0).any(axis=2)  # (Q, R)
    if shape is None:
        cost = _dtw_costs(queries, candidates, table)
    else:
        cost = np.concatenate([_grid_costs(queries[i : i + 256], candidates[i : i + 256], table, shape, shift)
                               for i in range(0, len(queries), 256)])
    return np.where(present, -cost, -np.inf).astype(np.float32)


def _grid_costs(queries: np.ndarray, candidates: np.ndarray, table: np.ndarray, shape: tuple[int, ...],
                shift: int) -> np.ndarray:
    q = np.maximum(queries, 0).reshape(len(queries), 1, *shape)  # (Q, 1, *S')
    c = np.maximum(candidates, 0).reshape(*candidates.shape[:2], *shape)  # (Q, R, *S')
    if shift == 0:
        return table[q, c].reshape(*c.shape[:2], -1).sum(axis=2)
    return (_moved(q, c, table, shift) + _moved(c, q, table.T, shift)) / 2  # (Q, R)


def _moved(a: np.ndarray, b: np.ndarray, table: np.ndarray, shift: int) -> np.ndarray:
    """Sum over positions of ``a`` of the least cost of a code of ``b`` within ``shift`` of it."""
    a, b = np.broadcast_arrays(a, b)
    axes = a.ndim - 2
    padded = np.pad(b, [(0, 0), (0, 0)] + [(shift, shift)] * axes, constant_values=-1)
    best = np.full(a.shape, np.inf, dtype=np.float32)
    for offset in itertools.product(range(2 * shift + 1), repeat=axes):
        window = padded[(slice(None), slice(None), *(slice(o, o + n) for o, n in zip(offset, a.shape[2:], strict=True)))]
        cost = np.where(window >= 0, table[a, np.maximum(window, 0)], np.inf)
        np.minimum(best, cost, out=best)
    return best.reshape(*a.shape[:2], -1).sum(axis=2)


def _dtw_costs(queries: np.ndarray, candidates: np.ndarray, table: np.ndarray, cells: int = 1 << 22) -> np.ndarray:
    q_count, r_count, _ = candidates.shape
    a = np.repeat(queries, r_count, axis=0)  # (B, P) each query once per candidate
    b = candidates.reshape(q_count * r_count, -1)  # (B, P')
    len_a, len_b = (a >= 0).sum(1), (b >= 0).sum(1)
    order = np.lexsort((len_b, len_a))  # pairs of similar lengths together: little padding per chunk
    out = np.empty(len(a), dtype=np.float32)
    start = 0
    while start < len(order):
        stop = start + 1  # grow the chunk while its padded cost matrices fit in `cells`
        while stop < len(order) and (stop + 1 - start) * len_a[order[stop]] * len_b[order[start : stop + 1]].max() <= cells:
            stop = min(len(order), start + 2 * (stop - start)) if stop - start < 64 else stop + 64
        pick = order[start:stop]
        out[pick] = _dtw(a[pick], b[pick], len_a[pick], len_b[pick], table)
        start = stop
    return out.reshape(q_count, r_count)


def _dtw(a: np.ndarray, b: np.ndarray, len_a: np.ndarray, len_b: np.ndarray, table: np.ndarray) -> np.ndarray:
    """Dynamic time warping of each pair of rows, divided by ``len_a + len_b``.

    ``D[i, j] = cost[i-1, j-1] + min(D[i-1, j-1], D[i-1, j], D[i, j-1])`` is computed one
    anti-diagonal ``i + j = s`` at a time (each needs only the two before), held as ``(B, La + 1)``
    rows indexed by ``i``; the cost of a diagonal is a diagonal of the column-flipped cost matrix.
    NumPy, not torch: these small steps are fastest on one thread.
    """
    width_a, width_b = max(int(len_a.max()), 1), max(int(len_b.max()), 1)
    a, b = np.maximum(a[:, :width_a], 0), np.maximum(b[:, :width_b], 0)
    flipped = table[a[:, :, None], b[:, None, ::-1]]  # (B, La, Lb), columns reversed
    before, last = np.full((len(a), width_a + 1), np.inf, np.float32), np.full((len(a), width_a + 1), np.inf, np.float32)
    last[:, 0] = 0.0  # diagonal s = 0: D[0, 0]
    total = len_a + len_b
    ends = np.zeros(len(a), np.float32)
    for s in range(1, width_a + width_b + 1):
        current = np.full_like(last, np.inf)
        lo, hi = max(1, s - width_b), min(width_a, s - 1)
        if lo <= hi:
            cost = np.diagonal(flipped, offset=width_b + 1 - s, axis1=1, axis2=2)  # cost[i-1, s-i-1], i = lo..hi
            step = np.minimum(np.minimum(before[:, lo - 1 : hi], last[:, lo - 1 : hi]), last[:, lo : hi + 1])
            current[:, lo : hi + 1] = cost + step
        done = np.flatnonzero(total == s)
        ends[done] = current[done, len_a[done]]
        before, last = last, current
    return ends / np.maximum(total, 1)
