"""The VQ-VAE: encoder → vector quantizer → decoder (van den Oord et al. 2017, §3).

Data enter as floats in [0, 1], channels first: ``(B, C, *S)``; codes are integer grids
``(B, *S')`` with ``S' = S / 2**downsamples``.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vqvae.nets import Decoder, Encoder
from vqvae.quantize import EMAVectorQuantizer, VectorQuantizer

QUANTIZERS = ("ema", "grad")
LIKELIHOODS = ("mse", "bernoulli")


@dataclass(frozen=True)
class VQVAEConfig:
    """Everything needed to rebuild a :class:`VQVAE`; saved as ``config.json["model"]``.

    Defaults are the paper's image model (§4.1): 256 hidden units everywhere, two
    stride-2 convolutions (32×32 → 8×8), two residual blocks, K=512, D=64, β=0.25,
    EMA γ=0.99.

    Attributes:
        in_channels: channels of the data (1 grey, 3 colour).
        hidden: width of the encoder and decoder convolutions.
        res_hidden: width inside the residual blocks.
        residual_blocks: residual blocks in the encoder and in the decoder.
        downsamples: stride-2 convolutions; the latent grid is 2**downsamples smaller.
        codebook_size: K.
        code_dim: D.
        quantizer: ``"ema"`` (appendix A.1) or ``"grad"`` (codebook loss).
        beta: commitment cost β.
        decay: EMA decay γ (EMA quantizer only).
        kmeans_init: start the codebook from k-means on the first batches.
        dead_code_window: re-seed codes unused for this many steps (None: never).
        likelihood: ``"mse"`` (Gaussian, fixed variance) or ``"bernoulli"`` (binarised data).
        data_variance: variance of the training pixels; the MSE loss is divided by it
            (so the reported reconstruction loss is the NMSE).
        spatial_dims: 1 (audio), 2 (images) or 3 (video).
        seed: seeds the codebook initialisation and resets.
    """

    in_channels: int = 3
    hidden: int = 256
    res_hidden: int = 256
    residual_blocks: int = 2
    downsamples: int = 2
    codebook_size: int = 512
    code_dim: int = 64
    quantizer: str = "ema"
    beta: float = 0.25
    decay: float = 0.99
    kmeans_init: bool = True
    dead_code_window: int | None = 100
    likelihood: str = "mse"
    data_variance: float = 1.0
    spatial_dims: int = 2
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("in_channels", "hidden", "res_hidden", "downsamples", "codebook_size", "code_dim"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"model.{name} must be a positive integer, got {value!r}")
        if self.quantizer not in QUANTIZERS:
            raise ValueError(f"model.quantizer must be one of {QUANTIZERS}, got {self.quantizer!r}")
        if self.likelihood not in LIKELIHOODS:
            raise ValueError(f"model.likelihood must be one of {LIKELIHOODS}, got {self.likelihood!r}")
        if not (self.data_variance > 0 and math.isfinite(self.data_variance)):
            raise ValueError(f"model.data_variance must be positive, got {self.data_variance}")
        if self.spatial_dims not in (1, 2, 3):
            raise ValueError(f"model.spatial_dims must be 1, 2 or 3, got {self.spatial_dims}")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> VQVAEConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(
                f"unknown model settings {unknown} in config.json: was it written by a newer "
                f"vqvae? Known: {sorted(known)}"
            )
        return cls(**values)


@dataclass
class VQVAEOutput:
    """What :meth:`VQVAE.forward` returns.

    Attributes:
        reconstruction: ``(B, C, *S)``, the decoder's mean in data space (MSE) or the
            Bernoulli logits.
        loss: reconstruction_loss + quantizer loss, the training objective.
        reconstruction_loss: NMSE (MSE over the data variance) or Bernoulli NLL per element.
        quantizer_loss: the quantizer's auxiliary loss.
        commitment_loss, codebook_loss, perplexity: from the quantizer.
        indices: ``(B, *S')`` codes.
    """

    reconstruction: Tensor
    loss: Tensor
    reconstruction_loss: Tensor
    quantizer_loss: Tensor
    commitment_loss: Tensor
    codebook_loss: Tensor
    perplexity: Tensor
    indices: Tensor


class VQVAE(nn.Module):
    """Encoder, vector quantizer and decoder; built from a :class:`VQVAEConfig`.

    ``VQVAE(in_channels=1, hidden=128)`` is short for ``VQVAE(VQVAEConfig(...))``.
    """

    def __init__(self, config: VQVAEConfig | None = None, **settings) -> None:
        super().__init__()
        if config is None:
            config = VQVAEConfig(**settings)
        elif settings:
            config = dataclasses.replace(config, **settings)
        self.config = c = config
        self.encoder = Encoder(c.in_channels, c.hidden, c.res_hidden, c.code_dim,
                               c.downsamples, c.residual_blocks, c.spatial_dims)
        quantizer = EMAVectorQuantizer if c.quantizer == "ema" else VectorQuantizer
        options = {"decay": c.decay} if c.quantizer == "ema" else {}
        self.quantizer = quantizer(
            c.codebook_size, c.code_dim, c.beta, kmeans_init=c.kmeans_init,
            dead_code_window=c.dead_code_window, seed=c.seed, **options,
        )
        self.decoder = Decoder(c.code_dim, c.hidden, c.res_hidden, c.in_channels,
                               c.downsamples, c.residual_blocks, c.spatial_dims)

    def latent_shape(self, data_shape: tuple[int, ...]) -> tuple[int, ...]:
        """Latent grid ``S'`` for data of spatial shape ``S``."""
        self._check_spatial(tuple(data_shape))
        return tuple(s >> self.config.downsamples for s in data_shape)

    def forward(self, x: Tensor) -> VQVAEOutput:
        """Encode, quantize and decode ``x`` ``(B, C, *S)`` in [0, 1]."""
        self._check_data(x)
        q = self.quantizer(self.encoder(x - 0.5))
        out = self.decoder(q.quantized)
        if self.config.likelihood == "bernoulli":
            recon_loss = F.binary_cross_entropy_with_logits(out, x)
            reconstruction = out
        else:
            reconstruction = out + 0.5
            recon_loss = F.mse_loss(reconstruction, x) / self.config.data_variance
        return VQVAEOutput(
            reconstruction=reconstruction,
            loss=recon_loss + q.loss,
            reconstruction_loss=recon_loss,
            quantizer_loss=q.loss,
            commitment_loss=q.commitment_loss,
            codebook_loss=q.codebook_loss,
            perplexity=q.perplexity,
            indices=q.indices,
        )

    @torch.no_grad()
    def encode(self, x: Tensor) -> Tensor:
        """Codes ``(B, *S')`` int64 of data ``x`` ``(B, C, *S)`` in [0, 1]."""
        self._check_data(x)
        return self.quantizer.encode(self.encoder(x - 0.5))

    @torch.no_grad()
    def decode(self, codes: Tensor) -> Tensor:
        """Data ``(B, C, *S)`` in [0, 1] (the decoder's mean) from codes ``(B, *S')``."""
        if codes.dim() != self.config.spatial_dims + 1:
            raise ValueError(
                f"codes must have shape (B, {', '.join('*' * self.config.spatial_dims)}) with "
                f"{self.config.spatial_dims} latent axes, got shape {tuple(codes.shape)}"
            )
        out = self.decoder(self.quantizer.decode(codes))
        out = torch.sigmoid(out) if self.config.likelihood == "bernoulli" else out + 0.5
        return out.clamp(0.0, 1.0)

    @torch.no_grad()
    def reconstruct(self, x: Tensor) -> Tensor:
        """``decode(encode(x))``: what the tokenizer keeps of ``x``."""
        return self.decode(self.encode(x))

    def _check_data(self, x: Tensor) -> None:
        c = self.config
        if not isinstance(x, Tensor) or not x.is_floating_point():
            raise TypeError(
                f"x must be a floating-point tensor in [0, 1], got "
                f"{x.dtype if isinstance(x, Tensor) else type(x).__name__}"
            )
        if x.dim() != c.spatial_dims + 2 or x.shape[1] != c.in_channels:
            raise ValueError(
                f"x must have shape (B, {c.in_channels}, {', '.join('*' * c.spatial_dims)}) for this "
                f"model, got {tuple(x.shape)}"
            )
        self._check_spatial(tuple(x.shape[2:]))

    def _check_spatial(self, shape: tuple[int, ...]) -> None:
        factor = 1 << self.config.downsamples
        if any(s % factor for s in shape):
            raise ValueError(
                f"data size {shape} is not divisible by {factor} (the model downsamples "
                f"{self.config.downsamples} times): choose an image size that is a multiple "
                f"of {factor}, e.g. --image-size {max(factor, shape[0] // factor * factor)}"
            )
