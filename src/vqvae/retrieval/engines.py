"""Nearest-neighbour engines, embedded in the process: faiss for dense vectors, sparse
matrix products (scipy, fed by scikit-learn's TF-IDF) for bags of tokens, and an exact
chunked search for the baselines.

Every engine answers ``search(queries, k, exclude) -> (scores, rows)``: ``(Q, k)`` float32
scores, higher is nearer, and ``(Q, k)`` int64 database rows, −1 past the end of a small
database; ``exclude`` (database rows, or None) leaves items out of the search, as if they
were not indexed (the cross-speaker evaluation leaves out the query's speaker).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import faiss
import numpy as np
import torch
from scipy import sparse

from vqvae.retrieval.items import RetrievalError

__all__ = ["DenseEngine", "DenseSettings", "SparseEngine", "exact_knn", "top_k"]


@dataclass(frozen=True)
class DenseSettings:
    """How a dense index is built: exact below ``exact_below`` items, else an inverted file.

    Attributes:
        exact_below: databases smaller than this are searched exhaustively (``IndexFlatIP``):
            up to there an exact query took under about 1.5 ms on the benchmark's CPU, while
            an inverted file recalled only 0.5-0.8 of the exact top 10 (``benchmarks/retrieval.py``).
        nlist: inverted lists (Voronoi cells); default ``4·sqrt(N)``.
        nprobe: cells visited per query; default ``nlist // 8`` (at least 1): on the
            benchmark's million code grids ``nlist // 16`` recalled 0.92 of the exact top 10,
            ``nlist // 8`` 0.97.
        pq_bytes: compress each vector to this many bytes with product quantization
            (IVF-PQ); None keeps the vectors (IVF-Flat).
    """

    exact_below: int = 200_000
    nlist: int | None = None
    nprobe: int | None = None
    pq_bytes: int | None = None

    def __post_init__(self) -> None:
        if self.exact_below < 0 or any(v is not None and v < 1 for v in (self.nprobe, self.nlist)):
            raise RetrievalError(f"dense index settings must be positive, got {self}")
        if self.pq_bytes is not None and self.pq_bytes < 1:
            raise RetrievalError(f"pq_bytes must be >= 1 (bytes per vector), got {self.pq_bytes}")


class DenseEngine:
    """Inner-product search over unit vectors (cosine similarity) with faiss."""

    def __init__(self, index: faiss.Index, settings: DenseSettings) -> None:
        self.index = index
        self.settings = settings
        if hasattr(index, "nprobe"):
            index.nprobe = min(settings.nprobe or max(1, index.nlist // 8), index.nlist)

    @property
    def kind(self) -> str:
        if not hasattr(self.index, "nlist"):
            return "flat"
        return "ivf-pq" if self.settings.pq_bytes else "ivf-flat"

    @classmethod
    def build(cls, vectors: np.ndarray, settings: DenseSettings = DenseSettings(), seed: int = 0) -> DenseEngine:
        """An index of ``vectors`` ``(N, D)`` float32 (unit rows)."""
        n, d = vectors.shape
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        if n < max(settings.exact_below, 1):
            index = faiss.IndexFlatIP(d)
        else:
            nlist = settings.nlist or max(1, min(round(4 * math.sqrt(n)), n // 39))
            coarse = faiss.IndexFlatIP(d)
            if settings.pq_bytes:
                if d % settings.pq_bytes:
                    raise RetrievalError(f"pq_bytes={settings.pq_bytes} must divide the vector size {d}")
                index = faiss.IndexIVFPQ(coarse, d, nlist, settings.pq_bytes, 8, faiss.METRIC_INNER_PRODUCT)
            else:
                index = faiss.IndexIVFFlat(coarse, d, nlist, faiss.METRIC_INNER_PRODUCT)
            index.cp.seed = seed
            sample = np.random.default_rng(seed).permutation(n)[: 64 * nlist]
            index.train(vectors[np.sort(sample)])
        index.add(vectors)
        return cls(index, settings)

    def search(self, queries: np.ndarray, k: int, exclude: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        if exclude is None or not len(exclude):
            scores, rows = self.index.search(queries, k)
        else:
            left_out = faiss.IDSelectorBatch(np.ascontiguousarray(exclude, dtype=np.int64))
            keep = faiss.IDSelectorNot(left_out)
            params = (faiss.SearchParametersIVF(sel=keep, nprobe=self.index.nprobe) if hasattr(self.index, "nprobe")
                      else faiss.SearchParameters(sel=keep))
            scores, rows = self.index.search(queries, k, params=params)
        return np.where(rows >= 0, scores, -np.inf).astype(np.float32), rows.astype(np.int64)

    def to_bytes(self) -> bytes:
        return faiss.serialize_index(self.index).tobytes()

    @classmethod
    def from_bytes(cls, data: bytes, settings: DenseSettings) -> DenseEngine:
        return cls(faiss.deserialize_index(np.frombuffer(data, dtype=np.uint8)), settings)

    def describe(self) -> dict:
        return {"kind": self.kind, **asdict(self.settings),
                "nlist": getattr(self.index, "nlist", None)}


class SparseEngine:
    """Dot products of sparse unit rows (TF-IDF cosine): an inverted index as a CSR matrix."""

    def __init__(self, matrix: sparse.csr_matrix) -> None:
        self.matrix = matrix.tocsr()  # (N, V)
        self._by_token = self.matrix.T.tocsr()  # (V, N): each token's postings list

    def search(self, queries: sparse.csr_matrix, k: int, exclude: np.ndarray | None = None,
               chunk: int = 1 << 24) -> tuple[np.ndarray, np.ndarray]:
        n = self.matrix.shape[0]
        allowed = np.ones(n, dtype=bool)
        if exclude is not None:
            allowed[exclude] = False
        step = max(1, chunk // max(n, 1))
        scores, rows = np.full((queries.shape[0], k), -np.inf, np.float32), np.full((queries.shape[0], k), -1, np.int64)
        for start in range(0, queries.shape[0], step):
            products = (queries[start : start + step] @ self._by_token).tocsr()  # (q, N), items sharing a token
            for i in range(products.shape[0]):
                found = slice(products.indptr[i], products.indptr[i + 1])
                columns = products.indices[found]
                kept = allowed[columns]
                scores[start + i], rows[start + i] = _row_top_k(products.data[found][kept], columns[kept], k, allowed)
        return scores, rows


def _row_top_k(values: np.ndarray, columns: np.ndarray, k: int, allowed: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Top ``k`` of one sparse row of scores; items sharing no token score 0 and fill up the ranks."""
    if len(values) < min(k, int(allowed.sum())):  # rare: too few items share a token with the query
        dense = np.where(allowed, 0.0, -np.inf).astype(np.float32)[None]
        dense[0, columns] = values
        best, where = top_k(dense, k)
        return best[0], np.where(np.isfinite(best[0]), where[0], -1)
    best, where = top_k(values[None].astype(np.float32), k)
    return best[0], np.where(where[0] >= 0, columns[np.maximum(where[0], 0)], -1)


