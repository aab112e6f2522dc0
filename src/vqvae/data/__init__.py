"""Data sets for VQ-VAE: sources, splits and transforms, behind a name → source registry.

Images (:func:`load_images`) and audio (:func:`load_audio`); this package never imports
model code.
"""

from vqvae.data.audio import AudioData, audio_datasets, is_audio, load_audio, read_wav, write_wav
from vqvae.data.errors import DataError
from vqvae.data.images import ImageData, available_splits, image_datasets, load_images

__all__ = [
    "AudioData",
    "DataError",
    "ImageData",
    "audio_datasets",
    "available_splits",
    "image_datasets",
    "is_audio",
    "load_audio",
    "load_images",
    "read_wav",
    "write_wav",
]
