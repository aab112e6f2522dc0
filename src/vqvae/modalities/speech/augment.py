"""Training-time augmentation of the speech judges' clips: shift/crop, noise, low-pass, gain.

Decoded speech is shifted, noisier, duller and louder or softer than the recordings a
judge learns from; these random alterations teach it to recognise the content anyway.
All randomness comes from the caller's generator (see :func:`vqvae.judges.train_judge`).

Shapes: B batch, T samples.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from vqvae.modalities.speech.judge_net import pad_batch

__all__ = ["augment", "lowpass"]

MAX_SHIFT = 0.1  # seconds of random shift or crop at each end during training
MAX_GAIN_DB = 6.0  # random gain in [-6, +6] dB during training
SNR_DB = (15.0, 45.0)  # range of the signal-to-noise ratio of the added white noise
LOWPASS_P = 0.5  # probability of a random low-pass during training ...
LOWPASS_HZ = (1500.0, 3500.0)  # ... with a cut-off frequency in this range


def lowpass(x: Tensor, cutoff: Tensor, sample_rate: int) -> Tensor:
    """Zero-phase low-pass of ``(B, T)`` clips with an 8th-order Butterworth magnitude
    response at ``cutoff`` Hz ``(B,)``; the FFT is zero-padded to a power of two (fast,
    and the filter's ringing fades in the padding instead of wrapping around)."""
    T = x.shape[-1]
    n = 2 ** math.ceil(math.log2(T + sample_rate // 100))
    freqs = torch.fft.rfftfreq(n, 1.0 / sample_rate, device=x.device)  # (n // 2 + 1,)
    response = torch.rsqrt(1.0 + (freqs / cutoff[:, None]) ** 16)  # (B, n // 2 + 1)
    return torch.fft.irfft(torch.fft.rfft(x, n=n) * response, n=n)[:, :T]


def augment(
    clips: Sequence[Tensor], sample_rate: int, generator: torch.Generator
) -> tuple[Tensor, Tensor]:
    """A padded training batch ``((B, 1, T), lengths (B,))`` of randomly altered clips.

    Each clip gets a random shift or crop at both ends, white noise, a low-pass half of
    the time, and a gain.
    """
    B = len(clips)
    u = torch.rand(B, 6, generator=generator)  # (B, 6) uniform draws, one column per use
    max_shift = round(MAX_SHIFT * sample_rate)
    shifted = []
    for clip, (start, end) in zip(clips, (2.0 * u[:, :2] - 1.0).tolist(), strict=True):
        # each end: either up to MAX_SHIFT s of silence added, or up to 10 % of the clip cut
        cut = min(max_shift, clip.shape[0] // 10)
        ends = [round(v * max_shift) if v >= 0 else -round(-v * cut) for v in (start, end)]
        shifted.append(F.pad(clip, ends))  # negative padding crops
    x, lengths = pad_batch(shifted)  # (B, 1, T), (B,)
    x = x[:, 0]  # (B, T)
    valid = torch.arange(x.shape[1]) < lengths[:, None]  # (B, T)
    snr_db = SNR_DB[0] + u[:, 2] * (SNR_DB[1] - SNR_DB[0])  # (B,)
    rms = (x.square().sum(dim=1) / lengths).sqrt()  # (B,)
    noise = torch.randn(x.shape, generator=generator) * valid  # (B, T)
    x = x + noise * (rms * 10.0 ** (-snr_db / 20.0))[:, None]
    low = u[:, 3] < LOWPASS_P  # (B,)
    if low.any():
        # Decoders tend to lose the top band first; without this the digit classifier
        # leans on fricatives ("six", "seven") and fails on muffled but clear speech.
        cutoff = LOWPASS_HZ[0] + u[low, 4] * (LOWPASS_HZ[1] - LOWPASS_HZ[0])
        x[low] = lowpass(x[low], cutoff, sample_rate) * valid[low]
    gain = 10.0 ** ((2.0 * u[:, 5] - 1.0) * MAX_GAIN_DB / 20.0)  # (B,)
    return (x * gain[:, None])[:, None], lengths
