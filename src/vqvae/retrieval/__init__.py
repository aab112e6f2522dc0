"""Codes as an index: search items by the discrete codes of a tokenizer.

The core is modality-free: a modality encodes its data into :class:`RetrievalItems`
(:meth:`vqvae.modalities.base.Modality.retrieval_items`); :class:`Index` builds three
representations of the codes over them (:mod:`vqvae.retrieval.representations`), searches
with embedded engines (:mod:`vqvae.retrieval.engines`: faiss, scikit-learn TF-IDF on scipy
sparse matrices), saves and loads itself (:mod:`vqvae.retrieval.store`), and is scored by
:func:`evaluate_index` against raw-data and continuous baselines.
"""

from vqvae.retrieval.engines import DenseSettings
from vqvae.retrieval.evaluation import evaluate_index
from vqvae.retrieval.index import Index, RetrievalModality, SearchResults, TokenizerMismatch
from vqvae.retrieval.items import RetrievalError, RetrievalItems, tokenizer_hash
from vqvae.retrieval.metrics import average_precision_at_k, precision_at_k
from vqvae.retrieval.representations import REPRESENTATIONS, Settings

__all__ = [
    "REPRESENTATIONS",
    "DenseSettings",
    "Index",
    "RetrievalError",
    "RetrievalItems",
    "RetrievalModality",
    "SearchResults",
    "Settings",
    "TokenizerMismatch",
    "average_precision_at_k",
    "evaluate_index",
    "precision_at_k",
    "tokenizer_hash",
]
