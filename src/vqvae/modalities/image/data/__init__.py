"""Image data sets: MNIST (IDX), CIFAR-10 (binary batches or image folders), image folders
and tars, and the offline ``mnist-mini``, behind a name → source registry."""

from vqvae.modalities.image.data.images import (
    ImageData,
    available_splits,
    image_datasets,
    load_images,
)

__all__ = ["ImageData", "available_splits", "image_datasets", "load_images"]