def top_k(scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` highest scores of each row ``(Q, N)``, best first; rows −1 past N."""
    q, n = scores.shape
    take = min(k, n)
    if take == 0:
        return np.full((q, k), -np.inf, np.float32), np.full((q, k), -1, np.int64)
    rows = np.argpartition(-scores, take - 1, axis=1)[:, :take] if take < n else np.tile(np.arange(n), (q, 1))
    picked = np.take_along_axis(scores, rows, axis=1)
    order = np.argsort(-picked, axis=1, kind="stable")
    rows, picked = np.take_along_axis(rows, order, axis=1), np.take_along_axis(picked, order, axis=1)
    pad = k - take
    return (np.pad(picked.astype(np.float32), ((0, 0), (0, pad)), constant_values=-np.inf),
            np.pad(rows.astype(np.int64), ((0, 0), (0, pad)), constant_values=-1))


@torch.no_grad()
def exact_knn(database: np.ndarray, queries: np.ndarray, k: int, metric: str = "l2",
              exclude: np.ndarray | None = None, chunk: int = 8192) -> tuple[np.ndarray, np.ndarray]:
    """Exhaustive nearest neighbours of ``queries`` ``(Q, F)`` in ``database`` ``(N, F)`` (any real
    dtype, converted to float32 a chunk at a time): ``metric`` ``"l2"`` (scores are minus the
    squared distance) or ``"cosine"``; ``exclude``: database rows left out."""
    banned = torch.zeros(len(database), dtype=torch.bool)
    if exclude is not None:
        banned[torch.as_tensor(exclude, dtype=torch.long)] = True
    if metric not in ("l2", "cosine"):
        raise RetrievalError(f"metric must be 'l2' or 'cosine', got {metric!r}")
    q = torch.from_numpy(np.asarray(queries, dtype=np.float32))
    if metric == "cosine":
        q = torch.nn.functional.normalize(q, dim=1)
    best_scores = torch.full((len(q), 0), -math.inf)
    best_rows = torch.zeros((len(q), 0), dtype=torch.int64)
    for start in range(0, len(database), chunk):
        x = torch.from_numpy(np.asarray(database[start : start + chunk], dtype=np.float32))  # (n, F)
        if metric == "cosine":
            scores = q @ torch.nn.functional.normalize(x, dim=1).T  # (Q, n)
        else:
            scores = 2 * q @ x.T - x.square().sum(1) - q.square().sum(1, keepdim=True)  # -|q - x|^2
        scores[:, banned[start : start + len(x)]] = -math.inf
        scores = torch.cat([best_scores, scores], dim=1)
        rows = torch.cat([best_rows, torch.arange(start, start + len(x)).expand(len(q), -1)], dim=1)
        best_scores, pick = scores.topk(min(k, scores.shape[1]), dim=1)
        best_rows = rows.gather(1, pick)
    pad = k - best_scores.shape[1]
    best_rows[best_scores == -math.inf] = -1
    return (np.pad(best_scores.numpy(), ((0, 0), (0, pad)), constant_values=-np.inf),
            np.pad(best_rows.numpy(), ((0, 0), (0, pad)), constant_values=-1))
