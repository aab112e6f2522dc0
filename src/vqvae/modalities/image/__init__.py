"""Images: data sets, the image tokenizers' training, outputs, metrics and judges."""

from vqvae.modalities.image.modality import ImageModality

__all__ = ["ImageModality"]
