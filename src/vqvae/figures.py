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


def plot_metrics(
    metrics_file: str | os.PathLike, path: str | os.PathLike, panels: list[tuple[str, str]]
) -> None:
    """One panel per ``(metric key, title)``: training and validation values against steps."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    records = [json.loads(line) for line in Path(metrics_file).read_text().splitlines()]
    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 3.6), squeeze=False)
    for ax, (key, title) in zip(axes[0], panels, strict=True):
        for split, style in (("train", "-"), ("val", "o-")):
            points = [(r["step"], r[key]) for r in records
                      if r.get("split", "train") == split and r.get(key) is not None]
            if points:
                ax.plot(*zip(*points, strict=True), style, label="validation" if split == "val" else split)
        ax.set(xlabel="step", title=title)
        if key.endswith("loss"):
            ax.set_yscale("log")
        ax.grid(alpha=0.3)
        if ax.lines:
            ax.legend()
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=100))
    plt.close(fig)


def save_spectrograms(
    waveforms: list[torch.Tensor], titles: list[str], sample_rate: int, path: str | os.PathLike
) -> None:
    """Log-magnitude spectrograms (dB, 32 ms Hann windows) of clips ``(T,)``, stacked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n_fft = max(64, 1 << round(math.log2(0.032 * sample_rate)))
    fig, axes = plt.subplots(len(waveforms), 1, figsize=(7, 2.4 * len(waveforms)), squeeze=False)
    for ax, wave, title in zip(axes[:, 0], waveforms, titles, strict=True):
        wave = wave.float().flatten()
        if wave.numel() < n_fft:
            wave = torch.nn.functional.pad(wave, (0, n_fft - wave.numel()))
        spec = torch.stft(wave, n_fft, n_fft // 4, window=torch.hann_window(n_fft), return_complex=True)
        db = 20 * torch.log10(spec.abs() + 1e-5)  # (F, frames)
        seconds = wave.numel() / sample_rate
        ax.imshow(db.numpy(), origin="lower", aspect="auto", cmap="magma", vmin=-100, vmax=float(db.max()),
                  extent=(0, seconds, 0, sample_rate / 2000))
        ax.set(title=title, ylabel="kHz")
    axes[-1, 0].set_xlabel("seconds")
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=80))
    plt.close(fig)
