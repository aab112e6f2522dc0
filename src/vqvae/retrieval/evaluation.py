"""How well an index finds items of the query's class, beside two baselines on the same items.

Every held-out query is searched in the index with each representation; the baselines are
exact nearest neighbours of the same items in the raw data (``pixels``, or ``log_mel``
frames averaged over time) and in the encoder's continuous output before quantization,
averaged over positions (``continuous``). Where items have speakers, the same is measured
again counting only neighbours by other speakers (``results_cross_speaker``): a spoken
digit must then be found through what was said, not who said it.
"""

from __future__ import annotations

import numpy as np

from vqvae.retrieval.engines import exact_knn
from vqvae.retrieval.index import Index
from vqvae.retrieval.items import RetrievalError, RetrievalItems
from vqvae.retrieval.metrics import retrieval_scores
from vqvae.retrieval.representations import REPRESENTATIONS

__all__ = ["BASELINE_METRICS", "evaluate_index"]

K = 10
#: The raw baseline is Euclidean nearest neighbours, as the classic pixel k-NN; the
#: continuous one is cosine, as the pooled code vectors it is compared with.
BASELINE_METRICS = {"raw": "l2", "continuous": "cosine"}


def evaluate_index(index: Index, queries: RetrievalItems, representations: tuple[str, ...] = REPRESENTATIONS) -> dict:
    """``{"default": NAME, "results": {NAME: {"precision_at_1", "precision_at_10", "map_at_10"}}}``
    for each representation and the baselines, plus ``results_cross_speaker`` of the same form
    when both the queries and the index have speakers: there each query searches the
    database without its own speaker's items."""
    database = index.database()
    if queries.labels is None or database.labels is None:
        raise RetrievalError("retrieval is scored by labels, but the queries or the indexed items have none: "
                             "evaluate with labelled data (a data set with classes)")
    report = {"default": index.default,
              "results": _scores(index, database, queries, representations, None)}
    groups = _groups(queries, database)
    if groups is not None:
        report["results_cross_speaker"] = _scores(index, database, queries, representations, groups)
    return report


def _scores(index: Index, database: RetrievalItems, queries: RetrievalItems, representations: tuple[str, ...],
            groups: tuple[np.ndarray, np.ndarray] | None) -> dict:
    searches = {name: lambda q, k, left_out, name=name: index.neighbours(q, k, name, left_out)[1]
                for name in representations}
    searches[database.baseline_name] = lambda q, k, left_out: exact_knn(
        database.baseline, q.baseline, k, BASELINE_METRICS["raw"], left_out)[1]
    searches["continuous"] = lambda q, k, left_out: exact_knn(
        database.continuous, q.continuous, k, BASELINE_METRICS["continuous"], left_out)[1]
    if groups is None:
        return {name: retrieval_scores(search(queries, K, None), queries.labels, database.labels)
                for name, search in searches.items()}
    q_groups, db_groups = groups
    relevant = ((database.labels[None, :] == queries.labels[:, None])
                & (db_groups[None, :] != q_groups[:, None])).sum(1)  # R_q: same label, another speaker
    out = {}
    for name, search in searches.items():
        rows = np.full((len(queries), K), -1, dtype=np.int64)
        for group in np.unique(q_groups):  # each speaker's queries search the others' items
            mine = np.flatnonzero(q_groups == group)
            rows[mine] = search(queries.select(mine), K, np.flatnonzero(db_groups == group))
        out[name] = retrieval_scores(rows, queries.labels, database.labels, relevant)
    return out


def _groups(queries: RetrievalItems, database: RetrievalItems) -> tuple[np.ndarray, np.ndarray] | None:
    """Speakers of the queries and of the database as one set of integers (matched by name)."""
    if queries.speakers is None or database.speakers is None:
        return None
    names = sorted(set(queries.speaker_names) | set(database.speaker_names))
    number = {name: i for i, name in enumerate(names)}
    as_ids = lambda items: np.array([number[items.speaker_names[s]] for s in items.speakers])  # noqa: E731
    return as_ids(queries), as_ids(database)
