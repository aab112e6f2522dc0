"""The speech VQ-VAE's decoders, codes ``(B, D, L)`` → audio ``(B, 1, L·hop)``.

:class:`SpectralDecoder` (the default) runs ConvNeXt blocks at the code rate, predicts one
STFT frame per code and inverts it (as Vocos does); :class:`SpeechDecoder` doubles the
time axis six times with transposed convolutions, each followed by dilated residual units.
Both take the speaker in every block. Letters: B batch, T samples, L latent steps, D code
dimension, C channels, E speaker embedding size, F frequency bins, N frames.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["ConvNeXtBlock", "DilatedResidualUnit", "SpectralDecoder", "SpeechDecoder"]

DECODER_MIN_CHANNELS = 32  # channel floor of the high-rate decoder stages
_SLOPE = 0.2  # leaky-ReLU slope of the upsampling decoder
CONVNEXT_EXPANSION = 3  # hidden width of a ConvNeXt block's MLP, in channels
MAX_LOG_MAGNITUDE = math.log(1e3)  # the spectral decoder's |S| cap: 10x a full-scale sine's


def _check_speaker(speaker: Tensor | None, speaker_dim: int | None) -> None:
    if (speaker is None) != (speaker_dim is None):
        raise ValueError(
            f"this decoder was built with speaker_dim={speaker_dim}: pass a speaker "
            f"embedding (B, {speaker_dim})"
            if speaker_dim
            else "this decoder was built without speakers: pass speaker=None"
        )



class DilatedResidualUnit(nn.Module):
    """``x + conv1x1(act(film(conv3_dilated(act(x)))))``, act a leaky ReLU.

    With a speaker, ``film(h) = h · (1 + scale) + shift`` with per-channel ``scale`` and
    ``shift`` a linear map of the speaker embedding: every unit of every stage can impose
    the voice, not only the first layer.

    Shapes:
        ``x``: ``(B, C, T)``; ``speaker``: ``(B, E)``.
    """

    def __init__(self, channels: int, dilation: int, speaker_dim: int | None = None) -> None:
        super().__init__()
        self.conv = nn.Conv1d(channels, channels, 3, dilation=dilation, padding=dilation)
        self.proj = nn.Conv1d(channels, channels, 1)
        self.film = nn.Linear(speaker_dim, 2 * channels) if speaker_dim else None

    def forward(self, x: Tensor, speaker: Tensor | None = None) -> Tensor:
        h = self.conv(F.leaky_relu(x, _SLOPE))  # (B, C, T)
        if self.film is not None:
            scale, shift = self.film(speaker).unsqueeze(-1).chunk(2, dim=1)  # (B, C, 1) each
            h = h * (1 + scale) + shift
        return x + self.proj(F.leaky_relu(h, _SLOPE))


class _UpsampleStage(nn.Module):
    """Transposed convolution (window 4, stride 2: every output sees two inputs), then units."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        dilations: tuple[int, ...],
        speaker_dim: int | None,
    ) -> None:
        super().__init__()
        self.upsample = nn.ConvTranspose1d(in_channels, out_channels, 4, stride=2, padding=1)
        self.units = nn.ModuleList(
            DilatedResidualUnit(out_channels, d, speaker_dim) for d in dilations
        )

    def forward(self, x: Tensor, speaker: Tensor | None) -> Tensor:
        x = self.upsample(F.leaky_relu(x, _SLOPE))  # (B, C', 2T)
        for unit in self.units:
            x = unit(x, speaker)
        return x


