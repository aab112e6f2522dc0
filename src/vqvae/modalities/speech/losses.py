"""The speech VQ-VAE's reconstruction losses: a multi-resolution STFT loss and a log-mel loss.

Both compare magnitudes only, so the decoder is not forced to guess the phase that 64x
compression throws away. Letters: B batch, T samples, F frequency bins, N frames, M mel bins.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

from vqvae.modalities.speech.config import DEFAULT_STFT_RESOLUTIONS, check_resolution
from vqvae.modalities.speech.mel import log_mel

__all__ = ["MEL_BINS", "mel_loss", "mel_sizes", "multi_resolution_stft_loss"]

# STFT magnitudes below this count as silence: a full-scale sine peaks at |S| = win / 4
# (32 to 128 for the default windows), so the floor lies 100-112 dB below it. A lower floor
# lets inaudible bins dominate the log term (measured: slower, noisier training).
MAGNITUDE_FLOOR = 1e-7**0.5


def _magnitudes(x: Tensor, n_fft: int, hop: int, win: int) -> Tensor:
    """STFT magnitudes ``(B, F, N)`` of ``x`` ``(B, T)``, floored at ``MAGNITUDE_FLOOR``."""
    window = torch.hann_window(win, device=x.device, dtype=x.dtype)
    # Zero (not reflect) padding at the edges: works for any length, even shorter than n_fft.
    spec = torch.stft(
        x,
        n_fft,
        hop_length=hop,
        win_length=win,
        window=window,
        center=True,
        pad_mode="constant",
        return_complex=True,
    )  # (B, F, N)
    power = torch.view_as_real(spec).square().sum(-1)  # (B, F, N)
    # max(|S|, floor), not |S| + eps: sqrt has an infinite slope at 0, the clamp a zero one.
    return power.clamp_min(MAGNITUDE_FLOOR**2).sqrt()


def multi_resolution_stft_loss(
    x: Tensor,
    y: Tensor,
    resolutions: Sequence[tuple[int, int, int]] = DEFAULT_STFT_RESOLUTIONS,
) -> tuple[Tensor, Tensor]:
    """Spectral convergence and log-magnitude distance of ``y`` to ``x``, over resolutions.

    For each ``(n_fft, hop, win)`` with a Hann window, magnitudes ``S`` of ``x`` and
    ``Ŝ`` of ``y``: spectral convergence ``‖S − Ŝ‖_F / ‖S‖_F`` (over the whole batch, so
    that a silent clip does not blow the ratio up) and ``mean |log S − log Ŝ|``. Both are
    averaged over the resolutions. Computed in fp32 (or wider) even under autocast: bf16
    spectra lose the quiet bins that the log term is there for.

    Args:
        x: the reference signal.
        y: the estimate, same shape as ``x``.
        resolutions: ``(n_fft, hop, win)`` triples, ``win <= n_fft``.

    Returns:
        ``(spectral_convergence, log_magnitude)``, two scalars; both are 0 when ``y == x``.

    Shapes:
        ``x``, ``y``: ``(B, 1, T)`` or ``(B, T)`` or ``(T,)``.
    """
    if not isinstance(x, Tensor) or not isinstance(y, Tensor):
        raise TypeError(f"x and y must be tensors, got {type(x).__name__} and {type(y).__name__}")
    if x.shape != y.shape:
        raise ValueError(
            f"x and y must have the same shape, got {tuple(x.shape)} and {tuple(y.shape)}"
        )
    if x.numel() == 0:
        raise ValueError(f"cannot take the STFT loss of empty signals of shape {tuple(x.shape)}")
    resolutions = tuple(tuple(r) for r in resolutions)
    if not resolutions:
        raise ValueError("resolutions must hold at least one (n_fft, hop, win) triple")
    for r in resolutions:
        check_resolution(r)
    with torch.autocast(device_type=x.device.type, enabled=False):
        dtype = torch.promote_types(x.dtype, torch.float32)
        x = x.reshape(-1, x.shape[-1]).to(dtype)  # (B, T)
        y = y.reshape(-1, y.shape[-1]).to(dtype)  # (B, T)
        convergence, log_distance = [], []
        for n_fft, hop, win in resolutions:
            s, s_hat = _magnitudes(x, n_fft, hop, win), _magnitudes(y, n_fft, hop, win)
            convergence.append(torch.linalg.vector_norm(s - s_hat) / torch.linalg.vector_norm(s))
            log_distance.append((s.log() - s_hat.log()).abs().mean())
        return torch.stack(convergence).mean(), torch.stack(log_distance).mean()


MEL_BINS = 64


def mel_sizes(sample_rate: int) -> tuple[int, int]:
    """``(n_fft, hop)`` of :func:`mel_loss`: the power of two nearest 64 ms, hop an eighth."""
    n_fft = 2 ** round(math.log2(0.064 * sample_rate))
    return n_fft, max(1, n_fft // 8)


def mel_loss(x: Tensor, y: Tensor, sample_rate: int) -> Tensor:
    """Mean ``|log M(x) − log M(y)|`` of the log-mel spectrograms of :func:`vqvae.modalities.speech.mel.log_mel`
    (``MEL_BINS`` bins, sizes from :func:`mel_sizes`), in fp32 even under autocast.

    Shapes: ``x``, ``y``: ``(B, 1, T)`` or ``(B, T)``; returns a scalar, 0 when ``y == x``.
    """
    if x.shape != y.shape:
        raise ValueError(
            f"x and y must have the same shape, got {tuple(x.shape)} and {tuple(y.shape)}"
        )
    n_fft, hop = mel_sizes(sample_rate)
    with torch.autocast(device_type=x.device.type, enabled=False):
        x = x.reshape(-1, x.shape[-1]).float()  # (B, T)
        y = y.reshape(-1, y.shape[-1]).float()
        mx = log_mel(x, sample_rate, n_fft, hop, MEL_BINS)  # (B, M, L)
        my = log_mel(y, sample_rate, n_fft, hop, MEL_BINS)
        return (mx - my).abs().mean()
