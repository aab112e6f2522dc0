"""Pictures of a run: image grids and loss curves, written atomically as PNG."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from vqvae.checkpoint import atomic_write


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


def save_png(image: Image.Image, path: str | os.PathLike) -> None:
    atomic_write(path, lambda tmp: image.save(tmp, format="PNG"))


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


def plot_metrics(metrics_file: str | os.PathLike, path: str | os.PathLike) -> None:
    """Training loss, validation reconstruction error and perplexity against steps."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    train, val = [], []
    for line in Path(metrics_file).read_text().splitlines():
        record = json.loads(line)
        (val if record.get("split") == "val" else train).append(record)
    fig, (ax_loss, ax_ppl) = plt.subplots(1, 2, figsize=(10, 3.6))
    if train:
        steps = [r["step"] for r in train]
        ax_loss.plot(steps, [r["reconstruction_loss"] for r in train], label="train reconstruction")
        ax_ppl.plot(steps, [r["perplexity"] for r in train], label="train (window)")
    if val:
        steps = [r["step"] for r in val]
        ax_loss.plot(steps, [r["reconstruction_loss"] for r in val], "o-", label="validation")
        ax_ppl.plot(steps, [r["perplexity"] for r in val], "o-", label="validation")
    ax_loss.set(xlabel="step", ylabel="reconstruction loss", yscale="log", title="Reconstruction")
    ax_ppl.set(xlabel="step", ylabel="perplexity", title="Codebook perplexity")
    for ax in (ax_loss, ax_ppl):
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=100))
    plt.close(fig)
