"""Features of code grids: code histograms, code n-grams, pooled code vectors, TF-IDF.

Codes arrive as ``(N, *S')`` int64 grids padded with −1 (rows of audio shorter than the
longest); a padded position is no code and never counts. Shapes: N items, P positions
(the flattened grid), K codebook size, D code dimension, V tokens.
"""

from __future__ import annotations

import numpy as np
from scipy import sparse
from sklearn.feature_extraction.text import TfidfTransformer

__all__ = ["code_counts", "fit_tfidf", "ngram_tokens", "pooled_vectors", "tfidf", "token_counts"]


def code_counts(grids: np.ndarray, codebook_size: int) -> sparse.csr_matrix:
    """How often each code occurs in each item: ``(N, K)`` sparse counts."""
    flat = grids.reshape(len(grids), -1)  # (N, P)
    rows, cols = np.nonzero(flat >= 0)
    return _counts(rows, flat[rows, cols], len(grids), codebook_size)


def ngram_tokens(grids: np.ndarray, codebook_size: int, n: int, positional: bool) -> tuple[np.ndarray, np.ndarray]:
    """The tokens of each item: its codes and the runs of ``2..n`` neighbouring codes along
    every latent axis, each tagged with its position on the grid when ``positional``.

    Returns:
        ``(rows, tokens)``: int64 arrays of equal length, item index and token id. Token ids
        are unique per (order, axis, codes, position) but sparse; :func:`token_counts` maps
        them to columns.
    """
    k = codebook_size
    positions = np.arange(int(np.prod(grids.shape[1:]))).reshape(grids.shape[1:])  # (*S')
    rows_out, tokens_out = [], []
    for order in range(1, n + 1):
        for axis in range(1, grids.ndim) if order > 1 else (1,):
            span = grids.shape[axis] - order + 1
            if span < 1:
                continue
            parts = [np.take(grids, np.arange(i, i + span), axis=axis) for i in range(order)]
            valid = np.logical_and.reduce([p >= 0 for p in parts])  # (N, *S'') every code present
            token = np.zeros(parts[0].shape, dtype=np.int64)
            for p in parts:  # codes of the run, in base K
                token = token * k + p
            kind = (order - 1) * grids.ndim + (axis - 1)  # which order and axis
            token = token * (2 * grids.ndim * n) + kind
            if positional:
                where = np.take(positions, np.arange(span), axis=axis - 1)
                token = token * positions.size + where[None]
            rows, *_ = np.nonzero(valid)
            rows_out.append(rows)
            tokens_out.append(token[valid])
    return np.concatenate(rows_out), np.concatenate(tokens_out)


def token_counts(rows: np.ndarray, tokens: np.ndarray, n_items: int,
                 vocabulary: np.ndarray | None = None) -> tuple[sparse.csr_matrix, np.ndarray]:
    """``(N, V)`` sparse counts of tokens, and the vocabulary: the sorted token ids of the
    columns. A given ``vocabulary`` (the database's) drops tokens it does not hold."""
    if vocabulary is None:
        vocabulary, cols = np.unique(tokens, return_inverse=True)
    else:
        cols = np.searchsorted(vocabulary, tokens)
        cols = np.minimum(cols, max(len(vocabulary) - 1, 0))
        known = vocabulary[cols] == tokens if len(vocabulary) else np.zeros(len(tokens), bool)
        rows, cols = rows[known], cols[known]
    return _counts(rows, cols, n_items, len(vocabulary)), vocabulary


def _counts(rows: np.ndarray, cols: np.ndarray, n: int, width: int) -> sparse.csr_matrix:
    data = np.ones(len(rows), dtype=np.float32)
    matrix = sparse.coo_matrix((data, (rows, cols)), shape=(n, width)).tocsr()  # duplicates summed
    matrix.sum_duplicates()
    return matrix


def fit_tfidf(counts: sparse.csr_matrix, sublinear: bool) -> tuple[sparse.csr_matrix, np.ndarray]:
    """TF-IDF rows with unit L2 norm (so a dot product is the cosine), and the IDF weights."""
    transformer = TfidfTransformer(norm="l2", smooth_idf=True, sublinear_tf=sublinear)
    matrix = transformer.fit_transform(counts)
    return matrix.astype(np.float32).tocsr(), transformer.idf_.astype(np.float64)


def tfidf(counts: sparse.csr_matrix, idf: np.ndarray, sublinear: bool) -> sparse.csr_matrix:
    """Queries weighted by the database's IDF (:func:`fit_tfidf`)."""
    transformer = TfidfTransformer(norm="l2", smooth_idf=True, sublinear_tf=sublinear)
    transformer.idf_ = idf
    return transformer.transform(counts).astype(np.float32).tocsr()


def pooled_vectors(grids: np.ndarray, codebook: np.ndarray) -> np.ndarray:
    """The mean of each item's quantized latents, its code vectors: ``(N, D)`` float32."""
    counts = code_counts(grids, len(codebook))  # (N, K)
    total = counts @ codebook.astype(np.float32)  # (N, D), sum of the code vectors
    used = np.asarray(counts.sum(axis=1), dtype=np.float32)  # (N, 1)
    return (total / np.maximum(used, 1)).astype(np.float32)
