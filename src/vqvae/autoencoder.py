"""Autoencoders over 8-bit data: the VQ-VAE (van den Oord et al. 2017, §3) and the
continuous VAE baseline of the paper's comparison (Kingma & Welling 2014), built from
the same encoder, decoder and likelihood so that only the latent differs.

Data enter as floats in [0, 1], channels first: ``(B, C, *S)``; latents are grids
``(B, *S')`` of integer codes (VQ-VAE) or ``(B, D, *S')`` Gaussian vectors (VAE), with
``S' = S / 2**downsamples``. The decoder is convolutional, or an autoregressive gated
PixelCNN over the pixels conditioned on the latents (``decoder="pixelcnn"``, the
"powerful decoder" of the paper's posterior-collapse argument, §1 and §4).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from vqvae.ar_decoder import PixelCNNDecoder
from vqvae.likelihood import LIKELIHOODS, make_likelihood
from vqvae.nets import ENCODER_NORMS, Decoder, Encoder, check_time_downsamples
from vqvae.quantize import QuantizerConfig, make_quantizer

DECODERS = ("conv", "pixelcnn")


@dataclass(frozen=True)
class AutoencoderConfig:
    """What the VQ-VAE and the VAE share: the networks and the decoder's likelihood.

    Defaults are the paper's image model (§4.1): 256 hidden units everywhere, two
    stride-2 convolutions (32×32 → 8×8), two residual blocks.

    Attributes:
        in_channels: channels of the data (1 grey, 3 colour).
        hidden: width of the encoder and decoder convolutions.
        res_hidden: width inside the residual blocks.
        residual_blocks: residual blocks in the encoder and in the decoder.
        downsamples: stride-2 convolutions; the latent grid is 2**downsamples smaller.
        likelihood: the decoder's ``p(x | z)``, see :mod:`vqvae.likelihood`: ``"mse"``
            (Gaussian, fixed variance), ``"bernoulli"`` (binarised data), or, for 8-bit
            data and bits/dim, ``"logistic"`` (discretised) or ``"categorical"`` (256-way).
        mixtures: components of the discretised logistic mixture.
        data_variance: variance of the training pixels; the MSE loss is divided by it
            (so the reported reconstruction loss is the NMSE).
        decoder: ``"conv"`` (the paper's) or ``"pixelcnn"`` (autoregressive over pixels,
            conditioned on the conv decoder's features; 2-D only).
        decoder_width, decoder_depth: channels and gated layers of the PixelCNN decoder.
        spatial_dims: 1 (audio), 2 (images) or 3 (video).
        time_downsamples: video (spatial_dims 3) only: how many of the ``downsamples``
            stride-2 convolutions also halve time, in ``[0, downsamples]``; None: all of
            them (so ``downsamples=2, time_downsamples=1`` maps 16x64x64 to 8x16x16).
        encoder_norm: ``"none"`` (the paper's) or ``"group"``: group normalisation in the
            encoder (see :class:`~vqvae.nets.Encoder`).
        seed: seeds the codebook initialisation and resets.
    """

    in_channels: int = 3
    hidden: int = 256
    res_hidden: int = 256
    residual_blocks: int = 2
    downsamples: int = 2
    likelihood: str = "mse"
    mixtures: int = 1
    data_variance: float = 1.0
    decoder: str = "conv"
    decoder_width: int = 64
    decoder_depth: int = 8
    spatial_dims: int = 2
    time_downsamples: int | None = None
    encoder_norm: str = "none"
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("in_channels", "hidden", "res_hidden", "downsamples", "mixtures",
                     "decoder_width", "decoder_depth"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"model.{name} must be a positive integer, got {value!r}")
        if self.likelihood not in LIKELIHOODS:
            raise ValueError(f"model.likelihood must be one of {LIKELIHOODS}, got {self.likelihood!r}")
        if self.mixtures > 1 and self.likelihood != "logistic":
            raise ValueError(f"--mixtures {self.mixtures} needs --likelihood logistic, got {self.likelihood!r}")
        if not (self.data_variance > 0 and math.isfinite(self.data_variance)):
            raise ValueError(f"model.data_variance must be positive, got {self.data_variance}")
        if self.spatial_dims not in (1, 2, 3):
            raise ValueError(f"model.spatial_dims must be 1, 2 or 3, got {self.spatial_dims}")
        if self.decoder not in DECODERS:
            raise ValueError(f"model.decoder must be one of {DECODERS}, got {self.decoder!r}")
        if self.decoder == "pixelcnn" and self.spatial_dims != 2:
            raise ValueError("the PixelCNN decoder models images (spatial_dims 2): use --decoder conv")
        if self.encoder_norm not in ENCODER_NORMS:
            raise ValueError(f"model.encoder_norm (--encoder-norm) must be one of {ENCODER_NORMS}, "
                             f"got {self.encoder_norm!r}")
        try:
            check_time_downsamples(self.time_downsamples, self.downsamples, self.spatial_dims)
        except ValueError as error:
            raise ValueError(f"model.{error}") from None

    @property
    def factors(self) -> tuple[int, ...]:
        """How many times smaller the latent grid is than the data, per spatial axis."""
        factors = [1 << self.downsamples] * self.spatial_dims
        if self.time_downsamples is not None:
            factors[0] = 1 << self.time_downsamples
        return tuple(factors)

    def to_dict(self) -> dict:
        values = dataclasses.asdict(self)
        if values["time_downsamples"] is None:  # unset: written as before it existed, so image and
            del values["time_downsamples"]  # speech configs keep their exact keys
        if values["encoder_norm"] == "none":  # likewise: configs without it read as "none"
            del values["encoder_norm"]
        return values

    @classmethod
    def from_dict(cls, values: dict):
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(
                f"unknown model settings {unknown} in config.json: was it written by a newer "
                f"vqvae? Known: {sorted(known)}"
            )
        return cls(**values)


@dataclass(frozen=True)
class VQVAEConfig(QuantizerConfig, AutoencoderConfig):
    """Everything needed to rebuild a :class:`VQVAE`; saved as ``config.json["model"]``.

    The fields of :class:`AutoencoderConfig`, then those of
    :class:`~vqvae.quantize.QuantizerConfig` (the paper's codebook, §4.1: K=512, D=64,
    β=0.25, EMA γ=0.99), all saved flat. ``seed`` also seeds the quantizer.
    """

    def __post_init__(self) -> None:
        AutoencoderConfig.__post_init__(self)
        QuantizerConfig.__post_init__(self)


@dataclass(frozen=True)
class VAEConfig(AutoencoderConfig):
    """Everything needed to rebuild a :class:`VAE`: :class:`AutoencoderConfig` plus ``latent_dim``.

    Attributes:
        latent_dim: D, channels of the Gaussian latent at each position of the latent grid
            (the VQ-VAE's ``code_dim``, so both models share the encoder and decoder).
    """

    latent_dim: int = 64

    def __post_init__(self) -> None:
        super().__post_init__()
        if not isinstance(self.latent_dim, int) or self.latent_dim < 1:
            raise ValueError(f"model.latent_dim must be a positive integer, got {self.latent_dim!r}")


class _Autoencoder(nn.Module):
    """Encoder → (latent, defined by subclasses) → decoder → likelihood ``p(x | z)``."""

    config: AutoencoderConfig

    def _build(self, encoder_out: int, latent_channels: int) -> None:
        c = self.config
        self.likelihood = make_likelihood(c.likelihood, data_variance=c.data_variance, mixtures=c.mixtures)
        self.encoder = Encoder(c.in_channels, c.hidden, c.res_hidden, encoder_out,
                               c.downsamples, c.residual_blocks, c.spatial_dims, c.time_downsamples,
                               c.encoder_norm)
        params = c.in_channels * self.likelihood.params_per_channel
        features = params if c.decoder == "conv" else c.decoder_width
        self.decoder = Decoder(latent_channels, c.hidden, c.res_hidden, features,
                               c.downsamples, c.residual_blocks, c.spatial_dims, c.time_downsamples)
        self.pixelcnn = None
        if c.decoder == "pixelcnn":
            self.pixelcnn = PixelCNNDecoder(c.in_channels, c.decoder_width, self.likelihood.params_per_channel,
                                            width=c.decoder_width, depth=c.decoder_depth)
        output = self.decoder.net[-1] if self.pixelcnn is None else self.pixelcnn.head[-1]
        with torch.no_grad():
            output.bias.copy_(self.likelihood.initial_bias().repeat(c.in_channels))

    @property
    def autoregressive(self) -> bool:
        """True when the decoder is a PixelCNN: decoding then samples pixel by pixel."""
        return self.pixelcnn is not None

    def decoder_params(self, latents: Tensor, x: Tensor | None = None) -> Tensor:
        """Parameters of ``p(x | latents)``, ``(B, C·P, *S)``; the PixelCNN needs ``x`` (teacher forcing)."""
        features = self.decoder(latents)
        if self.pixelcnn is None:
            return features
        if x is None:
            raise ValueError("the PixelCNN decoder needs the data x to score p(x | z)")
        return self.pixelcnn(x, features)

    def _generate(self, latents: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """The decoder's output in [0, 1]: its mean, or (PixelCNN) a sample drawn pixel by pixel."""
        features = self.decoder(latents)
        if self.pixelcnn is None:
            return self.likelihood.mean(features).clamp(0.0, 1.0)
        return self.pixelcnn.sample(features, lambda p: self.likelihood.sample(p, generator))

    def latent_shape(self, data_shape: tuple[int, ...]) -> tuple[int, ...]:
        """Latent grid ``S'`` for data of spatial shape ``S``."""
        self._check_spatial(tuple(data_shape))
        return tuple(s // f for s, f in zip(data_shape, self.config.factors, strict=True))

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
        c = self.config
        if len(shape) != c.spatial_dims:
            raise ValueError(f"data of spatial shape {shape} for a model of {c.spatial_dims} spatial axes")
        factors = c.factors
        if c.time_downsamples is not None and shape[0] % factors[0]:
            raise ValueError(
                f"data size {shape}: the time axis ({shape[0]}) is not divisible by {factors[0]} "
                f"(the model halves time {c.time_downsamples} times): use a number of frames that "
                f"is a multiple of {factors[0]}, e.g. {max(factors[0], shape[0] // factors[0] * factors[0])}"
            )
        factor = 1 << c.downsamples
        if any(s % f for s, f in zip(shape, factors, strict=True)):
            raise ValueError(
                f"data size {shape} is not divisible by {factor} (the model downsamples "
                f"{c.downsamples} times): choose an image size that is a multiple "
                f"of {factor}, e.g. --image-size {max(factor, shape[-1] // factor * factor)}"
            )


@dataclass
class VQVAEOutput:
    """What :meth:`VQVAE.forward` returns.

    Attributes:
        params: ``(B, C·P, *S)``, the decoder's output: parameters of ``p(x | z)``.
        reconstruction: ``(B, C, *S)``, the decoder's mean in [0, 1].
        loss: reconstruction_loss + quantizer loss, the training objective.
        reconstruction_loss: NMSE (MSE over the data variance) for ``mse``, else the
            negative log-likelihood in nats per element.
        quantizer_loss: the quantizer's auxiliary loss.
        commitment_loss, codebook_loss, perplexity: from the quantizer.
        indices: ``(B, *S')`` codes.
    """

    params: Tensor
    reconstruction: Tensor
    loss: Tensor
    reconstruction_loss: Tensor
    quantizer_loss: Tensor
    commitment_loss: Tensor
    codebook_loss: Tensor
    perplexity: Tensor
    indices: Tensor


class VQVAE(_Autoencoder):
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
        self._build(c.code_dim, c.code_dim)
        self.quantizer = make_quantizer(c, seed=c.seed)

    def forward(self, x: Tensor) -> VQVAEOutput:
        """Encode, quantize and decode ``x`` ``(B, C, *S)`` in [0, 1]."""
        self._check_data(x)
        q = self.quantizer(self.encoder(x - 0.5))
        params = self.decoder_params(q.quantized, x)
        recon_loss = self.likelihood.loss(params, x)
        return VQVAEOutput(
            params=params,
            reconstruction=self.likelihood.mean(params),
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
    def decode(self, codes: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """Data ``(B, C, *S)`` in [0, 1] from codes ``(B, *S')``: the decoder's mean, or a
        sample drawn pixel by pixel when the decoder is a PixelCNN."""
        if codes.dim() != self.config.spatial_dims + 1:
            raise ValueError(
                f"codes must have shape (B, {', '.join('*' * self.config.spatial_dims)}) with "
                f"{self.config.spatial_dims} latent axes, got shape {tuple(codes.shape)}"
            )
        return self._generate(self.quantizer.decode(codes), generator)

    def latents(self, codes: Tensor) -> Tensor:
        """The decoder's input ``(B, D, *S')`` for codes ``(B, *S')``: their codebook vectors."""
        return self.quantizer.decode(codes)

    @torch.no_grad()
    def reconstruct(self, x: Tensor) -> Tensor:
        """``decode(encode(x))``: what the tokenizer keeps of ``x``."""
        return self.decode(self.encode(x))


@dataclass
class VAEOutput:
    """What :meth:`VAE.forward` returns.

    Attributes:
        params: ``(B, C·P, *S)``, the decoder's output for the sampled latent.
        reconstruction: ``(B, C, *S)``, the decoder's mean in [0, 1].
        loss: the negative ELBO in nats per data dimension (reconstruction + KL / dims).
        reconstruction_loss: ``−log p(x | z)`` in nats per element (one sample of z).
        kl: ``KL(q(z | x) ‖ N(0, I))`` in nats per image, averaged over the batch.
        kl_per_image: ``(B,)``, the same per image.
        nll_per_image: ``(B,)``, ``−log p(x | z)`` in nats per image.
        mean, log_var: ``(B, D, *S')``, the posterior's parameters.
        latents: ``(B, D, *S')``, the reparameterised sample.
    """

    params: Tensor
    reconstruction: Tensor
    loss: Tensor
    reconstruction_loss: Tensor
    kl: Tensor
    kl_per_image: Tensor
    nll_per_image: Tensor
    mean: Tensor
    log_var: Tensor
    latents: Tensor


class VAE(_Autoencoder):
    """The continuous baseline: a diagonal Gaussian posterior ``q(z | x)``, the
    reparameterisation trick and the analytic KL to ``N(0, I)``, on the VQ-VAE's encoder
    and decoder (the encoder's last 1×1 convolution outputs mean and log-variance).

    With ``likelihood="mse"`` the decoder is a Gaussian of fixed variance
    ``data_variance``; the logistic and categorical likelihoods give the true ELBO of
    8-bit data.
    """

    def __init__(self, config: VAEConfig | None = None, **settings) -> None:
        super().__init__()
        if config is None:
            config = VAEConfig(**settings)
        elif settings:
            config = dataclasses.replace(config, **settings)
        self.config = c = config
        self._build(2 * c.latent_dim, c.latent_dim)

    def posterior(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Mean and log-variance ``(B, D, *S')`` of ``q(z | x)``."""
        self._check_data(x)
        mean, log_var = self.encoder(x - 0.5).chunk(2, dim=1)
        return mean, log_var.clamp(-30.0, 20.0)  # exp() stays finite in fp32

    def forward(self, x: Tensor, generator: torch.Generator | None = None) -> VAEOutput:
        """One-sample estimate of the negative ELBO of ``x`` ``(B, C, *S)`` in [0, 1]."""
        mean, log_var = self.posterior(x)
        noise = torch.randn(mean.shape, generator=generator, device=mean.device, dtype=mean.dtype)
        z = mean + torch.exp(0.5 * log_var) * noise  # reparameterisation: gradients reach mean, log_var
        params = self.decoder_params(z, x)
        nll = self.likelihood.nll(params, x).flatten(1).sum(1)  # (B,) nats
        kl = gaussian_kl(mean.float(), log_var.float())  # (B,) nats
        dims = x[0].numel()
        return VAEOutput(
            params=params,
            reconstruction=self.likelihood.mean(params),
            loss=(nll + kl).mean() / dims,
            reconstruction_loss=nll.mean() / dims,
            kl=kl.mean(),
            kl_per_image=kl,
            nll_per_image=nll,
            mean=mean,
            log_var=log_var,
            latents=z,
        )

    @torch.no_grad()
    def encode(self, x: Tensor) -> Tensor:
        """The posterior mean ``(B, D, *S')`` of ``x`` ``(B, C, *S)``."""
        return self.posterior(x)[0]

    @torch.no_grad()
    def decode(self, z: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """Data ``(B, C, *S)`` in [0, 1] from latents ``(B, D, *S')``."""
        if z.dim() != self.config.spatial_dims + 2 or z.shape[1] != self.config.latent_dim:
            raise ValueError(
                f"latents must have shape (B, {self.config.latent_dim}, "
                f"{', '.join('*' * self.config.spatial_dims)}), got {tuple(z.shape)}"
            )
        return self._generate(z, generator)

    def latents(self, z: Tensor) -> Tensor:
        """The decoder's input for latents ``z``: ``z`` itself."""
        return z

    @torch.no_grad()
    def reconstruct(self, x: Tensor) -> Tensor:
        """``decode(encode(x))``, through the posterior mean."""
        return self.decode(self.encode(x))


def gaussian_kl(mean: Tensor, log_var: Tensor) -> Tensor:
    """``KL(N(mean, exp(log_var)) ‖ N(0, I))`` summed over all but the batch axis, in nats.

    Shapes: ``(B, D, *S') -> (B,)``
    """
    return 0.5 * (mean.square() + log_var.exp() - 1.0 - log_var).flatten(1).sum(1)


MODELS = {"vqvae": (VQVAE, VQVAEConfig), "vae": (VAE, VAEConfig)}
