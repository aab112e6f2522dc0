"""Three ways to compare items by their codes, each with its own search structure.

* ``bag``: the bag of codes, TF-IDF weighted code histograms, cosine similarity (sparse).
* ``pooled``: the mean of an item's quantized latents (its code vectors), cosine similarity
  (dense, faiss: exact below a size threshold, an inverted file above).
* ``ngram``: codes (and on rows of varying length, runs of two neighbouring codes) as
  tokens, tagged with their position on fixed-shape grids, TF-IDF and cosine (sparse);
  then the best ``rerank`` candidates are re-ordered by the aligned distance between code
  grids (:mod:`vqvae.retrieval.rerank`). It is the one that keeps where the codes are.

Each takes code grids ``(N, *S')`` padded with −1, answers ``search(grids, k, exclude)`` (as the
engines of :mod:`vqvae.retrieval.engines` do) and gives its
state as named arrays, from which :func:`restore` rebuilds it. Shapes as in
:mod:`vqvae.retrieval.features`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np
from scipy import sparse

from vqvae.retrieval.engines import DenseEngine, DenseSettings, SparseEngine, top_k
from vqvae.retrieval.features import (
    code_counts,
    fit_tfidf,
    ngram_tokens,
    pooled_vectors,
    tfidf,
    token_counts,
)
from vqvae.retrieval.items import RetrievalError
from vqvae.retrieval.rerank import code_distances, rerank_scores

__all__ = ["REPRESENTATIONS", "CodeBase", "Settings", "build", "restore"]

REPRESENTATIONS = ("bag", "pooled", "ngram")


@dataclass(frozen=True)
class Settings:
    """How the representations are built (saved in the index's manifest).

    Attributes:
        default: the representation :meth:`vqvae.Index.search` uses unless told otherwise.
        sublinear_tf: weigh a token's count ``c`` as ``1 + log c`` rather than ``c``.
        ngram: longest run of neighbouring codes that is a token (1: codes alone); None: 1
            on grids of one fixed shape, whose position tags already say where each code
            is, and 2 on rows of different lengths (audio), where the order of neighbouring
            codes is the only layout a token can carry.
        positional: tag tokens with their grid position; None: on for grids of one fixed
            shape, off for rows of different lengths (audio).
        rerank: candidates of the ``ngram`` stage re-ordered by aligned code distance (0: none).
        shift: on fixed-shape grids, how far (in latent positions) a code may move to match
            in the re-ranking distance (:func:`~vqvae.retrieval.rerank.rerank_scores`); None:
            chosen when the index is built, from its items' labels (:mod:`vqvae.retrieval.tuning`).
        dense: the faiss index of ``pooled``.
    """

    default: str = "ngram"
    sublinear_tf: bool = True
    ngram: int | None = None
    positional: bool | None = None
    rerank: int = 1000
    shift: int | None = None
    dense: DenseSettings = field(default_factory=DenseSettings)

    def __post_init__(self) -> None:
        if self.default not in REPRESENTATIONS:
            raise RetrievalError(f"unknown representation {self.default!r}: choose one of {', '.join(REPRESENTATIONS)}")
        if (self.ngram is not None and self.ngram < 1) or self.rerank < 0 or (self.shift is not None and self.shift < 0):
            raise RetrievalError(f"ngram must be >= 1, rerank and shift >= 0, got {self.ngram}, {self.rerank} "
                                 f"and {self.shift}")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> Settings:
        return cls(**{**values, "dense": DenseSettings(**values.get("dense", {}))})


@dataclass(eq=False)
class CodeBase:
    """The database's codes as the representations read them.

    Attributes:
        grids: ``(N, *S')`` int16/int32 codes, −1 past a row's end.
        codebook: ``(K, D)`` float32.
        fixed: every row has the grid's full shape (no padding).
    """

    grids: np.ndarray
    codebook: np.ndarray
    fixed: bool

    def __post_init__(self) -> None:
        self.table = code_distances(self.codebook)  # (K, K)

    @property
    def codebook_size(self) -> int:
        return len(self.codebook)


class BagOfCodes:
    name = "bag"

    def __init__(self, base: CodeBase, settings: Settings, matrix: sparse.csr_matrix, idf: np.ndarray) -> None:
        self.base, self.settings, self.idf = base, settings, idf
        self.engine = SparseEngine(matrix)

    @classmethod
    def build(cls, base: CodeBase, settings: Settings) -> BagOfCodes:
        matrix, idf = fit_tfidf(code_counts(base.grids, base.codebook_size), settings.sublinear_tf)
        return cls(base, settings, matrix, idf)

    def vectors(self, grids: np.ndarray) -> sparse.csr_matrix:
        return tfidf(code_counts(grids, self.base.codebook_size), self.idf, self.settings.sublinear_tf)

    def search(self, grids: np.ndarray, k: int, exclude: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        return self.engine.search(self.vectors(grids), k, exclude)

    def state(self) -> dict[str, np.ndarray]:
        return {**_sparse_arrays(self.engine.matrix), "idf": self.idf}

    @classmethod
    def restore(cls, base: CodeBase, settings: Settings, arrays: dict) -> BagOfCodes:
        return cls(base, settings, _sparse_from(arrays), arrays["idf"])


class PooledCodes:
    name = "pooled"

    def __init__(self, base: CodeBase, engine: DenseEngine) -> None:
        self.base, self.engine = base, engine

    @classmethod
    def build(cls, base: CodeBase, settings: Settings) -> PooledCodes:
        vectors = _unit(pooled_vectors(base.grids, base.codebook))
        return cls(base, DenseEngine.build(vectors, settings.dense))

    def search(self, grids: np.ndarray, k: int, exclude: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        return self.engine.search(_unit(pooled_vectors(grids, self.base.codebook)), k, exclude)

    def state(self) -> dict[str, np.ndarray]:
        return {"faiss": np.frombuffer(self.engine.to_bytes(), dtype=np.uint8)}

    @classmethod
    def restore(cls, base: CodeBase, settings: Settings, arrays: dict) -> PooledCodes:
        return cls(base, DenseEngine.from_bytes(arrays["faiss"].tobytes(), settings.dense))


class CodeNgrams:
    name = "ngram"

    def __init__(self, base: CodeBase, settings: Settings, matrix: sparse.csr_matrix, idf: np.ndarray,
                 vocabulary: np.ndarray) -> None:
        self.base, self.settings, self.idf, self.vocabulary = base, settings, idf, vocabulary
        self.positional = base.fixed if settings.positional is None else settings.positional
        self.n = _order(base, settings)
        if self.positional and not base.fixed:
            raise RetrievalError("positional tokens need grids of one fixed shape, but the rows have different "
                                 "lengths (audio): build with positional=False")
        self.engine = SparseEngine(matrix)

    @classmethod
    def build(cls, base: CodeBase, settings: Settings) -> CodeNgrams:
        positional = base.fixed if settings.positional is None else settings.positional
        rows, tokens = ngram_tokens(base.grids.astype(np.int64), base.codebook_size, _order(base, settings), positional)
        counts, vocabulary = token_counts(rows, tokens, len(base.grids))
        matrix, idf = fit_tfidf(counts, settings.sublinear_tf)
        return cls(base, settings, matrix, idf, vocabulary)

    def vectors(self, grids: np.ndarray) -> sparse.csr_matrix:
        rows, tokens = ngram_tokens(grids.astype(np.int64), self.base.codebook_size, self.n, self.positional)
        counts, _ = token_counts(rows, tokens, len(grids), self.vocabulary)
        return tfidf(counts, self.idf, self.settings.sublinear_tf)

    def search(self, grids: np.ndarray, k: int, exclude: np.ndarray | None = None,
               shift: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """``shift``: the re-ranking's, for this search only (default: the settings')."""
        depth = max(k, self.settings.rerank)
        scores, rows = self.engine.search(self.vectors(grids), depth, exclude)
        if not self.settings.rerank:
            return scores[:, :k], rows[:, :k]
        shift = self.settings.shift if shift is None else shift
        return rerank(self.base, grids, rows, k, shift or 0)

    def state(self) -> dict[str, np.ndarray]:
        return {**_sparse_arrays(self.engine.matrix), "idf": self.idf, "vocabulary": self.vocabulary}

    @classmethod
    def restore(cls, base: CodeBase, settings: Settings, arrays: dict) -> CodeNgrams:
        return cls(base, settings, _sparse_from(arrays), arrays["idf"], arrays["vocabulary"])


def rerank(base: CodeBase, grids: np.ndarray, rows: np.ndarray, k: int, shift: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """The best ``k`` of each query's candidate ``rows`` ``(Q, R)`` by aligned code distance."""
    q = grids.reshape(len(grids), -1).astype(np.int64)  # (Q, P)
    db = base.grids.reshape(len(base.grids), -1)
    candidates = np.where(rows[..., None] >= 0, db[np.maximum(rows, 0)], -1).astype(np.int64)  # (Q, R, P)
    if q.shape[1] != candidates.shape[2]:  # rows of another length than the database's widest
        width = max(q.shape[1], candidates.shape[2])
        q = np.pad(q, ((0, 0), (0, width - q.shape[1])), constant_values=-1)
        candidates = np.pad(candidates, ((0, 0), (0, 0), (0, width - candidates.shape[2])), constant_values=-1)
    shape = tuple(base.grids.shape[1:]) if base.fixed else None
    scores = rerank_scores(q, candidates, base.table, shape, shift)
    best_scores, order = top_k(scores, k)
    return best_scores, np.where(order >= 0, np.take_along_axis(rows, np.maximum(order, 0), axis=1), -1)


_CLASSES = {c.name: c for c in (BagOfCodes, PooledCodes, CodeNgrams)}


def build(name: str, base: CodeBase, settings: Settings):
    """Representation ``name`` of the database ``base``."""
    return _CLASSES[name].build(base, settings)


def restore(name: str, base: CodeBase, settings: Settings, arrays: dict):
    """Representation ``name`` from the arrays its ``state()`` gave."""
    return _CLASSES[name].restore(base, settings, arrays)


def _order(base: CodeBase, settings: Settings) -> int:
    return settings.ngram if settings.ngram is not None else (1 if base.fixed else 2)


def _unit(vectors: np.ndarray) -> np.ndarray:
    return vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)


def _sparse_arrays(matrix: sparse.csr_matrix) -> dict[str, np.ndarray]:
    return {"data": matrix.data, "indices": matrix.indices, "indptr": matrix.indptr,
            "shape": np.array(matrix.shape, dtype=np.int64)}


def _sparse_from(arrays: dict) -> sparse.csr_matrix:
    return sparse.csr_matrix((arrays["data"], arrays["indices"], arrays["indptr"]), shape=tuple(arrays["shape"]))
