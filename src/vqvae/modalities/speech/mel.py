"""Log-mel spectrograms: the features of the audio classifiers and of the speech loss.

Triangular HTK mel filters from 0 Hz to Nyquist over a Hann-windowed STFT, then the log
of the filtered power. Shapes: B batch, T samples, M mel bins, L frames.
"""

from __future__ import annotations

import functools

import torch
from torch import Tensor

__all__ = ["LOG_FLOOR", "log_mel", "mel_filterbank"]

LOG_FLOOR = 1e-5  # added to the mel power before the log: ~85 dB under a full-scale tone


def _hz_to_mel(f: Tensor) -> Tensor:
    return 2595.0 * torch.log10(1.0 + f / 700.0)  # HTK formula


def _mel_to_hz(m: Tensor) -> Tensor:
    return 700.0 * (10.0 ** (m / 2595.0) - 1.0)


@functools.lru_cache(maxsize=8)
def mel_filterbank(sample_rate: int, n_fft: int, n_mels: int) -> Tensor:
    """Triangular HTK mel filters from 0 Hz to Nyquist, peak 1: ``(M, n_fft // 2 + 1)``."""
    top = float(_hz_to_mel(torch.tensor(sample_rate / 2.0)))
    edges = _mel_to_hz(torch.linspace(0.0, top, n_mels + 2, dtype=torch.float64))  # (M + 2,)
    freqs = torch.linspace(0.0, sample_rate / 2, n_fft // 2 + 1, dtype=torch.float64)
    left, centre, right = edges[:-2, None], edges[1:-1, None], edges[2:, None]  # (M, 1)
    rising = (freqs - left) / (centre - left)  # (M, n_freqs)
    falling = (right - freqs) / (right - centre)
    bank = torch.clamp(torch.minimum(rising, falling), min=0.0)
    if (bank.sum(dim=1) == 0).any():
        empty = int((bank.sum(dim=1) == 0).nonzero()[0])
        raise ValueError(
            f"mel filter {empty} of n_mels={n_mels} covers no FFT bin of n_fft={n_fft} at "
            f"{sample_rate} Hz: use fewer mel bins or a longer FFT"
        )
    return bank.float()


def log_mel(
    waveforms: Tensor,
    sample_rate: int = 8000,
    n_fft: int = 256,
    hop: int = 80,
    n_mels: int = 40,
) -> Tensor:
    """Log-mel power spectrogram, always in fp32.

    A Hann-windowed STFT centred on every ``hop``-th sample (zero padding at both ends,
    so frame ``l`` depends only on samples ``l·hop ± n_fft/2`` and appending zeros to a
    clip never changes its earlier frames), the power summed through triangular HTK mel
    filters spanning 0 Hz to Nyquist, then ``log(power + 1e-5)``.

    Args:
        waveforms: ``(B, T)`` or ``(B, 1, T)`` float samples, nominally in ``[-1, 1]``.
        sample_rate: Hz of the samples (sets the filter frequencies).
        n_fft: STFT window length in samples.
        hop: samples between frames.
        n_mels: number of mel bins M.

    Returns:
        ``(B, M, L)`` with ``L = T // hop + 1``.
    """
    if waveforms.ndim == 3 and waveforms.shape[1] == 1:
        waveforms = waveforms[:, 0]
    if waveforms.ndim != 2 or not waveforms.is_floating_point():
        raise ValueError(
            f"waveforms must be float (B, T) or (B, 1, T), got {waveforms.dtype} "
            f"{tuple(waveforms.shape)}"
        )
    if min(sample_rate, n_fft, hop, n_mels) < 1:
        raise ValueError(
            f"sample_rate, n_fft, hop and n_mels must be >= 1, got {sample_rate}, {n_fft}, "
            f"{hop}, {n_mels}"
        )
    x = waveforms.float()  # (B, T)
    window = torch.hann_window(n_fft, device=x.device)
    spec = torch.stft(
        x,
        n_fft,
        hop_length=hop,
        window=window,
        center=True,
        pad_mode="constant",
        return_complex=True,
    )  # (B, n_fft / 2 + 1, L)
    power = spec.real.square() + spec.imag.square()
    bank = mel_filterbank(sample_rate, n_fft, n_mels).to(x.device)  # (M, n_fft / 2 + 1)
    return torch.log(torch.einsum("mf,bfl->bml", bank, power) + LOG_FLOOR)  # (B, M, L)
