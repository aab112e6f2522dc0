"""Retrieval quality: precision@k and mean average precision@k of same-label neighbours.

A neighbour is relevant when it has the query's label. For query ``q`` with ranked
neighbours ``n_1..n_k`` and ``R_q`` relevant items in the whole database:

* precision@k = (relevant among ``n_1..n_k``) / k, a missing neighbour counting as wrong;
* AP@k = sum over relevant ranks ``i <= k`` of precision@i, divided by ``min(k, R_q)``
  (0 when the database holds no relevant item), so a perfect ranking scores 1;
* the reported numbers are means over all queries.

Shapes: Q queries, k ranks, N database items.
"""

from __future__ import annotations

import numpy as np

from vqvae.retrieval.items import RetrievalError

__all__ = ["average_precision_at_k", "precision_at_k", "retrieval_scores"]


def _relevant(neighbours: np.ndarray, query_labels: np.ndarray, database_labels: np.ndarray) -> np.ndarray:
    """``(Q, k)`` bool: neighbour ``j`` of query ``i`` exists and shares its label."""
    found = neighbours >= 0
    labels = np.where(found, database_labels[np.maximum(neighbours, 0)], -1)
    return found & (labels == query_labels[:, None])


def precision_at_k(neighbours: np.ndarray, query_labels: np.ndarray, database_labels: np.ndarray, k: int) -> float:
    """Mean over queries of the fraction of the first ``k`` neighbours with the query's label."""
    _check(neighbours, k)
    return float(_relevant(neighbours[:, :k], query_labels, database_labels).sum(1).mean() / k)


def average_precision_at_k(neighbours: np.ndarray, query_labels: np.ndarray, database_labels: np.ndarray,
                           k: int, in_database: np.ndarray | None = None) -> float:
    """Mean over queries of AP@k (see the module docstring); ``in_database`` ``(Q,)``: R_q when
    only part of the database may be retrieved (default: every item with the query's label)."""
    _check(neighbours, k)
    hits = _relevant(neighbours[:, :k], query_labels, database_labels).astype(np.float64)  # (Q, k)
    precision = np.cumsum(hits, axis=1) / np.arange(1, k + 1)  # precision@i at every rank
    if in_database is None:
        in_database = (database_labels[None, :] == query_labels[:, None]).sum(1)  # R_q
    ap = (precision * hits).sum(1) / np.maximum(np.minimum(k, in_database), 1)
    return float(np.where(in_database > 0, ap, 0.0).mean())


def retrieval_scores(neighbours: np.ndarray, query_labels: np.ndarray, database_labels: np.ndarray,
                     in_database: np.ndarray | None = None) -> dict:
    """``precision_at_1``, ``precision_at_10`` and ``map_at_10`` of ranked neighbours ``(Q, >=10)``."""
    return {
        "precision_at_1": precision_at_k(neighbours, query_labels, database_labels, 1),
        "precision_at_10": precision_at_k(neighbours, query_labels, database_labels, 10),
        "map_at_10": average_precision_at_k(neighbours, query_labels, database_labels, 10, in_database),
    }


def _check(neighbours: np.ndarray, k: int) -> None:
    if neighbours.ndim != 2 or neighbours.shape[1] < k:
        raise RetrievalError(f"need at least {k} ranked neighbours per query, got an array of shape "
                             f"{neighbours.shape}: search with k >= {k}")
