"""``vqvae.Index``: the modality-free index of :mod:`vqvae.retrieval`, bound to the registry.

The core index takes the modality that encodes its data as an argument; this subclass
finds it from the tokenizer run's ``config.json``, as :func:`vqvae.load` finds the model,
so that ``vqvae.Index.build(run, data)`` and ``vqvae.Index.load(folder)`` need nothing more.
"""

from __future__ import annotations

import os

from vqvae.modalities import modality_of
from vqvae.retrieval import index as core
from vqvae.retrieval.representations import Settings
from vqvae.runs import read_config

__all__ = ["Index"]


class Index(core.Index):
    __doc__ = core.Index.__doc__

    @classmethod
    def build(cls, run: str | os.PathLike, data: str | None = None, *, modality=None, data_dir: str | None = None,
              split: str = "train", device: str = "cpu", settings: Settings | None = None,
              batch_size: int = 256) -> Index:
        """Encode a split of ``data`` (default: the run's own data) with the tokenizer ``run``, in
        batches, and index it; see :class:`~vqvae.retrieval.representations.Settings`."""
        modality = modality or modality_of(read_config(run))
        return super().build(run, data, modality=modality, data_dir=data_dir, split=split, device=device,
                             settings=settings, batch_size=batch_size)

    @classmethod
    def load(cls, folder: str | os.PathLike, *, modality=None, run: str | os.PathLike | None = None) -> Index:
        """An index folder written by :meth:`save` (``vqvae index``); ``run`` where its tokenizer moved."""
        index = super().load(folder, modality=modality, run=run)
        if index.modality is None and index.manifest.get("run"):
            index.modality = _modality(index.manifest["run"])
        return index


def _modality(run: str):
    try:
        return modality_of(read_config(run))
    except FileNotFoundError:
        return None  # the run moved: codes still search; raw queries say what is missing