class SpeechDecoder(nn.Module):
    """Non-autoregressive waveform decoder: codes ``(B, D, L)`` → audio ``(B, 1, L·2**upsamples)``.

    A kernel-3 convolution to ``width`` channels, ``upsamples`` stages of (×2 transposed
    convolution, dilated residual units), a kernel-7 convolution to one channel, tanh.
    Channels halve at each stage down to ``min_channels``.

    Args:
        code_dim: D.
        width: channels at the latent rate.
        upsamples: number of ×2 stages.
        dilations: dilations of the residual units of each stage.
        speaker_dim: E, to condition every unit on a speaker embedding; None: unconditioned.
        min_channels: channel floor of the later stages (capped at ``width``).
    """

    def __init__(
        self,
        code_dim: int,
        width: int,
        upsamples: int,
        dilations: tuple[int, ...],
        speaker_dim: int | None = None,
        min_channels: int = DECODER_MIN_CHANNELS,
    ) -> None:
        super().__init__()
        floor = min(min_channels, width)
        widths = [width]
        for _ in range(upsamples):
            widths.append(max(floor, widths[-1] // 2))
        self.widths = tuple(widths)
        self.speaker_dim = speaker_dim or None
        self.conv_in = nn.Conv1d(code_dim, width, 3, padding=1)
        self.stages = nn.ModuleList(
            _UpsampleStage(widths[i], widths[i + 1], dilations, speaker_dim)
            for i in range(upsamples)
        )
        self.conv_out = nn.Conv1d(widths[-1], 1, 7, padding=3)

    def forward(self, z: Tensor, speaker: Tensor | None = None) -> Tensor:
        """Audio ``(B, 1, T)`` in (-1, 1) from code vectors ``z`` ``(B, D, L)`` and ``speaker`` ``(B, E)``."""
        _check_speaker(speaker, self.speaker_dim)
        x = self.conv_in(z)  # (B, C, L)
        for stage in self.stages:
            x = stage(x, speaker)  # time doubles, channels halve to the floor
        return torch.tanh(self.conv_out(F.leaky_relu(x, _SLOPE)))  # (B, 1, T)


class ConvNeXtBlock(nn.Module):
    """``x + γ · W₂ gelu(W₁ film(norm(dwconv₇(x))))``, a ConvNeXt block (Liu et al. 2022) in 1-D.

    The speaker shifts the normalised features, or with ``speaker_scale`` also scales
    them (FiLM); its map starts small, so an untrained block barely hears the speaker.
    ``γ`` is a learned per-channel layer scale.

    Shapes:
        ``x``: ``(B, C, N)``; ``speaker``: ``(B, E)``.
    """

    def __init__(
        self,
        channels: int,
        layer_scale: float,
        speaker_dim: int | None = None,
        speaker_scale: bool = True,
    ) -> None:
        super().__init__()
        self.dwconv = nn.Conv1d(channels, channels, 7, padding=3, groups=channels)
        self.norm = nn.LayerNorm(channels)
        self.speaker_scale = speaker_scale
        film_out = (2 if speaker_scale else 1) * channels
        self.film = nn.Linear(speaker_dim, film_out) if speaker_dim else None
        if self.film is not None:
            nn.init.normal_(self.film.weight, std=0.02)
            nn.init.zeros_(self.film.bias)
        self.expand = nn.Linear(channels, CONVNEXT_EXPANSION * channels)
        self.contract = nn.Linear(CONVNEXT_EXPANSION * channels, channels)
        self.gamma = nn.Parameter(torch.full((channels,), layer_scale))

    def forward(self, x: Tensor, speaker: Tensor | None = None) -> Tensor:
        h = self.norm(self.dwconv(x).transpose(1, 2))  # (B, N, C)
        if self.film is not None:
            shift = self.film(speaker).unsqueeze(1)  # (B, 1, C), or (B, 1, 2C) with a scale
            if self.speaker_scale:
                scale, shift = shift.chunk(2, dim=-1)
                h = h * (1 + scale)
            h = h + shift
        h = self.contract(F.gelu(self.expand(h)))  # (B, N, C)
        return x + (self.gamma * h).transpose(1, 2)


class SpectralDecoder(nn.Module):
    """Codes ``(B, D, L)`` → audio ``(B, 1, L·hop)`` through an inverse STFT (as in Vocos,
    Siuzdak 2023).

    The network runs at the code rate only: a kernel-7 convolution to ``width`` channels,
    ``depth`` :class:`ConvNeXtBlock` s, then per frame a linear map to the log-magnitude
    and phase of the ``n_fft // 2 + 1`` bins of one STFT frame (``n_fft = 4 · hop``, a
    Hann window, hop ``hop``: one frame per code). ``torch.istft`` turns those frames into
    the waveform. The decoder thus predicts the spectrum the losses measure, instead of
    having to build it up sample by sample through six upsampling stages, and costs a
    few network evaluations per code, not per sample.

    Args:
        code_dim: D.
        width: C, channels of the blocks.
        depth: number of blocks.
        hop: samples per code (``2**downsamples``).
        speaker_dim: E, to condition every block on a speaker embedding; None: unconditioned.
        speaker_scale: the speaker scales and shifts each block's features (FiLM), not
            only shifts them.
    """

    def __init__(
        self,
        code_dim: int,
        width: int,
        depth: int,
        hop: int,
        speaker_dim: int | None = None,
        speaker_scale: bool = True,
    ) -> None:
        super().__init__()
        self.hop, self.n_fft = hop, 4 * hop
        self.speaker_dim = speaker_dim or None
        self.conv_in = nn.Conv1d(code_dim, width, 7, padding=3)
        self.norm_in = nn.LayerNorm(width)
        self.blocks = nn.ModuleList(
            ConvNeXtBlock(width, 1.0 / depth, speaker_dim, speaker_scale) for _ in range(depth)
        )
        self.norm_out = nn.LayerNorm(width)
        bins = self.n_fft // 2 + 1
        self.head = nn.Linear(width, 2 * bins)  # log-magnitude and phase of each bin
        with torch.no_grad():  # start quiet: |S| ≈ e^-4, far under speech, above the floor
            self.head.bias[:bins].fill_(-4.0)
        self.register_buffer("window", torch.hann_window(self.n_fft), persistent=False)

    def forward(self, z: Tensor, speaker: Tensor | None = None) -> Tensor:
        """Audio ``(B, 1, L·hop)`` from code vectors ``z`` ``(B, D, L)`` and ``speaker`` ``(B, E)``.

        Not bounded: :meth:`SpeechVQVAE.decode` clips to [-1, 1].
        """
        _check_speaker(speaker, self.speaker_dim)
        x = self.conv_in(z)  # (B, C, L)
        x = self.norm_in(x.transpose(1, 2)).transpose(1, 2)
        for block in self.blocks:
            x = block(x, speaker)
        frames = self.head(self.norm_out(x.transpose(1, 2)))  # (B, L, 2F)
        # With centred frames, L·hop samples need L + 1 frames: repeat the last one.
        frames = torch.cat([frames, frames[:, -1:]], dim=1)  # (B, L + 1, 2F)
        with torch.autocast(device_type=z.device.type, enabled=False):
            log_magnitude, phase = frames.float().transpose(1, 2).chunk(2, dim=1)  # (B, F, L + 1)
            spectrum = torch.polar(log_magnitude.clamp(max=MAX_LOG_MAGNITUDE).exp(), phase)
            audio = torch.istft(
                spectrum, self.n_fft, hop_length=self.hop, window=self.window,
                center=True, length=z.shape[-1] * self.hop,
            )  # (B, T)
        return audio.unsqueeze(1)
