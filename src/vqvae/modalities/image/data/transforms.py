"""Resizing images to a square: shorter side to ``size``, then a centre crop."""

from __future__ import annotations

import numpy as np
from PIL import Image

__all__ = ["resize_and_crop", "resize_arrays"]

# Bilinear with PIL's antialiasing on downscaling, as torchvision's Resize does.
_RESAMPLE = Image.Resampling.BILINEAR


def resize_and_crop(image: Image.Image, size: int) -> Image.Image:
    """Scale ``image`` so its shorter side is ``size``, then cut the centre ``size``×``size``."""
    width, height = image.size
    if min(width, height) != size:
        scale = size / min(width, height)
        width, height = max(size, round(width * scale)), max(size, round(height * scale))
        image = image.resize((width, height), _RESAMPLE)
    left, top = (width - size) // 2, (height - size) // 2
    if (width, height) != (size, size):
        image = image.crop((left, top, left + size, top + size))
    return image


def resize_arrays(images: np.ndarray, size: int) -> np.ndarray:
    """Apply :func:`resize_and_crop` to every image of a uint8 ``(N, C, H, W)`` array.

    Returns:
        uint8 ``(N, C, size, size)``; ``images`` itself when it already has that size.
    """
    n, c, h, w = images.shape
    if (h, w) == (size, size):
        return images
    out = np.empty((n, c, size, size), dtype=np.uint8)
    for i in range(n):
        pixels = images[i, 0] if c == 1 else images[i].transpose(1, 2, 0)  # (H, W) or (H, W, C)
        resized = np.asarray(resize_and_crop(Image.fromarray(pixels), size))
        out[i] = resized[None] if c == 1 else resized.transpose(2, 0, 1)
    return out
