"""What image runs write: grids, one PNG per image, sample folders; atomically."""

from __future__ import annotations

import io
import math
import os
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from vqvae.atomic import write_bytes
from vqvae.figures import save_png


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """Floats in [0, 1] ``(N, C, H, W)`` → uint8 ``(N, C, H, W)``."""
    return (images.detach().float().clamp(0, 1) * 255).round().to(torch.uint8).cpu().numpy()


def image_grid(images: torch.Tensor | np.ndarray, ncol: int | None = None, pad: int = 2) -> Image.Image:
    """A grid of images ``(N, C, H, W)`` (floats in [0, 1] or uint8) as one PIL image."""
    arr = images if isinstance(images, np.ndarray) else to_uint8(images)
    n, c, h, w = arr.shape
    ncol = ncol or math.ceil(math.sqrt(n))
    nrow = math.ceil(n / ncol)
    grid = np.full((c, nrow * (h + pad) + pad, ncol * (w + pad) + pad), 255, dtype=np.uint8)
    for i in range(n):
        r, col = divmod(i, ncol)
        y, x = pad + r * (h + pad), pad + col * (w + pad)
        grid[:, y : y + h, x : x + w] = arr[i]
    grid = grid[0] if c == 1 else grid.transpose(1, 2, 0)
    image = Image.fromarray(grid)
    scale = max(1, 256 // max(h, w))  # small images are shown enlarged
    return image.resize((image.width * scale, image.height * scale), Image.NEAREST)


def save_reconstruction_grid(
    originals: torch.Tensor, reconstructions: torch.Tensor, path: str | os.PathLike, ncol: int = 8
) -> None:
    """Rows of originals, each followed by the row of their reconstructions."""
    n = (originals.shape[0] // ncol) * ncol or originals.shape[0]
    ncol = min(ncol, n)
    rows = []
    for start in range(0, n, ncol):
        rows += [originals[start : start + ncol], reconstructions[start : start + ncol]]
    save_png(image_grid(torch.cat(rows), ncol=ncol), path)




def write_images(images: torch.Tensor, out_dir: str | os.PathLike) -> Path:
    """One PNG per image (``000000.png``...) and ``grid.png`` in ``out_dir``."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    arr = to_uint8(images)
    for i, image in enumerate(arr):
        picture = Image.fromarray(image[0] if image.shape[0] == 1 else image.transpose(1, 2, 0))
        save_png(picture, out_dir / f"{i:06d}.png")
    save_png(image_grid(arr[:256]), out_dir / "grid.png")
    return out_dir / "grid.png"


def write_samples(codes: torch.Tensor, images: torch.Tensor, out_dir: str | os.PathLike) -> Path:
    """``grid.png``, one PNG per sample, ``codes.npy`` and ``images.npy`` (uint8 (N, C, H, W))."""
    out_dir = Path(out_dir)
    grid = write_images(images, out_dir)
    for name, array in (("codes.npy", codes.numpy()), ("images.npy", to_uint8(images))):
        buffer = io.BytesIO()
        np.save(buffer, array, allow_pickle=False)
        write_bytes(out_dir / name, buffer.getvalue())
    return grid
