"""What an index is made of: items encoded by a tokenizer, whatever the modality.

A modality turns its data into :class:`RetrievalItems` (see
:meth:`vqvae.modalities.base.Modality.retrieval_items`); everything after that, the
representations, the engines, search and its evaluation, reads only these arrays.

Shapes: N items, S' the latent grid (``(H', W')`` for images, ``(L,)`` for audio), K codebook
size, D code dimension, F baseline features.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from vqvae.checkpoint import MODEL_FILE
from vqvae.runs import CodeFile

__all__ = ["RetrievalError", "RetrievalItems", "tokenizer_hash"]


class RetrievalError(ValueError):
    """A user-facing retrieval problem: the message names the value, what was expected and the fix."""


def tokenizer_hash(run: str | os.PathLike) -> str:
    """sha256 of ``RUN/model.safetensors``: the identity of the codes a tokenizer writes
    (:func:`vqvae.runs.codes_cache_path` keys its caches by the same digest)."""
    path = Path(run) / MODEL_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist: pass a trained tokenizer run directory")
    return hashlib.sha256(path.read_bytes()).hexdigest()


@dataclass(eq=False)
class RetrievalItems:
    """Items encoded for retrieval by one tokenizer.

    Attributes:
        codes: the code rows in the one code-file format (:class:`vqvae.runs.CodeFile`):
            ``codes`` ``(N, *S')`` int64 padded with −1 past ``lengths``, ``labels`` ``(N,)``
            or None, and ``extras["speakers"]`` ``(N,)`` where the data name speakers.
        codebook: ``(K, D)`` float32, the tokenizer's code vectors.
        continuous: ``(N, D)`` float32, the encoder's output before quantization, averaged
            over the latent positions of each item.
        baseline: ``(N, F)`` raw features of the data for the raw-data baseline (any real
            dtype: uint8 pixels are kept as they are).
        baseline_name: what ``baseline`` holds: ``"pixels"`` or ``"log_mel"``.
        ids: one name per item (a file name, or ``split/position``).
        paths: where each item came from, or None when the source has no files.
        tokenizer: :func:`tokenizer_hash` of the run that encoded the items.
        classes: label names, ``classes[label]``.
        speaker_names: speaker names, ``speaker_names[speaker]``.
    """

    codes: CodeFile
    codebook: np.ndarray
    continuous: np.ndarray
    baseline: np.ndarray
    baseline_name: str
    ids: list[str]
    tokenizer: str
    paths: list[str] | None = None
    classes: tuple[str, ...] = ()
    speaker_names: tuple[str, ...] = field(default_factory=tuple)

    def __post_init__(self) -> None:
        n = len(self.codes.codes)
        for name in ("continuous", "baseline"):
            value = getattr(self, name)
            if value.ndim != 2 or len(value) != n:
                raise RetrievalError(f"{name} must be ({n}, features), one row per item, got {value.shape}")
        if len(self.ids) != n or (self.paths is not None and len(self.paths) != n):
            raise RetrievalError(f"need one id (and path) per item: {n} items, {len(self.ids)} ids")
        if self.codebook.ndim != 2 or self.continuous.shape[1] != self.codebook.shape[1]:
            raise RetrievalError(f"codebook {self.codebook.shape} and continuous vectors "
                                 f"{self.continuous.shape} must share D")

    def __len__(self) -> int:
        return len(self.codes.codes)

    @property
    def labels(self) -> np.ndarray | None:
        return None if self.codes.labels is None else self.codes.labels.numpy()

    @property
    def speakers(self) -> np.ndarray | None:
        speakers = self.codes.extras.get("speakers")
        return None if speakers is None else speakers.numpy()

    @property
    def lengths(self) -> np.ndarray | None:
        return None if self.codes.lengths is None else self.codes.lengths.numpy()

    def select(self, rows: np.ndarray) -> RetrievalItems:
        """The items at ``rows`` (an index array), in that order."""
        rows = torch.as_tensor(np.asarray(rows, dtype=np.int64))
        pick = lambda t: None if t is None else t[rows]  # noqa: E731
        codes = CodeFile(self.codes.codes[rows], pick(self.codes.labels), pick(self.codes.lengths),
                         {k: pick(v) for k, v in self.codes.extras.items()})
        keep = rows.numpy()
        return RetrievalItems(codes, self.codebook, self.continuous[keep], self.baseline[keep],
                              self.baseline_name, [self.ids[i] for i in keep], self.tokenizer,
                              None if self.paths is None else [self.paths[i] for i in keep],
                              self.classes, self.speaker_names)

