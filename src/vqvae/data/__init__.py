"""Data plumbing shared by every modality: file trees, splits, downloads, decoded-data caches.

The modalities' own loaders (``vqvae.modalities.image.data``, ``vqvae.modalities.speech.data``)
are built on it. This package never imports model or modality code.
"""

from vqvae.data.errors import DataError

__all__ = ["DataError"]
