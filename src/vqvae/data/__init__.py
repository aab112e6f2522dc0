"""Data sets for VQ-VAE: sources, splits and transforms, behind a name → source registry.

This package never imports model code.
"""

from vqvae.data.errors import DataError
from vqvae.data.images import ImageData, available_splits, image_datasets, load_images

__all__ = ["DataError", "ImageData", "available_splits", "image_datasets", "load_images"]
