"""The speech VQ-VAE of the paper's §4.3: raw 8 kHz audio → codes 64x shorter → audio.

The encoder is the paper's: six stride-2 convolutions of window 4, so one code stands for
64 samples (8 ms at 8 kHz). The paper decodes with a WaveNet conditioned on the codes
and a speaker one-hot; sampling it takes one network pass per sample. Here the decoder is
non-autoregressive instead, fast enough on a CPU. The default, :class:`SpectralDecoder`,
works at the code rate: ConvNeXt blocks predict one STFT frame (log-magnitude and phase)
per code and an inverse STFT makes the waveform (as Vocos does). The older
:class:`SpeechDecoder` doubles the time axis six times with transposed convolutions, each
followed by dilated residual units. In both the speaker enters every block: as a
per-channel shift in the spectral decoder (or a scale and shift, FiLM, Perez et al. 2018,
with ``speaker_scale``), as FiLM in the upsampling one. Without a WaveNet's likelihood the
decoder is trained on a multi-resolution STFT loss and a log-mel loss (magnitudes only,
so it is not forced to guess the phase that 64x compression throws away) plus a light L1
waveform term.

Speaker conversion (§4.3) is ``decode(encode(x), other_speaker)``: the codes carry the
content, the speaker input the voice.

Letters: B batch, T samples, L = T / 64 latent steps, D code dimension, C channels,
E speaker embedding size, F frequency bins, N frames.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vqvae.modalities.speech.config import SpeechVQVAEConfig
from vqvae.modalities.speech.decoders import (
    ConvNeXtBlock,
    DilatedResidualUnit,
    SpectralDecoder,
    SpeechDecoder,
)
from vqvae.modalities.speech.losses import mel_loss, mel_sizes, multi_resolution_stft_loss
from vqvae.nets import Encoder
from vqvae.quantize import make_quantizer

# The config, decoders and losses live in their own modules; importing them from here
# keeps working.
__all__ = [
    "ConvNeXtBlock",
    "DilatedResidualUnit",
    "SpectralDecoder",
    "SpeechDecoder",
    "SpeechOutput",
    "SpeechVQVAE",
    "SpeechVQVAEConfig",
    "mel_loss",
    "mel_sizes",
    "multi_resolution_stft_loss",
]

CONTENT_NORM_EPS = 1e-5  # added to each channel's variance by the content normalisation


def _instance_norm(z: Tensor, steps: Tensor | None = None) -> Tensor:
    """``z`` ``(B, C, L)`` with each channel of each row normalised to zero mean and unit
    variance over its first ``steps[i]`` steps (all ``L`` when ``steps`` is None), in fp32."""
    with torch.autocast(device_type=z.device.type, enabled=False):
        z = z.float()
        if steps is None:  # every step counts: the fused kernel (a single step normalises to 0)
            return F.instance_norm(z, eps=CONTENT_NORM_EPS) if z.shape[-1] > 1 else torch.zeros_like(z)
        mask = (torch.arange(z.shape[-1], device=z.device) < steps.to(z.device)[:, None]).unsqueeze(1).float()
        count = mask.sum(-1, keepdim=True).clamp_min(1)  # (B, 1, 1)
        mean = (z * mask).sum(-1, keepdim=True) / count  # (B, C, 1)
        var = ((z - mean).square() * mask).sum(-1, keepdim=True) / count
        return (z - mean) * torch.rsqrt(var + CONTENT_NORM_EPS)


@dataclass
class SpeechOutput:
    """What :meth:`SpeechVQVAE.forward` returns.

    Attributes:
        reconstruction: ``(B, 1, T)``, in (-1, 1) from the upsampling decoder, unbounded
            from the spectral one (the losses see it unclipped; ``decode`` clips).
        loss: reconstruction_loss + quantizer_loss, the training objective.
        reconstruction_loss: stft_loss + mel_weight · mel_loss + waveform_weight · waveform_loss.
        stft_loss: spectral convergence + log-magnitude distance, averaged over resolutions.
        mel_loss: log-mel distance, see :func:`mel_loss`.
        waveform_loss: mean ``|x − x̂|``.
        quantizer_loss: the quantizer's auxiliary loss.
        commitment_loss, perplexity: from the quantizer.
        indices: ``(B, T / hop)`` codes.
    """

    reconstruction: Tensor
    loss: Tensor
    reconstruction_loss: Tensor
    stft_loss: Tensor
    mel_loss: Tensor
    waveform_loss: Tensor
    quantizer_loss: Tensor
    commitment_loss: Tensor
    perplexity: Tensor
    indices: Tensor


class SpeechVQVAE(nn.Module):
    """Encoder, vector quantizer and speaker-conditioned decoder of raw audio.

    ``SpeechVQVAE(num_speakers=6)`` is short for ``SpeechVQVAE(SpeechVQVAEConfig(...))``.
    Audio enters as floats in [-1, 1] of shape ``(B, 1, T)``; speakers as int64 ``(B,)``
    indices in ``[0, num_speakers)``, required exactly when ``num_speakers > 0``.
    """

    def __init__(self, config: SpeechVQVAEConfig | None = None, **settings) -> None:
        super().__init__()
        if config is None:
            config = SpeechVQVAEConfig(**settings)
        elif settings:
            config = dataclasses.replace(config, **settings)
        self.config = c = config
        self.encoder = Encoder(
            1, c.hidden, c.res_hidden, c.code_dim, c.downsamples, c.residual_blocks, spatial_dims=1
        )
        self.quantizer = make_quantizer(c, seed=c.seed)
        speaker_dim = c.speaker_dim if c.num_speakers else None
        self.speaker_embedding = (
            nn.Embedding(c.num_speakers, c.speaker_dim) if c.num_speakers else None
        )
        if c.decoder == "spectral":
            self.decoder = SpectralDecoder(
                c.code_dim, c.decoder_width, c.decoder_depth, c.hop, speaker_dim, c.speaker_scale
            )
        else:
            self.decoder = SpeechDecoder(
                c.code_dim, c.decoder_width, c.downsamples, c.decoder_dilations, speaker_dim
            )

    @property
    def hop(self) -> int:
        """Samples per code, ``2**downsamples`` (64 for the paper's model)."""
        return self.config.hop

    def latent_length(self, samples: int) -> int:
        """Codes for ``samples`` samples: ``ceil(samples / hop)``, as :meth:`encode` pads."""
        if isinstance(samples, bool) or not isinstance(samples, int) or samples < 0:
            raise ValueError(f"samples must be a non-negative int, got {samples!r}")
        return -(-samples // self.hop)

    def forward(self, x: Tensor, speakers: Tensor | None = None) -> SpeechOutput:
        """Encode, quantize and decode ``x`` ``(B, 1, T)`` in [-1, 1], T a multiple of ``hop``.

        Args:
            x: audio; crop or pad it to a multiple of ``hop`` samples.
            speakers: ``(B,)`` int64 speaker of each clip; None iff ``num_speakers == 0``.

        Returns:
            A :class:`SpeechOutput` with the reconstruction, the losses and the codes.
        """
        self._check_audio(x)
        if x.shape[-1] % self.hop:
            t = x.shape[-1]
            raise ValueError(
                f"x has {t} samples, not a multiple of {self.hop} (one code per {self.hop} "
                f"samples): crop training clips to {t // self.hop * self.hop} or pad them to "
                f"{self.latent_length(t) * self.hop} samples (encode() pads by itself)"
            )
        speaker = self._speaker_vectors(speakers, x.shape[0])
        q = self.quantizer(self._content(x))
        reconstruction = self.decoder(self._jitter(q.quantized), speaker)  # (B, 1, T)
        c = self.config
        convergence, log_distance = multi_resolution_stft_loss(
            x, reconstruction, c.stft_resolutions
        )
        stft_loss = convergence + log_distance
        mel = mel_loss(x, reconstruction, c.sample_rate) if c.mel_weight else stft_loss.new_zeros(())
        with torch.autocast(device_type=x.device.type, enabled=False):
            waveform_loss = F.l1_loss(reconstruction.float(), x.float())
        recon_loss = stft_loss + c.mel_weight * mel + c.waveform_weight * waveform_loss
        return SpeechOutput(
            reconstruction=reconstruction,
            loss=recon_loss + q.loss,
            reconstruction_loss=recon_loss,
            stft_loss=stft_loss,
            mel_loss=mel,
            waveform_loss=waveform_loss,
            quantizer_loss=q.loss,
            commitment_loss=q.commitment_loss,
            perplexity=q.perplexity,
            indices=q.indices,
        )

    def _jitter(self, quantized: Tensor) -> Tensor:
        """``quantized`` ``(B, D, L)`` with each step, while training, replaced by its left or
        right neighbour with probability ``jitter`` (half each; the ends keep themselves)."""
        p = self.config.jitter
        if not (self.training and p):
            return quantized
        b, d, length = quantized.shape
        u = torch.rand(b, length, device=quantized.device)
        shift = torch.where(u < p / 2, -1, torch.where(u < p, 1, 0))  # most steps stay (0)
        source = (torch.arange(length, device=quantized.device) + shift).clamp(0, length - 1)
        return quantized.gather(2, source.unsqueeze(1).expand(b, d, length))

    def _content(self, x: Tensor, lengths: Tensor | None = None) -> Tensor:
        """Encoder output ``(B, D, L)`` of ``x`` ``(B, 1, L·hop)``, instance-normalised as
        ``content_norm`` says. ``lengths`` ``(B,)``: samples of each row that are audio; the
        statistics skip the batch padding after them (None: every row is all audio)."""
        mode = self.config.content_norm
        if mode == "none":
            return self.encoder(x)
        h, rate = x, 1
        for layer in self.encoder.net:
            h = layer(h)
            if mode == "layers" and isinstance(layer, nn.Conv1d) and layer.stride[0] == 2:
                rate *= 2
                h = _instance_norm(h, None if lengths is None else -(-lengths // rate))
        return _instance_norm(h, None if lengths is None else -(-lengths // self.hop))

    @torch.no_grad()
    def encode(self, x: Tensor, lengths: Tensor | None = None) -> Tensor:
        """Codes ``(B, ceil(T / hop))`` int64 of audio ``x`` ``(B, 1, T)`` in [-1, 1].

        The speaker plays no part. A length that is not a multiple of ``hop`` is padded
        with silence at the end. ``lengths`` ``(B,)``: samples of each row that are audio,
        not batch padding (read only when ``content_norm`` is not ``"none"``).
        """
        self._check_audio(x)
        pad = self.latent_length(x.shape[-1]) * self.hop - x.shape[-1]
        if pad:
            x = F.pad(x, (0, pad))  # (B, 1, L·hop)
        return self.quantizer.encode(self._content(x, lengths))

    @torch.no_grad()
    def decode(self, codes: Tensor, speakers: Tensor | None = None) -> Tensor:
        """Audio ``(B, 1, L·hop)`` in [-1, 1] from codes ``(B, L)``, spoken by ``speakers`` ``(B,)``."""
        if not isinstance(codes, Tensor):
            raise TypeError(f"codes must be a torch.Tensor, got {type(codes).__name__}")
        if codes.dim() != 2:
            raise ValueError(
                f"codes must have shape (B, L), one row of codes per clip, got shape "
                f"{tuple(codes.shape)}"
            )
        speaker = self._speaker_vectors(speakers, codes.shape[0])
        return self.decoder(self.quantizer.decode(codes), speaker).clamp(-1.0, 1.0)

    @torch.no_grad()
    def convert(self, x: Tensor, speakers: Tensor | None) -> Tensor:
        """Voice conversion (§4.3): ``x`` ``(B, 1, T)`` re-spoken by ``speakers`` ``(B,)``.

        ``decode(encode(x), speakers)`` cropped back to T samples.
        """
        return self.decode(self.encode(x), speakers)[..., : x.shape[-1]]

    def _check_audio(self, x: Tensor) -> None:
        if not isinstance(x, Tensor) or not x.is_floating_point():
            raise TypeError(
                f"x must be a floating-point tensor of audio in [-1, 1], got "
                f"{x.dtype if isinstance(x, Tensor) else type(x).__name__}"
            )
        if x.dim() != 3 or x.shape[1] != 1:
            hint = ": add the channel axis with x.unsqueeze(1)" if x.dim() == 2 else ""
            raise ValueError(f"x must have shape (B, 1, T), mono audio, got {tuple(x.shape)}{hint}")
        if x.shape[-1] == 0:
            raise ValueError(f"x holds no samples (shape {tuple(x.shape)})")

    def _speaker_vectors(self, speakers: Tensor | None, batch: int) -> Tensor | None:
        """Speaker embeddings ``(B, E)``, or None for a model without speakers."""
        n = self.config.num_speakers
        if n == 0:
            if speakers is not None:
                raise ValueError(
                    "this model has no speaker conditioning (num_speakers=0) but speakers were "
                    "given: pass speakers=None, or train a model with num_speakers > 0"
                )
            return None
        if speakers is None:
            raise ValueError(
                f"this model is conditioned on {n} speakers: pass speakers, an int64 tensor of "
                f"shape (B,) with values in [0, {n})"
            )
        if (
            not isinstance(speakers, Tensor)
            or speakers.is_floating_point()
            or speakers.is_complex()
            or speakers.dtype == torch.bool
        ):
            got = speakers.dtype if isinstance(speakers, Tensor) else type(speakers).__name__
            raise TypeError(f"speakers must be an integer tensor of shape (B,), got {got}")
        if speakers.shape != (batch,):
            raise ValueError(
                f"speakers must have shape ({batch},), one speaker per clip, got "
                f"{tuple(speakers.shape)}"
            )
        low, high = (int(speakers.min()), int(speakers.max())) if batch else (0, 0)
        if low < 0 or high >= n:
            raise IndexError(
                f"speakers must lie in [0, {n}) for this model of {n} speakers, got values in "
                f"[{low}, {high}]"
            )
        return self.speaker_embedding(speakers.long().to(self.speaker_embedding.weight.device))
