"""Speech pictures: log-magnitude spectrograms, written atomically as PNG."""

from __future__ import annotations

import math
import os

import torch

from vqvae.atomic import atomic_write


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
